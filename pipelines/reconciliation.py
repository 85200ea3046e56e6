"""Reconciliation assets: per billing period (monthly partitions) and per day (daily partitions),
thin wrappers around unitledger.steps.reconciliation.

A billing period is reconciled in parts (docs/reconciliation.md, "A month in parts"):
`reconciliation_parts` plans each month of its run and fans its parts out as dynamic steps (hash
buckets of request ids, and the rows without one), which the executor runs where it runs steps (the
multiprocess executor's processes, or Kubernetes jobs with k8s_job_executor: docs/operations.md);
`reconciliation_tables` is the one writer: it adds the parts up, checks and publishes."""

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

MONTHLY_SPECS = [table_spec(name, deps=["reconciliation_parts"], group_name="reconciliation") for name in step.MONTHLY_TABLES]
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


def _periods(context) -> list:
    """The billing periods (first days) of the run's partitions (one run may cover several)."""
    window = context.partition_time_window
    return months.months(window.start.date(), months.previous_month(window.end.date()))


@dg.op(
    ins={"staged": dg.In(dg.Nothing)},
    out=dg.DynamicOut(tuple),
    config_schema={"buckets": dg.Field(int, default_value=0, description="Hash buckets of request ids per month; 0: as many as its rows need.")},
)
def plan_reconciliation(context: dg.OpExecutionContext, warehouse: Warehouse):
    """Plan each billing period of the run (steps.reconciliation.plan_month; `buckets` from the
    op config when set, else from its rows), split its rows by bucket and save the plan beside its
    parts (prepare_parts), and yield one (period, part) per part: each becomes a step."""
    layout = warehouse.layout
    buckets = context.op_config["buckets"] or None
    for period in _periods(context):
        plan = step.plan_month(layout, period, buckets)
        step.prepare_parts(layout, warehouse.settings, plan, step.parts_folder(layout, plan.key))
        context.log.info(f"{plan.key}: {plan.buckets} bucket(s) of request ids, {len(plan.days)} day(s) of rows without one")
        for part in plan.parts():
            yield dg.DynamicOutput((plan.key, part), mapping_key=f"{plan.key.replace('-', '_')}_{part}")


@dg.op
def reconcile_reconciliation_part(context: dg.OpExecutionContext, warehouse: Warehouse, part: tuple) -> str:
    """One part of a billing period (steps.reconciliation.reconcile_part), written beside its plan."""
    key, name = part
    folder = step.parts_folder(warehouse.layout, key)
    try:
        step.reconcile_part(warehouse.layout, warehouse.settings, step.read_plan(folder), name, folder)
    except InputFileError as exc:
        raise input_failure(exc) from exc
    return key


@dg.op(out=dg.Out(dg.Nothing))
def reconciliation_parts_written(context: dg.OpExecutionContext, keys: list) -> None:
    context.log.info(f"{len(keys)} part(s) written for {', '.join(sorted(set(keys)))}")


@dg.graph_asset(
    partitions_def=monthly_partitions,
    # A range of months is one run whose plan fans out the parts of every month in it: they run in
    # parallel as it is. (multi_run here would make Dagster apply the smallest max_partitions_per_run
    # to every asset of the monthly job, splitting the rollups and decision tables too.)
    backfill_policy=dg.BackfillPolicy.single_run(),
    ins={name: dg.AssetIn(dagster_type=dg.Nothing) for name in _STAGED},
    group_name="reconciliation",
    description="The parts of each billing period's reconciliation (kept under <data root>/.parts/): hash buckets "
    "of request ids and the rows without one, each a step of its own; reconciliation_tables adds them up.",
)
def reconciliation_parts(staged_billing, staged_events):
    parts = plan_reconciliation(staged=[staged_billing, staged_events])
    return reconciliation_parts_written(parts.map(reconcile_reconciliation_part).collect())


@dg.multi_asset(
    specs=MONTHLY_SPECS,
    check_specs=MONTHLY_CHECKS,
    partitions_def=monthly_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool="warehouse",
)
def reconciliation_tables(context: dg.AssetExecutionContext, warehouse: Warehouse):
    """The reconciliation tables of the run's billing periods (one run may cover several), added
    up from reconciliation_parts: the one writer."""
    layout = warehouse.layout
    plans = [step.read_plan(step.parts_folder(layout, months.period_key(period))) for period in _periods(context)]
    keys = [plan.key for plan in plans]
    context.log.info(f"Reconciling billing periods {keys[0]}..{keys[-1]}")
    try:
        result = step.publish_reconciliation(layout, warehouse.settings, plans, [step.parts_folder(layout, key) for key in keys])
    except InputFileError as exc:
        raise input_failure(exc) from exc
    yield from report_step(result, {spec.key.path[-1]: spec.key for spec in MONTHLY_SPECS})
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


RECONCILIATION_ASSETS = [reconciliation_parts, reconciliation_tables, reconciliation_daily]
