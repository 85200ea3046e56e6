"""Pure transforms from staged inputs to requests with their cost: days and hash buckets, calls
deduplicated per request, which FOCUS rows belong to which request (their call, a billing-only
request, or late billing), request ids billed to two accounts or currencies, billing summed per
request, the join of both sides (request_costs), and conservation's independent route.

Every function takes and returns Polars LazyFrames or expressions (no I/O, no Dagster), so each one
can be tested on a tiny hand-built frame. Money stays an exact decimal.

Which request a FOCUS row belongs to (bounds from [pipeline] in unitledger.toml, config.Bounds; every
rule is relative to the row or the call, never to the run, so results do not depend on how a range
of days was split into runs):
- its request's call (the winning copy, `dedupe_calls`) is dated at most B = billing_delay_days from
  the row's ChargePeriodStart date: the row is that request's cost, dated by the call;
- else, if a call of its request is dated within H = detection_horizon_days of the row: late billing
  (reported, reconciled as late_billing_cost, never a second request);
- else the row is billing-only: its request is dated by the earliest row of that request id within
  the H days up to the row (the request's first row); a row more than B days after that first row is
  late billing too.
"""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl

from schemas.types import MONEY, TOKEN_TYPES, TYPED_COSTS

from unitledger.config import Allocation, Bounds
from unitledger.sources.ai_usage import token_coverage, with_token_types


COST_COLUMNS = ("billed_cost", "effective_cost", "list_cost")

# The estimated cost sources (cost_source of a call no invoice billed, with_estimates) and the
# per-feature columns holding the part of token_cost each estimated.
ESTIMATED_COSTS = {"gateway_reported": "gateway_reported_token_cost", "list_estimate": "list_estimate_token_cost"}

# request_costs' flag of a call sending tool results back to the model (model.telemetry.after_tool_calls).
TOOL_COLUMN = "after_tool_call"

REQUEST_HASH_SEED = 1  # not in_bucket's seed 0: within a bucket every id's seed-0 hash shares its remainder

# Copies of one request id (an event delivered more than once, perhaps with another timestamp) are
# looked for among calls dated at most this far from the run's calls.
COPY_DAYS = timedelta(days=1)

# A FOCUS row's place (classify_unassociated): its request's call, billing-only, or late.
CALL, BILLING_ONLY, LATE = "call", "billing_only", "late"


def days(n: int) -> timedelta:
    return timedelta(days=n)


def sum_where(condition: pl.Expr, values: pl.Expr) -> pl.Expr:
    """Sum of `values` where `condition` holds (0 where it never does), as values.filter(condition)
    .sum(), but elementwise before the sum: in a group-by about five times cheaper than a filter
    per group (1M calls, measured)."""
    return pl.when(condition).then(values).sum()


def in_dates(column: str, start: date, end: date) -> pl.Expr:
    """`column` (a Date) within [start, end)."""
    return pl.col(column).is_between(pl.lit(start), pl.lit(end), closed="left")


def bucket_of(column: str, buckets: int) -> pl.Expr:
    """The hash bucket (0 … buckets − 1) of `column`'s value: equal values share a bucket."""
    return pl.lit(0, pl.UInt64) if buckets == 1 else pl.col(column).hash(seed=0) % buckets


def in_bucket(column: str, bucket: int, buckets: int) -> pl.Expr:
    """Rows whose `column` falls in `bucket` of `buckets` (bucket_of)."""
    return pl.lit(True) if buckets == 1 else bucket_of(column, buckets) == bucket


def days_apart(a: str | pl.Expr, b: str | pl.Expr) -> pl.Expr:
    """|a − b| in whole days, for two Date columns."""
    a, b = (pl.col(x) if isinstance(x, str) else x for x in (a, b))
    return (a - b).dt.total_days().abs()


def duplicate_event_rows(events: pl.LazyFrame) -> pl.LazyFrame:
    """The rows of `events` (event_id, source_file, source_line, …) that repeat an event already
    delivered: of the rows sharing an event_id, every one but the first by (source_file,
    source_line), whatever their payloads. Events are delivered at least once: an event counts
    once, as its first copy by file path and line (not by arrival: re-stagings keep the same row).
    Staging drops these rows from the staged calls and outcomes (sources.events)."""
    copies = events.join(repeated_keys(events, "event_id"), on="event_id", how="semi")
    first = pl.struct("source_file", "source_line").sort_by("source_file", "source_line").first().over("event_id")
    return copies.filter(pl.struct("source_file", "source_line") != first)


