"""Keeping the recent past right: jobs, the nightly schedule, the landing sensor, the monthly
rollups after every daily run, and the freshness checks (warnings, never blocking).

- `nightly` (02:00 UTC): one range run of the daily tables over a trailing window ([schedule] in
  unitledger.toml): by default the current month so far plus the previous month until its invoice
  is final.
- `landing_changes`: compares the landing files with the fingerprints it saw last (its cursor) and
  re-materializes exactly the days those changes feed (unitledger/sources/changes.py), one range
  run per stretch of consecutive days. Its first look only remembers the files: history is the
  backfill's job.
- `monthly_after_daily`: when a run that built daily partitions succeeds, one run rebuilds the
  monthly rollups and the reconciliation of the months it touched, then the decision tables and the
  report (the `monthly` job): so the nightly run refreshes them too, after its days are built.
"""

import hashlib
import json
from datetime import date, timedelta, timezone

import dagster as dg

from pipelines.assets import daily_tables, staged_billing, staged_events
from pipelines.decisions import DECISION_ASSETS
from pipelines.monthly import monthly_tables
from pipelines.partitions import daily_partitions, last_daily_key, monthly_partitions
from pipelines.reconciliation import reconciliation_daily, reconciliation_parts, reconciliation_tables
from pipelines.resources import Warehouse
from unitledger import months
from unitledger.checks import freshness
from unitledger.config import Settings
from unitledger.sources import changes

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"

DAILY_ASSETS = [staged_billing, staged_events, daily_tables, reconciliation_daily]

daily_job = dg.define_asset_job(
    "daily",
    selection=dg.AssetSelection.assets(*DAILY_ASSETS),
    partitions_def=daily_partitions,
    description="Stage new landing files, then build every daily table for the selected days.",
)
monthly_job = dg.define_asset_job(
    "monthly",
    selection=dg.AssetSelection.assets(monthly_tables, reconciliation_parts, reconciliation_tables, *DECISION_ASSETS),
    partitions_def=monthly_partitions,
    description="Roll the selected months' daily per-feature tables up into the monthly tables; reconcile their billing "
    "periods; refresh the decision tables and the report (the window ending at the latest built day).",
)


reconciliation_job = dg.define_asset_job(
    "reconciliation",
    selection=dg.AssetSelection.assets(reconciliation_parts, reconciliation_tables),
    partitions_def=monthly_partitions,
    description="Reconcile the selected billing periods: their parts fanned out as steps (hash buckets of request ids, "
    "the rows without one), then added up, checked and published by one writer. Run it on any executor "
    "(docs/operations.md, \"Running on a cluster\").",
)


def range_tags(first: str, last: str) -> dict[str, str]:
    """Tags that make one run cover the partitions first..last (every asset has a single-run backfill policy)."""
    return {RANGE_START: first, RANGE_END: last}


# --- nightly ------------------------------------------------------------------------------------


def nightly_window(today: date, settings: Settings) -> tuple[date, date] | None:
    """The days the nightly run of `today` re-materializes, up to yesterday: the last
    `trailing_days`, or else the current month so far plus, while today is on or before
    `invoice_final_day`, the whole previous month (its billing is restated until its invoice is
    final). On the 1st, "so far" is nothing: the previous month is then always included."""
    yesterday = today - timedelta(days=1)
    if settings.nightly.trailing_days:
        start = today - timedelta(days=settings.nightly.trailing_days)
    else:
        start = months.month_start(today)
        if today.day <= settings.nightly.invoice_final_day:
            start = months.previous_month(start)
        start = min(start, months.month_start(yesterday))
    start = max(start, settings.start_date)
    return (start, yesterday) if start <= yesterday else None


@dg.schedule(
    name="nightly",
    cron_schedule="0 2 * * *",
    execution_timezone="UTC",
    job=daily_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Re-materialize the trailing window ([schedule] in unitledger.toml) as one run.",
)
def nightly(context: dg.ScheduleEvaluationContext, warehouse: Warehouse):
    today = context.scheduled_execution_time.astimezone(timezone.utc).date()
    window = nightly_window(today, warehouse.settings)
    if window is None:
        return dg.SkipReason(f"No day to build yet: the partitions start on {warehouse.settings.start_date}")
    first, last = (d.isoformat() for d in window)
    return dg.RunRequest(run_key=f"nightly-{today}", tags=range_tags(first, last))


# --- landing sensor -----------------------------------------------------------------------------


