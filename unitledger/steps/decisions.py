"""The decision step: break-even (actual and what-if), where the money goes, the multi-turn tax,
weighted cost per successful task, trends and version regressions for the window of days ending
at the latest built day, from the published per-day tables' stored sums (cost_per_success,
cost_breakdown): never from requests, so its cost follows the per-day tables' rows, which do not
grow with traffic. The tables are unpartitioned: every run replaces each as a whole, all in one
publication. The report (steps/report.py) computes the same frames with the same function."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import polars as pl

from schemas.decisions import (
    BreakEven,
    CostPerSuccessTrend,
    MoneyBreakdown,
    TurnCosts,
    VersionRegressions,
    WeightedCostPerSuccess,
    WhatIf,
    WorkflowClassCosts,
)
from unitledger import months
from unitledger.checks.validation import validate
from unitledger.config import Settings
from unitledger.layout import Layout
from unitledger.model import decisions
from unitledger.steps.result import StepResult
from unitledger.warehouse.manifest import Manifest, read_manifest
from unitledger.warehouse.publish import Publication, clear_scratch, scratch_folder

DECISION_TABLES = {
    "break_even": BreakEven,
    "what_if": WhatIf,
    "money_breakdown": MoneyBreakdown,
    "turn_costs": TurnCosts,
    "workflow_class_costs": WorkflowClassCosts,
    "weighted_cost_per_success": WeightedCostPerSuccess,
    "cost_per_success_trends": CostPerSuccessTrend,
    "version_regressions": VersionRegressions,
}


class NothingBuiltError(Exception):
    """No day of cost_per_success is published yet: there is no window to decide on."""


@dataclass(frozen=True)
class Window:
    """The days [first, last] (UTC, both included) a decision covers."""

    first: date
    last: date

    @property
    def end(self) -> date:
        """The day after the last: the decision functions take [first, end)."""
        return self.last + timedelta(days=1)

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1

    def __str__(self) -> str:
        return f"{self.first}..{self.last} ({self.days} days)"


def latest_window(manifest: Manifest, days: int) -> Window:
    """The `days` days ending at the latest published day of cost_per_success, starting no earlier
    than its first published day (a window never claims days nothing was built for)."""
    built = manifest.partitions("cost_per_success")
    if not built:
        raise NothingBuiltError("no day is built yet: run `unitledger materialize` first")
    first, last = date.fromisoformat(built[0]), date.fromisoformat(built[-1])
    return Window(max(first, last - timedelta(days=days - 1)), last)


def _day_keys(first: date, last: date) -> list[str]:
    return [d.isoformat() for d in months.days(first, last)]


@dataclass
class Decisions:
    """The decision frames of one window (collected: they are small), plus the label coverage the
    report shows beside them."""

    window: Window
    tables: dict[str, pl.DataFrame]
    label_coverage: pl.DataFrame


def compute_decisions(
    layout: Layout,
    settings: Settings,
    window_days: int | None = None,
    scenario: decisions.Scenario | None = None,
    manifest: Manifest | None = None,
) -> Decisions:
    """Every decision frame for the `window_days` (default [decisions] window_days) ending at the
    latest built day, read from one version of the warehouse. `scenario`: the what-if (default
    [decisions.what_if]; none configured: an empty what_if table)."""
    config = settings.decisions
    manifest = manifest or read_manifest(layout)
    window = latest_window(manifest, window_days or config.window_days)
    first, end = window.first, window.end
    # Trends need a full 30-day window behind the first day, regressions window_days behind a change.
    lookback = max(max(decisions.TREND_WINDOWS) - 1, config.regression_window_days)
    success = manifest.scan(layout, "cost_per_success", _day_keys(first - timedelta(days=lookback), window.last))
    breakdown = manifest.scan(layout, "cost_breakdown", _day_keys(first, window.last))
    labor = settings.labor_table()
    if scenario is None and not config.what_if.is_empty:
        scenario = decisions.Scenario.from_config(config.what_if)
    if scenario is None:
        what_if = pl.DataFrame(schema=decisions.break_even(success, labor, first, end).collect_schema()).lazy()
    else:
        what_if = decisions.what_if(success, labor, first, end, scenario).filter(pl.col("scenario") != decisions.ACTUAL)
    per_class = decisions.workflow_class_costs(success, first, end, config.classes_table(), config.traffic_weights)
    frames = {
        "break_even": decisions.break_even(success, labor, first, end),
        "what_if": what_if,
        "money_breakdown": decisions.money_breakdown(breakdown, first, end),
        "turn_costs": decisions.turn_costs(breakdown, first, end),
        "workflow_class_costs": per_class,
        "weighted_cost_per_success": decisions.weighted_cost_per_success(per_class),
        "cost_per_success_trends": decisions.cost_per_success_trends(success, first, end),
        "version_regressions": decisions.version_regressions(success, first, end, config.regression_window_days),
        "label_coverage": decisions.label_coverage(success, first, end),
    }
    collected = dict(zip(frames, pl.collect_all(list(frames.values()))))
    order = {  # a stable row order for readers and the report
        "break_even": ["feature_tag", "billing_currency", "model_a", "model_b"],
        "what_if": ["feature_tag", "billing_currency", "model_a", "model_b"],
        "money_breakdown": ["feature_tag", "billing_currency", "model_version"],
        "turn_costs": ["feature_tag", "billing_currency", "model_version", "turns_bucket"],
        "workflow_class_costs": ["billing_currency", "model_version", "workflow_class"],
        "weighted_cost_per_success": ["billing_currency", "model_version"],
    }
    for name, keys in order.items():
        collected[name] = collected[name].sort(keys, nulls_last=True)
    coverage = collected.pop("label_coverage")
    return Decisions(window, collected, coverage)


def build_decision_tables(layout: Layout, settings: Settings, window_days: int | None = None) -> StepResult:
    """Compute the decision tables for the configured window ending at the latest built day,
    validate them, and publish them together (each replaced as a whole) only if every check
    passed."""
    result = StepResult()
    clear_scratch(layout.tmp, layout.warehouse)
    with result.timed("compute"):
        computed = compute_decisions(layout, settings, window_days)
    with result.timed("validate"):
        for name, model in DECISION_TABLES.items():
            result.checks[name] = [validate(model, computed.tables[name].lazy())]
    if not result.passed:
        return result
    with result.timed("write"), scratch_folder(layout.tmp, "decisions") as folder:
        publication = Publication(layout)
        for name in DECISION_TABLES:
            path = folder / f"{name}.parquet"
            computed.tables[name].write_parquet(path)
            rows = sum(publication.replace(name, [path]).values())
            result.tables[name] = {
                "window": str(computed.window),
                "window_start": computed.window.first.isoformat(),
                "window_end": computed.window.last.isoformat(),
                "dagster/row_count": rows,
            }
        publication.commit()
    return result


def compare_models(
    layout: Layout, settings: Settings, feature: str, window_days: int | None = None, scenario: decisions.Scenario | None = None
) -> tuple[Window, pl.DataFrame]:
    """The break-even rows of `feature` over the window ending at the latest built day (`unitledger
    compare`): the actual pairs, then, with a `scenario`, the same pairs under it (labelled with
    its name). Read-only."""
    manifest = read_manifest(layout)
    window = latest_window(manifest, window_days or settings.decisions.window_days)
    success = manifest.scan(layout, "cost_per_success", _day_keys(window.first, window.last))
    known = success.select(pl.col("feature_tag").unique().sort()).collect().to_series().to_list()
    if feature not in known:
        raise UnknownFeatureError(f"no intents of feature {feature!r} in {window}; features: {', '.join(known) or 'none'}")
    ours = success.filter(pl.col("feature_tag") == feature)
    labor = settings.labor_table()
    if scenario is None:
        rows = decisions.break_even(ours, labor, window.first, window.end)
    else:
        rows = decisions.what_if(ours, labor, window.first, window.end, scenario)
    order = pl.col("scenario") != decisions.ACTUAL
    return window, rows.collect().sort("billing_currency", "model_a", "model_b", order, nulls_last=True)


class UnknownFeatureError(Exception):
    """`unitledger compare --feature` names a feature without intents in the window."""
