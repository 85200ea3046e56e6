"""Decisions from the stored per-day sums: break-even per model pair (actual and what-if), where the
money goes, weighted cost per successful task, trends and version regressions.

Pure transforms: Polars LazyFrames in and out, no I/O. Every window is computed by summing the
numerators, denominators and moments of the daily tables (cost_per_success, cost_breakdown) and
recomputing ratios from the sums, never by averaging ratios or rescanning requests. Money is an
exact decimal where it is a sum; ratios are Float64 computed from exact sums. Windows are the
dates [start, end), as everywhere in unitledger; the tables say their first and last day.

Statistics, all at 95% (z = 1.96):
- a failure rate p = F / n: Wilson score interval;
- a difference of failure rates: Newcombe's hybrid score interval (from the two Wilson intervals);
- cost per success R = ΣX / ΣY: the delta-method interval of features.cost_per_success_ratios
  (X an intent's total cost, Y = 1 on success; intents are the sampling unit);
- TCO per intent = ΣX / n, the mean of X: variance (ΣX² − (ΣX)²/n) / (n (n − 1));
- differences between two models or two versions: independent samples, variances added.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal

import polars as pl

from schemas.decisions import (
    BreakEven,
    CostBreakdown,
    CostPerSuccessTrend,
    LabelCoverage,
    MoneyBreakdown,
    TurnCosts,
    VersionRegressions,
    WeightedCostPerSuccess,
    WorkflowClassCosts,
)
from schemas.types import MONEY, TYPED_COSTS
from unitledger.model.features import SAMPLE_OK_MIN_LABELED, Z95, cost_per_success_ratios
from unitledger.model.intents import attach_labor
from unitledger.model.requests import TOOL_COLUMN, in_dates, sum_where

ACTUAL = "actual"
TREND_WINDOWS = (1, 7, 30)
# request_costs' per-token-type cost columns (EffectiveCost split by token type): a call has a
# per-token-type cost when all four are set.
TYPED_COSTS = ("input_cost", "output_cost", "cache_read_cost", "cache_write_cost")
# Optional request_costs column: the call sends tool results back to the model.
TOOL_COLUMN = "after_tool_call"
# The sums and moments of cost_per_success that windows add up.
SUCCESS_SUMS = (
    "intents", "labeled_intents", "successes", "failures", "escalations",
    "token_cost", "labor_cost", "total_cost", "success_total_cost", "total_cost_sq",
)
_FEATURE_MODEL = ["feature_tag", "model_version", "billing_currency"]
# One cost_breakdown row per: the per-feature grain and the turns bucket.
BREAKDOWN_GRAIN = ["date", "feature_tag", "model_version", "prompt_version", "billing_currency", "turns_bucket"]


def _columns(model) -> list[str]:
    return list(model.to_schema().columns)


def _window(start: date, end: date) -> list[pl.Expr]:
    return [pl.lit(start).alias("window_start"), pl.lit(end - timedelta(days=1)).alias("window_end")]


def _billed_in(rows: pl.LazyFrame, start: date, end: date) -> pl.LazyFrame:
    """Daily rows of [start, end) with a currency: unbilled intents' cost is unknown, not zero."""
    return rows.filter(in_dates("date", start, end) & pl.col("billing_currency").is_not_null())


def _sum_known(columns: Sequence[str]) -> list[pl.Expr]:
    # A sum stays null where every input is null (a component unknown on every day).
    return [pl.when(pl.col(c).is_not_null().any()).then(pl.col(c).sum()).alias(c) for c in columns]


def _ratio(numerator: str | pl.Expr, denominator: str | pl.Expr) -> pl.Expr:
    num = pl.col(numerator) if isinstance(numerator, str) else numerator
    den = pl.col(denominator) if isinstance(denominator, str) else denominator
    return pl.when(den != 0).then(num.cast(pl.Float64) / den.cast(pl.Float64))


def _half_width(ci_high: str, estimate: str) -> pl.Expr:
    """Standard error recovered from a 95% interval's half width."""
    return (pl.col(ci_high) - pl.col(estimate)) / Z95


# --------------------------------------------------------------------------------------------
# Where the money goes
# --------------------------------------------------------------------------------------------


def turns_bucket(turns: pl.Expr) -> pl.Expr:
    """1, 2-3, 4-5 or 6+ turns (a session of retries only, 0 turns, counts as 1)."""
    return (
        pl.when(turns <= 1).then(pl.lit("1"))
        .when(turns <= 3).then(pl.lit("2-3"))
        .when(turns <= 5).then(pl.lit("4-5"))
        .otherwise(pl.lit("6+"))
    )


