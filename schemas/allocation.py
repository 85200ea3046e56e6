"""Tables of invoice-grounded allocation: AI billing rows without a request id, recognized as token
usage and allocated to the requests telemetry logged, by token share (unitledger.model.allocation).

Money is an exact decimal in the row's billing currency. `source_file` + `source_line` name the
origin FOCUS row everywhere, so every split can be traced back to the bill."""

import polars as pl
import pandera.polars as pa
from pandera.engines import polars_engine as pe

from schemas.focus import StagedFocus
from schemas.types import ISO_4217, TOKEN_TYPES

_MONEY = pe.Decimal(38, 18)
_QUANTITY = pe.Decimal(38, 18)
_TS = pe.DateTime(time_unit="us", time_zone="UTC")
_CURRENCIES = sorted(ISO_4217)

USAGE_CLASSES = ("token", "unrecognized_token", "shared")
ALLOCATION_SCOPES = ("pool", "sub_accounts", "accounts")
# How an origin row's cost went: allocated (billed >= logged, the rest is unlogged usage),
# over_logged (logged > billed: rate = cost / logged, nothing unlogged), logged_share (no billed
# quantity: by share of the logged tokens); or, with nothing to allocate to, the whole cost is
# unmatched: unmatched_pool (billed tokens, no call logged), zero_quantity (neither side has a
# token), quantity_out_of_range (a pool of 10^18 tokens or more).
POOL_STATUSES = ("allocated", "over_logged", "logged_share", "unmatched_pool", "zero_quantity", "quantity_out_of_range")
ALLOCATED_STATUSES = ("allocated", "over_logged", "logged_share")
UNMATCHED_REASONS = ("unknown_model", "ambiguous_model", "no_pool", "two_currencies")
COST_COLUMNS = ("billed_cost", "effective_cost", "list_cost")


def _source_file():
    return pa.Field(description="Landing file of the origin FOCUS row, relative to landing/focus/.")


def _source_line():
    return pa.Field(ge=1, description="Line of the origin FOCUS row in its file.")


class _UsageRow(pa.DataFrameModel):
    source_file: str = _source_file()
    source_line: pl.Int64 = _source_line()
    BillingAccountId: str = pa.Field(description="FOCUS BillingAccountId.")
    BillingCurrency: str = pa.Field(isin=_CURRENCIES, description="FOCUS BillingCurrency.")
    ChargePeriodStart: _TS = pa.Field(description="FOCUS ChargePeriodStart (inclusive), UTC.")
    ServiceProviderName: str = pa.Field(description="FOCUS ServiceProviderName.")
    SkuId: str = pa.Field(nullable=True, description="FOCUS SkuId.")
    SkuMeter: str = pa.Field(nullable=True, description="FOCUS SkuMeter.")
    meter_name: str = pa.Field(nullable=True, description="Provider meter text beside SkuMeter: x_SkuMeterName (Azure), else x_UsageType (AWS).")
    ConsumedQuantity: _QUANTITY = pa.Field(nullable=True, description="FOCUS ConsumedQuantity, in ConsumedUnit.")
    ConsumedUnit: str = pa.Field(nullable=True, description="FOCUS ConsumedUnit.")
    BilledCost: _MONEY = pa.Field(description="FOCUS BilledCost.")
    EffectiveCost: _MONEY = pa.Field(description="FOCUS EffectiveCost.")
    ListCost: _MONEY = pa.Field(description="FOCUS ListCost.")


