"""Reconciliation assets: per billing period (monthly partitions) and per day (daily partitions),
thin wrappers around unitledger.steps.reconciliation."""

from datetime import timedelta

import dagster as dg

from pipelines.assets import input_failure, report_step, table_spec
from pipelines.partitions import daily_partitions, monthly_partitions
from pipelines.resources import Warehouse
from unitledger import months
from unitledger.checks.reconciliation import status_check, token_check
from unitledger.checks.validation import CheckOutcome
from unitledger.sources.files import InputFileError
from unitledger.steps import reconciliation as step
from unitledger.warehouse.manifest import scan_table
from unitledger.warehouse.views import refresh_views

_STAGED = ["staged_billing", "staged_events"]

MONTHLY_SPECS = [table_spec(name, deps=_STAGED, group_name="reconciliation") for name in step.MONTHLY_TABLES]
DAILY_SPECS = [table_spec(name, deps=_STAGED, group_name="reconciliation") for name in step.DAILY_TABLES]


def _blocking(asset: str, name: str, description: str) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(name, asset=asset, blocking=True, description=description)


def _warning(asset: str, name: str, description: str) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(name, asset=asset, description=description)


_DELTA = "Every row's parts add up to its billed and effective totals exactly (delta = 0)."
_CONSERVATION = "Per period and currency, totals and row counts equal the current FOCUS rows (staged + quarantined)."
_STATUS = "Warns when a row's status is fail (thresholds: [reconciliation] in unitledger.toml)."

MONTHLY_CHECKS = [
    *[_blocking(name, "schema", f"Pandera: {model.__name__}") for name, model in step.MONTHLY_TABLES.items()],
    _blocking("reconciliation", "delta_zero", _DELTA),
    _blocking("reconciliation", "conservation", _CONSERVATION),
    _blocking("reconciliation", "quarantine_placed", "Every quarantined FOCUS row has a billing period to be reconciled in."),
    _warning("reconciliation", "status", _STATUS),
    _warning("token_reconciliation", "tokens_match", "Warns when billed token quantities differ from telemetry's (see token_mismatches)."),
]
DAILY_CHECKS = [
    _blocking("reconciliation_daily", "schema", "Pandera: ReconciliationDaily"),
    _blocking("reconciliation_daily", "delta_zero", _DELTA),
    _blocking("reconciliation_daily", "conservation", _CONSERVATION),
    _warning("reconciliation_daily", "status", _STATUS),
]


def _warnings(outcomes: list[tuple[str, CheckOutcome]]):
    for table, c in outcomes:
        yield dg.AssetCheckResult(
            asset_key=dg.AssetKey(table),
            check_name=c.name,
            passed=c.passed,
            severity=dg.AssetCheckSeverity.WARN,
            description=c.description,
            metadata=c.metadata,
        )


@dg.multi_asset(
    specs=MONTHLY_SPECS,
    check_specs=MONTHLY_CHECKS,
    partitions_def=monthly_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool="warehouse",
)
def reconciliation_tables(context: dg.AssetExecutionContext, warehouse: Warehouse):
    """The reconciliation tables of the run's billing periods (one run may cover several)."""
    window = context.partition_time_window
    first, last = window.start.date(), months.previous_month(window.end.date())
    keys = [months.period_key(m) for m in months.months(first, last)]
    context.log.info(f"Reconciling billing periods {keys[0]}..{keys[-1]}")
    try:
        result = step.build_reconciliation(warehouse.layout, warehouse.settings, first, last)
    except InputFileError as exc:
        raise input_failure(exc) from exc
    yield from report_step(result, {spec.key.path[-1]: spec.key for spec in MONTHLY_SPECS})
    layout = warehouse.layout
    yield from _warnings(
        [
            ("reconciliation", status_check(scan_table(layout, "reconciliation", keys))),
            ("token_reconciliation", token_check(scan_table(layout, "token_reconciliation", keys))),
        ]
    )
    context.log.info(f"DuckDB views: {', '.join(refresh_views(layout))}")


@dg.multi_asset(
    specs=DAILY_SPECS,
    check_specs=DAILY_CHECKS,
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool="warehouse",
)
def reconciliation_daily(context: dg.AssetExecutionContext, warehouse: Warehouse):
    """The reconciliation's figures for the run's days (one run may cover a range of days)."""
    window = context.partition_time_window
    start, end_inclusive = window.start.date(), window.end.date() - timedelta(days=1)
    result = step.build_reconciliation_daily(warehouse.layout, warehouse.settings, start, end_inclusive)
    yield from report_step(result, {spec.key.path[-1]: spec.key for spec in DAILY_SPECS})
    keys = [d.isoformat() for d in months.days(start, end_inclusive)]
    yield from _warnings([("reconciliation_daily", status_check(scan_table(warehouse.layout, "reconciliation_daily", keys)))])
    context.log.info(f"DuckDB views: {', '.join(refresh_views(warehouse.layout))}")


RECONCILIATION_ASSETS = [reconciliation_tables, reconciliation_daily]
