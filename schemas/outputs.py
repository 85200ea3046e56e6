"""Output tables. Money is an exact decimal in the row's billing_currency; ratios are Float64
computed from the exact sums stored beside them, so analysts can re-aggregate."""

import polars as pl
import pandera.polars as pa
from pandera.engines import polars_engine as pe

from schemas.types import COST_SOURCES, ISO_4217, MATCH_STATUSES, OUTCOMES, TYPED_COSTS

_MONEY = pe.Decimal(38, 18)
_TS = pe.DateTime(time_unit="us", time_zone="UTC")
_CURRENCIES = sorted(ISO_4217)


class RequestCosts(pa.DataFrameModel):
    """One row per request seen in billing, telemetry or both."""

    request_id: str = pa.Field(unique=True, description="Request id (telemetry request_id = FOCUS x_RequestId).")
    date: pl.Date = pa.Field(description="Partition: the call's UTC date; for billing-only requests the UTC date of the earliest ChargePeriodStart.")
    session_id: str = pa.Field(nullable=True, description="Session of the call; null for billing-only requests.")
    called_at: _TS = pa.Field(nullable=True, description="Call timestamp, UTC; null for billing-only requests.")
    feature_tag: str = pa.Field(nullable=True, description="Feature: telemetry's, else FOCUS x_FeatureTag.")
    provider: str = pa.Field(nullable=True, description="Provider: telemetry's, else FOCUS ServiceProviderName.")
    model: str = pa.Field(nullable=True, description="Model name (telemetry).")
    model_version: str = pa.Field(nullable=True, description="Model version: telemetry's, else FOCUS x_ModelVersion.")
    prompt_version: str = pa.Field(nullable=True, description="Prompt version: telemetry's, else FOCUS x_PromptVersion.")
    billing_account_id: str = pa.Field(nullable=True, description="FOCUS BillingAccountId; null for telemetry-only requests.")
    billing_currency: str = pa.Field(nullable=True, isin=_CURRENCIES, description="ISO 4217 currency of the cost columns (billed_cost … allocated_list_cost) of the row: the invoice's, else the estimate's (cost_source gateway_reported, list_estimate); null when nothing billed or estimated it.")
    billed_cost: _MONEY = pa.Field(nullable=True, description="Sum of FOCUS BilledCost of the request's rows plus its allocated shares (billing_currency); for an unbilled call, its estimate (cost_source gateway_reported or list_estimate); null when neither.")
    effective_cost: _MONEY = pa.Field(nullable=True, description="Sum of FOCUS EffectiveCost of the request's rows plus its allocated shares (billing_currency): the cost basis of unit economics; for an unbilled call, its estimate (cost_source says which); null when neither.")
    list_cost: _MONEY = pa.Field(nullable=True, description="Sum of FOCUS ListCost of the request's rows plus its allocated shares (billing_currency); for an unbilled call, its estimate; null when neither.")
    billing_rows: pl.Int64 = pa.Field(ge=0, description="FOCUS rows billed to the request: its own x_RequestId rows plus the aggregated AI rows it has an allocated share of.")
    cost_source: str = pa.Field(nullable=True, isin=list(COST_SOURCES), description="Provenance of the cost: invoice_request (the request's own x_RequestId rows; any allocated part is in the allocated_* columns, for the token types those rows do not bill), invoice_allocated (only shares of aggregated AI bill rows, allocated by token share: docs/allocation.md); for a call no invoice billed: gateway_reported (the gateway's reported cost), else list_estimate (its tokens at the [telemetry] list prices valid on its date); null when none of these.")
    allocated_billed_cost: _MONEY = pa.Field(nullable=True, description="Part of billed_cost allocated from aggregated AI bill rows (0 when none, and for estimates); null when the cost is.")
    allocated_effective_cost: _MONEY = pa.Field(nullable=True, description="Part of effective_cost allocated from aggregated AI bill rows (0 when none, and for estimates); null when the cost is.")
    allocated_list_cost: _MONEY = pa.Field(nullable=True, description="Part of list_cost allocated from aggregated AI bill rows (0 when none, and for estimates); null when the cost is.")
    input_cost: _MONEY = pa.Field(nullable=True, description="Part of effective_cost for uncached input tokens. The four per-token-type costs sum to effective_cost exactly; all four are null for requests no invoice billed (estimates included) and when one of the request's own x_RequestId rows has a non-zero EffectiveCost whose token type cannot be recognized (a per-request total, a fee: the type is derived as for aggregated rows, docs/allocation.md). Allocated shares always have a type.")
    output_cost: _MONEY = pa.Field(nullable=True, description="Part of effective_cost for output tokens (reasoning included); null as input_cost.")
    cache_read_cost: _MONEY = pa.Field(nullable=True, description="Part of effective_cost for cache-read input tokens; null as input_cost.")
    cache_write_cost: _MONEY = pa.Field(nullable=True, description="Part of effective_cost for cache-write input tokens; null as input_cost.")
    input_tokens: pl.Int64 = pa.Field(nullable=True, ge=0, description="Telemetry input tokens (cache reads and writes included).")
    output_tokens: pl.Int64 = pa.Field(nullable=True, ge=0, description="Telemetry output tokens.")
    cache_read_input_tokens: pl.Int64 = pa.Field(nullable=True, ge=0, description="Telemetry cache-read input tokens.")
    cache_write_input_tokens: pl.Int64 = pa.Field(nullable=True, ge=0, description="Telemetry cache-write input tokens.")
    attempt: pl.Int64 = pa.Field(nullable=True, ge=1, description="1 for a first try, 2+ for a retry.")
    status: str = pa.Field(nullable=True, isin=["ok", "error"], description="Call status: ok or error.")
    match_status: str = pa.Field(isin=list(MATCH_STATUSES), description="matched (billed: own rows or allocated shares), billing_only (no telemetry) or telemetry_only (no billing).")
    gateway_reported_cost: _MONEY = pa.Field(nullable=True, description="Cost the gateway reported for the call (LiteLLM spend, OpenRouter total_cost, Helicone cost), in gateway_reported_currency, whatever billed it: beside the invoice's cost of a billed request (the invoice wins for cost; the gap per provider and model is in gateway_gap), the request's cost when nothing billed it (cost_source gateway_reported). Null when no gateway reported one.")
    gateway_reported_currency: str = pa.Field(nullable=True, isin=_CURRENCIES, description="ISO 4217 currency of gateway_reported_cost.")
    after_tool_call: bool = pa.Field(nullable=True, description="The call sends tool results back to the model: in its trace, an execute_tool span under the same parent ended before the call started (docs/telemetry-sources.md). Null when the call has no trace to tell (flat events, gateway logs).")

    class Config:
        strict = True

    @pa.dataframe_check
    def estimates_are_unbilled(cls, data) -> pl.LazyFrame:
        # An estimate (gateway_reported, list_estimate) is never a billed request's cost.
        estimate = pl.col("cost_source").is_in(["gateway_reported", "list_estimate"]).fill_null(False)
        return data.lazyframe.select(~estimate | (pl.col("billing_rows") == 0))

    @pa.dataframe_check
    def match_status_agrees_with_sides(cls, data) -> pl.LazyFrame:
        billed = pl.col("billing_rows") > 0
        seen = pl.col("session_id").is_not_null()
        expected = (
            pl.when(billed & seen).then(pl.lit("matched"))
            .when(billed).then(pl.lit("billing_only"))
            .otherwise(pl.lit("telemetry_only"))
        )
        return data.lazyframe.select(pl.col("match_status") == expected)

    @pa.dataframe_check
    def typed_costs_sum_to_effective_cost(cls, data) -> pl.LazyFrame:
        # All four known or none; known ones add up to effective_cost exactly.
        typed = [pl.col(c) for c in TYPED_COSTS]
        known = pl.all_horizontal(c.is_not_null() for c in typed)
        return data.lazyframe.select(
            pl.when(known).then(pl.sum_horizontal(typed) == pl.col("effective_cost")).otherwise(~pl.any_horizontal(c.is_not_null() for c in typed))
        )


