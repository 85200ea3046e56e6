"""Decision tables and the report: unpartitioned assets over the window of [decisions] window_days
ending at the latest built day, computed from the daily tables' stored sums (never from requests),
in the `monthly` job that `monthly_after_daily` requests after every successful daily run (the
nightly one included), and in `unitledger materialize` after the monthly rollups."""

import dagster as dg
import polars as pl

from pipelines.assets import report_step, table_spec
from pipelines.resources import Warehouse
from unitledger.steps.decisions import DECISION_TABLES, NothingBuiltError, build_decision_tables
from unitledger.steps.report import build_report
from unitledger.warehouse.manifest import scan_table

_DEPS = {
    "break_even": ["cost_per_success"],
    "what_if": ["cost_per_success"],
    "money_breakdown": ["cost_breakdown"],
    "turn_costs": ["cost_breakdown"],
    "workflow_class_costs": ["cost_per_success"],
    "weighted_cost_per_success": ["workflow_class_costs"],
    "cost_per_success_trends": ["cost_per_success"],
    "version_regressions": ["cost_per_success"],
}
DECISION_SPECS = [table_spec(name, deps=_DEPS[name], group_name="decisions") for name in DECISION_TABLES]
_CHECKS = [
    dg.AssetCheckSpec("schema", asset=name, blocking=True, description=f"Pandera: {model.__name__}")
    for name, model in DECISION_TABLES.items()
] + [
    dg.AssetCheckSpec(
        "no_regression",
        asset="version_regressions",
        description="Warns (never blocks) when a feature's cost per success rose significantly after a model or prompt version change.",
    )
]


def regression_check(regressions: pl.DataFrame) -> dg.AssetCheckResult:
    """A warning listing each regression with its numbers (cost per success before and after, the
    95% interval of the rise, the samples); passes when there is none."""
    regressed = regressions.filter(pl.col("regressed")).sort("change_date", "feature_tag")
    metadata: dict = {"regressions": regressed.height, "changes_compared": regressions.height}
    lines = []
    for k, row in enumerate(regressed.iter_rows(named=True)):
        label = (
            f"{row['feature_tag']} ({row['billing_currency']}) {row['change']} change on {row['change_date']}: "
            f"{row['model_version_before']}/{row['prompt_version_before']} -> {row['model_version_after']}/{row['prompt_version_after']}"
        )
        lines.append(
            f"{label}: cost per success {row['cost_per_success_before']:.4f} -> {row['cost_per_success_after']:.4f} "
            f"(+{row['relative_change']:.1%}; rise 95% interval [{row['difference_ci95_low']:.4f}, {row['difference_ci95_high']:.4f}]; "
            f"{row['labeled_intents_before']} and {row['labeled_intents_after']} labeled intents)"
        )
        metadata[f"regression_{k + 1}"] = dg.MetadataValue.json(
            {key: (str(value) if value is not None and not isinstance(value, (int, float, str, bool)) else value) for key, value in row.items()}
        )
    return dg.AssetCheckResult(
        asset_key=dg.AssetKey("version_regressions"),
        check_name="no_regression",
        passed=regressed.is_empty(),
        severity=dg.AssetCheckSeverity.WARN,
        description="\n".join(lines) if lines else f"no significant rise in cost per success after {regressions.height} version change(s)",
        metadata=metadata,
    )


@dg.multi_asset(
    specs=DECISION_SPECS,
    check_specs=_CHECKS,
    # Unpartitioned, but selectable with the monthly rollups in a partition-range run.
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool="warehouse",
)
def decision_tables(context: dg.AssetExecutionContext, warehouse: Warehouse):
    """Every decision table for the [decisions] window ending at the latest built day, published
    together."""
    try:
        result = build_decision_tables(warehouse.layout, warehouse.settings)
    except NothingBuiltError as exc:
        raise dg.Failure(description=str(exc)) from exc
    context.log.info(f"Decision tables for {next(iter(result.tables.values()), {}).get('window', 'no window')}")
    yield from report_step(result, {spec.key.path[-1]: spec.key for spec in DECISION_SPECS})
    yield regression_check(scan_table(warehouse.layout, "version_regressions").collect())


REPORT_SPEC = dg.AssetSpec(
    "report",
    deps=[*DECISION_TABLES, "reconciliation"],
    group_name="decisions",
    kinds={"html"},
    description="The HTML report (warehouse/report.html): cost per success over time, the break-even per model pair, where "
    "the money goes, label coverage and reconciliation, with captions and the numbers beside each chart; self-contained, "
    "opens offline.",
)


@dg.multi_asset(specs=[REPORT_SPEC], backfill_policy=dg.BackfillPolicy.single_run(), pool="warehouse")
def report(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
    try:
        written = build_report(warehouse.layout, warehouse.settings)
    except NothingBuiltError as exc:
        raise dg.Failure(description=str(exc)) from exc
    context.log.info(f"Wrote {written.path} ({written.size / 2**20:.1f} MiB), window {written.window}")
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(written.path)),
            "window": str(written.window),
            "size_bytes": written.size,
            **{f"rows_{name}": n for name, n in written.rows.items()},
            **{f"seconds_{stage}": round(s, 3) for stage, s in written.timings.items()},
        }
    )


DECISION_ASSETS = [decision_tables, report]