def cost_breakdown(requests: pl.LazyFrame, intents: pl.LazyFrame) -> pl.LazyFrame:
    """schemas.CostBreakdown: the daily table of where the money goes.

    `requests`: request_costs rows holding every call `intents` summed (the daily step's intent
    calls, with `intent_date`; without it a session is one intent); `intents`: intent_costs rows.
    Each intent's calls summed into components (intent_components), then the intents to the grain
    (breakdown_of_intents)."""
    names = requests.collect_schema().names()
    # An intent is a session's calls from its first call's date (pipeline.session_days): with the
    # calls' intent_date (model.intents.intent_calls) a session calling again later is another intent.
    key = ["session_id", "intent_date"] if "intent_date" in names else ["session_id"]
    if len(key) == 2:
        intents = intents.with_columns(intent_date=pl.col("date"))
    sessions = requests.group_by(key).agg(intent_components(names))
    return breakdown_of_intents(intents.join(sessions, on=key, how="left"))


def intent_components(names: Sequence[str]) -> list[pl.Expr]:
    """Aggregations of one intent's calls (request_costs rows with the columns `names`, grouped by
    intent) into the components cost_breakdown sums. Each call is in one component, in this order:
    its cache-write cost (when request_costs carries per-token-type cost: TYPED_COSTS) in
    cache_write_cost, whatever call made it, since the cache it fills serves later calls; the rest
    of a call with attempt >= 2 or status error in retry_cost; of a call sending tool results back
    (request_costs column after_tool_call, when present and not null: a session none of whose
    calls says, having no trace, leaves tool_cost null) in tool_cost; of the session's first turn
    (its earliest call with attempt 1, ties by request_id) in first_attempt_cost; of later turns in
    multi_turn_cost. Missing optional columns leave their components out (null in the table: their
    cost stays in the others), so the components always add up to token_cost exactly. Usable in
    the group-by that sums the intents themselves (model.intents.intent_costs' `also`)."""
    typed_known = all(c in names for c in TYPED_COSTS)
    tool_known = TOOL_COLUMN in names
    zero = pl.lit(0, dtype=MONEY)
    typed = pl.lit(False)
    if typed_known:
        typed = pl.all_horizontal(pl.col(c).is_not_null() for c in (*TYPED_COSTS, "effective_cost"))
    cache_write = pl.when(typed).then(pl.col("cache_write_cost")).otherwise(zero) if typed_known else zero
    rest = (pl.col("effective_cost") - cache_write).cast(MONEY)
    wasted = (pl.col("attempt") >= 2) | (pl.col("status") == "error")
    tool = (pl.col(TOOL_COLUMN).fill_null(False) & ~wasted) if tool_known else pl.lit(False)
    turns = ~wasted & ~tool  # the first turn's and the later turns' calls
    # The first turn: the first call by (attempt 1 first, called_at, request_id); counted when it
    # has attempt 1 and is a turn. One sort per intent: no group-by and join back for it.
    first = (
        pl.when(turns & (pl.col("attempt") == 1)).then(rest).otherwise(zero)
        .sort_by(pl.col("attempt") != 1, "called_at", "request_id").first().fill_null(zero)
    )
    components = [
        wasted.sum().cast(pl.Int64).alias("wasted_requests"),
        first.alias("first_attempt_cost"),
        (sum_where(turns, rest) - first).cast(MONEY).alias("multi_turn_cost"),
        sum_where(wasted, rest).alias("retry_cost"),
    ]
    if tool_known:
        # Known for a session when one of its calls says (a trace): flat events and gateway logs cannot.
        said = pl.col(TOOL_COLUMN).is_not_null().any()
        components += [
            pl.when(said).then(tool.sum().cast(pl.Int64)).alias("tool_requests"),
            pl.when(said).then(sum_where(tool, rest)).alias("tool_cost"),
        ]
    if typed_known:
        uncached = pl.col("input_tokens") - pl.col("cache_read_input_tokens") - pl.col("cache_write_input_tokens")
        components += [sum_where(typed, pl.col(c)).alias(c) for c in TYPED_COSTS]
        components += [
            pl.when(typed.any()).then(sum_where(typed, expr)).cast(pl.Int64).alias(name)
            for name, expr in {
                "input_tokens": uncached,
                "output_tokens": pl.col("output_tokens"),
                "cache_read_tokens": pl.col("cache_read_input_tokens"),
                "cache_write_tokens": pl.col("cache_write_input_tokens"),
            }.items()
        ]
        components.append(typed.any().alias("_typed"))
    return components


