"""Decision tables: break-even per model pair (actual and what-if), where the money goes, weighted
cost per successful task, trends and version regressions.

`cost_breakdown` is a daily table (stored beside cost_per_success, same grain plus the turns
bucket) holding the exact sums each component of cost needs; every other table here is computed
for a window from stored daily sums (cost_per_success, cost_breakdown), never from requests.
Money is an exact decimal in the row's billing_currency; ratios are Float64 computed from exact
sums. Nothing is summed across currencies.
"""

import polars as pl
import pandera.polars as pa
from pandera.engines import polars_engine as pe

from schemas.outputs import _Grain
from schemas.types import ISO_4217

_MONEY = pe.Decimal(38, 18)
_CURRENCIES = sorted(ISO_4217)
TURN_BUCKETS = ("1", "2-3", "4-5", "6+")
BREAKDOWN_COMPONENTS = ("first_attempt_cost", "multi_turn_cost", "retry_cost", "tool_cost", "cache_write_cost", "labor_cost")
VERSION_CHANGES = ("model", "prompt", "model+prompt")
REGRESSION_STATUSES = ("regressed", "improved", "no significant change", "not enough data")
WEIGHT_SOURCES = ("config", "observed")


class _Window(pa.DataFrameModel):
    window_start: pl.Date = pa.Field(description="First day of the window (intents' UTC dates).")
    window_end: pl.Date = pa.Field(description="Last day of the window, included.")


class CostBreakdown(_Grain):
    """Where the money goes, per day: one row per date × feature × model version × prompt version ×
    currency × turns bucket, with the exact sums of each component of cost. Every call of an
    intent is in exactly one token component (cache_write_cost first, then retry_cost, tool_cost,
    first_attempt_cost, multi_turn_cost), so first_attempt + multi_turn + retry + tool +
    cache_write = token_cost and token_cost + labor_cost = total_cost, exactly. Re-aggregate any
    window by summing."""

    turns_bucket: str = pa.Field(isin=list(TURN_BUCKETS), description="The intents' number of turns (first attempts): 1, 2-3, 4-5 or 6+ (0 turns, a session of retries only, counts as 1).")
    intents: pl.Int64 = pa.Field(ge=1, description="Intents (sessions).")
    labeled_intents: pl.Int64 = pa.Field(ge=0, description="Intents with an outcome label.")
    successes: pl.Int64 = pa.Field(ge=0, description="Labeled intents whose outcome is success.")
    failures: pl.Int64 = pa.Field(ge=0, description="Labeled intents whose outcome is failure.")
    escalations: pl.Int64 = pa.Field(ge=0, description="Labeled intents escalated to a human.")
    requests: pl.Int64 = pa.Field(ge=1, description="Calls of the intents, retries included.")
    wasted_requests: pl.Int64 = pa.Field(ge=0, description="Calls with attempt >= 2 or status error (the retry tax's calls).")
    tool_requests: pl.Int64 = pa.Field(nullable=True, ge=0, description="Calls sending tool results back to the model (request_costs.after_tool_call), retries excluded; null when no call of the row has a trace to tell (after_tool_call null: flat events, gateway logs).")
    token_cost: _MONEY = pa.Field(nullable=True, description="Sum of the intents' token_cost (intent_costs).")
    labor_cost: _MONEY = pa.Field(nullable=True, description="Sum of the intents' labor_cost: failures × L, the escalation (human) cost.")
    total_cost: _MONEY = pa.Field(nullable=True, description="token_cost + labor_cost.")
    labeled_total_cost: _MONEY = pa.Field(nullable=True, description="Sum of total_cost over labeled intents: with successes, cost per success by turns bucket.")
    first_attempt_cost: _MONEY = pa.Field(nullable=True, description="Cost of the first turn's successful first attempt (cache writes excluded).")
    multi_turn_cost: _MONEY = pa.Field(nullable=True, description="Cost of later turns' successful first attempts (cache writes and tool round trips excluded): the multi-turn tax.")
    retry_cost: _MONEY = pa.Field(nullable=True, description="Cost of calls with attempt >= 2 or status error (cache writes excluded): the retry tax.")
    tool_cost: _MONEY = pa.Field(nullable=True, description="Cost of successful first attempts sending tool results back (after_tool_call; cache writes excluded): the tool-call overhead; null when no call of the row has a trace to tell (after_tool_call null: flat events, gateway logs; then it is inside the turn components).")
    cache_write_cost: _MONEY = pa.Field(nullable=True, description="Cost of cache-write tokens of every call; null when request_costs has no per-token-type cost (then it is inside the other components).")
    input_cost: _MONEY = pa.Field(nullable=True, description="Cost of uncached input tokens, over calls with a per-token-type cost; null when none has one.")
    output_cost: _MONEY = pa.Field(nullable=True, description="Cost of output tokens, over calls with a per-token-type cost.")
    cache_read_cost: _MONEY = pa.Field(nullable=True, description="Cost of cache-read tokens, over calls with a per-token-type cost.")
    input_tokens: pl.Int64 = pa.Field(nullable=True, ge=0, description="Uncached input tokens (telemetry input − cache read − cache write), over calls with a per-token-type cost.")
    output_tokens: pl.Int64 = pa.Field(nullable=True, ge=0, description="Output tokens, over calls with a per-token-type cost.")
    cache_read_tokens: pl.Int64 = pa.Field(nullable=True, ge=0, description="Cache-read input tokens, over calls with a per-token-type cost.")
    cache_write_tokens: pl.Int64 = pa.Field(nullable=True, ge=0, description="Cache-write input tokens, over calls with a per-token-type cost.")

    class Config:
        strict = True
        unique = ["date", "feature_tag", "model_version", "prompt_version", "billing_currency", "turns_bucket"]

    @pa.dataframe_check
    def components_add_up(cls, data) -> pl.LazyFrame:
        parts = ["first_attempt_cost", "multi_turn_cost", "retry_cost", "tool_cost", "cache_write_cost"]
        token_parts = sum((pl.col(c).fill_null(0) for c in parts[1:]), pl.col(parts[0]).fill_null(0))
        billed = pl.col("billing_currency").is_not_null()
        return data.lazyframe.select(
            pl.when(billed)
            .then((token_parts == pl.col("token_cost")) & (pl.col("token_cost") + pl.col("labor_cost") == pl.col("total_cost")))
            .otherwise(pl.col("total_cost").is_null())
        )

    @pa.dataframe_check
    def counts_add_up(cls, data) -> pl.LazyFrame:
        return data.lazyframe.select(
            (pl.col("successes") + pl.col("failures") == pl.col("labeled_intents"))
            & (pl.col("labeled_intents") <= pl.col("intents"))
            & (pl.col("wasted_requests") <= pl.col("requests"))
        )