class IntentCosts(pa.DataFrameModel):
    """One row per intent: a session's calls from its first call's date up to pipeline.session_days after it."""

    session_id: str = pa.Field(description="The session. A session calling again after a pause longer than pipeline.session_days starts a new intent, a row of its own with a later date.")
    date: pl.Date = pa.Field(description="Partition: UTC date of the intent's first call.")
    feature_tag: str = pa.Field(description="Feature of the intent's last call.")
    model: str = pa.Field(nullable=True, description="Model of the intent's last call.")
    model_version: str = pa.Field(nullable=True, description="Model version of the intent's last call.")
    prompt_version: str = pa.Field(nullable=True, description="Prompt version of the intent's last call.")
    billing_currency: str = pa.Field(nullable=True, isin=_CURRENCIES, description="Currency of the intent's billed calls; null when none was billed.")
    requests: pl.Int64 = pa.Field(ge=1, description="Calls in the intent, retries included.")
    turns: pl.Int64 = pa.Field(ge=0, description="First attempts (calls with attempt = 1): the conversation's turns.")
    retries: pl.Int64 = pa.Field(ge=0, description="Calls with attempt > 1.")
    unbilled_requests: pl.Int64 = pa.Field(ge=0, description="Calls with no FOCUS row within pipeline.billing_delay_days (yet).")
    token_cost: _MONEY = pa.Field(nullable=True, description="Sum of effective_cost of all the intent's calls, failed and retried ones included; null when none was billed.")
    allocated_token_cost: _MONEY = pa.Field(nullable=True, description="Part of token_cost allocated from aggregated AI bill rows by token share (request_costs.allocated_effective_cost). Null when none was billed.")
    gateway_reported_token_cost: _MONEY = pa.Field(nullable=True, description="Part of token_cost that is gateway-reported estimates (calls no invoice billed, cost_source gateway_reported). Null when none was billed.")
    list_estimate_token_cost: _MONEY = pa.Field(nullable=True, description="Part of token_cost that is list-price estimates (calls with neither invoice nor gateway cost, cost_source list_estimate); token_cost − allocated − gateway_reported − list_estimate is invoice_request cost. Null when none was billed.")
    outcome: str = pa.Field(isin=list(OUTCOMES), description="success, failure, or unlabeled (no label yet), from the session's latest label.")
    escalated: bool = pa.Field(nullable=True, description="Latest label's escalated flag; null when unlabeled.")
    labor_cost: _MONEY = pa.Field(nullable=True, description="L(feature, currency) from the labor config when the outcome is failure, else 0; null when billing_currency is null.")
    total_cost: _MONEY = pa.Field(nullable=True, description="token_cost + labor_cost.")

    class Config:
        strict = True
        unique = ["session_id", "date"]

    @pa.dataframe_check
    def total_is_token_plus_labor(cls, data) -> pl.LazyFrame:
        return data.lazyframe.select(
            (pl.col("total_cost") == pl.col("token_cost") + pl.col("labor_cost")).fill_null(
                pl.col("total_cost").is_null()
            )
        )

    @pa.dataframe_check
    def failures_have_labor_cost(cls, data) -> pl.LazyFrame:
        # A failed, billed intent without a labor cost means the labor config lacks its currency.
        return data.lazyframe.select(
            ~((pl.col("outcome") == "failure") & pl.col("billing_currency").is_not_null() & pl.col("labor_cost").is_null())
        )


