"""`unitledger materialize --start --end`: a backfill in month-sized Dagster runs, with a progress
bar, that resumes after a failure. It runs the same assets as the UI and the schedule, in-process:

1. one run stages the landing files (`staged_billing`, `staged_events`);
2. one run per calendar month of the range builds the daily tables for its days (`daily_tables`,
   `reconciliation_daily`);
3. one run rolls the months touched up into the monthly tables (`monthly_tables`) and reconciles
   their billing periods (`reconciliation_parts`, then `reconciliation_tables`);
4. one run refreshes the decision tables and the report (`decision_tables`, `report`), for the
   window ending at the latest built day;
5. the DuckDB views are refreshed.

Runs are recorded in the Dagster instance of the data root (`dagster_instance`), so they show in the
Dagster UI.

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
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from unitledger import months
from unitledger.config import Settings
from unitledger.layout import Layout
from unitledger.progress import Progress
from unitledger.sources import changes
from unitledger.warehouse.views import refresh_views

# Dagster's own log (every event, and each failure with its stack trace) would bury the progress
# bar: a failure is printed as one line naming the step and its error instead. The runs' full logs
# are in the Dagster UI (see dagster_instance).
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


def _print_failures(result, say: Callable[[str], None]) -> None:
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            error = event.step_failure_data.error
            # Dagster wraps what the step raised: show the step's own error.
            while error.cause is not None and (not error.message.strip() or error.cls_name == "DagsterExecutionStepExecutionError"):
                error = error.cause
            user = event.step_failure_data.user_failure_data
            say(f"FAILED {event.step_key}: {user.description if user and user.description else error.message.strip()}")


def _absolute_paths(config: object, home: Path) -> object:
    """A dagster.yaml section with its relative `base_dir`s made absolute under `home`: Dagster
    reads them relative to the working directory (`make ui` runs in the repo root)."""
    if isinstance(config, dict):
        return {
            k: str(home / v) if k == "base_dir" and isinstance(v, str) and not Path(v).is_absolute() else _absolute_paths(v, home)
            for k, v in config.items()
        }
    return config


def dagster_instance(layout: Layout):
    """The Dagster instance the CLI's runs are recorded in, so that they show in the Dagster UI:
    $DAGSTER_HOME's when it is set; else, when the data root's parent holds a dagster.yaml (./data
    beside the repo's dagster.yaml: the instance `make ui` opens), that one; else an in-memory
    instance (nothing recorded; the tests' data roots are such)."""
    import dagster as dg
    import yaml
    from dagster._core.instance.ref import InstanceRef

    if os.environ.get("DAGSTER_HOME"):
        return dg.DagsterInstance.get()
    home = layout.data_dir.parent
    config_file = home / "dagster.yaml"
    if not config_file.is_file():
        return dg.DagsterInstance.ephemeral()
    config = yaml.safe_load(config_file.read_text()) or {}
    overrides = {key: _absolute_paths(value, home) for key, value in config.items() if isinstance(value, dict)}
    return dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home), overrides=overrides))


def run(layout: Layout, settings: Settings, start: date, end: date, out: TextIO | None = None, today: date | None = None) -> bool:
    """Backfill the days [start, end], their months, the decision tables and the report; True when every run succeeded. Progress
    goes to `out` (standard error by default). `today` (default: the UTC date by the clock) bounds
    the range (the last complete day is yesterday) and is the Warehouse resource's today."""
    import dagster as dg

    from pipelines.assets import daily_tables, staged_billing, staged_events
    from pipelines.automation import FRESHNESS_CHECKS, range_tags
    from pipelines.decisions import DECISION_ASSETS
    from pipelines.definitions import ALL_ASSETS
    from pipelines.monthly import monthly_tables
    from pipelines.partitions import last_daily_key
    from pipelines.reconciliation import reconciliation_daily, reconciliation_parts, reconciliation_tables
    from pipelines.resources import Warehouse

    warehouse = Warehouse(data_dir=str(layout.data_dir), config_path=str(settings.path), today=today.isoformat() if today else "")
    last_key = last_daily_key(warehouse.current_date())  # yesterday (UTC); None before the first day has ended
    if start > end:
        raise SystemExit(f"--start {start} is after --end {end}")
    if start < settings.start_date:
        raise SystemExit(f"--start {start} is before the first partition {settings.start_date} (pipeline.start_date in {settings.path})")
    if last_key is None or end > date.fromisoformat(last_key):
        raise SystemExit(f"--end {end} is after the last complete UTC day, {last_key or 'none yet'}")

    resources = {"warehouse": warehouse}
    chunks = month_chunks(start, end)
    with Progress(len(chunks) + 4, "materialize", out or sys.stderr) as progress:
        progress.doing("opening the Dagster instance")
        instance = dagster_instance(layout)

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
                _print_failures(result, progress.note)
            return result.success

        record = ResumeRecord(layout, settings, start, end)
        if record.redo:
            progress.note(f"Inputs changed since the interrupted backfill: rebuilding {', '.join(record.redo)}")
        began = time.perf_counter()
        progress.doing("staging landing files")
        if not materialize([staged_billing, staged_events]):
            return False
        progress.step(f"staged landing files ({time.perf_counter() - began:.1f} s)")
        for first, last in chunks:
            period = months.period_key(first)
            if period in record.done:
                progress.step(f"daily {period}: built by the interrupted run, skipped")
                continue
            began = time.perf_counter()
            progress.doing(f"daily tables of {period}")
            if not materialize([daily_tables, reconciliation_daily], range_tags(first.isoformat(), last.isoformat())):
                progress.note(f"Stopped at {period}. Run the same command again to resume; finished months are kept.")
                return False
            record.mark(period)
            progress.step(f"daily {period} ({(last - first).days + 1} days, {time.perf_counter() - began:.1f} s)")
        began = time.perf_counter()
        first_period, last_period = months.period_key(start), months.period_key(end)
        progress.doing("monthly rollups and reconciliation")
        if not materialize([monthly_tables, reconciliation_parts, reconciliation_tables], range_tags(first_period, last_period)):
            progress.note("Stopped at the monthly rollups. Run the same command again to resume.")
            return False
        progress.step(f"monthly {first_period}..{last_period} ({time.perf_counter() - began:.1f} s)")
        began = time.perf_counter()
        progress.doing("decision tables and report")
        if not materialize(DECISION_ASSETS):
            progress.note("Stopped at the decision tables. Run the same command again to resume.")
            return False
        progress.step(f"decision tables and report {layout.report_path} ({time.perf_counter() - began:.1f} s)")
        views = refresh_views(layout)
        record.remove()
        progress.step(f"DuckDB views: {', '.join(views)}")
    return True
