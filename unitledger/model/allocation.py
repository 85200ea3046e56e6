"""Invoice-grounded cost: aggregated AI billing rows allocated to the logged calls by token share.

Pools. A recognized token row (unitledger.sources.ai_usage) belongs to the pool of its provider,
billing account, sub-account, model, token type, charge period and currency. A call's tokens of a
type fall into the pool of its provider, model (normalized on both sides: model_names) and type
whose charge period [ChargePeriodStart, ChargePeriodEnd) contains the call's timestamp: hour and
day rows both work, and a call inside an hour row's and a day row's periods (say a correction
billed for the day) takes part in both. Telemetry's input tokens include cache reads and writes:
a call's uncached input is input - cache_read - cache_write.

Accounts. Calls carry `billing_account_hint` / `sub_account_hint` (the account their session's
own rows bill: with_session_accounts), else the first config account rule they match (by feature,
provider, model, or the gateway API key, team or project staged on the call). A call with an account
joins that account's pools only. When several accounts bill the same provider, model, type, period
and currency and some calls there name no account, those accounts' pools are allocated jointly:
the group is one pool whose billed quantity is the sum of theirs, every call of the group (with or
without an account) takes part, and each account's rows are allocated over all of them. The same
holds for the sub-accounts of one account when calls name the account but not the sub-account.
`allocation_scope` says which happened (pool, sub_accounts, accounts). Currencies never mix: a
request whose tokens could belong to pools in two currencies, or to pools of another currency
than its own x_RequestId rows, takes part in none (a request's cost is one currency's, and which
account billed it is unknown): its tokens are reported in unmatched_models with reason
two_currencies naming the currencies, and the pools' cost goes to their other calls or stays
unlogged.

The rule, per origin row r of a pool with billed tokens B (sum over its rows; 0 when none has a
quantity) and logged tokens L (sum over its calls): rate = cost_r / max(B, L); a call's share =
its tokens x rate; the residual cost_r x (max(B, L) - L) / max(B, L) >= 0 is unlogged usage
(tokens the bill shows and telemetry does not). With no billed quantity the row is thus split by
share of the logged tokens, and an over-logged pool (L > B) has no residual. Every cost column
(BilledCost, EffectiveCost, ListCost) is split the same way.

Exactness. The shares are exact decimals at scale 18, computed in 128-bit integers: for a row of
|cost| U (in 1e-18 units) and weights w (tokens, and max(B, L) - L for the residual) summing to W,
each share is floor(U x w / W); the units the floors leave (fewer than the participants) go one
each to the largest remainders (ties: calls before the residual, then by a hash of the request
id). So the shares plus the residual equal the row's cost exactly, each share is within 1e-18 of
tokens x cost / max(B, L), and a negative cost (a correction) is split the same way with its sign.
Pools with cost but nothing to allocate to keep their whole cost as `unmatched` (status
unmatched_pool, zero_quantity); logged tokens no pool takes are reported in `unmatched_models`.

Everything here is a pure transform: LazyFrames in, LazyFrames out. `allocate` returns several
tables sharing one plan: collect them together (pl.collect_all) to compute the shared parts once.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Callable, NamedTuple

import polars as pl

from schemas.allocation import ALLOCATED_STATUSES, COST_COLUMNS, TOKEN_TYPES
from schemas.types import MONEY, TYPED_COSTS
from unitledger.config import Allocation
from unitledger.model.model_names import blank_as_null, match_models, provider_key, with_model_key
from unitledger.model.requests import in_bucket, sum_where
from unitledger.sources.ai_usage import classify_usage, exact_token_coverage

SCALE = 10**MONEY.scale
DENOMINATOR_LIMIT = 2**63  # weights below: a product of two, or a remainder x 2^64, fits in a signed 128-bit integer
ORIGIN = ["source_file", "source_line"]
GROUP = ["provider", "model", "token_type", "charge_period_start", "charge_period_end", "billing_currency"]
# Staged call columns an account rule may match (what a gateway says about who made the call).
GATEWAY_ACCOUNT_FIELDS = ("api_key_id", "team_id", "project_id")


class AllocationTables(NamedTuple):
    """What `allocate` returns: schemas.RequestAllocations, schemas.AllocationPools,
    schemas.UnmatchedModels."""

    requests: pl.LazyFrame
    pools: pl.LazyFrame
    unmatched_models: pl.LazyFrame


def _int128(value: int) -> pl.Expr:
    return pl.lit(value, dtype=pl.Int128)


def to_units(money: pl.Expr) -> pl.Expr:
    """An exact decimal as an Int128 count of 1e-18 (Decimal(38,18)'s own representation)."""
    return money.cast(MONEY).to_physical()


def from_units(units: pl.Expr) -> pl.Expr:
    """An Int128 count of 1e-18 as an exact Decimal(38,18)."""
    return (units // SCALE).cast(MONEY) + (units % SCALE).cast(MONEY) / SCALE


def split_constants(amounts: list[str], denominator: str) -> list[pl.Expr]:
    """The per-group part of split_exactly, for a frame with one row per group (computed once per
    group instead of once per participant): |amount| in 1e-18 units, its sign, and its quotient
    and remainder by `denominator`."""
    den = pl.col(denominator)
    units = {a: to_units(pl.col(a)).abs() for a in amounts}
    return [
        *[units[a].alias(f"_{a}_units") for a in amounts],
        *[pl.when(pl.col(a) < 0).then(_int128(-1)).otherwise(_int128(1)).alias(f"_{a}_sign") for a in amounts],
        *[(units[a] // den).alias(f"_{a}_quotient") for a in amounts],
        *[(units[a] % den).alias(f"_{a}_remainder") for a in amounts],
    ]


def split_shares(parts: pl.LazyFrame, group: list[str], amounts: list[str], weight: str, denominator: str, tie: str) -> pl.LazyFrame:
    """split_exactly on `parts` that already carry split_constants' columns."""
    den, w = pl.col(denominator), pl.col(weight)
    parts = parts.with_columns(
        *[(pl.col(f"_{a}_quotient") * w + (pl.col(f"_{a}_remainder") * w) // den).alias(f"_{a}_floor") for a in amounts],
        # Remainder and tie in one key (remainder < 2^63, tie < 2^64): one rank orders both.
        *[(((pl.col(f"_{a}_remainder") * w) % den) * _int128(2**64) + pl.col(tie).cast(pl.Int128)).alias(f"_{a}_key") for a in amounts],
    ).with_columns(
        # Units the floors leave: fewer than the group's rows; one each to the largest remainders.
        *[(pl.col(f"_{a}_units") - pl.col(f"_{a}_floor").sum().over(group)).alias(f"_{a}_left") for a in amounts],
        *[pl.col(f"_{a}_key").rank("ordinal", descending=True).over(group).alias(f"_{a}_rank") for a in amounts],
    )
    bump = {a: (pl.col(f"_{a}_rank").cast(pl.Int128) <= pl.col(f"_{a}_left")).cast(pl.Int128) for a in amounts}
    scratch = [f"_{a}_{n}" for a in amounts for n in ("units", "sign", "quotient", "remainder", "floor", "key", "left", "rank")]
    return parts.with_columns(from_units((pl.col(f"_{a}_floor") + bump[a]) * pl.col(f"_{a}_sign")).alias(a) for a in amounts).drop(scratch)


def split_exactly(parts: pl.LazyFrame, group: list[str], amounts: list[str], weight: str, denominator: str, tie: str) -> pl.LazyFrame:
    """Replace each `amounts` column (a decimal, the same on every row of a `group`) by the row's
    exact share of it: floor(|amount| x weight / denominator) in 1e-18 units, the group's leftover
    units going one each to its largest remainders, equal remainders in decreasing `tie` (UInt64,
    distinct within a group), the amount's sign kept. `weight` and `denominator` are Int128 with
    0 <= weight, Σ weight = denominator per group and denominator < DENOMINATOR_LIMIT; then the
    shares of a group sum to its amount exactly, each within 1e-18 of amount x weight / denominator."""
    return split_shares(parts.with_columns(split_constants(amounts, denominator)), group, amounts, weight, denominator, tie)


def call_tie(residual: pl.Expr, key: pl.Expr) -> pl.Expr:
    """A tie value for split_exactly: the residual (unlogged) part 0, others 1 + half a 64-bit
    hash of `key`, so on equal remainders calls come before the residual, then by hash."""
    return pl.when(residual).then(pl.lit(0, pl.UInt64)).otherwise(key.hash(seed=0) // 2 + 1)


def _origin_id() -> pl.Expr:
    return pl.struct(ORIGIN).rank("dense")


def _account_rules(settings: Allocation) -> tuple[pl.Expr, pl.Expr]:
    """(account, sub-account) of the first account rule a call matches (nulls when none)."""
    account, sub = pl.lit(None, pl.String), pl.lit(None, pl.String)
    provider = provider_key(pl.col("provider"), settings.provider_aliases)
    for rule in reversed(settings.account_rules):
        conditions = [pl.lit(True)]
        if rule.feature_tag is not None:
            conditions.append(pl.col("feature_tag") == rule.feature_tag)
        if rule.provider is not None:
            conditions.append(provider == provider_key(pl.lit(rule.provider), settings.provider_aliases))
        if rule.model is not None:
            conditions.append((pl.col("model") == rule.model) | (pl.col("model_version") == rule.model))
        conditions += [pl.col(field) == value for field in GATEWAY_ACCOUNT_FIELDS if (value := getattr(rule, field)) is not None]
        hit = pl.all_horizontal(conditions).fill_null(False)
        account = pl.when(hit).then(pl.lit(rule.billing_account_id)).otherwise(account)
        sub = pl.when(hit).then(pl.lit(rule.sub_account_id, pl.String)).otherwise(sub)
    return account, sub


def call_tokens(calls: pl.LazyFrame, settings: Allocation = Allocation(), exact: pl.LazyFrame | None = None) -> pl.LazyFrame:
    """schemas.CallTokens from staged calls (one row per request: dedupe first): a row per call
    and token type it has tokens of. Optional call columns `billing_account_hint`,
    `sub_account_hint`, `own_currency` (with_own_currency) and the gateway fields account rules
    match (GATEWAY_ACCOUNT_FIELDS).
    `exact`: the token types each request's own rows bill exactly (ai_usage.exact_token_coverage),
    left out; or the calls carry its `covers_<type>` columns themselves (null: not covered)."""
    from schemas.allocation import CallTokens

    present = set(calls.collect_schema().names())
    optional = ("billing_account_hint", "sub_account_hint", "own_currency", *GATEWAY_ACCOUNT_FIELDS)
    calls = calls.with_columns(pl.lit(None, pl.String).alias(c) for c in optional if c not in present)
    rule_account, rule_sub = _account_rules(settings)
    own_account = blank_as_null(pl.col("billing_account_hint"))
    index = ["request_id", "called_at", "feature_tag", "model_version", "prompt_version", "provider", "call_model", "billing_account_hint", "sub_account_hint", "own_currency"]
    tokens = (
        _with_uncovered_tokens(calls, exact)
        .with_columns(
            called_at=pl.col("timestamp"),
            call_model=_call_model(),
            billing_account_hint=pl.coalesce(own_account, rule_account),
            sub_account_hint=pl.coalesce(
                blank_as_null(pl.col("sub_account_hint")), pl.when(own_account.is_null()).then(rule_sub)
            ),
        )
        .with_columns(provider=provider_key(pl.col("provider"), settings.provider_aliases))
        .unpivot(on=list(TOKEN_TYPES), index=index, variable_name="token_type", value_name="tokens")
        .filter(pl.col("tokens") > 0)
    )
    return tokens.select(list(CallTokens.to_schema().columns))


def _call_model() -> pl.Expr:
    """The model a call names: its version when that is a name, else model-version."""
    version, name = blank_as_null(pl.col("model_version")), blank_as_null(pl.col("model"))
    return (
        pl.when(version.str.contains(r"[A-Za-z]"))
        .then(version)
        .when(version.is_not_null() & name.is_not_null())
        .then(name + "-" + version)
        .otherwise(pl.coalesce(name, version))
    )


def _with_uncovered_tokens(calls: pl.LazyFrame, exact: pl.LazyFrame | None) -> pl.LazyFrame:
    """`calls` with a column of tokens per token type (TOKEN_TYPES), 0 where their request's own
    rows bill the type (`exact`, or the calls' own covers_<type> columns)."""
    if exact is not None:
        calls = calls.join(exact, on="request_id", how="left")
    covers = {f"covers_{t}" for t in TOKEN_TYPES}
    covered = {t: pl.col(f"covers_{t}").fill_null(False) if covers <= set(calls.collect_schema().names()) else pl.lit(False) for t in TOKEN_TYPES}
    counts = {
        "input": (pl.col("input_tokens") - pl.col("cache_read_input_tokens") - pl.col("cache_write_input_tokens")).clip(lower_bound=0),
        "output": pl.col("output_tokens"),
        "cache_read": pl.col("cache_read_input_tokens"),
        "cache_write": pl.col("cache_write_input_tokens"),
    }
    return calls.with_columns(pl.when(covered[t]).then(0).otherwise(counts[t]).alias(t) for t in TOKEN_TYPES)


def _pool_rows(usage: pl.LazyFrame, settings: Allocation) -> pl.LazyFrame:
    """The usable token rows of classify_usage with their pool keys (model normalized)."""
    rows = usage.filter(pl.col("usage_class") == "token").select(
        *ORIGIN,
        provider=provider_key(pl.col("ServiceProviderName"), settings.provider_aliases),
        billing_account_id=pl.col("BillingAccountId"),
        sub_account_id=pl.col("SubAccountId"),
        billed_model=pl.col("billed_model"),
        token_type=pl.col("token_type"),
        charge_period_start=pl.col("ChargePeriodStart"),
        charge_period_end=pl.col("ChargePeriodEnd"),
        billing_currency=pl.col("BillingCurrency"),
        billed_tokens=pl.col("billed_tokens"),
        billed_cost=pl.col("BilledCost"),
        effective_cost=pl.col("EffectiveCost"),
        list_cost=pl.col("ListCost"),
    )
    models = with_model_key(rows.select("billed_model").unique(), "billed_model", settings.model_aliases)
    # A small integer per origin row: windows over it are much cheaper than over (file, line).
    return rows.join(models, on="billed_model", how="left").rename({"model_key": "model"}).with_columns(_origin=_origin_id())


def billed_models(usage: pl.LazyFrame, settings: Allocation = Allocation()) -> pl.LazyFrame:
    """The billed models of the token rows of `usage` (classify_usage): what a call's model is
    matched against (provider, model_key, model_family, model_date). A few rows."""
    return _bill_models(_pool_rows(usage, settings))


def _bill_models(rows: pl.LazyFrame) -> pl.LazyFrame:
    return rows.select("provider", pl.col("model").alias("model_key"), "model_family", "model_date").unique()


def _call_names(call_models: pl.LazyFrame, bill_models: pl.LazyFrame, settings: Allocation) -> pl.LazyFrame:
    """(provider, call_model, model, match, candidates) for the (provider, call_model) pairs of
    `call_models`: which of `bill_models` (billed_models) each is (match_models), matched once per
    distinct name, then joined to the calls."""
    call_models = with_model_key(call_models.unique(), "call_model", settings.model_aliases, prefix="call").cache()
    mapping = match_models(call_models.select("provider", "call_key", "call_family", "call_date").unique(), bill_models)
    return call_models.select("provider", "call_model", "call_key").join(mapping, on=["provider", "call_key"], how="left", nulls_equal=True).drop("call_key")


def _assign(
    matched: pl.LazyFrame, rows: pl.LazyFrame, write: Callable[[pl.LazyFrame, str], pl.LazyFrame] | None = None
) -> tuple[pl.LazyFrame, pl.LazyFrame, pl.LazyFrame]:
    """(calls, pool rows, requests in two currencies). Calls and pool rows each with `_unit`: the
    pool (or joint group of pools) it is allocated in; see the module doc on accounts. The account
    logic runs once per distinct (group, account hint, sub-account hint), not per call. A request
    whose tokens fall in pools of two currencies, or of another currency than its own
    x_RequestId rows (`own_currency`), takes part in none: a request's cost is one currency's
    (request_costs), and which account billed it is unknown; the third frame lists them
    (request_id, `currencies` named). `matched` and `rows` should be cached; with `write`
    (allocate's spill), `matched` is written files: the calls in pools are then read from them
    twice instead of held, and the requests in two currencies are written (`write`) before the
    calls that remain are selected."""
    groups = (
        rows.group_by(GROUP)
        .agg(_n_accounts=pl.col("billing_account_id").n_unique(), _sole_account=pl.col("billing_account_id").first())
        .with_columns(_group=pl.struct(GROUP).rank("dense"))
        .cache()
    )
    rows = rows.join(groups.select(*GROUP, "_group"), on=GROUP, how="inner")
    accounts = rows.group_by("_group", "billing_account_id").agg(
        _n_subs=pl.col("sub_account_id").n_unique(),
        _named_subs=pl.col("sub_account_id").drop_nulls().n_unique(),
        _sole_sub=pl.col("sub_account_id").first(),
    )
    pool_keys = rows.select("_group", "billing_account_id", "sub_account_id").unique().with_columns(_billed=pl.lit(True))

    # A call meets the groups whose charge period contains it: an equi-join on the hours the
    # periods cover (hour and day rows alike), then the exact bounds.
    start, end = pl.col("charge_period_start"), pl.col("charge_period_end")
    group_hours = groups.select(
        "_group", "provider", "model", "token_type", "charge_period_start", "charge_period_end",
        _hour=pl.datetime_ranges(start.dt.truncate("1h"), end, "1h", closed="left"),
    ).explode("_hour")  # fmt: skip
    hints = ["billing_account_hint", "sub_account_hint"]
    in_group = (
        matched.filter(pl.col("match") == "matched")
        .with_columns(_hour=pl.col("called_at").dt.truncate("1h"))
        .join(group_hours, on=["provider", "model", "token_type", "_hour"], how="inner")
        .filter(pl.col("called_at") >= start, pl.col("called_at") < end)
        .select("_call_token", "request_id", "called_at", "feature_tag", "model_version", "prompt_version", "tokens", "_group", "own_currency", *hints)
    )
    in_group = in_group.cache() if write is None else in_group

    hint = pl.col("billing_account_hint")
    combos = (
        in_group.select("_group", *hints)
        .unique()
        .join(groups.select("_group", "_n_accounts", "_sole_account"), on="_group", how="inner")
        # Some call of the group names no account while several accounts bill it: allocate jointly.
        .with_columns(_joint_accounts=(hint.is_null() & (pl.col("_n_accounts") >= 2)).any().over("_group"))
        .with_columns(
            _account=pl.when(pl.col("_joint_accounts"))
            .then(hint)
            .otherwise(pl.coalesce(hint, pl.when(pl.col("_n_accounts") == 1).then(pl.col("_sole_account"))))
        )
        .join(accounts, left_on=["_group", "_account"], right_on=["_group", "billing_account_id"], how="left")
    )
    known_account = pl.col("_n_subs").is_not_null()  # the account bills this group
    combos = combos.filter(pl.when(pl.col("_joint_accounts")).then(pl.col("_account").is_null() | known_account).otherwise(known_account))
    # A sub-account hint counts only where the account's rows carry sub-accounts.
    combos = combos.with_columns(_sub_hint=pl.when(pl.col("_named_subs") > 0).then(pl.col("sub_account_hint"))).with_columns(
        _joint_subs=(~pl.col("_joint_accounts") & pl.col("_sub_hint").is_null() & (pl.col("_n_subs") >= 2)).any().over("_group", "_account")
    )
    scope = pl.col("allocation_scope")
    combos = (
        combos.with_columns(
            allocation_scope=pl.when(pl.col("_joint_accounts"))
            .then(pl.lit("accounts"))
            .when(pl.col("_joint_subs"))
            .then(pl.lit("sub_accounts"))
            .otherwise(pl.lit("pool"))
        )
        .with_columns(
            _unit_account=pl.when(scope != "accounts").then(pl.col("_account")),
            _unit_sub=pl.when(scope == "pool").then(
                pl.coalesce(pl.col("_sub_hint"), pl.when(pl.col("_n_subs") == 1).then(pl.col("_sole_sub")))
            ),
        )
        # A named sub-account must be one the account bills in this group.
        .with_columns(_sub=pl.when(scope == "pool").then(pl.col("_unit_sub")).otherwise(pl.col("_sub_hint")))
        .join(pool_keys, left_on=["_group", "_account", "_sub"], right_on=["_group", "billing_account_id", "sub_account_id"], how="left", nulls_equal=True)
        .filter((scope == "accounts") | ((scope == "sub_accounts") & pl.col("_sub_hint").is_null()) | pl.col("_billed").fill_null(False))
        .cache()
    )

    joint_accounts = combos.filter(scope == "accounts").select("_group").unique().with_columns(_scope_a=pl.lit("accounts"))
    joint_subs = (
        combos.filter(scope == "sub_accounts")
        .select("_group", pl.col("_account").alias("billing_account_id"))
        .unique()
        .with_columns(_scope_s=pl.lit("sub_accounts"))
    )
    unit_key = ["_group", "allocation_scope", "_unit_account", "_unit_sub"]
    pool_rows = (
        rows.join(joint_accounts, on="_group", how="left")
        .join(joint_subs, on=["_group", "billing_account_id"], how="left")
        .with_columns(allocation_scope=pl.coalesce("_scope_a", "_scope_s", pl.lit("pool")))
        .with_columns(
            _unit_account=pl.when(scope != "accounts").then(pl.col("billing_account_id")),
            _unit_sub=pl.when(scope == "pool").then(pl.col("sub_account_id")),
        )
        .drop("_scope_a", "_scope_s")
        .cache()
    )
    units = pool_rows.select(unit_key).unique().with_columns(_unit=pl.struct(unit_key).rank("dense"))
    mapping = combos.select(*unit_key, *hints).join(units, on=unit_key, how="inner", nulls_equal=True)
    calls = in_group.join(mapping.select("_group", *hints, "_unit"), on=["_group", *hints], how="inner", nulls_equal=True)
    in_pools = calls.join(groups.select("_group", "billing_currency"), on="_group", how="inner")
    per_request = pl.concat(
        [
            in_pools.select("request_id", "billing_currency"),
            in_pools.select("request_id", billing_currency=pl.col("own_currency")).drop_nulls(),
        ]
    )
    # The few requests in two currencies found by their lowest and highest currency first (plain
    # aggregations, streamed), then named: a list per request would hold every request's.
    currency = pl.col("billing_currency")
    mixed = per_request.group_by("request_id").agg(_lowest=currency.min(), _highest=currency.max()).filter(pl.col("_lowest") != pl.col("_highest"))
    currencies = (
        per_request.join(mixed.select("request_id"), on="request_id", how="semi")
        .group_by("request_id")
        .agg(currency.unique().sort().alias("_currencies"))
        .select("request_id", currencies=pl.col("_currencies").list.join(", "))
    )
    currencies = currencies.cache() if write is None else write(currencies, "two_currencies")
    keep = ["_call_token", "request_id", "called_at", "feature_tag", "model_version", "prompt_version", "tokens", "_unit"]
    calls = calls.join(currencies, on="request_id", how="anti").select(keep)
    return calls, pool_rows.join(units, on=unit_key, how="inner", nulls_equal=True), currencies


def _ten_to(power: pl.Expr) -> pl.Expr:
    """10 ** power (0 <= power <= 18) as Int128."""
    return power.replace_strict({k: 10**k for k in range(19)}, return_dtype=pl.Int128)


def with_allocation_base(frame: pl.LazyFrame, base18: str, logged: str) -> pl.LazyFrame:
    """Add the integer arithmetic of a pool whose allocation base is `base18` (max(B, L) in 1e-18
    tokens, Int128) and `logged` tokens (Int64): `_den` (the base in units of 10^-(18-z) tokens,
    z as large as the base's trailing zeros allow, larger if needed to stay below 10^18 <
    DENOMINATOR_LIMIT: the base is then cut to 18 significant digits, never below L),
    `_per_token` (10^(18-z)), `_residual_weight` (_den - L x _per_token), `_base18` (the base
    used) and `_in_range` (z <= 18)."""
    units = pl.col(base18)
    trailing = pl.sum_horizontal([(units % 10**k == 0).cast(pl.Int32) for k in range(1, 19)])
    digits = pl.sum_horizontal([(units >= _int128(10**k)).cast(pl.Int32) for k in range(0, 39)])
    return (
        frame.with_columns(_z=pl.max_horizontal(trailing, digits - 18, pl.lit(0, pl.Int32)))
        .with_columns(_in_range=pl.col("_z") <= 18, _scale=_ten_to(pl.min_horizontal(pl.col("_z"), pl.lit(18, pl.Int32))))
        .with_columns(_den=units // pl.col("_scale"), _per_token=_int128(SCALE) // pl.col("_scale"))
        .with_columns(
            _residual_weight=pl.col("_den") - pl.col(logged).cast(pl.Int128) * pl.col("_per_token"),
            _base18=pl.col("_den") * pl.col("_scale"),
        )
        .drop("_z", "_scale")
    )


def lost_token_sums(calls: pl.LazyFrame, settings: Allocation = Allocation(), exact: pl.LazyFrame | None = None) -> pl.LazyFrame:
    """The tokens of staged calls (as call_tokens reads them: `exact` or covers_<type> columns
    leave types out) summed per (date, provider, call_model, token_type): `calls` (with tokens of
    the type) and `tokens`. Sums of disjoint sets of calls add up (unmatched_models' rows are such
    sums). Summed per call first and named after: the calls are neither unpivoted (which holds
    them all in memory) nor named one by one (string work per call)."""
    tokens = _with_uncovered_tokens(calls, exact)
    some = {t: pl.col(t) > 0 for t in TOKEN_TYPES}
    sums = tokens.group_by(pl.col("timestamp").dt.date().alias("date"), "provider", "model", "model_version").agg(
        *[some[t].sum().cast(pl.Int64).alias(f"calls_{t}") for t in TOKEN_TYPES],
        *[sum_where(some[t], pl.col(t)).cast(pl.Int64).alias(f"tokens_{t}") for t in TOKEN_TYPES],
    )
    per_type = [
        sums.select(
            "date", provider=provider_key(pl.col("provider"), settings.provider_aliases), call_model=_call_model(),
            token_type=pl.lit(t), calls=pl.col(f"calls_{t}"), tokens=pl.col(f"tokens_{t}"),
        )
        for t in TOKEN_TYPES
    ]  # fmt: skip
    key = ["date", "provider", "call_model", "token_type"]
    return pl.concat(per_type).filter(pl.col("calls") > 0).group_by(key).agg(pl.col("calls").sum(), pl.col("tokens").sum())


def unpooled_unmatched(sums: pl.LazyFrame, bill_models: pl.LazyFrame, settings: Allocation = Allocation()) -> pl.LazyFrame:
    """unmatched_models' rows of calls known to fall in no pool's provider and hours (pool_hours),
    from their lost_token_sums: a model matching a billed model of `bill_models` (billed_models)
    is `no_pool`; otherwise its match (unknown or ambiguous model, with the candidates)."""
    names = _call_names(sums.select("provider", "call_model"), bill_models, settings)
    return sums.join(names, on=["provider", "call_model"], how="left", nulls_equal=True).with_columns(
        reason=pl.when(pl.col("match") == "matched").then(pl.lit("no_pool")).otherwise(pl.col("match")),
        candidates=pl.when(pl.col("match") != "matched").then(pl.col("candidates")),
    )


def merge_unmatched(parts: list[pl.LazyFrame]) -> pl.LazyFrame:
    """unmatched_models from parts of it over disjoint calls: rows of one key summed."""
    from schemas.allocation import UnmatchedModels

    key = ["date", "provider", "call_model", "token_type", "reason", "candidates"]
    merged = pl.concat([part.select(*key, "calls", "tokens") for part in parts]).group_by(key).agg(pl.col("calls").sum(), pl.col("tokens").sum())
    return merged.select(list(UnmatchedModels.to_schema().columns))


def allocate(
    usage: pl.LazyFrame,
    tokens: pl.LazyFrame,
    settings: Allocation = Allocation(),
    unpooled: pl.LazyFrame | None = None,
    spill: Callable[[pl.LazyFrame, str], pl.LazyFrame] | None = None,
    buckets: int = 1,
) -> AllocationTables:
    """Allocate the token rows of `usage` (ai_usage.classify_usage) to `tokens` (call_tokens).
    `unpooled`: the lost_token_sums of more calls, known to fall in no pool's provider and hours
    (pool_hours): only reported in unmatched_models (never joined to the pools), so the
    allocation's cost follows the calls that can take a share. `spill` (allocate_billing): the
    named calls, the calls assigned to pools, the origin rows and the shares are written and read
    back instead of held for every table that reads them, the per-call frames in `buckets` hash
    buckets of requests and the shares in `buckets` hash buckets of pools (each pool's split is
    its own). At 5M calls, all in one query: 5.9 GB."""
    from schemas.allocation import AllocationPools, RequestAllocations

    # Each of these is read several times below: cached, so the plan stays a DAG and is
    # computed once (without, the plan grows exponentially with the references).
    rows = _pool_rows(usage, settings).cache()
    tokens = tokens.cache() if spill is None else tokens  # (spilled: a file's scan, read twice)
    names = _call_names(tokens.select("provider", "call_model"), _bill_models(rows), settings).cache()
    # names a (call, token type) cheaply
    # (numbered before the join, where the rows' order is the input's: a join's output order is not)
    matched = tokens.with_row_index("_call_token").join(names, on=["provider", "call_model"], how="left", nulls_equal=True)

    def written(frame: pl.LazyFrame, name: str) -> pl.LazyFrame:
        # per call: written a bucket of requests at a time
        return _spilled([frame.filter(in_bucket("request_id", b, buckets)) for b in range(buckets)], name, spill)

    matched = matched.cache() if spill is None else written(matched, "matched")
    calls, pool_rows, two_currencies = _assign(matched, rows, None if spill is None else written)
    if spill is not None:
        calls = written(calls, "assigned")

    logged = calls.group_by("_unit").agg(pool_logged_tokens=pl.col("tokens").sum(), pool_calls=pl.len().cast(pl.Int64))
    units = (
        pool_rows.group_by("_unit")
        .agg(pool_billed_tokens=pl.col("billed_tokens").sum(), pool_rows=pl.len().cast(pl.Int64))
        .join(logged, on="_unit", how="left")
        .with_columns(pl.col("pool_logged_tokens", "pool_calls").fill_null(0))
    )
    billed18 = to_units(pl.col("pool_billed_tokens"))
    base18 = pl.max_horizontal(billed18, pl.col("pool_logged_tokens").cast(pl.Int128) * SCALE)
    units = with_allocation_base(units.with_columns(_b18=billed18, _base18_raw=base18), "_base18_raw", "pool_logged_tokens")
    status = (
        pl.when(pl.col("_base18_raw") == 0)
        .then(pl.lit("zero_quantity"))
        .when(pl.col("pool_logged_tokens") == 0)
        .then(pl.lit("unmatched_pool"))
        .when(~pl.col("_in_range"))
        .then(pl.lit("quantity_out_of_range"))
        .when(pl.col("_b18") == 0)
        .then(pl.lit("logged_share"))
        .when(pl.col("pool_logged_tokens").cast(pl.Int128) * SCALE > pl.col("_b18"))
        .then(pl.lit("over_logged"))
        .otherwise(pl.lit("allocated"))
    )
    allocatable = pl.col("status").is_in(ALLOCATED_STATUSES)
    origin = (
        pool_rows.join(units.with_columns(status=status), on="_unit", how="left")
        .with_columns(
            allocation_base_tokens=pl.when(allocatable).then(from_units(pl.col("_base18"))),
            effective_rate=pl.when(allocatable).then(pl.col("effective_cost").cast(pl.Float64) / (pl.col("_base18").cast(pl.Float64) / SCALE)),
        )
    )
    # (spilled: one row per origin row, whose plan reads every assigned call: computed once)
    origin = origin.cache() if spill is None else spill(origin, "origin")
    # Per origin row once: its costs' units, quotients and remainders by the pool's base.
    to_split = origin.filter(allocatable).with_columns(split_constants(list(COST_COLUMNS), "_den"))
    pool_cols = ["provider", "billing_account_id", "sub_account_id", "model", "token_type", "charge_period_start",
                 "charge_period_end", "billing_currency", "allocation_scope", *ORIGIN, *COST_COLUMNS]  # fmt: skip
    constants = [f"_{a}_{n}" for a in COST_COLUMNS for n in ("units", "sign", "quotient", "remainder")]
    per_row = to_split.select("_origin", "_unit", "_den", "_per_token", "_residual_weight", *constants).cache()
    call_columns = ["request_id", "called_at", "feature_tag", "model_version", "prompt_version", "tokens", "_unit"]

    def shares(bucket: int) -> pl.LazyFrame:
        # Pools are split independently: a bucket of pools (with their calls) at a time.
        units = in_bucket("_unit", bucket, buckets)
        call_parts = calls.filter(units).select(call_columns).join(per_row.filter(units), on="_unit", how="inner").with_columns(
            _weight=pl.col("tokens").cast(pl.Int128) * pl.col("_per_token"), _residual=pl.lit(0, pl.Int8)
        )
        residual_parts = per_row.filter(units).with_columns(_weight=pl.col("_residual_weight"), _residual=pl.lit(1, pl.Int8))
        parts = pl.concat([call_parts, residual_parts], how="diagonal_relaxed").with_columns(
            *[pl.lit(0, MONEY).alias(c) for c in COST_COLUMNS],  # replaced by the shares
            _tie=call_tie(pl.col("_residual") == 1, pl.col("request_id")),
        )
        split = split_shares(parts, ["_origin"], list(COST_COLUMNS), "_weight", "_den", "_tie")
        return split.select(*call_columns, "_origin", "_residual", *COST_COLUMNS)

    parts = [shares(b) for b in range(buckets)]
    split = pl.concat(parts).cache() if spill is None else _spilled(parts, "shares", spill)

    requests = (
        split.filter(pl.col("_residual") == 0)
        .join(origin.select("_origin", *[c for c in pool_cols if c not in COST_COLUMNS], "effective_rate"), on="_origin", how="inner")
        .select(list(RequestAllocations.to_schema().columns))
    )
    unlogged = split.filter(pl.col("_residual") == 1).select("_origin", *[pl.col(c).alias(f"unlogged_{c}") for c in COST_COLUMNS])
    zero = pl.lit(0, MONEY)
    pools = (
        origin.join(unlogged, on="_origin", how="left")
        .with_columns(
            *[pl.col(f"unlogged_{c}").fill_null(zero) for c in COST_COLUMNS],
            *[pl.when(allocatable).then(zero).otherwise(pl.col(c)).alias(f"unmatched_{c}") for c in COST_COLUMNS],
        )
        .with_columns(
            *[(pl.col(c) - pl.col(f"unlogged_{c}") - pl.col(f"unmatched_{c}")).cast(MONEY).alias(f"allocated_{c}") for c in COST_COLUMNS],
            pool_billed_tokens=pl.col("pool_billed_tokens").fill_null(zero).cast(MONEY),
        )
        .select(list(AllocationPools.to_schema().columns))
    )

    assigned = calls.select("_call_token").unique()
    lost = pl.concat(
        [
            matched.filter(pl.col("match") != "matched").with_columns(reason=pl.col("match")),
            matched.filter(pl.col("match") == "matched")
            .join(assigned, on="_call_token", how="anti")
            .join(two_currencies, on="request_id", how="left")
            .with_columns(
                reason=pl.when(pl.col("currencies").is_not_null()).then(pl.lit("two_currencies")).otherwise(pl.lit("no_pool")),
                candidates=pl.col("currencies"),
            ),
        ],
        how="diagonal_relaxed",
    )
    unmatched_models = merge_unmatched(
        [lost.group_by(pl.col("called_at").dt.date().alias("date"), "provider", "call_model", "token_type", "reason", "candidates")
         .agg(calls=pl.len().cast(pl.Int64), tokens=pl.col("tokens").sum())]
        + ([] if unpooled is None else [unpooled_unmatched(unpooled, _bill_models(rows), settings)])
    )  # fmt: skip
    return AllocationTables(requests=requests, pools=pools, unmatched_models=unmatched_models)


def allocated_by_request(requests: pl.LazyFrame) -> pl.LazyFrame:
    """schemas.AllocatedByRequest: RequestAllocations summed per request and currency, with
    EffectiveCost per token type (TYPED_COSTS). Plain sums, minima and maxima only, which the
    streaming engine aggregates as they come (a filter or n_unique inside the aggregation holds
    every group's values: 5.9 GB at 5M calls)."""
    from schemas.allocation import AllocatedByRequest

    account = pl.col("billing_account_id")
    zero = pl.lit(0, MONEY)
    typed = [pl.when(pl.col("token_type") == t).then(pl.col("effective_cost")).otherwise(zero).alias(c) for t, c in zip(TOKEN_TYPES, TYPED_COSTS)]
    return (
        requests.with_columns(*typed, _no_account=account.is_null())
        .group_by("request_id", "billing_currency")
        .agg(
            *[pl.col(c).sum() for c in (*COST_COLUMNS, *TYPED_COSTS)],
            billing_rows=pl.len().cast(pl.Int64),
            _first_charge=pl.col("charge_period_start").min(),
            _lowest=account.min(),
            _highest=account.max(),
            _no_account=pl.col("_no_account").any(),
        )
        .with_columns(
            charge_date=pl.col("_first_charge").dt.date(),
            # one account (n_unique == 1): no null, and the lowest is the highest
            billing_account_id=pl.when(~pl.col("_no_account") & (pl.col("_lowest") == pl.col("_highest"))).then(pl.col("_lowest")),
            cost_source=pl.lit("invoice_allocated"),
        )
        .select(list(AllocatedByRequest.to_schema().columns))
    )


# --- FOCUS 1.3 split cost allocation --------------------------------------------------------

ALLOCATED_METHOD_ID = "unitledger-token-share"
FOCUS_COSTS = {"BilledCost": "billed_cost", "EffectiveCost": "effective_cost", "ListCost": "list_cost"}
# Other additive columns of an origin row, split by the same token ratios when present.
SPLIT_TOO = ("ContractedCost", "ConsumedQuantity", "PricingQuantity", "PricingCurrencyEffectiveCost")
ALLOCATED_COLUMNS = ("AllocatedMethodId", "AllocatedMethodDetails", "AllocatedResourceId", "AllocatedResourceName", "AllocatedTags")
TAG_PREFIX = "unitledger/"


def _number_text(value: pl.Expr) -> pl.Expr:
    """A decimal as JSON number text, trailing zeros dropped ("1.500000" -> "1.5", "2.0" -> "2")."""
    text = value.cast(pl.String)
    trimmed = text.str.strip_chars_end("0").str.strip_chars_end(".")
    return pl.when(text.str.contains(r"\.")).then(pl.when(trimmed.str.len_chars() > 0).then(trimmed).otherwise(pl.lit("0"))).otherwise(text)


def allocated_costs(origin: pl.LazyFrame, requests: pl.LazyFrame, pools: pl.LazyFrame) -> pl.LazyFrame:
    """FOCUS 1.3 `allocated_costs` rows (schemas.AllocatedCosts) of the allocated origin rows.

    `origin`: the staged FOCUS rows (any columns; source_file + source_line name them),
    `requests` / `pools`: allocate's tables. Per origin row: one split row per feature x model
    version x prompt version of its calls, costs = the sums of their allocated shares, and one for
    the unlogged usage (AllocatedResourceId null) when the bill shows more tokens than telemetry.
    AllocatedRatio = tokens / max(billed, logged), exact to 1e-18 with largest remainders so an
    origin row's ratios sum to 1; ContractedCost, ConsumedQuantity, PricingQuantity and
    PricingCurrencyEffectiveCost (when present) are split by the same ratios, exactly. Unmatched
    origin rows are not split and do not appear: they stay as they are in the bill."""
    grain = ["feature_tag", "model_version", "prompt_version"]
    features = (
        requests.group_by(*ORIGIN, *grain)
        .agg(pl.col("tokens").sum().alias("_tokens"), *[pl.col(c).sum() for c in COST_COLUMNS])
        .with_columns(_residual=pl.lit(0, pl.Int8), _quantity=pl.col("_tokens").cast(MONEY))
    )
    allocated = pools.filter(pl.col("status").is_in(ALLOCATED_STATUSES)).select(
        *ORIGIN, "allocation_base_tokens", "pool_logged_tokens", *[f"unlogged_{c}" for c in COST_COLUMNS]
    )
    unlogged_tokens = (pl.col("allocation_base_tokens") - pl.col("pool_logged_tokens").cast(MONEY)).cast(MONEY)
    residual = allocated.filter(
        (unlogged_tokens > 0) | pl.any_horizontal([pl.col(f"unlogged_{c}") != 0 for c in COST_COLUMNS])
    ).select(
        *ORIGIN,
        *[pl.col(f"unlogged_{c}").alias(c) for c in COST_COLUMNS],
        _residual=pl.lit(1, pl.Int8),
        _quantity=unlogged_tokens,
    )
    splits = (
        pl.concat([features, residual], how="diagonal_relaxed")
        .join(allocated.select(*ORIGIN, "allocation_base_tokens", "pool_logged_tokens"), on=ORIGIN, how="inner")
        .with_columns(_base18_used=to_units(pl.col("allocation_base_tokens")))
    )
    splits = (
        with_allocation_base(splits, "_base18_used", "pool_logged_tokens")
        .with_columns(
            _weight=pl.when(pl.col("_residual") == 1)
            .then(pl.col("_residual_weight"))
            .otherwise(pl.col("_tokens").cast(pl.Int128) * pl.col("_per_token")),
            _ratio=pl.lit(1, MONEY),
        )
    )
    present = origin.collect_schema().names()
    extra = [c for c in SPLIT_TOO if c in present]
    rows = splits.join(
        origin.drop([c for c in (*ALLOCATED_COLUMNS, *FOCUS_COSTS) if c in present]), on=ORIGIN, how="inner"
    ).with_columns(_origin=_origin_id(), _tie=call_tie(pl.col("_residual") == 1, pl.struct(grain)))
    rows = split_exactly(rows, ["_origin"], ["_ratio", *extra], "_weight", "_den", "_tie")
    is_feature = pl.col("_residual") == 0
    tags = pl.struct(**{f"{TAG_PREFIX}{c}": pl.col(c) for c in grain}).struct.json_encode()
    details = pl.concat_str(
        pl.lit('{"Elements":[{"AllocatedRatio":'),
        _number_text(pl.col("_ratio")),
        pl.lit(',"UsageUnit":"Tokens","UsageQuantity":'),
        _number_text(pl.col("_quantity")),
        pl.lit("}]}"),
    )
    rows = rows.with_columns(
        *[pl.col(ours).alias(focus) for focus, ours in FOCUS_COSTS.items()],
        AllocatedMethodId=pl.lit(ALLOCATED_METHOD_ID),
        AllocatedMethodDetails=details,
        AllocatedResourceId=pl.when(is_feature).then(pl.col("feature_tag")),
        AllocatedResourceName=pl.when(is_feature).then(pl.col("feature_tag")),
        AllocatedTags=pl.when(is_feature).then(tags),
    )
    kept = [c for c in present if c not in ALLOCATED_COLUMNS]
    return rows.select(*kept, *[c for c in FOCUS_COSTS if c not in kept], *ALLOCATED_COLUMNS)


# --- the opt-in "fully loaded" view of shared costs -----------------------------------------

FULLY_LOADED_KEY = ["billing_period", "billing_account_id", "billing_currency"]
FULLY_LOADED_GRAIN = ["feature_tag", "model_version", "prompt_version"]
_WEIGHT_UNIT = 10**9  # driver costs weigh in 1e-9 units (1e-18 ones could pass DENOMINATOR_LIMIT)


def fully_loaded_costs(shared: pl.LazyFrame, driver: pl.LazyFrame) -> pl.LazyFrame:
    """schemas.FullyLoadedCosts: shared costs spread over each account's feature cost.

    `shared`: FULLY_LOADED_KEY + `shared_cost` (EffectiveCost of rows without a usage driver:
    tax, support, purchases, credits); `driver`: FULLY_LOADED_KEY + FULLY_LOADED_GRAIN +
    `token_cost` (the features' cost in that account). Per key, the shared cost is split by the
    features' positive token cost, exactly (split_exactly: floors in 1e-18 units, leftovers to the
    largest remainders), so the shares sum to it; a key with no positive driver keeps it whole on
    a row with a null feature (nothing to spread it over). Features of an account without shared
    cost get a 0 share. fully_loaded_cost = token_cost + shared_cost_share."""
    from schemas.allocation import FullyLoadedCosts

    pools = shared.group_by(FULLY_LOADED_KEY).agg(pl.col("shared_cost").sum())
    features = driver.group_by(*FULLY_LOADED_KEY, *FULLY_LOADED_GRAIN).agg(pl.col("token_cost").sum())
    nano = to_units(pl.col("token_cost")).clip(lower_bound=0) // _WEIGHT_UNIT
    parts = (
        features.join(pools, on=FULLY_LOADED_KEY, how="left")
        .with_columns(_nano=nano)
        .with_columns(_nano_sum=pl.col("_nano").sum().over(FULLY_LOADED_KEY))
        # A sum past the exact-arithmetic bound weighs in whole currency units instead.
        .with_columns(_weight=pl.when(pl.col("_nano_sum") < DENOMINATOR_LIMIT).then(pl.col("_nano")).otherwise(pl.col("_nano") // _WEIGHT_UNIT))
        .with_columns(_den=pl.col("_weight").sum().over(FULLY_LOADED_KEY))
    )
    spread = parts.filter(pl.col("shared_cost").is_not_null() & (pl.col("_den") > 0)).with_columns(
        shared_cost_share=pl.col("shared_cost"), _tie=call_tie(pl.lit(False), pl.struct(FULLY_LOADED_GRAIN))
    )
    spread = split_exactly(spread, FULLY_LOADED_KEY, ["shared_cost_share"], "_weight", "_den", "_tie")
    unshared = parts.filter(pl.col("shared_cost").is_null()).with_columns(shared_cost_share=pl.lit(0, MONEY))
    spread_keys = parts.filter(pl.col("_den") > 0).select(FULLY_LOADED_KEY).unique()
    unspread = pools.join(spread_keys, on=FULLY_LOADED_KEY, how="anti", nulls_equal=True).with_columns(
        *[pl.lit(None, pl.String).alias(c) for c in FULLY_LOADED_GRAIN],
        token_cost=pl.lit(0, MONEY),
        shared_cost_share=pl.col("shared_cost"),
    )
    # Features with cost of their own keep their row (share 0) where a key had nothing to spread on.
    idle = parts.filter(pl.col("shared_cost").is_not_null() & (pl.col("_den") == 0)).with_columns(shared_cost_share=pl.lit(0, MONEY))
    return (
        pl.concat([spread, unshared, unspread, idle], how="diagonal_relaxed")
        # One row per feature: requests of no feature (billing-only) and the unspread part meet.
        .group_by(*FULLY_LOADED_KEY, *FULLY_LOADED_GRAIN)
        .agg(pl.col("token_cost").cast(MONEY).sum(), pl.col("shared_cost_share").cast(MONEY).sum())
        .with_columns(fully_loaded_cost=(pl.col("token_cost") + pl.col("shared_cost_share")).cast(MONEY))
        .select(list(FullyLoadedCosts.to_schema().columns))
    )


# --- the pipeline's entry point ----------------------------------------------------------------

LONGEST_DAILY_PERIOD = timedelta(days=1)
DAILY, MONTHLY = "daily", "monthly"  # the step allocating a token row: by its charge period's length
PLACEMENT_AMOUNTS = ("allocated", "unlogged", "unmatched")


def optimizations() -> pl.QueryOptFlags:
    """The optimizer passes allocation plans are collected with: predicate and projection
    pushdown only. The plan is large (cached subplans, wide horizontal expressions): Polars'
    expression simplification and common-subexpression passes took 5-9 s of an 11 s collect for a
    2,000-request day (1.5 s with pushdown only, same results), a cost that does not shrink with
    the data."""
    flags = pl.QueryOptFlags.none()
    flags.predicate_pushdown = True
    flags.projection_pushdown = True
    return flags


class BillingAllocation(NamedTuple):
    """What `allocate_billing` returns: the classified rows (schemas.ClassifiedUsage) and the
    allocation's tables (`allocate`)."""

    classified: pl.LazyFrame
    tables: AllocationTables
    # pool_hours: (provider, _hour) of the token rows. Empty: tables.requests and tables.pools are
    # empty frames, and so is anything built on them (shares per day, allocated_costs): not computed.
    hours: pl.DataFrame

    @property
    def pooled(self) -> bool:
        """Some token row to allocate (a pool hour)."""
        return not self.hours.is_empty()


def long_period() -> pl.Expr:
    """A FOCUS row whose charge period is longer than a day (a month, as some providers bill)."""
    return pl.col("ChargePeriodEnd") - pl.col("ChargePeriodStart") > pl.lit(LONGEST_DAILY_PERIOD)


# Calls per bucket when the allocation works in buckets (allocate_billing with a spill): giving
# every pooled call of a 5M-call day its currency, session account and coverage in one query held
# 5 GB; in three buckets of under 2M calls, 1.8 GB (measured, docs/performance.md).
BUCKET_CALLS = 2_000_000


def allocation_buckets(calls: int) -> int:
    """How many buckets of requests `calls` calls are allocated in (BUCKET_CALLS per bucket)."""
    return max(1, -(-calls // BUCKET_CALLS))


def allocate_billing(
    billing: pl.LazyFrame,
    calls: pl.LazyFrame,
    settings: Allocation = Allocation(),
    step: str = DAILY,
    report_unpooled: bool = True,
    buckets: int = 1,
    spill: Callable[[pl.LazyFrame, str], pl.LazyFrame] | None = None,
) -> BillingAllocation:
    """The one place the pipeline allocates: staged FOCUS rows (`billing`, with and without
    x_RequestId, of whole days) and the calls of the same days (deduplicated, one row per request)
    in; the token rows without a request id that `step` places (classify_for_allocation)
    allocated to the calls' tokens, minus the (request, token type) pairs the requests' own rows
    bill exactly.

    Its cost follows the calls that can take a share: the token rows' providers and hours
    (pool_hours, a small table, collected here) split the calls first. Only the calls in them
    are given their own currency and session account hints and go through the pools
    (pooled_call_tokens, in `buckets` hash buckets of request ids); the others (a whole day
    billed per request: every call) are only summed into unmatched_models. report_unpooled=False:
    the others are left out of unmatched_models too, for a caller that sums them where it joins
    the calls to their rows anyway (unpooled_unmatched; the daily step). `spill(frame, name)`,
    when given, writes an intermediate frame now and returns its scan (the buckets' parts, the
    shares): memory follows one part, not the whole."""
    classified = classify_for_allocation(billing, settings, step).cache()
    hours = pool_hours(classified, settings).collect(optimizations=optimizations())
    unpooled, exact = calls, exact_token_coverage(billing, settings)
    if hours.is_empty():  # no call can take a share: no pool to join, no account or currency to find
        tokens = pl.LazyFrame(schema=call_tokens(calls, settings).collect_schema())
    else:
        tokens = pooled_call_tokens(billing, calls, hours, settings, buckets, spill)
        unpooled = by_pool_hours(calls, hours, settings, "anti")
    unpooled_sums = lost_token_sums(unpooled, settings, exact) if report_unpooled else None
    tables = allocate(classified, tokens, settings, unpooled_sums, None if hours.is_empty() else spill, buckets)
    if hours.is_empty():  # no token row, so no pool and no share: empty, not computed (their plans read every call)
        tables = tables._replace(**{name: pl.LazyFrame(schema=getattr(tables, name).collect_schema()) for name in ("requests", "pools")})
    return BillingAllocation(classified, tables, hours)


def pooled_call_tokens(
    billing: pl.LazyFrame,
    calls: pl.LazyFrame,
    hours: pl.DataFrame,
    settings: Allocation = Allocation(),
    buckets: int = 1,
    spill: Callable[[pl.LazyFrame, str], pl.LazyFrame] | None = None,
) -> pl.LazyFrame:
    """call_tokens of the `calls` within pool `hours` (pool_hours), each with its own currency,
    its exact coverage (both from its own request's rows only) and its session's account
    (with_session_accounts). Everything but the session account is a request's own: worked in
    `buckets` hash buckets of request ids, the sessions' accounts found over every bucket first
    (a few rows per billed session). `spill`, when given, writes each bucket's parts in turn and
    returns their scans, so memory follows a bucket, not the day (a 5M-call day's pooled calls in
    one query: 5 GB); without it the buckets are one lazy concat."""

    def bucket(frame: pl.LazyFrame, column: str, b: int) -> pl.LazyFrame:
        return frame.filter(in_bucket(column, b, buckets))  # pushed below dedupe_calls to the scans

    pairs = [billed_sessions(bucket(billing, "x_RequestId", b), bucket(calls, "request_id", b)) for b in range(buckets)]
    sessions = session_accounts(_spilled(pairs, "billed_sessions", spill))
    parts = []
    for b in range(buckets):
        pooled = by_pool_hours(bucket(calls, "request_id", b), hours, settings, "semi").cache()
        own = bucket(billing, "x_RequestId", b).join(pooled.select(x_RequestId=pl.col("request_id")), on="x_RequestId", how="semi").cache()
        hinted = hint_session_accounts(pooled, sessions)
        parts.append(call_tokens(with_own_currency(hinted, own), settings, exact_token_coverage(own, settings)))
    return _spilled(parts, "pool_tokens", spill)


def _spilled(parts: list[pl.LazyFrame], name: str, spill: Callable[[pl.LazyFrame, str], pl.LazyFrame] | None) -> pl.LazyFrame:
    """`parts` as one frame: each written in turn (`spill`, as `name`-<n>) and read back, so memory
    follows one part; without `spill`, their lazy concat."""
    return pl.concat([spill(part, f"{name}-{b}") for b, part in enumerate(parts)] if spill is not None else parts)


def by_pool_hours(calls: pl.LazyFrame, hours: pl.DataFrame, settings: Allocation, how: str) -> pl.LazyFrame:
    """The `calls` (provider, timestamp) within (how="semi") or outside ("anti") the `hours` of
    pool_hours."""
    keyed = calls.with_columns(_provider=provider_key(pl.col("provider"), settings.provider_aliases), _hour=pl.col("timestamp").dt.truncate("1h"))
    key = ["_provider", "_hour"]
    return keyed.join(hours.lazy().rename({"provider": "_provider"}), on=key, how=how).drop(key)


def pool_hours(classified: pl.LazyFrame, settings: Allocation = Allocation()) -> pl.LazyFrame:
    """(provider, _hour): the provider keys and UTC hours the allocatable token rows of
    `classified` cover (a call can fall in one of their pools only there; _assign's equi-join
    uses the same hours). A few rows per provider and hour billed."""
    start, end = pl.col("ChargePeriodStart"), pl.col("ChargePeriodEnd")
    return (
        classified.filter(pl.col("usage_class") == "token")
        .select(
            provider=provider_key(pl.col("ServiceProviderName"), settings.provider_aliases),
            _hour=pl.datetime_ranges(start.dt.truncate("1h"), end, "1h", closed="left"),
        )
        .unique()
        .explode("_hour")
        .unique()
    )


def classify_for_allocation(billing: pl.LazyFrame, settings: Allocation = Allocation(), step: str = DAILY) -> pl.LazyFrame:
    """classify_usage restricted to the rows `step` places. DAILY: every row but the token rows
    whose charge period is longer than a day (hour and day rows are allocated over the calls of
    the days a daily run reads); MONTHLY: only those longer token rows, allocated by the monthly
    step over every call of their charge period (a daily run never sees all of them)."""
    monthly = (pl.col("usage_class") == "token") & long_period()
    return classify_usage(billing, settings).filter(monthly if step == MONTHLY else ~monthly)


def with_own_currency(calls: pl.LazyFrame, billing: pl.LazyFrame) -> pl.LazyFrame:
    """`calls` with `own_currency`: the BillingCurrency of the request's own x_RequestId rows
    (null when it has none; `billing` without request conflicts has one per request). A request
    billed exactly in one currency takes no share of another currency's pools (see _assign)."""
    own = billing.filter(pl.col("x_RequestId").is_not_null()).group_by(request_id=pl.col("x_RequestId")).agg(
        own_currency=pl.col("BillingCurrency").min()
    )
    return calls.join(own, on="request_id", how="left")


def with_session_accounts(calls: pl.LazyFrame, billing: pl.LazyFrame, session_calls: pl.LazyFrame | None = None) -> pl.LazyFrame:
    """`calls` with `billing_account_hint` filled, where the call names none, from its session:
    the one billing account whose own x_RequestId rows bill the session's other calls (a session
    runs in one account; sessions billed to several keep no hint). So an unbilled call of a
    session billed per request in one account's currency is never allocated a share of another
    account's pools. `session_calls`: every call of the sessions (default `calls`)."""
    return hint_session_accounts(calls, session_accounts(billed_sessions(billing, calls if session_calls is None else session_calls)))


def billed_sessions(billing: pl.LazyFrame, calls: pl.LazyFrame) -> pl.LazyFrame:
    """(session_id, _account): the billing accounts whose own x_RequestId rows bill a call of the
    session. Found from the billed requests' side: its hash tables hold billed requests, never
    every call. Pairs of disjoint sets of calls combine by concat (session_accounts)."""
    billed = billing.filter(pl.col("x_RequestId").is_not_null()).select(request_id=pl.col("x_RequestId"), _account=pl.col("BillingAccountId")).unique()
    members = calls.select("request_id", "session_id").filter(pl.col("session_id").is_not_null())
    return members.join(billed, on="request_id", how="inner").select("session_id", "_account").unique()


def session_accounts(pairs: pl.LazyFrame) -> pl.LazyFrame:
    """(session_id, _session_account) of the sessions billed to one account (billed_sessions' pairs)."""
    sessions = pairs.group_by("session_id").agg(_n=pl.col("_account").n_unique(), _session_account=pl.col("_account").first())
    return sessions.filter(pl.col("_n") == 1).select("session_id", "_session_account")


def hint_session_accounts(calls: pl.LazyFrame, sessions: pl.LazyFrame) -> pl.LazyFrame:
    """`calls` with `billing_account_hint` (where none is named) from `sessions` (session_accounts)."""
    own = blank_as_null(pl.col("billing_account_hint")) if "billing_account_hint" in calls.collect_schema().names() else pl.lit(None, pl.String)
    return (
        calls.join(sessions, on="session_id", how="left")
        .with_columns(billing_account_hint=pl.coalesce(own, pl.col("_session_account")))
        .drop("_session_account")
    )


def allocated_by_day(requests: pl.LazyFrame) -> pl.LazyFrame:
    """RequestAllocations summed per request date and currency: the allocated side of
    request_costs' conservation, summed apart from request_costs. A request's date is its call's
    (call_date: the UTC date of the timestamp its shares carry as called_at), so no join to the
    calls (at 5M calls a hash table of every request id: 1.5 GB)."""
    return requests.group_by(pl.col("called_at").dt.date().alias("date"), "billing_currency").agg(*[pl.col(c).sum() for c in COST_COLUMNS])


def placement(classified: pl.LazyFrame, pools: pl.LazyFrame) -> pl.LazyFrame:
    """Per FOCUS row without a request id (source_file, source_line): its usage_class and, for
    token rows, the parts of its BilledCost and EffectiveCost allocated, unlogged and unmatched
    (from `pools`; they sum to the row's cost). Unrecognized and shared rows carry no parts: the
    reconciliation counts their whole cost in their own bucket."""
    parts = [f"{p}_{c}" for p in PLACEMENT_AMOUNTS for c in ("billed_cost", "effective_cost")]
    return classified.select(*ORIGIN, "usage_class").join(pools.select(*ORIGIN, *parts), on=ORIGIN, how="left")