class ClassifiedUsage(_UsageRow):
    """Every FOCUS row without an x_RequestId, classified: an AI token row (model and token type
    derived), a token row that could not be recognized, or shared cost (tax, fees, credits,
    purchases, non-token meters such as requests or text records)."""

    SubAccountId: str = pa.Field(nullable=True, description="FOCUS SubAccountId (project, subscription, workspace).")
    ChargePeriodEnd: _TS = pa.Field(description="FOCUS ChargePeriodEnd (exclusive), UTC.")
    ChargeCategory: str = pa.Field(description="FOCUS ChargeCategory: only Usage rows can be token rows.")
    usage_class: str = pa.Field(isin=list(USAGE_CLASSES), description="token (model and token type known), unrecognized_token (a token row whose model, type, unit or quantity cannot be used) or shared (not AI token usage).")
    reason: str = pa.Field(nullable=True, description="Why the row is unrecognized_token or shared; null for token rows.")
    billed_model: str = pa.Field(nullable=True, description="Model as the bill names it (before normalization).")
    token_type: str = pa.Field(nullable=True, isin=list(TOKEN_TYPES), description="input (uncached), output (reasoning included), cache_read or cache_write.")
    recognized_by: str = pa.Field(nullable=True, description="Sources of the model and of the token type, e.g. 'x_ModelVersion+SkuMeter:focus', 'x_UsageType:bedrock+x_UsageType:bedrock' (? = none).")
    tokens_per_unit: pl.Int64 = pa.Field(nullable=True, ge=1, description="Tokens in one ConsumedUnit (Tokens 1, 1000 Tokens 1000, 1M 1000000, ...).")
    billed_tokens: _QUANTITY = pa.Field(nullable=True, ge=0, description="ConsumedQuantity x tokens_per_unit: the tokens the row bills; null when the row has no quantity.")

    class Config:
        strict = True


class UnrecognizedUsage(_UsageRow):
    """Token rows whose model, token type, unit or quantity could not be derived: never guessed,
    never dropped. Their cost stays out of the allocation; add a meter rule, a unit or an alias
    to the config to recognize them."""

    reason: str = pa.Field(description="What could not be derived: no model, no token type, unknown unit, negative quantity.")

    class Config:
        strict = True


class CallTokens(pa.DataFrameModel):
    """One row per logged call and token type with tokens (0 tokens of a type: no row), minus the
    (request, token type) pairs the request's own x_RequestId rows bill exactly."""

    request_id: str = pa.Field(description="Telemetry request id.")
    called_at: _TS = pa.Field(description="Call timestamp, UTC: the charge period containing it is the call's pool.")
    feature_tag: str = pa.Field(description="Feature of the call.")
    model_version: str = pa.Field(nullable=True, description="Telemetry model version.")
    prompt_version: str = pa.Field(nullable=True, description="Telemetry prompt version.")
    provider: str = pa.Field(nullable=True, description="Provider, normalized (unitledger.model.model_names.provider_key).")
    call_model: str = pa.Field(nullable=True, description="The model the call names: model_version, else model (model + '-' + model_version when the version has no letter).")
    billing_account_hint: str = pa.Field(nullable=True, description="Billing account the call belongs to: its own hint, else the first matching account rule; null: unknown.")
    sub_account_hint: str = pa.Field(nullable=True, description="Sub-account (project, workspace) the call belongs to; null: unknown.")
    own_currency: str = pa.Field(nullable=True, description="BillingCurrency of the request's own x_RequestId rows; null when it has none. A request takes no share of pools in another currency.")
    token_type: str = pa.Field(isin=list(TOKEN_TYPES), description="input (uncached: input - cache_read - cache_write), output, cache_read or cache_write.")
    tokens: pl.Int64 = pa.Field(gt=0, description="Tokens of this type.")

    class Config:
        strict = True


class _PoolKeys(pa.DataFrameModel):
    provider: str = pa.Field(description="Provider, normalized from FOCUS ServiceProviderName.")
    billing_account_id: str = pa.Field(description="FOCUS BillingAccountId of the origin row.")
    sub_account_id: str = pa.Field(nullable=True, description="FOCUS SubAccountId of the origin row.")
    model: str = pa.Field(description="Model, normalized from what the bill names (unitledger.model.model_names).")
    token_type: str = pa.Field(isin=list(TOKEN_TYPES), description="Token type the origin row bills.")
    charge_period_start: _TS = pa.Field(description="FOCUS ChargePeriodStart of the origin row (inclusive).")
    charge_period_end: _TS = pa.Field(description="FOCUS ChargePeriodEnd of the origin row (exclusive).")
    billing_currency: str = pa.Field(isin=_CURRENCIES, description="FOCUS BillingCurrency of the origin row.")
    allocation_scope: str = pa.Field(isin=list(ALLOCATION_SCOPES), description="pool: the account's own pool; sub_accounts / accounts: calls that could belong to several sub-accounts / accounts of the same provider, model, type, period and currency made those pools one, allocated together.")


