"""Reconciliation tables: every billed cent of a billing period split into where it went, invoices
compared with the accounts-payable totals, billed tokens compared with telemetry's.

Money is an exact decimal in the row's billing_currency; nothing is summed across currencies.
"""

import polars as pl
import pandera.polars as pa
from pandera.engines import polars_engine as pe

from schemas.monthly import BILLING_PERIOD_PATTERN

_MONEY = pe.Decimal(38, 18)
_QUANTITY = pe.Decimal(38, 18)
STATUSES = ("ok", "warn", "fail")
_KEY = ["billing_period", "billing_account_id", "invoice_id", "service_provider_name", "billing_currency"]


class _Figures(pa.DataFrameModel):
    """The split of one group of FOCUS rows; shared by the monthly and the daily table."""

    billing_period: str = pa.Field(str_matches=BILLING_PERIOD_PATTERN, description="UTC month (YYYY-MM) of FOCUS BillingPeriodStart; for telemetry-only rows, of the calls.")
    billing_account_id: str = pa.Field(nullable=True, description="FOCUS BillingAccountId; null on telemetry-only rows (telemetry has no account) and on quarantined rows without one.")
    invoice_id: str = pa.Field(nullable=True, description="FOCUS InvoiceId; null when not invoiced yet, and on telemetry-only rows.")
    service_provider_name: str = pa.Field(nullable=True, description="FOCUS ServiceProviderName; on telemetry-only rows the provider as telemetry names it.")
    billing_currency: str = pa.Field(nullable=True, description="FOCUS BillingCurrency of every money column of the row; null on telemetry-only rows. A code that is not ISO 4217 appears only with quarantined rows.")
    billing_rows: pl.Int64 = pa.Field(ge=0, description="Current FOCUS rows (after the restatement rule), quarantined ones excluded.")
    quarantined_rows: pl.Int64 = pa.Field(ge=0, description="Current FOCUS rows in the quarantine table.")
    quarantined_rows_unknown_cost: pl.Int64 = pa.Field(ge=0, description="Quarantined rows whose BilledCost is unreadable or out of range (10^15 or more in magnitude): their cost is in no column, so billed_total is incomplete (status fail).")
    attributed_requests: pl.Int64 = pa.Field(ge=0, description="Distinct x_RequestId of the attributed rows.")
    unmatched_requests: pl.Int64 = pa.Field(ge=0, description="Distinct x_RequestId of the unmatched rows.")
    conflicting_requests: pl.Int64 = pa.Field(ge=0, description="Distinct x_RequestId billed to more than one billing account or currency in the billing period.")
    late_requests: pl.Int64 = pa.Field(ge=0, description="Distinct x_RequestId of the late-billed rows.")
    telemetry_only_requests: pl.Int64 = pa.Field(ge=0, description="Requests telemetry logged in the period with no FOCUS row within pipeline.billing_delay_days of the call and no allocated share of an aggregated AI row (only on telemetry-only rows, else 0).")
    telemetry_requests: pl.Int64 = pa.Field(nullable=True, ge=0, description="Requests telemetry logged in the period for the provider: the denominator of the telemetry-only share; null on billing rows.")
    billed_total: _MONEY = pa.Field(description="Σ BilledCost of every current row, quarantined rows with a readable cost included.")
    attributed_cost: _MONEY = pa.Field(description="Σ BilledCost of rows whose request's call telemetry logged at most pipeline.billing_delay_days from the row's ChargePeriodStart date (in request_costs as that call's cost).")
    unmatched_billing_cost: _MONEY = pa.Field(description="Σ BilledCost of rows whose x_RequestId telemetry never logged (within pipeline.detection_horizon_days): billing-only requests.")
    late_billing_cost: _MONEY = pa.Field(description="Σ BilledCost of late-billed rows: their request's call (or first row, for a billing-only request) is more than pipeline.billing_delay_days away; not in request_costs, listed in the quarantine.")
    conflicting_cost: _MONEY = pa.Field(description="Σ BilledCost of rows of conflicting requests (left out of request_costs, listed in request_conflicts).")
    allocated_cost: _MONEY = pa.Field(description="BilledCost of AI token rows without x_RequestId allocated to logged calls by token share (request_costs.allocated_billed_cost).")
    unlogged_usage_cost: _MONEY = pa.Field(description="BilledCost of AI token rows for tokens billed and not logged: pool cost × (billed − logged) / billed.")
    unmatched_pool_cost: _MONEY = pa.Field(description="BilledCost of AI token rows no logged call could share (no call of that model, type, account and period).")
    unrecognized_usage_cost: _MONEY = pa.Field(description="BilledCost of token rows whose model, token type, unit or quantity is unknown, or whose charge period is longer than a day (listed in unrecognized_usage).")
    unattributable_cost: _MONEY = pa.Field(description="Σ BilledCost of the other rows without x_RequestId: tax, fees, credits, purchases, corrections, non-token usage (shared cost).")
    quarantined_cost: _MONEY = pa.Field(description="Σ readable BilledCost of quarantined rows: part of the invoice, in no other column.")
    delta: _MONEY = pa.Field(description="billed_total − (attributed + unmatched + late + conflicting + allocated + unlogged_usage + unmatched_pool + unrecognized_usage + unattributable + quarantined): must be exactly 0.")
    coverage: float = pa.Field(nullable=True, description="attributed_cost / billed_total; null when billed_total is 0.")
    token_coverage: float = pa.Field(nullable=True, description="(attributed_cost + allocated_cost) / AI token cost (attributed, unmatched, conflicting, allocated, unlogged usage, unmatched pools, unrecognized usage); null when there is none. Below [allocation] token_coverage_warn: warn.")
    effective_total: _MONEY = pa.Field(description="Σ EffectiveCost of every current row, quarantined rows with a readable cost included.")
    attributed_effective_cost: _MONEY = pa.Field(description="EffectiveCost of the attributed rows.")
    unmatched_effective_cost: _MONEY = pa.Field(description="EffectiveCost of the unmatched rows.")
    late_effective_cost: _MONEY = pa.Field(description="EffectiveCost of the late-billed rows.")
    conflicting_effective_cost: _MONEY = pa.Field(description="EffectiveCost of the conflicting rows.")
    allocated_effective_cost: _MONEY = pa.Field(description="EffectiveCost allocated to logged calls.")
    unlogged_usage_effective_cost: _MONEY = pa.Field(description="EffectiveCost of unlogged usage.")
    unmatched_pool_effective_cost: _MONEY = pa.Field(description="EffectiveCost of unmatched pools.")
    unrecognized_usage_effective_cost: _MONEY = pa.Field(description="EffectiveCost of unrecognized token rows.")
    unattributable_effective_cost: _MONEY = pa.Field(description="EffectiveCost of the other rows without x_RequestId.")
    quarantined_effective_cost: _MONEY = pa.Field(description="Readable EffectiveCost of quarantined rows.")
    effective_delta: _MONEY = pa.Field(description="effective_total − the ten EffectiveCost parts: must be exactly 0.")
    status: str = pa.Field(isin=list(STATUSES), description="ok, warn or fail, from the [reconciliation] thresholds in unitledger.toml.")
    status_reason: str = pa.Field(description="Why the status is what it is (every threshold crossed, '; '-separated).")