def dedupe_calls(calls: pl.LazyFrame, repeated: pl.LazyFrame | None = None) -> pl.LazyFrame:
    """One row per request_id. Calls come one per event_id (duplicate_event_rows); of the distinct
    events sharing a request id (a producer that logged one request twice) keep the one with the
    smallest (event_id, file, line), so re-runs pick the same row. `repeated`:
    repeated_keys(calls, "request_id") when already computed."""
    key = pl.concat_str(
        pl.col("event_id"), pl.col("source_file"), pl.col("source_line").cast(pl.String).str.zfill(12), separator="\x00"
    )
    return first_by_key(calls, "request_id", key, pl.Expr.min, repeated)


def repeated_keys(rows: pl.LazyFrame, group: str) -> pl.LazyFrame:
    """The values of `group` that occur on more than one row."""
    return rows.group_by(group).agg(pl.len()).filter(pl.col("len") > 1).select(group)


def first_by_key(rows: pl.LazyFrame, group: str, key: pl.Expr, pick, repeated: pl.LazyFrame | None = None) -> pl.LazyFrame:
    """The row of each `group` whose `key` is `pick` (min or max) of the group's keys. Most groups
    have one row: only the rows of `repeated` groups pay for building and comparing the key."""
    repeated = repeated_keys(rows, group) if repeated is None else repeated
    chosen = rows.join(repeated, on=group, how="semi").with_columns(_key=key)
    chosen = chosen.filter(pl.col("_key") == pick(pl.col("_key")).over(group)).drop("_key")
    return pl.concat([rows.join(repeated, on=group, how="anti"), chosen])


def request_conflicts(billing: pl.LazyFrame, by: tuple[str, ...] = ()) -> pl.LazyFrame:
    """x_RequestId values billed to more than one billing account or currency among `billing`'s
    rows (within each group of `by`): such a request has no one account or currency, so its cost
    cannot be summed into one request. The reconciliation reports their cost as conflicting."""
    owners = ["BillingAccountId", "BillingCurrency"]  # mandatory: min != max is n_unique > 1, and cheaper
    return (
        billing.filter(pl.col("x_RequestId").is_not_null())
        .group_by("x_RequestId", *by)
        .agg(
            pl.col(owners).cast(pl.Categorical).min().name.suffix("_min"),  # codes, compared as text
            pl.col(owners).cast(pl.Categorical).max().name.suffix("_max"),
        )
        .filter(pl.any_horizontal(pl.col(f"{c}_min") != pl.col(f"{c}_max") for c in owners))
        .select("x_RequestId", *by)
    )


def with_lookaround(start: date, end: date) -> tuple[date, date]:
    """[start, end) with COPY_DAYS either side (the allocation's days: a request's copies a day away)."""
    return start - COPY_DAYS, end + COPY_DAYS


def without_request_conflicts(billing: pl.LazyFrame, conflicts: pl.DataFrame | None = None) -> pl.LazyFrame:
    """`billing` minus the rows of `request_conflicts` (rows without a request id are kept);
    `conflicts`: request_conflicts(billing) when already collected. No conflicts at all (the usual
    day) costs no anti-join, which would still hash every row's id (0.3 s per pass over 12M rows)."""
    if conflicts is None:
        return billing.join(request_conflicts(billing), on="x_RequestId", how="anti")
    return billing if conflicts.is_empty() else billing.join(conflicts.lazy(), on="x_RequestId", how="anti")