class RequestAllocations(_PoolKeys):
    """A request's share of one origin FOCUS row: tokens x cost / max(billed tokens, logged tokens)
    of its pool, exact to 1e-18, rounding leftovers by largest remainder."""

    request_id: str = pa.Field(description="Telemetry request id.")
    source_file: str = _source_file()
    source_line: pl.Int64 = _source_line()
    called_at: _TS = pa.Field(description="Call timestamp, UTC.")
    feature_tag: str = pa.Field(description="Feature of the call.")
    model_version: str = pa.Field(nullable=True, description="Telemetry model version.")
    prompt_version: str = pa.Field(nullable=True, description="Telemetry prompt version.")
    tokens: pl.Int64 = pa.Field(gt=0, description="The call's tokens of token_type.")
    effective_rate: float = pa.Field(description="EffectiveCost of the origin row per token of its pool (informational: the amounts are computed exactly, not from it).")
    billed_cost: _MONEY = pa.Field(description="Share of the origin row's BilledCost.")
    effective_cost: _MONEY = pa.Field(description="Share of the origin row's EffectiveCost.")
    list_cost: _MONEY = pa.Field(description="Share of the origin row's ListCost.")

    class Config:
        strict = True
        unique = ["request_id", "source_file", "source_line"]


class AllocationPools(_PoolKeys):
    """One row per recognized AI token row: its pool, billed and logged tokens and where each cost
    column went. cost = allocated + unlogged + unmatched exactly, for each cost column."""

    source_file: str = _source_file()
    source_line: pl.Int64 = _source_line()
    status: str = pa.Field(isin=list(POOL_STATUSES), description="allocated, over_logged, logged_share (cost allocated); unmatched_pool, zero_quantity, quantity_out_of_range (whole cost unmatched).")
    billed_tokens: _QUANTITY = pa.Field(nullable=True, description="Tokens the origin row bills (null: no quantity).")
    pool_billed_tokens: _QUANTITY = pa.Field(description="Tokens billed by all the rows of the pool (0 when none has a quantity).")
    pool_logged_tokens: pl.Int64 = pa.Field(ge=0, description="Tokens logged by the pool's calls.")
    pool_calls: pl.Int64 = pa.Field(ge=0, description="Calls in the pool.")
    pool_rows: pl.Int64 = pa.Field(ge=1, description="FOCUS rows in the pool.")
    allocation_base_tokens: _QUANTITY = pa.Field(nullable=True, description="max(pool_billed_tokens, pool_logged_tokens): the denominator of the rate; null when nothing was allocated.")
    billed_cost: _MONEY = pa.Field(description="FOCUS BilledCost of the origin row.")
    effective_cost: _MONEY = pa.Field(description="FOCUS EffectiveCost of the origin row.")
    list_cost: _MONEY = pa.Field(description="FOCUS ListCost of the origin row.")
    allocated_billed_cost: _MONEY = pa.Field(description="BilledCost allocated to requests.")
    allocated_effective_cost: _MONEY = pa.Field(description="EffectiveCost allocated to requests.")
    allocated_list_cost: _MONEY = pa.Field(description="ListCost allocated to requests.")
    unlogged_billed_cost: _MONEY = pa.Field(description="BilledCost of tokens billed but not logged (same sign as the cost).")
    unlogged_effective_cost: _MONEY = pa.Field(description="EffectiveCost of tokens billed but not logged.")
    unlogged_list_cost: _MONEY = pa.Field(description="ListCost of tokens billed but not logged.")
    unmatched_billed_cost: _MONEY = pa.Field(description="BilledCost of a pool no call could be allocated to (whole row).")
    unmatched_effective_cost: _MONEY = pa.Field(description="EffectiveCost of an unmatched pool.")
    unmatched_list_cost: _MONEY = pa.Field(description="ListCost of an unmatched pool.")

    class Config:
        strict = True
        unique = ["source_file", "source_line"]

    @pa.dataframe_check
    def cost_is_allocated_plus_unlogged_plus_unmatched(cls, data) -> pl.LazyFrame:
        return data.lazyframe.select(
            pl.all_horizontal(
                pl.col(c) == pl.col(f"allocated_{c}") + pl.col(f"unlogged_{c}") + pl.col(f"unmatched_{c}") for c in COST_COLUMNS
            )
        )