class MoneyBreakdown(_Window):
    """Where the money goes over a window, per feature × model version × currency (prompt versions
    and turns pooled): each component of total cost, exact, and its share; the cache's effect at
    the model's own uncached input price."""

    feature_tag: str = pa.Field(description="Feature.")
    model_version: str = pa.Field(nullable=True, description="Model version of the intents' last call.")
    billing_currency: str = pa.Field(isin=_CURRENCIES, description="Currency of every money column.")
    intents: pl.Int64 = pa.Field(ge=1, description="Intents in the window.")
    requests: pl.Int64 = pa.Field(ge=1, description="Calls, retries included.")
    wasted_requests: pl.Int64 = pa.Field(ge=0, description="Calls with attempt >= 2 or status error.")
    escalations: pl.Int64 = pa.Field(ge=0, description="Labeled intents escalated to a human.")
    total_cost: _MONEY = pa.Field(description="Token cost + labor cost: the sum of the six components below, exactly.")
    token_cost: _MONEY = pa.Field(description="Provider cost of the intents' calls.")
    first_attempt_cost: _MONEY = pa.Field(description="See cost_breakdown.")
    multi_turn_cost: _MONEY = pa.Field(description="See cost_breakdown: the multi-turn tax.")
    retry_cost: _MONEY = pa.Field(description="See cost_breakdown: the retry tax.")
    tool_cost: _MONEY = pa.Field(nullable=True, description="See cost_breakdown: the tool-call overhead; null when unknown.")
    cache_write_cost: _MONEY = pa.Field(nullable=True, description="See cost_breakdown; null when unknown.")
    labor_cost: _MONEY = pa.Field(description="Failures × L: the escalation (human) cost.")
    first_attempt_share: float = pa.Field(nullable=True, description="first_attempt_cost / total_cost (null when total_cost is 0).")
    multi_turn_share: float = pa.Field(nullable=True, description="multi_turn_cost / total_cost.")
    retry_share: float = pa.Field(nullable=True, description="retry_cost / total_cost.")
    tool_share: float = pa.Field(nullable=True, description="tool_cost / total_cost.")
    cache_write_share: float = pa.Field(nullable=True, description="cache_write_cost / total_cost.")
    labor_share: float = pa.Field(nullable=True, description="labor_cost / total_cost.")
    cache_read_savings: float = pa.Field(nullable=True, description="What the cache-read tokens would have cost at the model's uncached input price (input_cost / input_tokens), minus what they cost; null without per-token-type cost or uncached input tokens.")
    cache_write_premium: float = pa.Field(nullable=True, description="cache_write_cost minus what the cache-write tokens would have cost as uncached input: the investment the reads amortize.")
    cache_net_savings: float = pa.Field(nullable=True, description="cache_read_savings − cache_write_premium: what the cache saved, net (negative: it cost more than it saved).")
    cache_write_premium_per_read_token: float = pa.Field(nullable=True, description="cache_write_premium / cache-read tokens: the write premium amortized over the reads it enabled.")
    no_cache_token_cost: float = pa.Field(nullable=True, description="token_cost + cache_net_savings: the token cost had there been no cache hits (and no cache writes).")

    class Config:
        strict = True
        unique = ["feature_tag", "model_version", "billing_currency"]