class Reconciliation(_Figures):
    """One row per billing period, billing account, invoice, provider and currency: the period's
    billed total split into attributed, unmatched, late, conflicting, unattributable and quarantined
    cost, plus one row per period and provider for requests telemetry logged and nothing billed."""

    invoice_total: _MONEY = pa.Field(nullable=True, description="The invoice's total from landing/invoices/ (per invoice, repeated on each of its rows: do not sum); null when not listed.")
    invoice_delta: _MONEY = pa.Field(nullable=True, description="Σ billed_total of the invoice's rows in the period − invoice_total (per invoice, repeated); null when not listed.")

    class Config:
        strict = True
        unique = _KEY


class ReconciliationDaily(_Figures):
    """The reconciliation's figures per UTC day: FOCUS rows by the date of their ChargePeriodStart,
    telemetry-only requests by their call date. Attribution follows the monthly rule, so a
    billing period's days add up to its monthly row (quarantined rows without a readable
    ChargePeriodStart are in the monthly table only)."""

    date: pl.Date = pa.Field(description="Partition: UTC date of ChargePeriodStart (telemetry-only rows: of the call).")

    class Config:
        strict = True
        unique = ["date", *_KEY]


class TokenReconciliation(pa.DataFrameModel):
    """Per billing period, provider and model: requests whose billed token quantities were compared
    with telemetry's token counts, and how many disagree. Convention: telemetry input_tokens
    include cache reads and writes (OpenTelemetry), FOCUS `Input Tokens` exclude them."""

    billing_period: str = pa.Field(str_matches=BILLING_PERIOD_PATTERN, description="Partition: UTC month of FOCUS BillingPeriodStart.")
    service_provider_name: str = pa.Field(nullable=True, description="FOCUS ServiceProviderName of the request's token rows.")
    model: str = pa.Field(nullable=True, description="Telemetry model.")
    requests_compared: pl.Int64 = pa.Field(ge=1, description="Requests with token rows in FOCUS attributed to a call in telemetry.")
    requests_mismatched: pl.Int64 = pa.Field(ge=0, description="Of those, requests where any token type differs (listed in token_mismatches).")
    billed_input_tokens: _QUANTITY = pa.Field(description="Σ ConsumedQuantity of `Input Tokens` rows, in tokens (cache excluded).")
    telemetry_input_tokens: pl.Int64 = pa.Field(description="Σ telemetry input_tokens − cache_read − cache_write: comparable with billed_input_tokens.")
    billed_output_tokens: _QUANTITY = pa.Field(description="Σ ConsumedQuantity of `Output Tokens` rows, in tokens.")
    telemetry_output_tokens: pl.Int64 = pa.Field(description="Σ telemetry output_tokens.")
    billed_cache_read_tokens: _QUANTITY = pa.Field(description="Σ ConsumedQuantity of `Cache Read Tokens` rows, in tokens.")
    telemetry_cache_read_tokens: pl.Int64 = pa.Field(description="Σ telemetry cache_read_input_tokens.")
    billed_cache_write_tokens: _QUANTITY = pa.Field(description="Σ ConsumedQuantity of `Cache Write Tokens` rows, in tokens.")
    telemetry_cache_write_tokens: pl.Int64 = pa.Field(description="Σ telemetry cache_write_input_tokens.")

    class Config:
        strict = True
        unique = ["billing_period", "service_provider_name", "model"]

    @pa.dataframe_check
    def mismatches_within_compared(cls, data) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("requests_mismatched") <= pl.col("requests_compared"))


