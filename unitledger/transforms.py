"""Pure transforms: staged inputs → request costs → intents → per-feature tables.

Every function takes and returns Polars LazyFrames (no I/O, no Dagster), so each one can be tested
on a tiny hand-built frame. Money stays an exact decimal; ratios are Float64 computed from the exact
sums that are stored beside them.

Days and midnight: a run for the dates [start, end) reads calls and billing rows of
[start - 1 day, end + 1 day). A request belongs to its call's UTC date (billing-only requests: the
date of their earliest ChargePeriodStart), a session to the date of its earliest call. So a session
that crosses midnight keeps the calls it makes up to the end of the day after its first call, and a
billing row may be dated up to one day away from its call; both are counted once.
"""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl

from schemas.types import MONEY

LOOKAROUND = timedelta(days=1)
GRAIN = ["date", "feature_tag", "model_version", "prompt_version", "billing_currency"]
SAMPLE_OK_MIN_LABELED = 100
REQUEST_HASH_SEED = 1  # not in_bucket's seed 0: within a bucket every id's seed-0 hash shares its remainder
Z95 = 1.959963984540054


def in_dates(column: str, start: date, end: date) -> pl.Expr:
    """`column` (a Date) within [start, end)."""
    return pl.col(column).is_between(pl.lit(start), pl.lit(end), closed="left")


def in_bucket(column: str, bucket: int, buckets: int) -> pl.Expr:
    """Rows whose `column` falls in `bucket` of `buckets` by hash: equal values share a bucket."""
    return pl.lit(True) if buckets == 1 else pl.col(column).hash(seed=0) % buckets == bucket


def with_lookaround(start: date, end: date) -> tuple[date, date]:
    return start - LOOKAROUND, end + LOOKAROUND


def dedupe_calls(calls: pl.LazyFrame, repeated: pl.LazyFrame | None = None) -> pl.LazyFrame:
    """One row per request_id. Events are delivered at least once: of the rows sharing a request id
    (the same event_id delivered twice, or a producer that logged one request twice) keep the one
    with the smallest (event_id, file, line), so re-runs pick the same row. `repeated`:
    repeated_keys(calls, "request_id") when already computed."""
    key = pl.concat_str(
        pl.col("event_id"), pl.col("source_file"), pl.col("source_line").cast(pl.String).str.zfill(12), separator="\x00"
    )
    return _first_by_key(calls, "request_id", key, pl.Expr.min, repeated)


def repeated_keys(rows: pl.LazyFrame, group: str) -> pl.LazyFrame:
    """The values of `group` that occur on more than one row."""
    return rows.group_by(group).agg(pl.len()).filter(pl.col("len") > 1).select(group)


def _first_by_key(rows: pl.LazyFrame, group: str, key: pl.Expr, pick, repeated: pl.LazyFrame | None = None) -> pl.LazyFrame:
    """The row of each `group` whose `key` is `pick` (min or max) of the group's keys. Most groups
    have one row: only the rows of `repeated` groups pay for building and comparing the key."""
    repeated = repeated_keys(rows, group) if repeated is None else repeated
    chosen = rows.join(repeated, on=group, how="semi").with_columns(_key=key)
    chosen = chosen.filter(pl.col("_key") == pick(pl.col("_key")).over(group)).drop("_key")
    return pl.concat([rows.join(repeated, on=group, how="anti"), chosen])


def latest_outcomes(outcomes: pl.LazyFrame) -> pl.LazyFrame:
    """A session's outcome is its latest label by timestamp (ties: the largest event_id, file, line)."""
    key = pl.concat_str(
        pl.col("timestamp").dt.strftime("%Y-%m-%dT%H:%M:%S%.6f"),
        pl.col("event_id"),
        pl.col("source_file"),
        pl.col("source_line").cast(pl.String).str.zfill(12),
        separator="\x00",
    )
    return _first_by_key(outcomes, "session_id", key, pl.Expr.max).select("session_id", "success", "escalated")


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