class TurnCosts(_Window):
    """The multi-turn tax over a window: per feature × model version × currency × turns bucket,
    what an intent costs and how often it succeeds."""

    feature_tag: str = pa.Field(description="Feature.")
    model_version: str = pa.Field(nullable=True, description="Model version of the intents' last call.")
    billing_currency: str = pa.Field(isin=_CURRENCIES, description="Currency of every money column.")
    turns_bucket: str = pa.Field(isin=list(TURN_BUCKETS), description="Number of turns: 1, 2-3, 4-5, 6+.")
    intents: pl.Int64 = pa.Field(ge=1, description="Intents.")
    intent_share: float = pa.Field(description="intents / the feature × model × currency's intents in the window.")
    labeled_intents: pl.Int64 = pa.Field(ge=0, description="Intents with a label.")
    successes: pl.Int64 = pa.Field(ge=0, description="Successful intents.")
    token_cost: _MONEY = pa.Field(description="Token cost of the bucket's intents.")
    total_cost: _MONEY = pa.Field(description="Token + labor cost of the bucket's intents.")
    cost_share: float = pa.Field(nullable=True, description="total_cost / the feature × model × currency's total cost.")
    token_cost_per_intent: float = pa.Field(description="token_cost / intents.")
    success_rate: float = pa.Field(nullable=True, description="successes / labeled_intents.")
    cost_per_success: float = pa.Field(nullable=True, description="Total cost of labeled intents / successes.")

    class Config:
        strict = True
        unique = ["feature_tag", "model_version", "billing_currency", "turns_bucket"]