class _Grain(pa.DataFrameModel):
    date: pl.Date = pa.Field(description="Partition: the intents' date.")
    feature_tag: str = pa.Field(description="Feature.")
    model_version: str = pa.Field(nullable=True, description="Model version of the intents' last call.")
    prompt_version: str = pa.Field(nullable=True, description="Prompt version of the intents' last call.")
    billing_currency: str = pa.Field(nullable=True, isin=_CURRENCIES, description="Currency of every money column; null for intents none of whose calls were billed (their money columns are null).")


class CostPerIntent(_Grain):
    """Cost per intent, every intent counted."""

    intents: pl.Int64 = pa.Field(ge=1, description="Intents (sessions).")
    requests: pl.Int64 = pa.Field(ge=1, description="Calls, retries included.")
    token_cost: _MONEY = pa.Field(nullable=True, description="Sum of intents' token_cost.")
    allocated_token_cost: _MONEY = pa.Field(nullable=True, description="Part of token_cost allocated from aggregated AI bill rows (cost_source invoice_allocated shares).")
    gateway_reported_token_cost: _MONEY = pa.Field(nullable=True, description="Part of token_cost that is gateway-reported estimates (cost_source gateway_reported).")
    list_estimate_token_cost: _MONEY = pa.Field(nullable=True, description="Part of token_cost that is list-price estimates (cost_source list_estimate); token_cost − allocated − gateway_reported − list_estimate is invoice_request cost.")
    labor_cost: _MONEY = pa.Field(nullable=True, description="Sum of intents' labor_cost (failures × L).")
    total_cost: _MONEY = pa.Field(nullable=True, description="token_cost + labor_cost.")
    token_cost_per_intent: float = pa.Field(nullable=True, description="token_cost / intents.")
    cost_per_intent: float = pa.Field(nullable=True, description="total_cost / intents.")

    class Config:
        strict = True
        unique = ["date", "feature_tag", "model_version", "prompt_version", "billing_currency"]