class TokenMismatches(pa.DataFrameModel):
    """One row per request whose billed token quantities differ from telemetry's token counts."""

    billing_period: str = pa.Field(str_matches=BILLING_PERIOD_PATTERN, description="Partition: UTC month of FOCUS BillingPeriodStart.")
    request_id: str = pa.Field(description="FOCUS x_RequestId = telemetry request_id.")
    billing_account_id: str = pa.Field(description="FOCUS BillingAccountId of the token rows.")
    service_provider_name: str = pa.Field(nullable=True, description="FOCUS ServiceProviderName of the token rows.")
    provider: str = pa.Field(nullable=True, description="Telemetry provider.")
    model: str = pa.Field(nullable=True, description="Telemetry model.")
    call_date: pl.Date = pa.Field(description="UTC date of the call.")
    mismatched: str = pa.Field(description="Token types that differ, comma-separated: input, output, cache_read, cache_write.")
    billed_input_tokens: _QUANTITY = pa.Field(description="Billed `Input Tokens` (cache excluded).")
    telemetry_input_tokens: pl.Int64 = pa.Field(description="Telemetry input_tokens − cache_read − cache_write.")
    billed_output_tokens: _QUANTITY = pa.Field(description="Billed `Output Tokens`.")
    telemetry_output_tokens: pl.Int64 = pa.Field(description="Telemetry output_tokens.")
    billed_cache_read_tokens: _QUANTITY = pa.Field(description="Billed `Cache Read Tokens`.")
    telemetry_cache_read_tokens: pl.Int64 = pa.Field(description="Telemetry cache_read_input_tokens.")
    billed_cache_write_tokens: _QUANTITY = pa.Field(description="Billed `Cache Write Tokens`.")
    telemetry_cache_write_tokens: pl.Int64 = pa.Field(description="Telemetry cache_write_input_tokens.")

    class Config:
        strict = True
        unique = ["billing_period", "request_id"]


