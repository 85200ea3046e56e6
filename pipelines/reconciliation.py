"""Reconciliation assets: per billing period (monthly partitions) and per day (daily partitions),
thin wrappers around unitledger.steps.reconciliation.

A billing period is reconciled in parts (docs/reconciliation.md, "A month in parts"):
`reconciliation_parts` plans each month of its run and fans its parts out as dynamic steps (hash
buckets of request ids, and the rows without one), which the executor runs where it runs steps (the
multiprocess executor's processes, or Kubernetes jobs with k8s_job_executor: docs/operations.md);
`reconciliation_tables` is the one writer: it adds the parts up, checks and publishes."""

import functools
from datetime import date, timedelta

import dagster as dg

from pipelines.assets import input_failure, report_step, table_spec
from pipelines.monthly import DAYS_OF_MONTH
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
# request_costs: which requests allocated shares bill (the telemetry-only count leaves them out).
DAILY_SPECS = [table_spec(name, deps=[*_STAGED, "request_costs"], group_name="reconciliation") for name in step.DAILY_TABLES]


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


def _configured_periods(text: str) -> list:
    """The billing periods of `text`: "YYYY-MM" or "YYYY-MM..YYYY-MM"."""
    first, _, last = text.partition("..")
    try:
        periods = [date.fromisoformat(f"{key}-01") for key in (first, last or first)]
        if [months.period_key(p) for p in periods] != [first, last or first] or periods[0] > periods[1]:
            raise ValueError("not in order, or not YYYY-MM")
        return months.months(*periods)
    except ValueError as exc:
        raise dg.Failure(description=f"plan_reconciliation: months must be YYYY-MM or YYYY-MM..YYYY-MM, not {text!r} ({exc})") from exc


def _plan(context, warehouse: Warehouse, periods: list, buckets: int | None) -> list[step.MonthPlan]:
    """Plan each billing period of `periods` (steps.reconciliation.plan_month; `buckets`, or as many as
    its rows need), split its rows by bucket and save the plan beside its parts (prepare_parts)."""
    plans = []
    for period in periods:
        plan = step.plan_month(warehouse.layout, period, buckets)
        step.prepare_parts(warehouse.layout, warehouse.settings, plan, step.parts_folder(warehouse.layout, plan.key))
        context.log.info(f"{plan.key}: {plan.buckets} bucket(s) of request ids, {len(plan.days)} day(s) of rows without one")
        plans.append(plan)
    return plans


def _reconcile_part(warehouse: Warehouse, key: str, part: str) -> None:
    """Part `part` of billing period `key` (steps.reconciliation.reconcile_part), written beside its plan."""
    folder = step.parts_folder(warehouse.layout, key)
    try:
        step.reconcile_part(warehouse.layout, warehouse.settings, step.read_plan(folder), part, folder)
    except InputFileError as exc:
        raise input_failure(exc) from exc


@dg.op(
    ins={"staged": dg.In(dg.Nothing)},
    out=dg.DynamicOut(tuple),
    config_schema={"buckets": dg.Field(int, default_value=0, description="Hash buckets of request ids per month; 0: as many as its rows need.")},
)
def plan_reconciliation(context: dg.OpExecutionContext, warehouse: Warehouse):
    """Plan each billing period of the run's partitions (_plan; `buckets` from the op config when
    set) and yield one (period, part) per part: each becomes a step."""
    for plan in _plan(context, warehouse, _periods(context), context.op_config["buckets"] or None):
        for part in plan.parts():
            yield dg.DynamicOutput((plan.key, part), mapping_key=f"{plan.key.replace('-', '_')}_{part}")


@dg.op
def reconcile_reconciliation_part(context: dg.OpExecutionContext, warehouse: Warehouse, part: tuple) -> str:
    """One part of a billing period, written beside its plan."""
    _reconcile_part(warehouse, *part)
    return part[0]


@dg.op(out=dg.Out(dg.Nothing))
def reconciliation_parts_written(context: dg.OpExecutionContext, keys: list) -> None:
    context.log.info(f"{len(keys)} part(s) written for {', '.join(sorted(set(keys)))}")


@dg.graph_asset(
    partitions_def=monthly_partitions,
    # A range of months is one run whose plan fans out the parts of every month in it: they run in
    # parallel as it is. (multi_run here would make Dagster apply the smallest max_partitions_per_run
    # to every asset of the monthly job, splitting the rollups and decision tables too.)
    backfill_policy=dg.BackfillPolicy.single_run(),
    ins={
        **{name: dg.AssetIn(dagster_type=dg.Nothing) for name in _STAGED},
        "request_costs": dg.AssetIn(dagster_type=dg.Nothing, partition_mapping=DAYS_OF_MONTH),
    },
    group_name="reconciliation",
    description="The parts of each billing period's reconciliation (kept under <data root>/.parts/): hash buckets "
    "of request ids and the rows without one, each a step of its own; reconciliation_tables adds them up.",
)
def reconciliation_parts(staged_billing, staged_events, request_costs):
    parts = plan_reconciliation(staged=[staged_billing, staged_events, request_costs])
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
    keys = [months.period_key(period) for period in _periods(context)]
    result = _publish(context, warehouse, keys)
    yield from report_step(result, {spec.key.path[-1]: spec.key for spec in MONTHLY_SPECS})
    yield from _warnings(_status_checks(warehouse, keys))
    context.log.info(f"DuckDB views: {', '.join(refresh_views(warehouse.layout))}")


