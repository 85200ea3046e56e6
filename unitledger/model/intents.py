"""Pure transforms from requests to intents: which intent each call belongs to (intent_days), a
session's latest outcome label, and an intent's cost with the labor cost of a failure
(intent_costs). LazyFrames in and out, no I/O, no Dagster.

An intent is one session's calls from the date of its first call up to S = session_days whole days
after it. Which intent a call belongs to is decided from the session's call dates alone, looking
back at most 2 × S days, so it does not depend on how a range of days was split into runs:
- a call date with no call of its session in the S days before it starts an intent, dated that day;
- a call belongs to the latest intent of its session started at most S days before its date;
- a call of a session that has called every few days since more than S days (no start within the
  last S days) belongs to no intent: it is reported (beyond the session bound), its request's cost
  stays in request_costs;
- after a pause of more than S days without a call, the session's next call starts a new intent of
  the same session_id (intents are unique per session_id and date).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import polars as pl

from schemas.types import MONEY
from unitledger.model.requests import ESTIMATED_COSTS, in_dates, sum_where


def session_dates(calls: pl.LazyFrame) -> pl.LazyFrame:
    """The distinct (session_id, call_date) of `calls`: all intent_days needs."""
    return calls.select("session_id", "call_date").unique()


def intent_days(pairs: pl.LazyFrame, session_days: int) -> pl.LazyFrame:
    """`pairs` (session_dates: session_id, call_date) with `intent_date`: the date of the intent the
    session's calls of that date belong to, null when they belong to none (beyond the bound; see the
    module's rules). Right for every call_date whose 2 × S days before are among `pairs`."""
    # Sorted, a session's dates are consecutive rows, its first row always a start: shifts and a
    # forward fill over the whole frame never cross sessions (cheaper than windows per session).
    ordered = pairs.sort("session_id", "call_date")
    same_session = pl.col("session_id") == pl.col("session_id").shift(1)
    gap = pl.when(same_session).then((pl.col("call_date") - pl.col("call_date").shift(1)).dt.total_days())
    starts = ordered.with_columns(_start=pl.when(gap.is_null() | (gap > session_days)).then(pl.col("call_date")))
    latest = starts.with_columns(_start=pl.col("_start").forward_fill())
    within = (pl.col("call_date") - pl.col("_start")).dt.total_days() <= session_days
    return latest.select("session_id", "call_date", intent_date=pl.when(within).then(pl.col("_start")))


def latest_outcomes(outcomes: pl.LazyFrame) -> pl.LazyFrame:
    """A session's outcome is its latest label by timestamp (ties: the largest event_id, file, line)."""
    # One group-by, each session's labels ordered by the whole tie-break key: cheaper than building
    # a text key per label and comparing it over the session (2.4 times less CPU at 1M requests).
    latest = pl.col("success", "escalated").sort_by("timestamp", "event_id", "source_file", "source_line").last()
    return outcomes.group_by("session_id").agg(latest)


def intent_calls(joined: pl.LazyFrame, days: pl.LazyFrame) -> pl.LazyFrame:
    """The calls of `joined` (join_requests rows, billing-only ones dropped) with `intent_date`, the
    date of the intent each belongs to (`days`: intent_days), null for a call beyond the bound;
    estimates in another currency than their intent's invoice left out (without_foreign_estimates)."""
    calls = joined.filter(pl.col("session_id").is_not_null())
    return without_foreign_estimates(calls.join(days.rename({"call_date": "date"}), on=["session_id", "date"], how="left"))


def without_foreign_estimates(calls: pl.LazyFrame) -> pl.LazyFrame:
    """`calls` (with intent_date) where an estimated cost (cost_source gateway_reported or
    list_estimate) in another currency than the one the invoice billed the rest of its intent in
    counts as no cost (cost, currency and cost_source null, as an unbilled call): the invoice's
    currency is the intent's and no exchange rate is guessed, so a list price in USD does not put
    an intent billed in EUR in two currencies. The request keeps its estimate in request_costs."""
    estimate = pl.col("cost_source").is_in(list(ESTIMATED_COSTS)).fill_null(False)
    key = ["session_id", "intent_date"]
    # Only estimated calls change: their intents' invoiced currency is looked up from the other
    # calls of those intents alone (few), not a window over every call (about 0.7 s of CPU at 1M).
    others, estimated = calls.filter(~estimate), calls.filter(estimate)
    invoiced = (
        others.join(estimated.select(key).unique(), on=key, how="semi", nulls_equal=True)
        .group_by(key)
        .agg(_invoiced=pl.col("billing_currency").min())
    )
    foreign = pl.col("_invoiced").is_not_null() & (pl.col("billing_currency") != pl.col("_invoiced"))
    cleared = ["billing_currency", "cost_source", *[c for c in calls.collect_schema().names() if c.endswith("_cost") and c != "gateway_reported_cost"]]
    checked = estimated.join(invoiced, on=key, how="left", nulls_equal=True)
    return pl.concat([others, checked.with_columns(pl.when(~foreign).then(pl.col(c)).alias(c) for c in cleared).drop("_invoiced")])


