"""Monthly rollups: cost_per_intent_monthly, cost_per_success_monthly and cost_breakdown_monthly, one
partition per billing period (YYYY-MM), built from the daily partitions of the month through a
partition mapping; with the allocation of token rows billed for longer than a day
(allocation_pools_monthly, allocated_costs_monthly) and the opt-in fully_loaded_costs_monthly."""

import warnings

import dagster as dg

from pipelines.assets import report_step, table_spec
from pipelines.partitions import monthly_partitions
from pipelines.resources import Warehouse
from unitledger import months
from unitledger.checks import freshness
from unitledger.steps.monthly import ALLOCATION_TABLES, MONTH_SHARE_TABLES, MONTHLY_TABLES, build_monthly_tables
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
# Token rows billed for a charge period longer than a day, allocated over their period's calls.
ALLOCATION_SPECS = [table_spec(name, deps=["staged_billing", "staged_events"], group_name="monthly") for name in ALLOCATION_TABLES]
_CHECKS = [
    *[
        dg.AssetCheckSpec("schema", asset=s.key, blocking=True, description=f"Pandera: {ALLOCATION_TABLES[s.key.path[-1]].__name__}")
        for s in ALLOCATION_SPECS
    ],
    dg.AssetCheckSpec("allocation_conservation", asset="allocation_pools_monthly", blocking=True, description="Per currency, the cost the pools allocated equals the split rows of the features, exactly."),
    dg.AssetCheckSpec("shared_cost_spread", asset="fully_loaded_costs_monthly", blocking=True, description="Per account, currency and month, the features' shares sum to the shared cost exactly (when [allocation] fully_loaded is on)."),
    dg.AssetCheckSpec("allocated_costs_sum_back", asset="allocation_pools_monthly", blocking=True, description="Every allocated origin row's split rows (allocated_costs_monthly) sum back to it for BilledCost, EffectiveCost and ListCost, exactly."),
]
_CHECKS += [
    dg.AssetCheckSpec(
        "month_shares_included", asset=name, blocking=True,
        description="Per month and currency, token_cost = the daily rows' + the month-long token rows' shares of the month's intents (labeled ones for cost_per_success); the shares added + those left out (reason named) = the pools' allocated cost, exactly.",
    )  # fmt: skip
    for name in MONTH_SHARE_TABLES
]
_CHECKS += [
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
    specs=[*MONTHLY_SPECS, *ALLOCATION_SPECS],
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
    result = build_monthly_tables(warehouse.layout, first, last, warehouse.settings)
    yield from report_step(result, {spec.key.path[-1]: spec.key for spec in [*MONTHLY_SPECS, *ALLOCATION_SPECS]})
    specs = {spec.key.path[-1]: spec.key for spec in MONTHLY_SPECS}
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