class RequestConflicts(pa.DataFrameModel):
    """Requests billed to more than one billing account or currency within a billing period, one row
    per account, currency, invoice and provider. Their rows are left out of request_costs (a
    request has one currency) and counted as conflicting_cost in the reconciliation."""

    billing_period: str = pa.Field(str_matches=BILLING_PERIOD_PATTERN, description="Partition: UTC month of FOCUS BillingPeriodStart.")
    request_id: str = pa.Field(description="FOCUS x_RequestId.")
    billing_account_id: str = pa.Field(description="FOCUS BillingAccountId.")
    billing_currency: str = pa.Field(description="FOCUS BillingCurrency.")
    invoice_id: str = pa.Field(nullable=True, description="FOCUS InvoiceId.")
    service_provider_name: str = pa.Field(description="FOCUS ServiceProviderName.")
    billing_rows: pl.Int64 = pa.Field(ge=1, description="FOCUS rows.")
    billed_cost: _MONEY = pa.Field(description="Σ BilledCost (billing_currency).")
    effective_cost: _MONEY = pa.Field(description="Σ EffectiveCost (billing_currency).")

    class Config:
        strict = True


class GatewayGap(pa.DataFrameModel):
    """Per day, provider and model: what gateways reported for the requests an invoice billed,
    against the invoice's cost of those same requests (request_costs' gateway_reported_cost beside
    billed_cost) — the comparison LiteLLM's users otherwise do by hand. Only requests both billed
    and gateway-reported; the invoice's cost is the one the other tables use."""

    date: pl.Date = pa.Field(description="Partition: the requests' date (request_costs.date).")
    provider: str = pa.Field(nullable=True, description="Provider of the calls.")
    model: str = pa.Field(nullable=True, description="Model of the calls (telemetry's name).")
    billing_currency: str = pa.Field(description="Currency of the invoice cost and, for compared requests, of the gateway's figure.")
    requests: pl.Int64 = pa.Field(ge=0, description="Requests both billed and gateway-reported in billing_currency: the ones compared.")
    other_currency_requests: pl.Int64 = pa.Field(ge=0, description="Requests billed in billing_currency but gateway-reported in another currency: not compared (no exchange rate is guessed).")
    invoice_cost: _MONEY = pa.Field(description="Sum of billed_cost of the compared requests (what the invoice charged, allocated shares included).")
    gateway_reported_cost: _MONEY = pa.Field(description="Sum of gateway_reported_cost of the compared requests.")
    gap: _MONEY = pa.Field(description="gateway_reported_cost − invoice_cost, exact: positive when the gateway overestimated.")
    gap_share: float = pa.Field(nullable=True, description="gap / invoice_cost; null when invoice_cost is 0.")

    class Config:
        strict = True
        unique = ["date", "provider", "model", "billing_currency"]

    @pa.dataframe_check
    def gap_is_the_difference(cls, data) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("gap") == pl.col("gateway_reported_cost") - pl.col("invoice_cost"))