def mixed_currency_intents(calls: pl.LazyFrame) -> pl.LazyFrame:
    """(session_id, intent_date) of the intents among `calls` (intent_calls) whose billed calls
    name more than one billing_currency, with `currencies` (sorted): no one currency is the intent's."""
    billed = calls.filter(pl.col("intent_date").is_not_null() & pl.col("billing_currency").is_not_null())
    currency = pl.col("billing_currency").cast(pl.Categorical)
    # min != max (on categorical codes, compared as text): cheaper than collecting every group's set
    mixed = (
        billed.group_by("session_id", "intent_date")
        .agg(currency.min().alias("_lo"), currency.max().alias("_hi"))
        .filter(pl.col("_lo") != pl.col("_hi"))
        .select("session_id", "intent_date")
    )
    return (
        billed.join(mixed, on=["session_id", "intent_date"], how="semi")
        .group_by("session_id", "intent_date")
        .agg(currencies=pl.col("billing_currency").unique().sort())
    )


def intent_costs(
    calls: pl.LazyFrame, outcomes: pl.LazyFrame, labor: pl.LazyFrame, start: date, end: date, also: Sequence[pl.Expr] = ()
) -> pl.LazyFrame:
    """One row per intent dated within [start, end), as schemas.IntentCosts.

    `calls`: intent_calls of every call of those intents (dated up to end + session_days),
    `outcomes` the latest label per session (`latest_outcomes`), `labor` the labor cost table
    (config.labor_table). `also`: more aggregations of an intent's calls, kept as columns after
    IntentCosts' (the daily step's cost_breakdown components and currency range: the calls read
    and grouped once)."""
    from schemas.outputs import IntentCosts

    sessions = (
        calls.filter(in_dates("intent_date", start, end))
        .group_by("session_id", pl.col("intent_date").alias("date"))
        .agg(
            *also,
            # The last call's values (sort_by + last: faster than get(arg_max) per column).
            **{c: pl.col(c).sort_by("called_at").last() for c in ("feature_tag", "model", "model_version", "prompt_version")},
            billing_currency=pl.col("billing_currency").min(),
            requests=pl.len().cast(pl.Int64),
            turns=(pl.col("attempt") == 1).sum().cast(pl.Int64),
            retries=(pl.col("attempt") > 1).sum().cast(pl.Int64),
            unbilled_requests=(pl.col("billing_rows") == 0).sum().cast(pl.Int64),
            token_cost=pl.col("effective_cost").sum(),
            allocated_token_cost=pl.col("allocated_effective_cost").sum(),
            **{column: sum_where(pl.col("cost_source") == source, pl.col("effective_cost")) for source, column in ESTIMATED_COSTS.items()},
        )
    )
    labeled = sessions.join(outcomes, on="session_id", how="left")
    with_labor = attach_labor(labeled, labor)
    billed = pl.col("billing_currency").is_not_null()
    outcome = (
        pl.when(pl.col("success").is_null())
        .then(pl.lit("unlabeled"))
        .when(pl.col("success"))
        .then(pl.lit("success"))
        .otherwise(pl.lit("failure"))
    )
    return (
        with_labor.with_columns(outcome=outcome)
        .with_columns(
            token_cost=pl.when(billed).then(pl.col("token_cost")),
            allocated_token_cost=pl.when(billed).then(pl.col("allocated_token_cost")),
            **{column: pl.when(billed).then(pl.col(column)) for column in ESTIMATED_COSTS.values()},
            labor_cost=pl.when(billed).then(
                pl.when(pl.col("outcome") == "failure").then(pl.col("labor_cost_per_failure")).otherwise(pl.lit(0, dtype=MONEY))
            ),
        )
        .with_columns(total_cost=(pl.col("token_cost") + pl.col("labor_cost")).cast(MONEY))
        .select(*IntentCosts.to_schema().columns, *[e.meta.output_name() for e in also])
    )