def billing_by_request(billing: pl.LazyFrame, settings: Allocation = Allocation()) -> pl.LazyFrame:
    """FOCUS rows with an x_RequestId, summed per request (exact decimal sums), with the first and
    last `charge_date` of its rows and `conflict`: its rows name more than one billing account or
    currency (see request_conflicts), so no one account, currency or sum is the request's.

    TYPED_COSTS: EffectiveCost per token type, each row's type recognized as the allocation
    recognizes aggregated rows (ai_usage.with_token_types, `settings`' meter rules included); all
    four null when a row with a non-zero EffectiveCost has no recognizable type (a per-request
    total, a fee): the request's cost is then not known by type. Else they sum to effective_cost.
    `covers_<type>`: the token types its rows bill (ai_usage.exact_token_coverage), whatever their cost.

    The text columns (a few distinct values each) come out Categorical, compared as text: per
    request a code instead of a string, for a third of the memory (join_requests restores text)."""
    text = {
        "billing_account_id": "BillingAccountId",
        "billing_currency": "BillingCurrency",
        "billed_feature_tag": "x_FeatureTag",
        "billed_model_version": "x_ModelVersion",
        "billed_prompt_version": "x_PromptVersion",
        "billed_provider": "ServiceProviderName",
    }
    owners = [pl.col(c).cast(pl.Categorical) for c in ("BillingAccountId", "BillingCurrency")]
    token_type, zero = pl.col("token_type"), pl.lit(0, MONEY)
    return (
        with_token_types(billing.filter(pl.col("x_RequestId").is_not_null()), settings)
        # Per row, then summed: plain sums in the group_by (a filter per aggregate is far slower).
        .with_columns(
            *[pl.when(token_type == t).then(pl.col("EffectiveCost")).otherwise(zero).alias(c) for t, c in zip(TOKEN_TYPES, TYPED_COSTS)],
            _untyped=(token_type.is_null() & (pl.col("EffectiveCost") != 0)),
        )
        .group_by(pl.col("x_RequestId").alias("request_id"))
        .agg(
            billed_cost=pl.col("BilledCost").sum(),
            effective_cost=pl.col("EffectiveCost").sum(),
            list_cost=pl.col("ListCost").sum(),
            *[pl.col(c).sum() for c in TYPED_COSTS],
            _untyped=pl.col("_untyped").max(),
            *token_coverage(),
            billing_rows=pl.len().cast(pl.Int64),
            charge_date=pl.col("charge_date").min(),
            last_charge_date=pl.col("charge_date").max(),
            # min != max: n_unique > 1 for a mandatory column, on codes (cheaper)
            conflict=pl.any_horizontal([o.min() != o.max() for o in owners]),
            **{name: pl.col(column).cast(pl.Categorical).min() for name, column in text.items()},
        )
        .with_columns(
            *[pl.when(~pl.col("_untyped")).then(pl.col(c)).cast(MONEY).alias(c) for c in TYPED_COSTS],
            cost_source=pl.lit("invoice_request"),
            **{f"allocated_{c}": pl.lit(0, MONEY) for c in COST_COLUMNS},
        )
        .drop("_untyped")
    )


def with_allocated(billed: pl.LazyFrame, allocated: pl.LazyFrame) -> pl.LazyFrame:
    """`billing_by_request` rows with the requests' allocated shares added
    (allocation.allocated_by_request, one row per request: the allocation never gives a request
    shares in two currencies, or in another than its own rows', see its two_currencies; were it
    to, the request would repeat and fail request_costs' uniqueness, never be summed across them).
    A request with its own rows keeps their account, currency and cost_source invoice_request
    (the exact rows won for the token types they bill: allocation left those out); one with
    shares only is invoice_allocated. Costs, TYPED_COSTS (shares always have a type; null when
    the own rows' types are not known) and billing_rows are the sums of both sides."""
    shares = allocated.select(
        "request_id",
        _account=pl.col("billing_account_id").cast(pl.Categorical),
        _currency=pl.col("billing_currency").cast(pl.Categorical),
        _rows=pl.col("billing_rows"),
        _date=pl.col("charge_date"),
        **{f"_{c}": pl.col(c) for c in (*COST_COLUMNS, *TYPED_COSTS)},
    )
    zero = pl.lit(0, MONEY)
    joined = billed.join(shares, on="request_id", how="full", coalesce=True)
    own_rows = pl.col("billing_rows").is_not_null()  # (before the sums below replace it)
    return joined.with_columns(
        *[(pl.col(c).fill_null(zero) + pl.col(f"_{c}").fill_null(zero)).cast(MONEY).alias(c) for c in COST_COLUMNS],
        *[(pl.when(own_rows).then(pl.col(c)).otherwise(zero) + pl.col(f"_{c}").fill_null(zero)).cast(MONEY).alias(c) for c in TYPED_COSTS],
        *[(pl.col(f"allocated_{c}").fill_null(zero) + pl.col(f"_{c}").fill_null(zero)).cast(MONEY).alias(f"allocated_{c}") for c in COST_COLUMNS],
        billing_rows=(pl.col("billing_rows").fill_null(0) + pl.col("_rows").fill_null(0)).cast(pl.Int64),
        charge_date=pl.min_horizontal("charge_date", "_date"),
        last_charge_date=pl.max_horizontal("last_charge_date", "_date"),
        conflict=pl.col("conflict").fill_null(False),
        billing_account_id=pl.coalesce("billing_account_id", "_account"),
        billing_currency=pl.coalesce("billing_currency", "_currency"),
        cost_source=pl.coalesce("cost_source", pl.lit("invoice_allocated")),
    ).drop("_account", "_currency", "_rows", "_date", *[f"_{c}" for c in (*COST_COLUMNS, *TYPED_COSTS)])