class CostPerSuccess(_Grain):
    """Cost per successful intent, over labeled intents only, with a delta-method 95% interval."""

    intents: pl.Int64 = pa.Field(ge=1, description="All intents of the grain, labeled or not (denominator of label_coverage).")
    labeled_intents: pl.Int64 = pa.Field(ge=0, description="Intents with an outcome label.")
    successes: pl.Int64 = pa.Field(ge=0, description="Labeled intents whose outcome is success.")
    failures: pl.Int64 = pa.Field(ge=0, description="Labeled intents whose outcome is failure.")
    escalations: pl.Int64 = pa.Field(ge=0, description="Labeled intents escalated to a human.")
    success_rate: float = pa.Field(nullable=True, description="successes / labeled_intents.")
    label_coverage: float = pa.Field(description="labeled_intents / intents.")
    token_cost: _MONEY = pa.Field(nullable=True, description="Sum of token_cost over labeled intents.")
    allocated_token_cost: _MONEY = pa.Field(nullable=True, description="Part of token_cost (labeled intents) allocated from aggregated AI bill rows.")
    gateway_reported_token_cost: _MONEY = pa.Field(nullable=True, description="Part of token_cost (labeled intents) that is gateway-reported estimates (cost_source gateway_reported).")
    list_estimate_token_cost: _MONEY = pa.Field(nullable=True, description="Part of token_cost (labeled intents) that is list-price estimates (cost_source list_estimate); token_cost − allocated − gateway_reported − list_estimate is invoice_request cost.")
    labor_cost: _MONEY = pa.Field(nullable=True, description="Sum of labor_cost over labeled intents.")
    total_cost: _MONEY = pa.Field(nullable=True, description="token_cost + labor_cost over labeled intents.")
    success_total_cost: _MONEY = pa.Field(nullable=True, description="Sum of total_cost over successful intents (a moment for re-aggregating the interval).")
    total_cost_sq: float = pa.Field(nullable=True, description="Sum of squared intent total_cost over labeled intents (a moment for re-aggregating the interval).")
    token_cost_per_success: float = pa.Field(nullable=True, description="token_cost / successes; null when there is no success.")
    cost_per_success: float = pa.Field(nullable=True, description="total_cost / successes; null when there is no success.")
    ci95_low: float = pa.Field(nullable=True, description="Lower bound of the delta-method 95% interval of cost_per_success (intents as the sampling unit).")
    ci95_high: float = pa.Field(nullable=True, description="Upper bound of that interval.")
    sample_ok: bool = pa.Field(description="labeled_intents >= 100.")

    class Config:
        strict = True
        unique = ["date", "feature_tag", "model_version", "prompt_version", "billing_currency"]

    @pa.dataframe_check
    def counts_add_up(cls, data) -> pl.LazyFrame:
        return data.lazyframe.select(
            (pl.col("successes") + pl.col("failures") == pl.col("labeled_intents"))
            & (pl.col("labeled_intents") <= pl.col("intents"))
        )


class Quarantine(pa.DataFrameModel):
    """Input rows held back, with where they came from and why: rows that failed validation, and valid
    rows that cannot be counted where they belong (a billing period outside pipeline.start_date..today,
    late billing, the calls of an intent billed in two currencies). Nothing is dropped silently."""

    source: str = pa.Field(isin=["focus", "events"], description="Which landing folder.")
    source_file: str = pa.Field(description="File, relative to its landing folder.")
    source_line: pl.Int64 = pa.Field(ge=1, description="Line (CSV: header is line 1; JSONL: physical line) or Parquet row number.")
    column: str = pa.Field(description="Failing column(s), comma-separated.")
    reason: str = pa.Field(description="Why the row was rejected.")
    raw: str = pa.Field(description="The row as read, as a JSON object of strings.")
    billing_account_id: str = pa.Field(nullable=True, description="FOCUS BillingAccountId text, when the row has one.")
    billing_currency: str = pa.Field(nullable=True, description="FOCUS BillingCurrency text.")
    billing_period_start: _TS = pa.Field(nullable=True, description="FOCUS BillingPeriodStart when it parses.")
    invoice_id: str = pa.Field(nullable=True, description="FOCUS InvoiceId.")
    service_provider_name: str = pa.Field(nullable=True, description="FOCUS ServiceProviderName (or ProviderName).")
    billed_cost: _MONEY = pa.Field(nullable=True, description="FOCUS BilledCost when it parses: quarantined cost still counts in reconciliation.")
    effective_cost: _MONEY = pa.Field(nullable=True, description="FOCUS EffectiveCost when it parses.")

    class Config:
        strict = True