def attach_labor(intents: pl.LazyFrame, labor: pl.LazyFrame) -> pl.LazyFrame:
    """Add labor_cost_per_failure: the feature's amount in the intent's currency, else that currency's default."""
    specific = labor.filter(pl.col("feature_tag").is_not_null())
    default = labor.filter(pl.col("feature_tag").is_null()).select(
        "billing_currency", pl.col("labor_cost_per_failure").alias("_default_labor")
    )
    return (
        intents.join(specific, on=["feature_tag", "billing_currency"], how="left")
        .join(default, on="billing_currency", how="left")
        .with_columns(labor_cost_per_failure=pl.coalesce("labor_cost_per_failure", "_default_labor").cast(MONEY))
        .drop("_default_labor")
    )


# --- month-long token rows' shares (the monthly step) ------------------------------------------

MONTH_SHARE_KEY = ["session_id", "intent_date"]


def place_month_shares(shares: pl.LazyFrame, intents: pl.LazyFrame) -> pl.LazyFrame:
    """`shares` (session_id, intent_date, billing_currency, share: the EffectiveCost shares of
    month-long token rows summed per intent and currency) with the intent's `outcome` and
    `reason`: null when the share is added to its intent (one of `intents`, IntentCosts rows,
    billed in that currency or not billed at all, and all of its shares in one currency), else
    `no_intent` (the call belongs to no intent of `intents`: one begun in an earlier month, beyond
    the session bound, or a request no published request_costs row names) or `other_currency` (an
    intent's cost is one currency's: no exchange rate is guessed)."""
    currencies = shares.group_by(MONTH_SHARE_KEY).agg(_currencies=pl.col("billing_currency").n_unique())
    known = intents.select("session_id", "outcome", intent_date=pl.col("date"), _intent_currency=pl.col("billing_currency"))
    joined = shares.join(known, on=MONTH_SHARE_KEY, how="left").join(currencies, on=MONTH_SHARE_KEY, how="left", nulls_equal=True)
    foreign = pl.when(pl.col("_intent_currency").is_null()).then(pl.col("_currencies") > 1).otherwise(pl.col("_intent_currency") != pl.col("billing_currency"))
    reason = pl.when(pl.col("outcome").is_null()).then(pl.lit("no_intent")).when(foreign).then(pl.lit("other_currency"))
    return joined.with_columns(reason=reason).drop("_intent_currency", "_currencies")


def add_month_shares(intents: pl.LazyFrame, placed: pl.LazyFrame, labor: pl.LazyFrame) -> pl.LazyFrame:
    """The `intents` (IntentCosts rows) that receive shares of `placed` (place_month_shares, reason
    null), with them added to token_cost, allocated_token_cost and total_cost. An intent none of
    whose calls was billed (currency null) takes the shares' currency, 0 for its other cost
    sources and its labor cost (attach_labor), as intent_costs would have given it."""
    from schemas.outputs import IntentCosts

    added = placed.filter(pl.col("reason").is_null()).group_by(MONTH_SHARE_KEY).agg(
        _share=pl.col("share").sum(), _currency=pl.col("billing_currency").first()
    )
    rows = intents.join(added.rename({"intent_date": "date"}), on=["session_id", "date"], how="inner")
    unbilled = pl.col("billing_currency").is_null()
    rows = attach_labor(rows.with_columns(_unbilled=unbilled, billing_currency=pl.coalesce("billing_currency", "_currency")), labor)
    zero = pl.lit(0, dtype=MONEY)
    return (
        rows.with_columns(
            token_cost=(pl.col("token_cost").fill_null(zero) + pl.col("_share")).cast(MONEY),
            allocated_token_cost=(pl.col("allocated_token_cost").fill_null(zero) + pl.col("_share")).cast(MONEY),
            **{column: pl.col(column).fill_null(zero) for column in ESTIMATED_COSTS.values()},
            labor_cost=pl.when(pl.col("_unbilled"))
            .then(pl.when(pl.col("outcome") == "failure").then(pl.col("labor_cost_per_failure")).otherwise(zero))
            .otherwise(pl.col("labor_cost")),
        )
        .with_columns(total_cost=(pl.col("token_cost") + pl.col("labor_cost")).cast(MONEY))
        .select(list(IntentCosts.to_schema().columns))
    )