def join_requests(calls: pl.LazyFrame, billed: pl.LazyFrame) -> pl.LazyFrame:
    """Full outer join of deduplicated calls with `billing_by_request` on the request id; a request
    whose rows conflict (`conflict`) is left out of billing (it stays a call, telemetry-only).

    Every request of either side appears once with its `date` and `match_status` (and the call's
    `call_date`, the billed rows' `charge_date` and `last_charge_date`), the gateway's reported
    cost beside the invoice's (`gateway_reported_cost`, `gateway_reported_currency`). The cost of a
    call nothing billed is left to `with_estimates`."""
    # A gateway's cost and the trace's tool structure: null where the calls do not carry them.
    optional = {"reported_cost": MONEY, "reported_currency": pl.String, TOOL_COLUMN: pl.Boolean}
    present = calls.collect_schema().names()
    calls = calls.with_columns(pl.lit(None, dtype).alias(c) for c, dtype in optional.items() if c not in present)
    call_side = calls.select(
        "request_id",
        "session_id",
        pl.col("timestamp").alias("called_at"),
        "call_date",
        "feature_tag",
        "provider",
        "model",
        "model_version",
        "prompt_version",
        "input_tokens",
        "output_tokens",
        "cache_read_input_tokens",
        "cache_write_input_tokens",
        # the call's own, as the allocation names its model (provider and version are filled from billing below)
        pl.col("provider").alias("call_provider"),
        pl.col("model_version").alias("call_model_version"),
        "attempt",
        "status",
        pl.col("reported_cost").alias("gateway_reported_cost"),
        pl.col("reported_currency").alias("gateway_reported_currency"),
        TOOL_COLUMN,
    )
    billed = billed.filter(~pl.col("conflict")).drop("conflict")
    # The hash table on the billed side: codes and numbers, where the calls side has long ids.
    joined = call_side.join(billed, on="request_id", how="full", coalesce=True, build_side="force_right")
    joined = joined.with_columns(pl.col(pl.Categorical).cast(pl.String))
    seen = pl.col("session_id").is_not_null()
    billed_rows = pl.col("billing_rows").fill_null(0)
    return joined.with_columns(
        date=pl.coalesce("call_date", "charge_date"),
        feature_tag=pl.coalesce("feature_tag", "billed_feature_tag"),
        provider=pl.coalesce("provider", "billed_provider"),
        model_version=pl.coalesce("model_version", "billed_model_version"),
        prompt_version=pl.coalesce("prompt_version", "billed_prompt_version"),
        billing_rows=billed_rows,
        match_status=pl.when(seen & (billed_rows > 0))
        .then(pl.lit("matched"))
        .when(seen)
        .then(pl.lit("telemetry_only"))
        .otherwise(pl.lit("billing_only")),
    )


