"""Pure transforms from intents to the per-feature tables: cost_per_intent and cost_per_success (sums,
ratios and the delta-method interval), and their re-aggregation to a coarser grain (e.g. a month).
Ratios are Float64 computed from the exact sums stored beside them. LazyFrames in and out, no I/O."""

from __future__ import annotations

import polars as pl

from unitledger.model.requests import ESTIMATED_COSTS, sum_where


GRAIN = ["date", "feature_tag", "model_version", "prompt_version", "billing_currency"]

SAMPLE_OK_MIN_LABELED = 100

Z95 = 1.959963984540054


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
            allocated_token_cost=pl.col("allocated_token_cost").sum(),
            **{c: pl.col(c).sum() for c in ESTIMATED_COSTS.values()},
            labor_cost=pl.col("labor_cost").sum(),
            total_cost=pl.col("total_cost").sum(),
        )
        .with_columns(_money_only_when_billed(["token_cost", "allocated_token_cost", *ESTIMATED_COSTS.values(), "labor_cost", "total_cost"]))
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
            token_cost=sum_where(labeled, pl.col("token_cost")),
            allocated_token_cost=sum_where(labeled, pl.col("allocated_token_cost")),
            **{c: sum_where(labeled, pl.col(c)) for c in ESTIMATED_COSTS.values()},
            labor_cost=sum_where(labeled, pl.col("labor_cost")),
            total_cost=sum_where(labeled, pl.col("total_cost")),
            success_total_cost=sum_where(success, pl.col("total_cost")),
            total_cost_sq=sum_where(labeled, pl.col("total_cost").cast(pl.Float64) ** 2),
        )
        .with_columns(
            _money_only_when_billed(["token_cost", "allocated_token_cost", *ESTIMATED_COSTS.values(), "labor_cost", "total_cost", "success_total_cost", "total_cost_sq"])
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


_SUCCESS_SUMS = [
    "intents",
    "labeled_intents",
    "successes",
    "failures",
    "escalations",
    "token_cost",
    "allocated_token_cost",
    *ESTIMATED_COSTS.values(),
    "labor_cost",
    "total_cost",
    "success_total_cost",
    "total_cost_sq",
]

_INTENT_SUMS = ["intents", "requests", "token_cost", "allocated_token_cost", *ESTIMATED_COSTS.values(), "labor_cost", "total_cost"]


def _resum(rows: pl.LazyFrame, grain: list[str], columns: list[str]) -> pl.LazyFrame:
    # A sum of money stays null where every input is null (intents with no billed call).
    return rows.group_by(grain).agg(
        [pl.when(pl.col(c).is_not_null().any()).then(pl.col(c).sum()).alias(c) for c in columns]
    )


# Intents whose cost changed after their daily rows were built (the monthly step's shares of
# month-long token rows): (before, after), IntentCosts rows with the coarser grain's columns.
Changed = tuple[pl.LazyFrame, pl.LazyFrame]


def _with_changes(rows: pl.LazyFrame, grain: list[str], columns: list[str], sums, changed: Changed | None) -> pl.LazyFrame:
    """`rows` plus the sums of the changed intents as they are now, minus the sums of the same
    intents as the rows counted them: re-summed, each intent then counts once, as it is now (an
    intent that took a currency moves to that currency's row)."""
    if changed is None:
        return rows
    before, after = (sums(frame, grain).select(*grain, *columns) for frame in changed)
    undo = before.with_columns([-pl.col(c) for c in columns])
    return pl.concat([rows.select(*grain, *columns), undo, after], how="vertical_relaxed")


def reaggregate_cost_per_success(rows: pl.LazyFrame, grain: list[str], changed: Changed | None = None) -> pl.LazyFrame:
    """cost_per_success rows summed to a coarser grain (e.g. a month): the sums and moments are
    added and the ratios and interval recomputed from them, never averaged; `changed` intents
    counted as they are now (_with_changes)."""
    rows = _with_changes(rows, grain, _SUCCESS_SUMS, cost_per_success_sums, changed)
    return cost_per_success_ratios(_resum(rows, grain, _SUCCESS_SUMS).filter(pl.col("intents") > 0)).select(
        *grain, *[c for c in _success_columns() if c not in GRAIN]
    )


def reaggregate_cost_per_intent(rows: pl.LazyFrame, grain: list[str], changed: Changed | None = None) -> pl.LazyFrame:
    """cost_per_intent rows summed to a coarser grain, ratios recomputed from the sums; `changed`
    intents counted as they are now (_with_changes)."""
    rows = _with_changes(rows, grain, _INTENT_SUMS, cost_per_intent_sums, changed)
    return cost_per_intent_ratios(_resum(rows, grain, _INTENT_SUMS).filter(pl.col("intents") > 0)).select(
        *grain, *[c for c in _intent_columns() if c not in GRAIN]
    )


def _success_columns() -> list[str]:
    from schemas.outputs import CostPerSuccess

    return list(CostPerSuccess.to_schema().columns)


def _intent_columns() -> list[str]:
    from schemas.outputs import CostPerIntent

    return list(CostPerIntent.to_schema().columns)