def _publish(context, warehouse: Warehouse, keys: list[str]):
    """steps.reconciliation.publish_reconciliation of billing periods `keys`, from their parts."""
    layout = warehouse.layout
    plans = [step.read_plan(step.parts_folder(layout, key)) for key in keys]
    context.log.info(f"Reconciling billing periods {keys[0]}..{keys[-1]}")
    try:
        return step.publish_reconciliation(layout, warehouse.settings, plans, [step.parts_folder(layout, key) for key in keys])
    except InputFileError as exc:
        raise input_failure(exc) from exc


def _status_checks(warehouse: Warehouse, keys: list[str]) -> list[tuple[str, CheckOutcome]]:
    return [
        ("reconciliation", status_check(scan_table(warehouse.layout, "reconciliation", keys))),
        ("token_reconciliation", token_check(scan_table(warehouse.layout, "token_reconciliation", keys))),
    ]


# --- the same steps without partitions or dynamic outputs, for dagster-dask ---------------------------
#
# dagster-dask 0.29.27 cannot run the reconciliation job: it fails on partitioned runs and on steps
# in a pool, and it never runs the steps of a dynamic output (it submits the plan's steps as known
# before the run: the mapped parts are skipped and the run still succeeds; dagster issue 9785).
# reconciliation_months_job fans the parts out statically instead: a fixed number of buckets, a
# step per part, the billing periods in the run config, the same step functions and the one writer.


@functools.cache
def _plan_months(buckets: int) -> dg.OpDefinition:
    @dg.op(
        name=f"plan_reconciliation_{buckets}_buckets",
        config_schema={"months": dg.Field(str, description="The billing periods: YYYY-MM or YYYY-MM..YYYY-MM.")},
    )
    def plan_months(context: dg.OpExecutionContext, warehouse: Warehouse) -> list:
        """Plan the configured billing periods in `buckets` buckets each (_plan): their keys."""
        return [plan.key for plan in _plan(context, warehouse, _configured_periods(context.op_config["months"]), buckets)]

    return plan_months


@functools.cache
def _reconcile_static_part(part: str) -> dg.OpDefinition:
    @dg.op(name=f"reconcile_{part}", out=dg.Out(dg.Nothing))
    def reconcile(context: dg.OpExecutionContext, warehouse: Warehouse, keys: list) -> None:
        """Part `part` of each planned billing period."""
        for key in keys:
            _reconcile_part(warehouse, key, part)

    return reconcile


# After every part: a fan-in of Nothing (dagster-dask hands a fan-in of values over empty).
@dg.op(ins={"keys": dg.In(list), "written": dg.In(dg.Nothing)})
def publish_reconciliation_months(context: dg.OpExecutionContext, warehouse: Warehouse, keys: list):
    """The one writer of reconciliation_months_job: reconciliation_tables' publication (_publish)
    of the planned billing periods `keys`, once every part is written, reported as materializations
    of those tables' partitions; a failed blocking check fails the step and nothing is published."""
    result = _publish(context, warehouse, keys)
    if not result.passed:
        raise dg.Failure(description="Blocking checks failed; nothing was published:\n" + "\n".join(result.failures()))
    for table, meta in result.tables.items():
        for key in keys:
            yield dg.AssetMaterialization(table, partition=key, metadata={"billing_periods": meta["billing_periods"]})
    for table, outcome in _status_checks(warehouse, keys):
        (context.log.info if outcome.passed else context.log.warning)(f"{table} {outcome.name}: {outcome.description}")
    context.log.info(f"DuckDB views: {', '.join(refresh_views(warehouse.layout))}")
    yield dg.Output(keys)


def reconciliation_months_job(buckets: int, name: str = "reconciliation_months") -> dg.JobDefinition:
    """The reconciliation job's steps for billing periods given in the run config
    (`ops: {plan_reconciliation_<buckets>_buckets: {config: {months: 2026-02..2026-03}}}`), each month
    in `buckets` buckets, a step per part: for executors without partitions or dynamic outputs."""

    @dg.job(
        name=name,
        description=f"Reconcile the billing periods of the run config in {buckets} buckets each, a step per part, "
        "then publish with one writer: the reconciliation job without partitions or dynamic outputs, for "
        "dagster-dask (docs/operations.md, \"Running on a cluster\").",
    )
    def reconcile_months():
        keys = _plan_months(buckets)()
        publish_reconciliation_months(keys=keys, written=[_reconcile_static_part(part)(keys) for part in step.part_names(buckets)])

    return reconcile_months


reconciliation_months = reconciliation_months_job(8)


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