def with_estimates(joined: pl.LazyFrame, prices: pl.LazyFrame | None) -> pl.LazyFrame:
    """`join_requests` rows (or request_costs rows) with the cost of the calls no invoice billed
    (billing_rows 0) estimated, in this order: the gateway's reported cost (cost_source
    gateway_reported, in its reported currency), else the list-price estimate from `prices` (cost_source list_estimate,
    model.telemetry.list_price_costs, valid on the call's date). An estimate is the one figure
    there is: it fills billed_cost, effective_cost and list_cost alike (allocated_* 0) and
    billing_currency is its currency; billing_rows stays 0 and match_status telemetry_only, so the
    conservation checks and the reconciliation, which count invoice rows only, never see it. A
    billed request keeps its invoice cost: the gateway's figure is only in gateway_reported_cost.

    Only the unbilled calls without a gateway cost are priced (few on a billed day): the list-price
    join does not touch the others. It reads `joined` twice: give it a scan, not a join to redo."""
    from unitledger.model.telemetry import list_price_costs

    unbilled = (pl.col("billing_rows") == 0) & pl.col("session_id").is_not_null()
    gateway = unbilled & pl.col("gateway_reported_cost").is_not_null()
    estimated_cost, estimated_currency = pl.col("gateway_reported_cost"), pl.col("gateway_reported_currency")
    source = pl.when(gateway).then(pl.lit("gateway_reported"))
    if prices is not None:
        to_price = unbilled & pl.col("gateway_reported_cost").is_null()
        priced = list_price_costs(joined.filter(to_price), prices, date_column="date", key="request_id")
        joined = pl.concat([joined.filter(~to_price).with_columns(
            list_estimate_cost=pl.lit(None, MONEY), list_estimate_currency=pl.lit(None, pl.String)), priced])
        listed = unbilled & pl.col("list_estimate_cost").is_not_null()
        estimated_cost = pl.when(gateway).then(estimated_cost).when(listed).then(pl.col("list_estimate_cost"))
        estimated_currency = pl.when(gateway).then(estimated_currency).when(listed).then(pl.col("list_estimate_currency"))
        source = source.when(listed).then(pl.lit("list_estimate"))
    else:
        estimated_cost = pl.when(gateway).then(estimated_cost)
        estimated_currency = pl.when(gateway).then(estimated_currency)
    estimated = source.is_not_null()
    return joined.with_columns(
        *[pl.coalesce(pl.col(c), estimated_cost).cast(MONEY).alias(c) for c in COST_COLUMNS],
        *[pl.when(estimated).then(pl.lit(0, MONEY)).otherwise(pl.col(f"allocated_{c}")).alias(f"allocated_{c}") for c in COST_COLUMNS],
        billing_currency=pl.coalesce(pl.col("billing_currency"), estimated_currency),
        cost_source=pl.coalesce(pl.col("cost_source"), source),
    ).drop("list_estimate_cost", "list_estimate_currency", strict=False)


def request_costs(joined: pl.LazyFrame, start: date, end: date) -> pl.LazyFrame:
    """Rows of `join_requests` dated within [start, end), as schemas.RequestCosts."""
    from schemas.outputs import RequestCosts

    return joined.filter(in_dates("date", start, end)).select(list(RequestCosts.to_schema().columns))


# --- which request a FOCUS row belongs to -----------------------------------------------------------


def associate(billing: pl.LazyFrame, calls: pl.LazyFrame, bounds: Bounds, how: str = "inner") -> pl.LazyFrame:
    """`billing` (FOCUS rows with an x_RequestId) with `call_date`: the date of their request's call
    (`calls`: one row per request_id with its call_date, deduplicated) when it is at most
    billing_delay_days from the row's charge_date. how="inner": only those rows; how="left": every
    row, `call_date` null when its request has no such call among `calls`."""
    near = days_apart("charge_date", "call_date") <= bounds.billing_delay_days
    joined = billing.join(
        calls.select(pl.col("request_id").alias("x_RequestId"), "call_date"), on="x_RequestId", how=how
    )
    if how == "inner":
        return joined.filter(near)
    return joined.with_columns(call_date=pl.when(near).then(pl.col("call_date")))


