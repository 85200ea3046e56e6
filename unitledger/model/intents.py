"""Pure transforms from requests to intents: a session's latest outcome label, and its cost with the
labor cost of a failure (intent_costs). LazyFrames in and out, no I/O, no Dagster."""

from __future__ import annotations

from datetime import date

import polars as pl

from schemas.types import MONEY
from unitledger.model.requests import first_by_key, in_dates


def latest_outcomes(outcomes: pl.LazyFrame) -> pl.LazyFrame:
    """A session's outcome is its latest label by timestamp (ties: the largest event_id, file, line)."""
    key = pl.concat_str(
        pl.col("timestamp").dt.strftime("%Y-%m-%dT%H:%M:%S%.6f"),
        pl.col("event_id"),
        pl.col("source_file"),
        pl.col("source_line").cast(pl.String).str.zfill(12),
        separator="\x00",
    )
    return first_by_key(outcomes, "session_id", key, pl.Expr.max).select("session_id", "success", "escalated")


def intent_costs(
    joined: pl.LazyFrame, outcomes: pl.LazyFrame, labor: pl.LazyFrame, start: date, end: date
) -> pl.LazyFrame:
    """One row per session whose earliest call is dated within [start, end), as schemas.IntentCosts.

    `joined` must hold every call of [start - 1 day, end + 1 day) (see unitledger.model.requests), `outcomes`
    the latest label per session (`latest_outcomes`), `labor` the labor cost table
    (config.labor_table)."""
    from schemas.outputs import IntentCosts

    calls = joined.filter(pl.col("session_id").is_not_null())
    sessions = (
        calls.group_by("session_id")
        .agg(
            date=pl.col("called_at").min().dt.date(),
            # The last call's values (sort_by + last: faster than get(arg_max) per column).
            **{c: pl.col(c).sort_by("called_at").last() for c in ("feature_tag", "model", "model_version", "prompt_version")},
            billing_currency=pl.col("billing_currency").min(),
            requests=pl.len().cast(pl.Int64),
            turns=(pl.col("attempt") == 1).sum().cast(pl.Int64),
            retries=(pl.col("attempt") > 1).sum().cast(pl.Int64),
            unbilled_requests=(pl.col("billing_rows") == 0).sum().cast(pl.Int64),
            token_cost=pl.col("effective_cost").sum(),
        )
        .filter(in_dates("date", start, end))
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
            labor_cost=pl.when(billed).then(
                pl.when(pl.col("outcome") == "failure").then(pl.col("labor_cost_per_failure")).otherwise(pl.lit(0, dtype=MONEY))
            ),
        )
        .with_columns(total_cost=(pl.col("token_cost") + pl.col("labor_cost")).cast(MONEY))
        .select(list(IntentCosts.to_schema().columns))
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