class BreakEven(_Window):
    """Break-even per feature × pair of model versions × currency over a window, actual and what-if.
    model_a is the model with the lower token cost per intent C, model_b the pricier one; b pays
    off when its failure rate is lower than a's by more than the break-even gap Δp* = ΔC / L,
    i.e. when L > L* = ΔC / Δp. Computed from the daily cost_per_success sums and moments."""

    scenario: str = pa.Field(description="'actual' (billed data, configured L) or the what-if's name.")
    scenario_description: str = pa.Field(description="What the scenario changes (empty for actual).")
    feature_tag: str = pa.Field(description="Feature.")
    billing_currency: str = pa.Field(isin=_CURRENCIES, description="Currency of every money column.")
    model_a: str = pa.Field(nullable=True, description="Model version with the lower token cost per intent in the actual data (ties: by name).")
    model_b: str = pa.Field(nullable=True, description="The other model version: the pricier one per intent in the actual data.")
    labeled_intents_a: pl.Int64 = pa.Field(ge=0, description="Labeled intents of model_a in the window.")
    successes_a: pl.Int64 = pa.Field(ge=0, description="Successes of model_a.")
    failures_a: pl.Int64 = pa.Field(ge=0, description="Failures of model_a.")
    token_cost_a: _MONEY = pa.Field(description="Token cost of model_a's labeled intents (a what-if: repriced).")
    token_cost_per_intent_a: float = pa.Field(description="C: token_cost_a / labeled_intents_a.")
    failure_rate_a: float = pa.Field(description="p: failures_a / labeled_intents_a.")
    failure_rate_a_ci95_low: float = pa.Field(description="Wilson score 95% interval of p, lower bound.")
    failure_rate_a_ci95_high: float = pa.Field(description="Wilson score 95% interval of p, upper bound.")
    tco_a: float = pa.Field(description="TCO per intent = C + p·L = (token cost + failures × L) / labeled intents.")
    cost_per_success_a: float = pa.Field(nullable=True, description="(token cost + failures × L) / successes; null without a success.")
    cost_per_success_a_ci95_low: float = pa.Field(nullable=True, description="Delta-method 95% interval of cost per success, lower bound.")
    cost_per_success_a_ci95_high: float = pa.Field(nullable=True, description="Upper bound of that interval.")
    labeled_intents_b: pl.Int64 = pa.Field(ge=0, description="Labeled intents of model_b in the window.")
    successes_b: pl.Int64 = pa.Field(ge=0, description="Successes of model_b.")
    failures_b: pl.Int64 = pa.Field(ge=0, description="Failures of model_b.")
    token_cost_b: _MONEY = pa.Field(description="Token cost of model_b's labeled intents (a what-if: repriced).")
    token_cost_per_intent_b: float = pa.Field(description="C: token_cost_b / labeled_intents_b.")
    failure_rate_b: float = pa.Field(description="p: failures_b / labeled_intents_b.")
    failure_rate_b_ci95_low: float = pa.Field(description="Wilson score 95% interval of p, lower bound.")
    failure_rate_b_ci95_high: float = pa.Field(description="Wilson score 95% interval of p, upper bound.")
    tco_b: float = pa.Field(description="TCO per intent = C + p·L = (token cost + failures × L) / labeled intents.")
    cost_per_success_b: float = pa.Field(nullable=True, description="(token cost + failures × L) / successes; null without a success.")
    cost_per_success_b_ci95_low: float = pa.Field(nullable=True, description="Delta-method 95% interval of cost per success, lower bound.")
    cost_per_success_b_ci95_high: float = pa.Field(nullable=True, description="Upper bound of that interval.")
    labor_cost_per_failure: _MONEY = pa.Field(nullable=True, description="L: the labor cost of one failed intent for the feature and currency ([labor], or the scenario's; for a currency [labor] lacks, the L the daily rows were built with); null when unknown and no intent failed.")
    delta_token_cost: float = pa.Field(nullable=True, description="ΔC = C_b − C_a: how much more model_b's tokens cost per intent (>= 0 on actual rows; a what-if keeps the actual pair's order, so a repricing can make it negative).")
    delta_failure_rate: float = pa.Field(nullable=True, description="Δp = p_a − p_b: how much more often model_a fails.")
    delta_failure_rate_ci95_low: float = pa.Field(nullable=True, description="Newcombe (hybrid Wilson score) 95% interval of Δp, lower bound.")
    delta_failure_rate_ci95_high: float = pa.Field(nullable=True, description="Newcombe 95% interval of Δp, upper bound.")
    break_even_failure_gap: float = pa.Field(nullable=True, description="Δp* = ΔC / L: model_b pays off when Δp exceeds it; null when L is 0.")
    break_even_labor_cost: float = pa.Field(nullable=True, description="L* = ΔC / Δp: model_b pays off when L exceeds it; null when Δp <= 0 (model_b never pays off).")
    tco_difference: float = pa.Field(nullable=True, description="tco_b − tco_a (negative: model_b is cheaper per intent).")
    tco_difference_ci95_low: float = pa.Field(nullable=True, description="95% interval of the TCO difference (independent samples, each TCO's variance from the stored moments), lower bound.")
    tco_difference_ci95_high: float = pa.Field(nullable=True, description="Upper bound of that interval.")
    cost_per_success_difference: float = pa.Field(nullable=True, description="cost_per_success_b − cost_per_success_a.")
    cost_per_success_difference_ci95_low: float = pa.Field(nullable=True, description="95% interval of that difference (delta method, independent samples), lower bound.")
    cost_per_success_difference_ci95_high: float = pa.Field(nullable=True, description="Upper bound of that interval.")
    cheaper_per_success: str = pa.Field(nullable=True, description="The model version with the lower cost per success (a model without a success is never cheaper); null on a tie or when neither has a success.")
    significant: bool = pa.Field(nullable=True, description="The cost per success difference's 95% interval excludes 0; null when sample_ok is false.")
    sample_ok: bool = pa.Field(description="Both models have >= 100 labeled intents in the window.")
    verdict: str = pa.Field(description="Plain words: 'not enough data …', '<model> cheaper per success (significant at 95%)' or '(not significant at 95%)'.")

    class Config:
        strict = True
        unique = ["scenario", "feature_tag", "billing_currency", "model_a", "model_b"]


