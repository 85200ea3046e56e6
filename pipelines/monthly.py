"""Monthly rollups: cost_per_intent_monthly, cost_per_success_monthly and cost_breakdown_monthly, one
partition per billing period (YYYY-MM), built from the daily partitions of the month through a
partition mapping."""

import warnings

import dagster as dg

from pipelines.assets import report_step, table_spec
from pipelines.partitions import monthly_partitions
from pipelines.resources import Warehouse
from unitledger import months
from unitledger.checks import freshness
from unitledger.steps.monthly import MONTHLY_TABLES, build_monthly_tables
from unitledger.warehouse.views import refresh_views

# A month depends on its days; days before the start date or after yesterday do not exist yet
# (the current month is a partition while it runs). The parameter is marked beta; dagster is
# pinned and tests/test_monthly.py covers the mapping.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.BetaWarning)
    DAYS_OF_MONTH = dg.TimeWindowPartitionMapping(allow_nonexistent_upstream_partitions=True)

MONTHLY_SPECS = [
    table_spec(name, deps=[dg.AssetDep(daily, partition_mapping=DAYS_OF_MONTH)], group_name="monthly")
    for name, (_, daily, _) in MONTHLY_TABLES.items()
]
_CHECKS = [
    spec
    for s in MONTHLY_SPECS
    for spec in (
        dg.AssetCheckSpec("schema", asset=s.key, blocking=True, description=f"Pandera: {MONTHLY_TABLES[s.key.path[-1]][0].__name__}"),
        dg.AssetCheckSpec(
            "daily_coverage",
            asset=s.key,
            description="Warns when a day of the month (up to yesterday) has no daily partition: the rollup would miss it.",
        ),
    )
]


@dg.multi_asset(
    specs=MONTHLY_SPECS,
    check_specs=_CHECKS,
    partitions_def=monthly_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool="warehouse",
)
def monthly_tables(context: dg.AssetExecutionContext, warehouse: Warehouse):
    """Every monthly table for the run's months (one run may cover a range of months)."""
    window = context.partition_time_window
    first, last = window.start.date(), months.previous_month(window.end.date())
    context.log.info(f"Rolling up {months.period_key(first)}..{months.period_key(last)} from the daily tables")
    result = build_monthly_tables(warehouse.layout, first, last)
    specs = {spec.key.path[-1]: spec.key for spec in MONTHLY_SPECS}
    yield from report_step(result, specs)
    today = warehouse.current_date()
    for name, key in specs.items():
        daily = MONTHLY_TABLES[name][1]
        expected = [d for m in months.months(first, last) for d in freshness.expected_days(m, warehouse.settings.start_date, today)]
        gaps = freshness.missing_days(warehouse.layout, daily, expected)
        yield dg.AssetCheckResult(
            asset_key=key,
            check_name="daily_coverage",
            passed=not gaps,
            severity=dg.AssetCheckSeverity.WARN,
            description=f"{daily} has no partition for {months.describe(gaps)}" if gaps else f"every day up to yesterday has a {daily} partition",
            metadata={"missing_days": len(gaps)},
        )
    views = refresh_views(warehouse.layout)
    context.log.info(f"DuckDB views: {', '.join(views)}")
