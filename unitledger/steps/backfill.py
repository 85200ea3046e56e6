"""`unitledger materialize --start --end`: a backfill in month-sized Dagster runs, with a progress
bar, that resumes after a failure. It runs the same assets as the UI and the schedule, in-process:

1. one run stages the landing files (`staged_billing`, `staged_events`);
2. one run per calendar month of the range builds the daily tables for its days (`daily_tables`,
   `reconciliation_daily`);
3. one run rolls the months touched up into the monthly tables (`monthly_tables`) and reconciles
   their billing periods (`reconciliation_tables`);
4. the DuckDB views are refreshed.

Resume: every finished month is recorded in `warehouse/_backfills/<start>_<end>.json` with the
landing files' fingerprints and a hash of the settings file. Running the same command again skips
the recorded months, except those fed by a landing file that changed since (found as the landing
sensor finds them: unitledger/sources/changes.py) and all of them if the settings changed. The
record is removed when the backfill completes, so the next run of the command rebuilds the whole
range.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from datetime import date
from typing import TextIO

from unitledger import months
from unitledger.config import Settings
from unitledger.layout import Layout
from unitledger.sources import changes
from unitledger.warehouse.views import refresh_views

# Dagster's own log (every event, and each failure with its stack trace) would bury the progress
# bar: a failure is printed as one line naming the step and its error instead. The runs' full logs
# are in the Dagster UI when DAGSTER_HOME is set.
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def month_chunks(start: date, end: date) -> list[tuple[date, date]]:
    """[start, end] cut at month boundaries: (first day, last day) per month."""
    return [(max(m, start), min(months.month_end(m), end)) for m in months.months(start, end)]


class ResumeRecord:
    """The months of one backfill range already built from the current inputs.

    Read before staging runs: staging still holds the old versions of changed files then."""

    def __init__(self, layout: Layout, settings: Settings, start: date, end: date):
        self.path = layout.warehouse / "_backfills" / f"{start}_{end}.json"
        self._tmp = self.path.with_name(self.path.name + ".tmp")
        self._tmp.unlink(missing_ok=True)  # left by a run killed while it wrote the record
        files = changes.landing_files(layout, settings.telemetry)
        self.landing = changes.fingerprints(files)
        self.settings = hashlib.sha256(settings.path.read_bytes()).hexdigest()
        saved = json.loads(self.path.read_text()) if self.path.exists() else {}
        finished = saved.get("done", [])
        if finished and saved.get("settings") != self.settings:
            stale = set(finished)
        elif finished:
            found = changes.compare(saved.get("landing", {}), files)
            stale = {months.period_key(d) for d in changes.affected_days(layout, found, settings.bounds, settings.telemetry).days} if found else set()
        else:
            stale = set()
        self.done = [m for m in finished if m not in stale]
        self.redo = [m for m in finished if m in stale]

    def mark(self, month: str) -> None:
        self.done.append(month)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp.write_text(json.dumps({"settings": self.settings, "landing": self.landing, "done": self.done}))
        os.replace(self._tmp, self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


class Progress:
    """One line per step: a bar, the count, what ran and how long it took."""

    def __init__(self, total: int, out: TextIO, width: int = 24):
        self.total, self.done, self.out, self.width = total, 0, out, width

    def step(self, text: str) -> None:
        self.done += 1
        filled = self.width * self.done // self.total
        print(f"[{'#' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total} {text}", file=self.out, flush=True)


def _print_failures(result, out: TextIO) -> None:
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            error = event.step_failure_data.error
            # Dagster wraps what the step raised: show the step's own error.
            while error.cause is not None and (not error.message.strip() or error.cls_name == "DagsterExecutionStepExecutionError"):
                error = error.cause
            user = event.step_failure_data.user_failure_data
            print(f"FAILED {event.step_key}: {user.description if user and user.description else error.message.strip()}", file=out)


def run(layout: Layout, settings: Settings, start: date, end: date, out: TextIO | None = None, today: date | None = None) -> bool:
    """Backfill the days [start, end] and their months; True when every run succeeded. Progress
    goes to `out` (standard error by default). `today` (default: the UTC date by the clock) bounds
    the range (the last complete day is yesterday) and is the Warehouse resource's today."""
    import dagster as dg

    from pipelines.assets import daily_tables, staged_billing, staged_events
    from pipelines.automation import FRESHNESS_CHECKS, range_tags
    from pipelines.definitions import ALL_ASSETS
    from pipelines.monthly import monthly_tables
    from pipelines.partitions import last_daily_key
    from pipelines.reconciliation import reconciliation_daily, reconciliation_tables
    from pipelines.resources import Warehouse

    warehouse = Warehouse(data_dir=str(layout.data_dir), config_path=str(settings.path), today=today.isoformat() if today else "")
    last_key = last_daily_key(warehouse.current_date())  # yesterday (UTC); None before the first day has ended
    if start > end:
        raise SystemExit(f"--start {start} is after --end {end}")
    if start < settings.start_date:
        raise SystemExit(f"--start {start} is before the first partition {settings.start_date} (pipeline.start_date in {settings.path})")
    if last_key is None or end > date.fromisoformat(last_key):
        raise SystemExit(f"--end {end} is after the last complete UTC day, {last_key or 'none yet'}")

    instance = dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else dg.DagsterInstance.ephemeral()
    resources = {"warehouse": warehouse}

    def materialize(selection, tags=None) -> bool:
        result = dg.materialize(
            [*ALL_ASSETS, *FRESHNESS_CHECKS],
            selection=selection,
            instance=instance,
            resources=resources,
            tags=tags,
            run_config=QUIET,
            raise_on_error=False,
        )
        if not result.success:
            _print_failures(result, out)
        return result.success

    out = out or sys.stderr
    chunks = month_chunks(start, end)
    progress = Progress(len(chunks) + 3, out)
    record = ResumeRecord(layout, settings, start, end)
    if record.redo:
        print(f"Inputs changed since the interrupted backfill: rebuilding {', '.join(record.redo)}", file=out)
    began = time.perf_counter()
    if not materialize([staged_billing, staged_events]):
        return False
    progress.step(f"staged landing files ({time.perf_counter() - began:.1f} s)")
    for first, last in chunks:
        period = months.period_key(first)
        if period in record.done:
            progress.step(f"daily {period}: built by the interrupted run, skipped")
            continue
        began = time.perf_counter()
        if not materialize([daily_tables, reconciliation_daily], range_tags(first.isoformat(), last.isoformat())):
            print(f"Stopped at {period}. Run the same command again to resume; finished months are kept.", file=out)
            return False
        record.mark(period)
        progress.step(f"daily {period} ({(last - first).days + 1} days, {time.perf_counter() - began:.1f} s)")
    began = time.perf_counter()
    first_period, last_period = months.period_key(start), months.period_key(end)
    if not materialize([monthly_tables, reconciliation_tables], range_tags(first_period, last_period)):
        print("Stopped at the monthly rollups. Run the same command again to resume.", file=out)
        return False
    progress.step(f"monthly {first_period}..{last_period} ({time.perf_counter() - began:.1f} s)")
    views = refresh_views(layout)
    record.remove()
    progress.step(f"DuckDB views: {', '.join(views)}")
    return True