class UnmatchedModels(pa.DataFrameModel):
    """Logged tokens no bill could take, per day, provider, model and token type: the model is
    not billed (or its name does not normalize to a billed one: add an alias), matches several
    billed models, no pool of it covers the call's time and account, or the request's tokens fall
    in pools of two currencies."""

    date: pl.Date = pa.Field(description="UTC date of the calls.")
    provider: str = pa.Field(nullable=True, description="Provider, normalized.")
    call_model: str = pa.Field(nullable=True, description="The model the calls name.")
    token_type: str = pa.Field(isin=list(TOKEN_TYPES), description="Token type.")
    reason: str = pa.Field(isin=list(UNMATCHED_REASONS), description="unknown_model, ambiguous_model, no_pool, or two_currencies (the request's tokens fall in pools billed in two currencies: allocated to neither, a request's cost being one currency's).")
    candidates: str = pa.Field(nullable=True, description="For ambiguous_model: the billed models it could be; for two_currencies: the currencies; comma-separated.")
    calls: pl.Int64 = pa.Field(ge=1, description="Calls.")
    tokens: pl.Int64 = pa.Field(ge=1, description="Tokens.")

    class Config:
        strict = True


class AllocatedByRequest(pa.DataFrameModel):
    """Allocated cost per request and currency, ready to combine with the exact per-request billing
    (unitledger.transforms.billing_by_request) into request_costs."""

    request_id: str = pa.Field(description="Telemetry request id.")
    billing_currency: str = pa.Field(isin=_CURRENCIES, description="Currency of the money columns.")
    billing_account_id: str = pa.Field(nullable=True, description="The billing account of the request's origin rows; null when they span several (joint allocation).")
    billed_cost: _MONEY = pa.Field(description="Sum of allocated BilledCost.")
    effective_cost: _MONEY = pa.Field(description="Sum of allocated EffectiveCost.")
    list_cost: _MONEY = pa.Field(description="Sum of allocated ListCost.")
    input_cost: _MONEY = pa.Field(description="Allocated EffectiveCost of uncached input tokens.")
    output_cost: _MONEY = pa.Field(description="Allocated EffectiveCost of output tokens.")
    cache_read_cost: _MONEY = pa.Field(description="Allocated EffectiveCost of cache-read tokens.")
    cache_write_cost: _MONEY = pa.Field(description="Allocated EffectiveCost of cache-write tokens.")
    billing_rows: pl.Int64 = pa.Field(ge=1, description="Origin FOCUS rows the request has a share of.")
    charge_date: pl.Date = pa.Field(description="UTC date of the earliest ChargePeriodStart among them.")
    cost_source: str = pa.Field(isin=["invoice_allocated"], description="Provenance: invoice_allocated (cost allocated from aggregated bill rows by token share).")

    class Config:
        strict = True
        unique = ["request_id", "billing_currency"]