@dg.sensor(
    name="landing_changes",
    job=daily_job,
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Re-materialize exactly the days whose landing inputs changed (new, replaced or removed files).",
)
def landing_changes(context: dg.SensorEvaluationContext, warehouse: Warehouse):
    layout, settings = warehouse.layout, warehouse.settings
    files = changes.landing_files(layout, settings.telemetry)
    cursor = json.dumps(changes.fingerprints(files), sort_keys=True)
    if context.cursor is None:
        return dg.SensorResult(skip_reason="First look: landing files remembered; build history with a backfill", cursor=cursor)
    found = changes.compare(json.loads(context.cursor), files)
    if not found:
        return dg.SensorResult(skip_reason="No landing file changed")
    affected = changes.affected_days(layout, found, settings.bounds, settings.telemetry)
    for message in affected.unreadable:
        context.log.warning(f"Unreadable landing file (staging will fail on it): {message}")
    last_key = last_daily_key(warehouse.current_date())  # None before the first day has ended
    days = {d for d in affected.days if last_key and settings.start_date <= d <= date.fromisoformat(last_key)}
    context.log.info(f"{found.describe()}: days {months.describe(days) or 'none'}")
    digest = hashlib.sha256(cursor.encode()).hexdigest()[:12]
    requests = [
        dg.RunRequest(run_key=f"landing-{digest}-{a}-{b}", tags=range_tags(a.isoformat(), b.isoformat()))
        for a, b in months.ranges(days)
    ]
    if not requests:
        return dg.SensorResult(skip_reason=f"{found.describe()}: no existing daily partition affected", cursor=cursor)
    return dg.SensorResult(run_requests=requests, cursor=cursor)


# --- monthly rollups after daily runs -----------------------------------------------------------

DAILY_TABLE_KEYS = set(daily_tables.keys)
MONTHLY_KEYS = set(monthly_tables.keys)


def months_of_run(instance: dg.DagsterInstance, run_id: str) -> tuple[str, str] | None:
    """The billing periods (first, last) of the daily partitions a run materialized, or None."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    days = sorted({r.partition_key for r in records if r.asset_key in DAILY_TABLE_KEYS and r.partition_key})
    if not days:
        return None
    return months.period_key(date.fromisoformat(days[0])), months.period_key(date.fromisoformat(days[-1]))


@dg.run_status_sensor(
    name="monthly_after_daily",
    run_status=dg.DagsterRunStatus.SUCCESS,
    request_job=monthly_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="After a run that built daily partitions succeeds, rebuild the monthly rollups of its months, the decision tables and the report.",
)
def monthly_after_daily(context: dg.RunStatusSensorContext):
    run = context.dagster_run
    periods = months_of_run(context.instance, run.run_id)
    if periods is None:
        return dg.SkipReason(f"Run {run.run_id} built no daily partition")
    backfill_id = run.tags.get("dagster/backfill")
    backfill = context.instance.get_backfill(backfill_id) if backfill_id else None
    if backfill is not None and MONTHLY_KEYS & set(backfill.asset_selection or ()):
        return dg.SkipReason(f"Backfill {backfill_id} builds the monthly rollups itself")
    return dg.RunRequest(run_key=f"monthly-after-{run.run_id}", tags=range_tags(*periods))


# --- freshness checks (warnings) ----------------------------------------------------------------


@dg.asset_check(
    asset=dg.AssetKey("cost_per_success"),
    name="yesterday_built",
    description="Warns when yesterday (UTC) has no published daily partition.",
)
def yesterday_built(warehouse: Warehouse) -> dg.AssetCheckResult:
    yesterday = warehouse.current_date() - timedelta(days=1)
    missing = freshness.missing_days(warehouse.layout, "cost_per_success", [yesterday])
    return dg.AssetCheckResult(
        passed=not missing,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"{yesterday} is not built yet" if missing else f"{yesterday} is built",
    )


@dg.asset_check(
    asset=dg.AssetKey("cost_per_success"),
    name="label_coverage",
    description="Warns when a feature's label coverage in the latest closed week is below [freshness] label_coverage_floor.",
)
def label_coverage(warehouse: Warehouse) -> dg.AssetCheckResult:
    settings = warehouse.settings.freshness
    monday = freshness.closed_week(warehouse.current_date(), settings.label_grace_days)
    coverage = freshness.label_coverage(warehouse.layout, monday)
    low = coverage.filter(coverage["label_coverage"] < settings.label_coverage_floor)
    week = f"week of {monday}"
    if coverage.is_empty():
        description = f"{week}: no intents"
    elif low.is_empty():
        description = f"{week}: every feature at or above {settings.label_coverage_floor:.0%} labeled"
    else:
        shown = ", ".join(f"{r['feature_tag']} {r['label_coverage']:.0%}" for r in low.iter_rows(named=True))
        description = f"{week}: below {settings.label_coverage_floor:.0%} labeled: {shown}"
    return dg.AssetCheckResult(
        passed=low.is_empty(),
        severity=dg.AssetCheckSeverity.WARN,
        description=description,
        metadata={f"coverage_{r['feature_tag']}": round(r["label_coverage"], 4) for r in coverage.iter_rows(named=True)},
    )


FRESHNESS_CHECKS = [yesterday_built, label_coverage]