def classify_unassociated(
    candidates: pl.LazyFrame, calls: pl.LazyFrame, earlier: pl.LazyFrame, bounds: Bounds
) -> pl.LazyFrame:
    """FOCUS rows whose request has no call within billing_delay_days (`candidates`: rows with
    x_RequestId, charge_date, source_file, source_line) classified as billing-only or late billing.

    `calls`: calls (any copy: request_id, call_date) of the candidates' requests dated within
    detection_horizon_days of them; `earlier`: FOCUS rows (x_RequestId, charge_date) of the
    candidates' requests dated within detection_horizon_days before them (the candidates included).
    Adds `billing_class` (BILLING_ONLY or LATE), `call_date` (the nearest call within the horizon:
    the row is late), `first_charge_date` (the earliest row of its request within the horizon) and
    `request_date` (billing-only rows: the request's date, its first row's)."""
    horizon = bounds.detection_horizon_days
    rows = candidates.select("source_file", "source_line", "x_RequestId", "charge_date").unique()
    nearest = (
        rows.join(calls.select(pl.col("request_id").alias("x_RequestId"), pl.col("call_date")), on="x_RequestId")
        .filter(days_apart("charge_date", "call_date") <= horizon)
        .group_by("source_file", "source_line")
        .agg(pl.col("call_date").sort_by(days_apart("charge_date", "call_date"), "call_date").first())
    )
    first = (
        rows.join(earlier.select("x_RequestId", pl.col("charge_date").alias("_earlier")), on="x_RequestId")
        .filter(pl.col("_earlier").is_between(pl.col("charge_date") - days(horizon), pl.col("charge_date")))
        .group_by("source_file", "source_line")
        .agg(first_charge_date=pl.col("_earlier").min())
    )
    key = ["source_file", "source_line"]
    classified = (
        candidates.join(nearest, on=key, how="left")
        .join(first, on=key, how="left")
        .with_columns(first_charge_date=pl.coalesce("first_charge_date", "charge_date"))
    )
    billing_only = pl.col("call_date").is_null() & (
        (pl.col("charge_date") - pl.col("first_charge_date")).dt.total_days() <= bounds.billing_delay_days
    )
    return classified.with_columns(
        billing_class=pl.when(billing_only).then(pl.lit(BILLING_ONLY)).otherwise(pl.lit(LATE)),
        request_date=pl.when(billing_only).then(pl.col("first_charge_date")),
    )


def late_reason(bounds: Bounds) -> pl.Expr:
    """Why a LATE row of `classify_unassociated` is not a request's cost, for its quarantine record."""
    apart = days_apart("charge_date", "call_date").cast(pl.String)
    after_first = (pl.col("charge_date") - pl.col("first_charge_date")).dt.total_days().cast(pl.String)
    limit = f"pipeline.billing_delay_days = {bounds.billing_delay_days}"
    return (
        pl.when(pl.col("call_date").is_not_null())
        .then(
            pl.lit("late billing: charged ") + apart + pl.lit(" days from its request's call on ")
            + pl.col("call_date").cast(pl.String) + pl.lit(f" (more than {limit}): not in request_costs")
        )
        .otherwise(
            pl.lit("late billing: charged ") + after_first + pl.lit(" days after its billing-only request's first row on ")
            + pl.col("first_charge_date").cast(pl.String) + pl.lit(f" (more than {limit}): not in request_costs")
        )
    )


def billed_cost_by_assigned_day(
    billing: pl.LazyFrame, calls: pl.LazyFrame, billing_only: pl.LazyFrame, start: date, end: date, bounds: Bounds,
    hashed: bool = False,
) -> pl.LazyFrame:
    """Conservation's independent route: FOCUS money per (date, billing_currency) within [start,
    end), each row dated by its request, computed from the rows themselves rather than from the
    per-request sums and the join: `billing` rows within billing_delay_days of their request's call
    (`calls`: one row per request id, request_id and call_date) on the call's date, plus the
    billing-only rows (`billing_only`: classified rows, dated by `request_date`). Must equal
    request_costs' sums per day. Rows of conflicting requests must be left out of both inputs.

    `hashed`: join on a 64-bit hash of the request id instead of the id itself (faster). Two ids
    sharing a hash would be taken for one request, which can only move cents between days: a wrong
    total, never a right one, so a caller that re-checks a failed comparison on the ids loses nothing."""
    money = {"billed_cost": "BilledCost", "effective_cost": "EffectiveCost", "list_cost": "ListCost"}

    def request(column: str) -> pl.Expr:
        return (pl.col(column).hash(seed=REQUEST_HASH_SEED) if hashed else pl.col(column)).alias("_request")

    def rows(frame: pl.LazyFrame, dated: pl.Expr) -> pl.LazyFrame:
        return frame.select(
            dated.alias("date"), pl.col("BillingCurrency").alias("billing_currency"),
            **{name: pl.col(column) for name, column in money.items()},
        )

    called = (
        billing.filter(pl.col("x_RequestId").is_not_null())
        .select(request("x_RequestId"), "charge_date", "BillingCurrency", *money.values())
        .join(calls.select(request("request_id"), "call_date"), on="_request")
        .filter(days_apart("charge_date", "call_date") <= bounds.billing_delay_days)
    )
    return (
        pl.concat([rows(called, pl.col("call_date")), rows(billing_only, pl.col("request_date"))])
        .filter(in_dates("date", start, end))
        .group_by("date", "billing_currency")
        .agg([pl.col(name).sum() for name in money])
    )