class AllocatedCosts(pa.DataFrameModel):
    """FOCUS 1.3 split cost allocation of the allocated origin rows: per origin row one row per
    feature x model version x prompt version, plus one for the unlogged usage (AllocatedResourceId
    null). The origin row's other columns are kept; every cost column (and ContractedCost,
    ConsumedQuantity, PricingQuantity when present) of an origin row's split rows sums back to it."""

    source_file: str = _source_file()
    source_line: pl.Int64 = _source_line()
    BilledCost: _MONEY = pa.Field(description="Split of the origin row's BilledCost.")
    EffectiveCost: _MONEY = pa.Field(description="Split of the origin row's EffectiveCost.")
    ListCost: _MONEY = pa.Field(description="Split of the origin row's ListCost.")
    AllocatedMethodId: str = pa.Field(description="unitledger-token-share (see docs).")
    AllocatedMethodDetails: str = pa.Field(description='JSON {"Elements":[{"AllocatedRatio":r,"UsageUnit":"Tokens","UsageQuantity":q}]}: ratios of an origin row\'s split rows sum to 1 exactly.')
    AllocatedResourceId: str = pa.Field(nullable=True, description="The feature; null for the unlogged (unallocated) portion.")
    AllocatedResourceName: str = pa.Field(nullable=True, description="The feature; null for the unlogged portion.")
    AllocatedTags: str = pa.Field(nullable=True, description='JSON {"unitledger/feature_tag":..,"unitledger/model_version":..,"unitledger/prompt_version":..}; null for the unlogged portion.')

    class Config:
        strict = False  # the origin row's other FOCUS columns pass through


class AllocationPoolsDaily(AllocationPools):
    """allocation_pools as the daily step publishes it: one row per recognized AI token row
    without a request id (hour and day rows), its pool, billed and logged tokens (the token
    reconciliation per pool) and where each cost column went: cost = allocated + unlogged +
    unmatched exactly."""

    date: pl.Date = pa.Field(description="Partition: UTC date of charge_period_start.")

    class Config:
        strict = True
        unique = ["source_file", "source_line"]


class UnrecognizedUsageDaily(UnrecognizedUsage):
    """unrecognized_usage as the daily step publishes it: AI token rows without a request id that
    could not be allocated (model, token type, unit or quantity unknown, or a charge period longer
    than a day), with their cost; never guessed, never dropped: reconciliation counts them as
    unrecognized_usage_cost."""

    date: pl.Date = pa.Field(description="Partition: UTC date of ChargePeriodStart.")

    class Config:
        strict = True



class AllocationPoolsMonthly(AllocationPools):
    """allocation_pools of the AI token rows without a request id whose charge period is longer
    than a day (a month, as some providers bill), allocated by the monthly step over every call
    of their charge period: billed and logged tokens, cost = allocated + unlogged + unmatched
    exactly. Their per-feature split is allocated_costs_monthly."""

    billing_period: str = pa.Field(description="Partition: YYYY-MM of charge_period_start.")

    class Config:
        strict = True
        unique = ["source_file", "source_line"]


class _FocusAllocatedCosts(StagedFocus):
    """The published allocated_costs rows: the origin row's staged FOCUS columns with its costs
    split, plus FOCUS 1.3's allocation columns."""

    BilledCost: _MONEY = pa.Field(description="Split of the origin row's BilledCost: the sum of the shares of the split row's calls (the unlogged portion on its own row).")
    EffectiveCost: _MONEY = pa.Field(description="Split of the origin row's EffectiveCost, as BilledCost.")
    ListCost: _MONEY = pa.Field(description="Split of the origin row's ListCost, as BilledCost.")
    ContractedCost: _MONEY = pa.Field(nullable=True, description="Split of the origin row's ContractedCost by the split row's AllocatedRatio, exactly (largest remainder).")
    ConsumedQuantity: _MONEY = pa.Field(nullable=True, description="Split of the origin row's ConsumedQuantity by the AllocatedRatio, exactly.")
    AllocatedMethodId: str = pa.Field(description="unitledger-token-share: the origin row split by the tokens of the calls of its charge period (docs/allocation.md).")
    AllocatedMethodDetails: str = pa.Field(description='JSON {"Elements":[{"AllocatedRatio":r,"UsageUnit":"Tokens","UsageQuantity":q}]}: r = q / max(billed, logged tokens) of the pool, to 1e-18; an origin row\'s ratios sum to 1 exactly.')
    AllocatedResourceId: str = pa.Field(nullable=True, description="The feature (x_FeatureTag of the calls); null for the unlogged (unallocated) portion: tokens billed, never logged.")
    AllocatedResourceName: str = pa.Field(nullable=True, description="The feature; null for the unlogged portion.")
    AllocatedTags: str = pa.Field(nullable=True, description='JSON {"unitledger/feature_tag":..,"unitledger/model_version":..,"unitledger/prompt_version":..} of the split row\'s calls; null for the unlogged portion.')