class WhatIf(BreakEven):
    """The break-even under the what-if scenario of [decisions.what_if] in unitledger.toml (L and/or
    model prices changed; the billed data never is): the same pairs, in the same order, as the
    actual rows of break_even, each labelled with the scenario's name and what it changes. Empty
    when no what-if is configured. `unitledger compare` computes other scenarios on demand."""


class WorkflowClassCosts(_Window):
    """Cost per successful task per workflow class (a group of features from [decisions.classes])
    × model version × currency over a window, with the class's traffic weight."""

    billing_currency: str = pa.Field(isin=_CURRENCIES, description="Currency of every money column.")
    model_version: str = pa.Field(nullable=True, description="Model version.")
    workflow_class: str = pa.Field(description="Workflow class (a feature is its own class when none are configured).")
    weight: float = pa.Field(ge=0, le=1, description="The class's weight in the traffic mix (weights of a currency sum to 1).")
    weight_source: str = pa.Field(isin=list(WEIGHT_SOURCES), description="config ([decisions.classes] weights) or observed (the class's share of the currency's intents in the window).")
    intents: pl.Int64 = pa.Field(ge=0, description="Intents of the class's features served by the model.")
    labeled_intents: pl.Int64 = pa.Field(ge=0, description="Labeled intents.")
    successes: pl.Int64 = pa.Field(ge=0, description="Successes.")
    total_cost: _MONEY = pa.Field(description="Token + labor cost of the labeled intents.")
    cost_per_success: float = pa.Field(nullable=True, description="total_cost / successes: the class's CPST for the model.")
    ci95_low: float = pa.Field(nullable=True, description="Delta-method 95% interval, lower bound.")
    ci95_high: float = pa.Field(nullable=True, description="Upper bound.")
    contribution: float = pa.Field(nullable=True, description="weight × cost_per_success.")
    sample_ok: bool = pa.Field(description="labeled_intents >= 100.")

    class Config:
        strict = True
        unique = ["billing_currency", "model_version", "workflow_class"]


class WeightedCostPerSuccess(_Window):
    """Weighted cost per successful task per model version × currency: Σ over workflow classes of
    class CPST × weight, one number per model for the traffic mix."""

    billing_currency: str = pa.Field(isin=_CURRENCIES, description="Currency.")
    model_version: str = pa.Field(nullable=True, description="Model version.")
    weight_source: str = pa.Field(isin=list(WEIGHT_SOURCES), description="config or observed weights.")
    classes: pl.Int64 = pa.Field(ge=0, description="Workflow classes of the currency's mix.")
    classes_served: pl.Int64 = pa.Field(ge=0, description="Classes in which the model has at least one success.")
    weight_served: float = pa.Field(ge=0, description="Σ weight of the classes served.")
    missing_classes: str = pa.Field(description="Classes not served, comma-separated (empty when complete).")
    weighted_cost_per_success: float = pa.Field(nullable=True, description="Σ class CPST × weight; null unless the model serves every class (models compare only on the same mix).")
    ci95_low: float = pa.Field(nullable=True, description="95% interval (classes independent: variance Σ weight² × class variance), lower bound.")
    ci95_high: float = pa.Field(nullable=True, description="Upper bound.")
    served_weighted_cost_per_success: float = pa.Field(nullable=True, description="Σ CPST × weight over the classes served / weight_served: the mix renormalized to what the model serves.")
    sample_ok: bool = pa.Field(description="Every class served has >= 100 labeled intents.")

    class Config:
        strict = True
        unique = ["billing_currency", "model_version"]


class CostPerSuccessTrend(pa.DataFrameModel):
    """Rolling cost per success per feature × currency (models and prompts pooled): for each day
    with intents, the sums of the window of days ending that day, and the ratio and its 95%
    interval recomputed from them."""

    date: pl.Date = pa.Field(description="Last day of the rolling window.")
    window_days: pl.Int64 = pa.Field(isin=[1, 7, 30], description="Length of the window in days (1, 7 or 30), ending on date, included.")
    feature_tag: str = pa.Field(description="Feature.")
    billing_currency: str = pa.Field(isin=_CURRENCIES, description="Currency.")
    days_with_data: pl.Int64 = pa.Field(ge=1, description="Days of the window with intents.")
    intents: pl.Int64 = pa.Field(ge=1, description="Intents in the window.")
    labeled_intents: pl.Int64 = pa.Field(ge=0, description="Labeled intents.")
    successes: pl.Int64 = pa.Field(ge=0, description="Successes.")
    total_cost: _MONEY = pa.Field(description="Token + labor cost of the labeled intents.")
    success_rate: float = pa.Field(nullable=True, description="successes / labeled_intents.")
    label_coverage: float = pa.Field(description="labeled_intents / intents.")
    cost_per_success: float = pa.Field(nullable=True, description="total_cost / successes.")
    ci95_low: float = pa.Field(nullable=True, description="Delta-method 95% interval, lower bound.")
    ci95_high: float = pa.Field(nullable=True, description="Upper bound.")
    sample_ok: bool = pa.Field(description="labeled_intents >= 100.")

    class Config:
        strict = True
        unique = ["date", "window_days", "feature_tag", "billing_currency"]


