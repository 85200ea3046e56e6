"""Pure transforms from staged inputs to requests with their cost: days and hash buckets, calls
deduplicated per request, request ids billed to two accounts or currencies, billing summed per
request, the join of both sides (request_costs), and conservation's independent route.

Every function takes and returns Polars LazyFrames or expressions (no I/O, no Dagster), so each one
can be tested on a tiny hand-built frame. Money stays an exact decimal.

Days and midnight: a run for the dates [start, end) reads calls and billing rows of
[start - 1 day, end + 1 day). A request belongs to its call's UTC date (billing-only requests: the
date of their earliest ChargePeriodStart), a session to the date of its earliest call. So a session
that crosses midnight keeps the calls it makes up to the end of the day after its first call, and a
billing row may be dated up to one day away from its call; both are counted once.
"""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl


LOOKAROUND = timedelta(days=1)

REQUEST_HASH_SEED = 1  # not in_bucket's seed 0: within a bucket every id's seed-0 hash shares its remainder


def in_dates(column: str, start: date, end: date) -> pl.Expr:
    """`column` (a Date) within [start, end)."""
    return pl.col(column).is_between(pl.lit(start), pl.lit(end), closed="left")


def in_bucket(column: str, bucket: int, buckets: int) -> pl.Expr:
    """Rows whose `column` falls in `bucket` of `buckets` by hash: equal values share a bucket."""
    return pl.lit(True) if buckets == 1 else pl.col(column).hash(seed=0) % buckets == bucket


def with_lookaround(start: date, end: date) -> tuple[date, date]:
    return start - LOOKAROUND, end + LOOKAROUND


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


def without_request_conflicts(billing: pl.LazyFrame, conflicts: pl.DataFrame | None = None) -> pl.LazyFrame:
    """`billing` minus the rows of `request_conflicts` (rows without a request id are kept);
    `conflicts`: request_conflicts(billing) when already collected. No conflicts at all (the usual
    day) costs no anti-join, which would still hash every row's id (0.3 s per pass over 12M rows)."""
    if conflicts is None:
        return billing.join(request_conflicts(billing), on="x_RequestId", how="anti")
    return billing if conflicts.is_empty() else billing.join(conflicts.lazy(), on="x_RequestId", how="anti")


def billing_by_request(billing: pl.LazyFrame) -> pl.LazyFrame:
    """FOCUS rows with an x_RequestId, summed per request (exact decimal sums). `billing` must be
    free of `request_conflicts`: account and currency are taken as the request's only ones.

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
    return (
        billing.filter(pl.col("x_RequestId").is_not_null())
        .group_by(pl.col("x_RequestId").alias("request_id"))
        .agg(
            billed_cost=pl.col("BilledCost").sum(),
            effective_cost=pl.col("EffectiveCost").sum(),
            list_cost=pl.col("ListCost").sum(),
            billing_rows=pl.len().cast(pl.Int64),
            charge_date=pl.col("charge_date").min(),
            **{name: pl.col(column).cast(pl.Categorical).min() for name, column in text.items()},
        )
    )


def join_requests(calls: pl.LazyFrame, billed: pl.LazyFrame) -> pl.LazyFrame:
    """Full outer join of deduplicated calls with `billing_by_request` on the request id.

    Every request of either side appears once with its `date` and `match_status`."""
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
        "attempt",
        "status",
    )
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


def request_costs(joined: pl.LazyFrame, start: date, end: date) -> pl.LazyFrame:
    """Rows of `join_requests` dated within [start, end), as schemas.RequestCosts."""
    from schemas.outputs import RequestCosts

    return joined.filter(in_dates("date", start, end)).select(list(RequestCosts.to_schema().columns))


def billed_cost_by_assigned_day(
    billing: pl.LazyFrame, calls: pl.LazyFrame, start: date, end: date, hashed: bool = False
) -> pl.LazyFrame:
    """Conservation's independent route: the FOCUS rows with a request id, dated by their request
    (the call's date when telemetry has the request, else the date of the request's earliest
    ChargePeriodStart, as request_costs dates it), summed per day within [start, end). Must equal
    request_costs' sums per day. `calls`: one row per request_id (deduplicated; a repeated id would
    count its rows twice and fail the comparison).

    `hashed`: group and join on a 64-bit hash of the request id instead of the id itself (about a
    third faster at 5M requests). Two ids sharing a hash would be taken for one request, which can
    only move cents between their days: a wrong total, never a right one, so a caller that
    re-checks a failed comparison on the ids loses nothing."""
    money = {"billed_cost": "BilledCost", "effective_cost": "EffectiveCost", "list_cost": "ListCost"}

    def request(column: str) -> pl.Expr:
        return (pl.col(column).hash(seed=REQUEST_HASH_SEED) if hashed else pl.col(column)).alias("_request")

    return (
        billing.filter(pl.col("x_RequestId").is_not_null())
        .group_by(request("x_RequestId"), pl.col("BillingCurrency").alias("billing_currency"))
        .agg(charge_date=pl.col("charge_date").min(), **{name: pl.col(column).sum() for name, column in money.items()})
        .join(calls.select(request("request_id"), "call_date"), on="_request", how="left")
        .with_columns(date=pl.coalesce("call_date", "charge_date"))
        .filter(in_dates("date", start, end))
        .group_by("date", "billing_currency")
        .agg([pl.col(name).sum() for name in money])
    )