class AllocatedCostsDaily(_FocusAllocatedCosts):
    """FOCUS 1.3 `allocated_costs` export of the AI token rows the daily step allocates (hour and
    day rows, allocation_pools): per origin row one split row per feature x model version x
    prompt version of its calls, plus one for the unlogged usage. For every origin row, its split
    rows' BilledCost, EffectiveCost and ListCost sum back to the origin row's exactly, so FinOps
    tools take per-feature AI cost from here; unmatched origin rows are not split (they stay in
    the bill as they are)."""

    date: pl.Date = pa.Field(description="Partition: UTC date of ChargePeriodStart.")

    class Config:
        strict = True


class AllocatedCostsMonthly(_FocusAllocatedCosts):
    """allocated_costs (FOCUS 1.3 split rows) of the token rows the monthly step allocates
    (allocation_pools_monthly): per origin row one row per feature x model version x prompt
    version of its calls plus the unlogged portion; they sum back to the origin row exactly."""

    billing_period: str = pa.Field(description="Partition: YYYY-MM of ChargePeriodStart.")

    class Config:
        strict = True


class FullyLoadedCosts(pa.DataFrameModel):
    """Opt-in ([allocation] fully_loaded = true) "fully loaded" cost: shared costs without a usage
    driver (FOCUS rows without x_RequestId that are not AI token usage: tax, support fees,
    commitment purchases, credits; their EffectiveCost) spread over each billing account's features
    by their cost, per currency and month. shared_cost_share stands beside token_cost, never in it:
    unit costs elsewhere exclude shared costs. Per account, currency and month the shares sum to
    the shared cost exactly (largest remainder); with no feature cost to spread over, the shared
    cost stays on a row with a null feature."""

    billing_period: str = pa.Field(description="Partition: YYYY-MM (request_costs' dates; the shared rows' BillingPeriodStart).")
    billing_account_id: str = pa.Field(description="FOCUS BillingAccountId.")
    billing_currency: str = pa.Field(isin=_CURRENCIES, description="Currency of every money column.")
    feature_tag: str = pa.Field(nullable=True, description="Feature; null for shared cost with no feature cost in the account to spread over.")
    model_version: str = pa.Field(nullable=True, description="Model version of the requests.")
    prompt_version: str = pa.Field(nullable=True, description="Prompt version of the requests.")
    token_cost: _MONEY = pa.Field(description="The feature's effective_cost in the account (request_costs of requests with one billing account: own rows and allocated shares): the driver.")
    shared_cost_share: _MONEY = pa.Field(description="The feature's share of the account's shared cost: shared cost x token_cost / the account's positive token cost, exact (largest remainder). 0 for a feature of an account without shared cost.")
    fully_loaded_cost: _MONEY = pa.Field(description="token_cost + shared_cost_share.")

    class Config:
        strict = True
        unique = ["billing_period", "billing_account_id", "billing_currency", "feature_tag", "model_version", "prompt_version"]

    @pa.dataframe_check
    def fully_loaded_is_token_plus_share(cls, data) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("fully_loaded_cost") == pl.col("token_cost") + pl.col("shared_cost_share"))