class VersionRegressions(pa.DataFrameModel):
    """Before/after comparisons when a feature's model or prompt version changes: a (model,
    prompt) version pair starts on a day when it has intents and had none in the window_days
    before while the feature had; it is compared with the version it replaced (the most used in
    those days, preferring one with the same model, then the same prompt)."""

    change_date: pl.Date = pa.Field(description="First day of the new version.")
    feature_tag: str = pa.Field(description="Feature.")
    billing_currency: str = pa.Field(isin=_CURRENCIES, description="Currency.")
    window_days: pl.Int64 = pa.Field(ge=1, description="Days compared on each side of the change.")
    change: str = pa.Field(isin=list(VERSION_CHANGES), description="What changed: model, prompt or model+prompt.")
    model_version_before: str = pa.Field(nullable=True, description="Model version before.")
    prompt_version_before: str = pa.Field(nullable=True, description="Prompt version before.")
    model_version_after: str = pa.Field(nullable=True, description="Model version after.")
    prompt_version_after: str = pa.Field(nullable=True, description="Prompt version after.")
    labeled_intents_before: pl.Int64 = pa.Field(ge=0, description="Labeled intents of the old version in [change_date − window_days, change_date).")
    labeled_intents_after: pl.Int64 = pa.Field(ge=0, description="Labeled intents of the new version in [change_date, change_date + window_days).")
    success_rate_before: float = pa.Field(nullable=True, description="Success rate before.")
    success_rate_after: float = pa.Field(nullable=True, description="Success rate after.")
    cost_per_success_before: float = pa.Field(nullable=True, description="Cost per success before.")
    cost_per_success_before_ci95_low: float = pa.Field(nullable=True, description="Its 95% interval, lower bound.")
    cost_per_success_before_ci95_high: float = pa.Field(nullable=True, description="Upper bound.")
    cost_per_success_after: float = pa.Field(nullable=True, description="Cost per success after.")
    cost_per_success_after_ci95_low: float = pa.Field(nullable=True, description="Its 95% interval, lower bound.")
    cost_per_success_after_ci95_high: float = pa.Field(nullable=True, description="Upper bound.")
    difference: float = pa.Field(nullable=True, description="cost_per_success_after − cost_per_success_before.")
    difference_ci95_low: float = pa.Field(nullable=True, description="95% interval of the difference (independent samples), lower bound.")
    difference_ci95_high: float = pa.Field(nullable=True, description="Upper bound.")
    relative_change: float = pa.Field(nullable=True, description="difference / cost_per_success_before.")
    sample_ok: bool = pa.Field(description="Both sides have >= 100 labeled intents.")
    status: str = pa.Field(isin=list(REGRESSION_STATUSES), description="regressed (cost per success rose, interval of the difference above 0), improved, no significant change, or not enough data.")
    regressed: bool = pa.Field(description="status == 'regressed': what the (warning-only) asset check flags.")

    class Config:
        strict = True
        unique = ["change_date", "feature_tag", "billing_currency", "model_version_after", "prompt_version_after"]


class LabelCoverage(pa.DataFrameModel):
    """Label coverage per ISO week (Monday) × feature: which share of intents has an outcome label."""

    week_start: pl.Date = pa.Field(description="Monday of the ISO week (intents' UTC dates).")
    days_in_window: pl.Int64 = pa.Field(ge=1, le=7, description="Days of the week inside the window: the first and last weeks may be partial.")
    feature_tag: str = pa.Field(description="Feature.")
    intents: pl.Int64 = pa.Field(ge=1, description="Intents, billed or not.")
    labeled_intents: pl.Int64 = pa.Field(ge=0, description="Intents with a label.")
    label_coverage: float = pa.Field(description="labeled_intents / intents.")

    class Config:
        strict = True
        unique = ["week_start", "feature_tag"]