def intent_costs(
    joined: pl.LazyFrame, outcomes: pl.LazyFrame, labor: pl.LazyFrame, start: date, end: date
) -> pl.LazyFrame:
    """One row per session whose earliest call is dated within [start, end), as schemas.IntentCosts.

    `joined` must hold every call of [start - 1 day, end + 1 day) (see the module doc), `outcomes`
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
    with_labor = _attach_labor(labeled, labor)
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


def _attach_labor(intents: pl.LazyFrame, labor: pl.LazyFrame) -> pl.LazyFrame:
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


def _money_only_when_billed(columns: list[str]) -> list[pl.Expr]:
    # Intents with no billed call have no currency: their group's money is unknown, not zero.
    return [pl.when(pl.col("billing_currency").is_not_null()).then(pl.col(c)).alias(c) for c in columns]


def cost_per_intent_sums(intents: pl.LazyFrame, grain: list[str] = GRAIN) -> pl.LazyFrame:
    """Numerators and denominators of cost_per_intent per grain."""
    return (
        intents.group_by(grain)
        .agg(
            intents=pl.len().cast(pl.Int64),
            requests=pl.col("requests").sum().cast(pl.Int64),
            token_cost=pl.col("token_cost").sum(),
            labor_cost=pl.col("labor_cost").sum(),
            total_cost=pl.col("total_cost").sum(),
        )
        .with_columns(_money_only_when_billed(["token_cost", "labor_cost", "total_cost"]))
    )


def cost_per_intent_ratios(sums: pl.LazyFrame) -> pl.LazyFrame:
    """Add the ratios of cost_per_intent to its sums (also used to re-aggregate sums, e.g. monthly)."""
    return sums.with_columns(
        token_cost_per_intent=pl.col("token_cost").cast(pl.Float64) / pl.col("intents"),
        cost_per_intent=pl.col("total_cost").cast(pl.Float64) / pl.col("intents"),
    )


def cost_per_intent(intents: pl.LazyFrame) -> pl.LazyFrame:
    """schemas.CostPerIntent from intent_costs."""
    from schemas.outputs import CostPerIntent

    return cost_per_intent_ratios(cost_per_intent_sums(intents)).select(list(CostPerIntent.to_schema().columns))


def cost_per_success_sums(intents: pl.LazyFrame, grain: list[str] = GRAIN) -> pl.LazyFrame:
    """Numerators, denominators and moments of cost_per_success per grain (labeled intents only)."""
    labeled = pl.col("outcome") != "unlabeled"
    success = pl.col("outcome") == "success"
    return (
        intents.group_by(grain)
        .agg(
            intents=pl.len().cast(pl.Int64),
            labeled_intents=labeled.sum().cast(pl.Int64),
            successes=success.sum().cast(pl.Int64),
            failures=(pl.col("outcome") == "failure").sum().cast(pl.Int64),
            escalations=(labeled & pl.col("escalated").fill_null(False)).sum().cast(pl.Int64),
            token_cost=pl.col("token_cost").filter(labeled).sum(),
            labor_cost=pl.col("labor_cost").filter(labeled).sum(),
            total_cost=pl.col("total_cost").filter(labeled).sum(),
            success_total_cost=pl.col("total_cost").filter(success).sum(),
            total_cost_sq=(pl.col("total_cost").cast(pl.Float64) ** 2).filter(labeled).sum(),
        )
        .with_columns(
            _money_only_when_billed(["token_cost", "labor_cost", "total_cost", "success_total_cost", "total_cost_sq"])
        )
    )


def cost_per_success_ratios(sums: pl.LazyFrame) -> pl.LazyFrame:
    """Add rates, cost per success and its delta-method 95% interval to `cost_per_success_sums`.

    With X_i an intent's total cost, Y_i = 1 if it succeeded, n labeled intents and R = ΣX / ΣY,
    the linearised variance is Var(R) = n · Σ(X_i − R·Y_i)² / ((n − 1) · (ΣY)²), where
    Σ(X − RY)² = ΣX² − 2R·ΣXY + R²·ΣY (Y² = Y). Interval: R ± 1.96 · √Var(R)."""
    n = pl.col("labeled_intents").cast(pl.Float64)
    sy = pl.col("successes").cast(pl.Float64)
    sx = pl.col("total_cost").cast(pl.Float64)
    sxy = pl.col("success_total_cost").cast(pl.Float64)
    ratio = pl.when(pl.col("successes") > 0).then(sx / sy)
    residual_ss = (pl.col("total_cost_sq") - 2 * ratio * sxy + ratio**2 * sy).clip(lower_bound=0.0)
    half_width = pl.when(pl.col("labeled_intents") > 1).then(Z95 * (n * residual_ss / ((n - 1) * sy**2)).sqrt())
    return sums.with_columns(
        success_rate=pl.when(pl.col("labeled_intents") > 0).then(sy / n),
        label_coverage=n / pl.col("intents").cast(pl.Float64),
        token_cost_per_success=pl.when(pl.col("successes") > 0).then(pl.col("token_cost").cast(pl.Float64) / sy),
        cost_per_success=ratio,
        ci95_low=ratio - half_width,
        ci95_high=ratio + half_width,
        sample_ok=pl.col("labeled_intents") >= SAMPLE_OK_MIN_LABELED,
    )


def cost_per_success(intents: pl.LazyFrame) -> pl.LazyFrame:
    """schemas.CostPerSuccess from intent_costs."""
    from schemas.outputs import CostPerSuccess

    return cost_per_success_ratios(cost_per_success_sums(intents)).select(list(CostPerSuccess.to_schema().columns))


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


_SUCCESS_SUMS = [
    "intents",
    "labeled_intents",
    "successes",
    "failures",
    "escalations",
    "token_cost",
    "labor_cost",
    "total_cost",
    "success_total_cost",
    "total_cost_sq",
]
_INTENT_SUMS = ["intents", "requests", "token_cost", "labor_cost", "total_cost"]


def _resum(rows: pl.LazyFrame, grain: list[str], columns: list[str]) -> pl.LazyFrame:
    # A sum of money stays null where every input is null (intents with no billed call).
    return rows.group_by(grain).agg(
        [pl.when(pl.col(c).is_not_null().any()).then(pl.col(c).sum()).alias(c) for c in columns]
    )


def reaggregate_cost_per_success(rows: pl.LazyFrame, grain: list[str]) -> pl.LazyFrame:
    """cost_per_success rows summed to a coarser grain (e.g. a month): the sums and moments are
    added and the ratios and interval recomputed from them, never averaged."""
    return cost_per_success_ratios(_resum(rows, grain, _SUCCESS_SUMS)).select(
        *grain, *[c for c in _success_columns() if c not in GRAIN]
    )


def reaggregate_cost_per_intent(rows: pl.LazyFrame, grain: list[str]) -> pl.LazyFrame:
    """cost_per_intent rows summed to a coarser grain, ratios recomputed from the sums."""
    return cost_per_intent_ratios(_resum(rows, grain, _INTENT_SUMS)).select(
        *grain, *[c for c in _intent_columns() if c not in GRAIN]
    )


def _success_columns() -> list[str]:
    from schemas.outputs import CostPerSuccess

    return list(CostPerSuccess.to_schema().columns)


def _intent_columns() -> list[str]:
    from schemas.outputs import CostPerIntent

    return list(CostPerIntent.to_schema().columns)