def breakdown_of_intents(intents: pl.LazyFrame) -> pl.LazyFrame:
    """schemas.CostBreakdown from intent_costs rows with their intent_components (null for an
    intent without calls): summed to BREAKDOWN_GRAIN. The components intent_components left out
    (no per-token-type cost, no tool flag) are null."""
    names = intents.collect_schema().names()
    typed_known, tool_known = "_typed" in names, "tool_cost" in names
    labeled = pl.col("outcome") != "unlabeled"
    components = ["first_attempt_cost", "multi_turn_cost", "retry_cost", "tool_cost", *TYPED_COSTS]
    money = ["token_cost", "labor_cost", "total_cost", "labeled_total_cost", *components]
    with_buckets = intents.with_columns(turns_bucket=turns_bucket(pl.col("turns")))
    sums = with_buckets.group_by(BREAKDOWN_GRAIN).agg(
        intents=pl.len().cast(pl.Int64),
        labeled_intents=labeled.sum().cast(pl.Int64),
        successes=(pl.col("outcome") == "success").sum().cast(pl.Int64),
        failures=(pl.col("outcome") == "failure").sum().cast(pl.Int64),
        escalations=(labeled & pl.col("escalated").fill_null(False)).sum().cast(pl.Int64),
        requests=pl.col("requests").sum().cast(pl.Int64),
        wasted_requests=pl.col("wasted_requests").sum().cast(pl.Int64),
        tool_requests=_sum_known(["tool_requests"])[0].cast(pl.Int64) if tool_known else pl.lit(None, dtype=pl.Int64),
        token_cost=pl.col("token_cost").sum(),
        labor_cost=pl.col("labor_cost").sum(),
        total_cost=pl.col("total_cost").sum(),
        labeled_total_cost=pl.col("total_cost").filter(labeled).sum(),
        first_attempt_cost=pl.col("first_attempt_cost").sum(),
        multi_turn_cost=pl.col("multi_turn_cost").sum(),
        retry_cost=pl.col("retry_cost").sum(),
        tool_cost=_sum_known(["tool_cost"])[0] if tool_known else pl.lit(None, dtype=MONEY),
        **{
            c: (pl.when(pl.col("_typed").any()).then(pl.col(c).sum()) if typed_known else pl.lit(None, dtype=pl.Int64 if c.endswith("_tokens") else MONEY))
            for c in (*TYPED_COSTS, "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
        },
    )
    # Intents with no billed call have no currency: their money is unknown, not zero.
    billed = pl.col("billing_currency").is_not_null()
    return sums.with_columns([pl.when(billed).then(pl.col(c)).cast(MONEY).alias(c) for c in money]).select(_columns(CostBreakdown))


def reaggregate_cost_breakdown(rows: pl.LazyFrame, grain: Sequence[str]) -> pl.LazyFrame:
    """cost_breakdown rows summed to `grain` + turns bucket: a month's days. Every column is a
    sum, so the components still add up exactly; a column null on every row summed (a component
    unknown, money of unbilled intents) stays null."""
    key = [*grain, "turns_bucket"]
    sums = [c for c in _columns(CostBreakdown) if c not in BREAKDOWN_GRAIN]
    return rows.group_by(key).agg(_sum_known(sums)).select(*key, *sums)


def money_breakdown(breakdown: pl.LazyFrame, start: date, end: date) -> pl.LazyFrame:
    """schemas.MoneyBreakdown: cost_breakdown rows of [start, end) summed per feature × model ×
    currency; each component's share of total cost; the cache's effect priced at the model's own
    uncached input rate (input_cost / input_tokens)."""
    exact = ["token_cost", "labor_cost", "total_cost", "first_attempt_cost", "multi_turn_cost", "retry_cost"]
    known = ["tool_cost", *TYPED_COSTS, "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"]
    counts = ["intents", "requests", "wasted_requests", "escalations"]
    sums = _billed_in(breakdown, start, end).group_by(_FEATURE_MODEL).agg(
        *[pl.col(c).sum() for c in counts + exact], *_sum_known(known)
    )
    shares = {
        f"{c.removesuffix('_cost')}_share": _ratio(c, "total_cost")
        for c in ("first_attempt_cost", "multi_turn_cost", "retry_cost", "tool_cost", "cache_write_cost", "labor_cost")
    }
    rate = _ratio("input_cost", "input_tokens")
    read_savings = rate * pl.col("cache_read_tokens") - pl.col("cache_read_cost").cast(pl.Float64)
    write_premium = pl.col("cache_write_cost").cast(pl.Float64) - rate * pl.col("cache_write_tokens")
    return (
        sums.with_columns(**shares, cache_read_savings=read_savings, cache_write_premium=write_premium)
        .with_columns(
            cache_net_savings=pl.col("cache_read_savings") - pl.col("cache_write_premium"),
            cache_write_premium_per_read_token=_ratio("cache_write_premium", "cache_read_tokens"),
        )
        .with_columns(no_cache_token_cost=pl.col("token_cost").cast(pl.Float64) + pl.col("cache_net_savings"), *_window(start, end))
        .select(_columns(MoneyBreakdown))
    )


def turn_costs(breakdown: pl.LazyFrame, start: date, end: date) -> pl.LazyFrame:
    """schemas.TurnCosts: the multi-turn tax, cost_breakdown rows of [start, end) per feature ×
    model × currency × turns bucket."""
    return (
        _billed_in(breakdown, start, end)
        .group_by([*_FEATURE_MODEL, "turns_bucket"])
        .agg(pl.col("intents", "labeled_intents", "successes", "token_cost", "total_cost", "labeled_total_cost").sum())
        .with_columns(
            intent_share=_ratio("intents", pl.col("intents").sum().over(_FEATURE_MODEL)),
            cost_share=_ratio("total_cost", pl.col("total_cost").sum().over(_FEATURE_MODEL)),
            token_cost_per_intent=_ratio("token_cost", "intents"),
            success_rate=_ratio("successes", "labeled_intents"),
            cost_per_success=_ratio("labeled_total_cost", "successes"),
            *_window(start, end),
        )
        .select(_columns(TurnCosts))
    )


# --------------------------------------------------------------------------------------------
# Break-even and what-if
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """A what-if: L and/or prices changed, billed data untouched. `labor`: a labor table
    (config.Settings.labor_table shape) whose currencies replace the actual table's;
    `price_multipliers`: model_version → factor applied to that model's token cost."""

    name: str = "what-if"
    labor: pl.LazyFrame | None = None
    price_multipliers: Mapping[str, Decimal] = field(default_factory=dict)

    @classmethod
    def from_config(cls, what_if, name: str = "what-if") -> Scenario:
        """The scenario of [decisions.what_if] (config.WhatIf)."""
        return cls(name, what_if.labor_table() if what_if.labor else None, dict(what_if.price_multipliers))

    def description(self) -> str:
        parts = []
        if self.labor is not None:
            table = self.labor.collect().sort("billing_currency", "feature_tag", nulls_last=False)
            parts += [
                f"L {row['billing_currency']} {row['feature_tag'] or 'default'} = {row['labor_cost_per_failure'].normalize():f}"
                for row in table.iter_rows(named=True)
            ]
        parts += [f"prices of {model} x {factor.normalize():f}" for model, factor in sorted(self.price_multipliers.items())]
        return "; ".join(parts) or "no change"


def _scenario_sums(rows: pl.LazyFrame, labor: pl.LazyFrame, multipliers: Mapping[str, Decimal]) -> pl.LazyFrame:
    """cost_per_success rows re-expressed with labor cost L' per failure and token prices × m.

    With t an intent's token cost, f = 1 on failure and L0 the L the row was built with (its
    labor_cost / failures), the stored X = t + L0·f becomes X' = m·t + L'·f = m·X + d·f with
    d = L' − m·L0, so per row: ΣX' = m·token_cost + L'·F, Σ(X' of successes) = m·Σ(X of
    successes), ΣX'² = m²·ΣX² + 2·m·d·Σ(X of failures) + d²·F: exact transformations of the
    stored moments (m = 1 and L' = L0 give them back unchanged)."""
    factors = pl.DataFrame(
        {"model_version": list(multipliers), "_m": list(multipliers.values())},
        schema={"model_version": pl.String, "_m": MONEY},
    ).lazy()
    # L: the labor table's, else the L the row was built with (a currency the table lacks).
    stored = pl.when(pl.col("failures") > 0).then(pl.col("labor_cost") / pl.col("failures").cast(MONEY))
    with_labor = (
        attach_labor(rows, labor)
        .with_columns(labor_cost_per_failure=pl.coalesce("labor_cost_per_failure", stored).cast(MONEY))
        .join(factors, on="model_version", how="left")
    )
    m = pl.col("_m").fill_null(pl.lit(1, dtype=MONEY))
    labor_new = pl.col("labor_cost_per_failure")
    mf, lf = m.cast(pl.Float64), labor_new.cast(pl.Float64).fill_null(0.0)
    d = lf - mf * _ratio("labor_cost", "failures").fill_null(0.0)
    failure_cost = (pl.col("total_cost") - pl.col("success_total_cost")).cast(pl.Float64)
    return with_labor.with_columns(
        token_cost=(pl.col("token_cost") * m).cast(MONEY),
        labor_cost=(labor_new.fill_null(pl.lit(0, dtype=MONEY)) * pl.col("failures")).cast(MONEY),
        success_total_cost=(pl.col("success_total_cost") * m).cast(MONEY),
        total_cost_sq=mf**2 * pl.col("total_cost_sq") + 2 * mf * d * failure_cost + d**2 * pl.col("failures"),
    ).with_columns(total_cost=(pl.col("token_cost") + pl.col("labor_cost")).cast(MONEY))


def _per_model(sums: pl.LazyFrame) -> pl.LazyFrame:
    """Per-model statistics of the break-even from a model's summed sums and moments."""
    n = pl.col("labeled_intents").cast(pl.Float64)
    p = _ratio("failures", "labeled_intents")
    z2 = Z95**2
    wilson_center = (p + z2 / (2 * n)) / (1 + z2 / n)
    wilson_half = Z95 * (p * (1 - p) / n + z2 / (4 * n**2)).sqrt() / (1 + z2 / n)
    sx = pl.col("total_cost").cast(pl.Float64)
    tco_var = pl.when(n > 1).then(((pl.col("total_cost_sq") - sx**2 / n) / (n * (n - 1))).clip(lower_bound=0.0))
    return cost_per_success_ratios(sums).with_columns(
        token_cost_per_intent=_ratio("token_cost", "labeled_intents"),
        failure_rate=p,
        failure_rate_ci95_low=wilson_center - wilson_half,
        failure_rate_ci95_high=wilson_center + wilson_half,
        tco=_ratio("total_cost", "labeled_intents"),
        cost_per_success_ci95_low=pl.col("ci95_low"),
        cost_per_success_ci95_high=pl.col("ci95_high"),
        _tco_var=tco_var,
        _cps_se=_half_width("ci95_high", "cost_per_success"),
        _sample_ok=pl.col("sample_ok"),
    )


_SIDE_COLUMNS = (
    "labeled_intents", "successes", "failures", "token_cost", "token_cost_per_intent", "failure_rate",
    "failure_rate_ci95_low", "failure_rate_ci95_high", "tco", "cost_per_success", "cost_per_success_ci95_low",
    "cost_per_success_ci95_high", "_tco_var", "_cps_se", "_sample_ok",
)


def _side(models: pl.LazyFrame, side: str) -> pl.LazyFrame:
    """A model's columns named for side a or b of a pair (failure_rate_a, cost_per_success_a_ci95_low, ...)."""

    def named(column: str) -> str:
        head, ci, tail = column.partition("_ci95")
        return f"{head}_{side}{ci}{tail}"

    return models.select(
        "scenario", "feature_tag", "billing_currency", "labor_cost_per_failure",
        pl.col("model_version").alias(f"model_{side}"),
        pl.col("model_version").fill_null("").alias(f"_order_{side}"),
        *[pl.col(c).alias(named(c)) for c in _SIDE_COLUMNS],
    )


def _pairs(models: pl.LazyFrame, orientation: pl.LazyFrame | None = None) -> pl.LazyFrame:
    """Every pair of model versions of a feature and currency: a the lower token cost per intent,
    or the pairs of `orientation` (feature_tag, billing_currency, model_a, model_b) as they are."""
    a, b = _side(models, "a"), _side(models, "b").drop("labor_cost_per_failure")
    pairs = a.join(b, on=["scenario", "feature_tag", "billing_currency"], how="inner")
    if orientation is None:
        pairs = pairs.filter(
            (pl.col("token_cost_per_intent_a") < pl.col("token_cost_per_intent_b"))
            | ((pl.col("token_cost_per_intent_a") == pl.col("token_cost_per_intent_b")) & (pl.col("_order_a") < pl.col("_order_b")))
        )
    else:
        pairs = pairs.join(orientation, on=["feature_tag", "billing_currency", "model_a", "model_b"], how="semi", nulls_equal=True)
    labor = pl.col("labor_cost_per_failure").cast(pl.Float64)
    delta_c = pl.col("token_cost_per_intent_b") - pl.col("token_cost_per_intent_a")
    delta_p = pl.col("failure_rate_a") - pl.col("failure_rate_b")
    newcombe_low = delta_p - (
        (pl.col("failure_rate_a") - pl.col("failure_rate_a_ci95_low")) ** 2
        + (pl.col("failure_rate_b_ci95_high") - pl.col("failure_rate_b")) ** 2
    ).sqrt()
    newcombe_high = delta_p + (
        (pl.col("failure_rate_a_ci95_high") - pl.col("failure_rate_a")) ** 2
        + (pl.col("failure_rate_b") - pl.col("failure_rate_b_ci95_low")) ** 2
    ).sqrt()
    tco_diff = pl.col("tco_b") - pl.col("tco_a")
    tco_se = (pl.col("_tco_var_a") + pl.col("_tco_var_b")).sqrt()
    cps_diff = pl.col("cost_per_success_b") - pl.col("cost_per_success_a")
    cps_se = (pl.col("_cps_se_a") ** 2 + pl.col("_cps_se_b") ** 2).sqrt()
    sample_ok = pl.col("_sample_ok_a") & pl.col("_sample_ok_b")
    cps_a, cps_b = pl.col("cost_per_success_a"), pl.col("cost_per_success_b")
    cheaper = (
        pl.when(cps_a.is_null() & cps_b.is_null()).then(None)
        .when(cps_b.is_null() | (cps_a < cps_b)).then(pl.col("model_a").fill_null("(no version)"))
        .when(cps_a.is_null() | (cps_b < cps_a)).then(pl.col("model_b").fill_null("(no version)"))
    )
    return pairs.with_columns(
        delta_token_cost=delta_c,
        delta_failure_rate=delta_p,
        delta_failure_rate_ci95_low=newcombe_low,
        delta_failure_rate_ci95_high=newcombe_high,
        break_even_failure_gap=pl.when(labor > 0).then(delta_c / labor),
        break_even_labor_cost=pl.when(delta_p > 0).then(delta_c / delta_p),
        tco_difference=tco_diff,
        tco_difference_ci95_low=tco_diff - Z95 * tco_se,
        tco_difference_ci95_high=tco_diff + Z95 * tco_se,
        cost_per_success_difference=cps_diff,
        cost_per_success_difference_ci95_low=cps_diff - Z95 * cps_se,
        cost_per_success_difference_ci95_high=cps_diff + Z95 * cps_se,
        cheaper_per_success=cheaper,
        sample_ok=sample_ok,
    ).with_columns(
        # A model with no success at all is certainly the dearer one per success.
        significant=pl.when(sample_ok).then(
            pl.when(cps_diff.is_not_null())
            .then((pl.col("cost_per_success_difference_ci95_low") > 0) | (pl.col("cost_per_success_difference_ci95_high") < 0))
            .otherwise(pl.col("cheaper_per_success").is_not_null())
        ),
    ).with_columns(
        verdict=pl.when(~sample_ok)
        .then(
            pl.format(
                "not enough data: {} and {} labeled intents ({} each needed)",
                "labeled_intents_a", "labeled_intents_b", pl.lit(SAMPLE_OK_MIN_LABELED),
            )
        )
        .when(pl.col("cheaper_per_success").is_null())
        .then(pl.lit("no difference in cost per success"))
        .otherwise(
            pl.format(
                "{} cheaper per success ({} at 95%)",
                "cheaper_per_success",
                pl.when(pl.col("significant")).then(pl.lit("significant")).otherwise(pl.lit("not significant")),
            )
        ),
    )


def _break_even(rows: pl.LazyFrame, labor: pl.LazyFrame, start: date, end: date, scenario: str, description: str,
                multipliers: Mapping[str, Decimal], orientation: pl.LazyFrame | None = None) -> pl.LazyFrame:
    sums = _scenario_sums(_billed_in(rows, start, end), labor, multipliers)
    per_model = (
        sums.group_by(_FEATURE_MODEL)
        .agg(*[pl.col(c).sum() for c in SUCCESS_SUMS], pl.col("labor_cost_per_failure").max())
        .filter(pl.col("labeled_intents") > 0)
    )
    models = _per_model(per_model).with_columns(scenario=pl.lit(scenario))
    return (
        _pairs(models, orientation)
        .with_columns(scenario_description=pl.lit(description), *_window(start, end))
        .select(_columns(BreakEven))
    )


def break_even(rows: pl.LazyFrame, labor: pl.LazyFrame, start: date, end: date) -> pl.LazyFrame:
    """schemas.BreakEven (scenario 'actual'): every pair of model versions serving a feature in a
    currency, from the cost_per_success rows of [start, end). `labor`: the labor table
    (config.Settings.labor_table): L per failure for the feature and currency, else the
    currency's default."""
    return _break_even(rows, labor, start, end, ACTUAL, "", {})


def what_if(rows: pl.LazyFrame, labor: pl.LazyFrame, start: date, end: date, scenario: Scenario) -> pl.LazyFrame:
    """The actual break-even rows followed by the same pairs with the scenario's L and prices: the
    billed data is never changed, the scenario's rows are labelled with its name."""
    scenario_labor = labor
    if scenario.labor is not None:
        replaced = scenario.labor.select("billing_currency").unique()
        scenario_labor = pl.concat([scenario.labor, labor.join(replaced, on="billing_currency", how="anti")])
    actual = break_even(rows, labor, start, end)
    # The scenario keeps the actual pairs' order (a repricing may make ΔC negative), so each
    # scenario row lines up with its actual row.
    orientation = actual.select("feature_tag", "billing_currency", "model_a", "model_b")
    changed = _break_even(
        rows, scenario_labor, start, end, scenario.name, scenario.description(), scenario.price_multipliers, orientation
    )
    return pl.concat([actual, changed])


# --------------------------------------------------------------------------------------------
# Weighted cost per successful task by workflow class
# --------------------------------------------------------------------------------------------


def workflow_class_costs(
    rows: pl.LazyFrame, start: date, end: date, classes: pl.LazyFrame | None = None, weights: str = "observed"
) -> pl.LazyFrame:
    """schemas.WorkflowClassCosts from cost_per_success rows of [start, end).

    `classes`: (workflow_class, feature_tag, weight) rows, weight Float64 (null with observed
    weights); None: every feature is its own class. `weights`: "config" uses the classes'
    weights, normalized to sum to 1; "observed" each class's share of the currency's intents in
    the window (all models). Features in no class are left out."""
    if weights not in ("config", "observed"):
        raise ValueError(f"weights must be 'config' or 'observed', not {weights!r}")
    window = _billed_in(rows, start, end)
    if classes is None:
        classes = window.select("feature_tag").unique().with_columns(
            workflow_class=pl.col("feature_tag"), weight=pl.lit(None, dtype=pl.Float64)
        )
        weights = "observed"
    class_rows = window.join(classes.select("workflow_class", "feature_tag"), on="feature_tag", how="inner")
    if weights == "config":
        configured = classes.group_by("workflow_class").agg(pl.col("weight").first())
        mix = class_rows.select("billing_currency").unique().join(configured, how="cross")
    else:
        mix = class_rows.group_by("billing_currency", "workflow_class").agg(weight=pl.col("intents").sum().cast(pl.Float64))
    mix = mix.with_columns(weight=pl.col("weight") / pl.col("weight").sum().over("billing_currency"))
    models = class_rows.select("billing_currency", "model_version").unique()
    sums = class_rows.group_by("billing_currency", "model_version", "workflow_class").agg(pl.col(c).sum() for c in SUCCESS_SUMS)
    # Every class of the mix for every model of the currency: a class a model does not serve
    # shows with no intents, so it is visibly missing from the model's mix.
    grid = models.join(mix, on="billing_currency", how="inner")
    joined = grid.join(sums, on=["billing_currency", "model_version", "workflow_class"], how="left", nulls_equal=True)
    zero = {c: pl.col(c).fill_null(0) for c in ("intents", "labeled_intents", "successes", "failures", "escalations")}
    return (
        cost_per_success_ratios(
            joined.with_columns(**zero).with_columns(
                *[pl.col(c).fill_null(pl.lit(0, dtype=MONEY)) for c in ("token_cost", "labor_cost", "total_cost", "success_total_cost")],
                pl.col("total_cost_sq").fill_null(0.0),
            )
        )
        .with_columns(
            weight_source=pl.lit(weights),
            contribution=pl.col("weight") * pl.col("cost_per_success"),
            *_window(start, end),
        )
        .select(_columns(WorkflowClassCosts))
    )


def weighted_cost_per_success(class_costs: pl.LazyFrame) -> pl.LazyFrame:
    """schemas.WeightedCostPerSuccess: Σ class CPST × weight per model version and currency, from
    workflow_class_costs rows. Classes are independent samples: the variance is Σ weight² × each
    class's (delta-method) variance."""
    served = pl.col("cost_per_success").is_not_null()
    se = _half_width("ci95_high", "cost_per_success")
    keys = ["window_start", "window_end", "billing_currency", "model_version", "weight_source"]
    summed = class_costs.group_by(keys).agg(
        classes=pl.len().cast(pl.Int64),
        classes_served=served.sum().cast(pl.Int64),
        weight_served=pl.col("weight").filter(served).sum(),
        missing_classes=pl.col("workflow_class").filter(~served).sort().str.join(", "),
        _contributions=pl.col("contribution").filter(served).sum(),
        _variance=((pl.col("weight") * se) ** 2).filter(served).sum(),
        sample_ok=(pl.col("sample_ok") | ~served).all(),
    )
    complete = pl.col("classes_served") == pl.col("classes")
    weighted = pl.when(complete).then(pl.col("_contributions"))
    half = Z95 * pl.col("_variance").sqrt()
    return summed.with_columns(
        weighted_cost_per_success=weighted,
        ci95_low=weighted - half,
        ci95_high=weighted + half,
        served_weighted_cost_per_success=pl.when(pl.col("weight_served") > 0).then(pl.col("_contributions") / pl.col("weight_served")),
    ).select(_columns(WeightedCostPerSuccess))


# --------------------------------------------------------------------------------------------
# Trends, regressions, label coverage
# --------------------------------------------------------------------------------------------


def _per_feature_day(rows: pl.LazyFrame) -> pl.LazyFrame:
    """cost_per_success rows summed per date × feature × currency (models and prompts pooled)."""
    return (
        rows.filter(pl.col("billing_currency").is_not_null())
        .group_by("date", "feature_tag", "billing_currency")
        .agg(pl.col(c).sum() for c in SUCCESS_SUMS)
    )


def cost_per_success_trends(
    rows: pl.LazyFrame, start: date, end: date, windows: Sequence[int] = TREND_WINDOWS
) -> pl.LazyFrame:
    """schemas.CostPerSuccessTrend for the days of [start, end) with intents. `rows`: daily
    cost_per_success rows, from max(windows) − 1 days before `start` for full windows."""
    daily = _per_feature_day(rows.filter(in_dates("date", start - timedelta(days=max(windows) - 1), end))).sort(
        "feature_tag", "billing_currency", "date"
    )
    rolled = [
        daily.rolling(index_column="date", period=f"{days}d", group_by=["feature_tag", "billing_currency"])
        .agg(*[pl.col(c).sum() for c in SUCCESS_SUMS], days_with_data=pl.len().cast(pl.Int64))
        .with_columns(window_days=pl.lit(days, dtype=pl.Int64))
        for days in windows
    ]
    return (
        cost_per_success_ratios(pl.concat(rolled).filter(in_dates("date", start, end)))
        .select(_columns(CostPerSuccessTrend))
        .sort("feature_tag", "billing_currency", "window_days", "date")
    )


def version_regressions(rows: pl.LazyFrame, start: date, end: date, window_days: int = 14) -> pl.LazyFrame:
    """schemas.VersionRegressions: the version changes starting in [start, end), each compared with
    the version it replaced. `rows`: daily cost_per_success rows from `window_days` before
    `start` to `window_days` after the last change to compare (fewer: a shorter after-window)."""
    version = ["model_version", "prompt_version"]
    feature = ["feature_tag", "billing_currency"]
    span = timedelta(days=window_days)
    daily = rows.filter(pl.col("billing_currency").is_not_null()).group_by("date", *feature, *version).agg(
        pl.col(c).sum() for c in SUCCESS_SUMS
    )
    # A version starts on a day it has intents and had none in the window_days before, while the
    # feature had intents in those days.
    version_days = daily.select("date", *feature, *version).sort("date").with_columns(
        _previous=pl.col("date").shift(1).over([*feature, *version], order_by="date")
    )
    feature_days = daily.select("date", *feature).unique().sort("date").with_columns(
        _feature_previous=pl.col("date").shift(1).over(feature, order_by="date")
    )
    starts = (
        version_days.join(feature_days, on=["date", *feature], how="inner")
        .filter(
            in_dates("date", start, end)
            & (pl.col("_feature_previous") >= pl.col("date") - span)
            & (pl.col("_previous").is_null() | (pl.col("_previous") < pl.col("date") - span))
        )
        .select(pl.col("date").alias("change_date"), *feature, pl.col("model_version").alias("model_version_after"),
                pl.col("prompt_version").alias("prompt_version_after"))
    )
    before_rows = daily.rename({"model_version": "model_version_before", "prompt_version": "prompt_version_before"})
    candidates = (
        starts.join(before_rows, on=feature, how="inner", nulls_equal=True)
        .filter((pl.col("date") < pl.col("change_date")) & (pl.col("date") >= pl.col("change_date") - span))
        .group_by("change_date", *feature, "model_version_after", "prompt_version_after", "model_version_before", "prompt_version_before")
        .agg(pl.col(c).sum() for c in SUCCESS_SUMS)
    )
    same_model = pl.col("model_version_before").eq_missing(pl.col("model_version_after"))
    same_prompt = pl.col("prompt_version_before").eq_missing(pl.col("prompt_version_after"))
    change_key = ["change_date", *feature, "model_version_after", "prompt_version_after"]
    before = (
        candidates.with_columns(_priority=pl.when(same_model).then(2).when(same_prompt).then(1).otherwise(0))
        .sort("_priority", "intents", "model_version_before", "prompt_version_before", descending=[True, True, False, False], nulls_last=True)
        .group_by(change_key, maintain_order=True)
        .first()
        .with_columns(
            change=pl.when(same_model).then(pl.lit("prompt")).when(same_prompt).then(pl.lit("model")).otherwise(pl.lit("model+prompt"))
        )
    )
    after = (
        starts.join(
            daily.rename({"model_version": "model_version_after", "prompt_version": "prompt_version_after"}),
            on=[*feature, "model_version_after", "prompt_version_after"], how="inner", nulls_equal=True,
        )
        .filter((pl.col("date") >= pl.col("change_date")) & (pl.col("date") < pl.col("change_date") + span))
        .group_by(change_key)
        .agg(pl.col(c).sum() for c in SUCCESS_SUMS)
    )
    side = ["labeled_intents", "success_rate", "cost_per_success", "ci95_low", "ci95_high", "sample_ok"]

    def named(frame: pl.LazyFrame, suffix: str, keep: list[str]) -> pl.LazyFrame:
        rename = {c: f"{c}_{suffix}" for c in side}
        rename |= {"ci95_low": f"cost_per_success_{suffix}_ci95_low", "ci95_high": f"cost_per_success_{suffix}_ci95_high"}
        return cost_per_success_ratios(frame).select(*keep, *[pl.col(c).alias(rename[c]) for c in side])

    compared = named(before, "before", [*change_key, "model_version_before", "prompt_version_before", "change"]).join(
        named(after, "after", change_key), on=change_key, how="inner", nulls_equal=True
    )
    diff = pl.col("cost_per_success_after") - pl.col("cost_per_success_before")
    se = (
        _half_width("cost_per_success_after_ci95_high", "cost_per_success_after") ** 2
        + _half_width("cost_per_success_before_ci95_high", "cost_per_success_before") ** 2
    ).sqrt()
    sample_ok = pl.col("sample_ok_before") & pl.col("sample_ok_after")
    return (
        compared.with_columns(
            difference=diff,
            difference_ci95_low=diff - Z95 * se,
            difference_ci95_high=diff + Z95 * se,
            relative_change=diff / pl.col("cost_per_success_before"),
            sample_ok=sample_ok,
            window_days=pl.lit(window_days, dtype=pl.Int64),
        )
        .with_columns(
            status=pl.when(~sample_ok | pl.col("difference").is_null()).then(pl.lit("not enough data"))
            .when(pl.col("difference_ci95_low") > 0).then(pl.lit("regressed"))
            .when(pl.col("difference_ci95_high") < 0).then(pl.lit("improved"))
            .otherwise(pl.lit("no significant change"))
        )
        .with_columns(regressed=pl.col("status") == "regressed")
        .select(_columns(VersionRegressions))
        .sort("change_date", *feature, "model_version_after", "prompt_version_after", nulls_last=True)
    )


def label_coverage(rows: pl.LazyFrame, start: date, end: date) -> pl.LazyFrame:
    """schemas.LabelCoverage: cost_per_success rows of [start, end) (billed or not) per week × feature."""
    days = (
        pl.DataFrame({"date": pl.date_range(start, end - timedelta(days=1), eager=True)})
        .group_by(week_start=pl.col("date").dt.truncate("1w"))
        .agg(days_in_window=pl.len().cast(pl.Int64))
        .lazy()
    )
    return (
        rows.filter(in_dates("date", start, end))
        .group_by(pl.col("date").dt.truncate("1w").alias("week_start"), "feature_tag")
        .agg(pl.col("intents", "labeled_intents").sum())
        .join(days, on="week_start", how="left")
        .with_columns(label_coverage=_ratio("labeled_intents", "intents"))
        .select(_columns(LabelCoverage))
        .sort("week_start", "feature_tag")
    )
