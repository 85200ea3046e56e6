"""Blocking checks that every billed cent is counted exactly once: the daily tables' conservation
against the FOCUS rows and one currency per intent; the reconciliation's conservation against its
input rows, its parts adding up to its totals (delta) and every quarantined FOCUS row placed in a
billing period."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

import polars as pl

from unitledger.checks.validation import CheckOutcome
from unitledger.layout import Layout
from unitledger.model import requests
from unitledger.sources.focus import scan_quarantined_focus


# --- daily tables ---------------------------------------------------------------------------------


def collected_by_bucket(query: Callable[[int], pl.LazyFrame], buckets: int) -> pl.LazyFrame:
    """The (small) results of query(bucket) for each hash bucket, collected one after the other
    and stacked: memory follows one bucket's rows."""
    return pl.concat([query(b).collect() for b in range(buckets)]).lazy()


def request_costs_conservation_check(
    request_costs: pl.LazyFrame, billing: pl.LazyFrame, calls: pl.LazyFrame, start: date, end: date, buckets: int = 1
) -> CheckOutcome:
    """Per day and currency, request_costs' cost equals the FOCUS rows with a request id dated by
    their request, summed apart from the join (model.requests.billed_cost_by_assigned_day), exactly.
    The FOCUS side is summed one hash bucket of requests at a time (memory), then the buckets added;
    on hashed request ids first (faster), and a mismatch found so is re-checked on the ids
    themselves before it is reported, so a hash collision can never fail a good day."""
    money = ["billed_cost", "effective_cost", "list_cost"]
    ours = (
        request_costs.filter(pl.col("billing_rows") > 0)
        .group_by("date", "billing_currency")
        .agg([pl.col(c).sum() for c in money])
        .collect()
        .lazy()
    )

    def mismatches(hashed: bool) -> pl.DataFrame:
        by_bucket = collected_by_bucket(
            lambda b: requests.billed_cost_by_assigned_day(
                billing.filter(requests.in_bucket("x_RequestId", b, buckets)),
                calls.filter(requests.in_bucket("request_id", b, buckets)),
                start,
                end,
                hashed,
            ),
            buckets,
        )
        theirs = by_bucket.group_by("date", "billing_currency").agg([pl.col(c).sum() for c in money])
        return (
            ours.join(theirs, on=["date", "billing_currency"], how="full", coalesce=True, suffix="_focus")
            .filter(pl.any_horizontal([pl.col(c).fill_null(0) != pl.col(f"{c}_focus").fill_null(0) for c in money]))
            .sort("date", "billing_currency")
            .collect()
        )

    compared = mismatches(hashed=True)
    if not compared.is_empty():
        compared = mismatches(hashed=False)
    if compared.is_empty():
        return CheckOutcome("conservation", True, "request_costs holds every billed cent of its days exactly once")
    first = compared.row(0, named=True)
    return CheckOutcome(
        "conservation",
        False,
        f"{compared.height} (day, currency) totals differ; first {first['date']} {first['billing_currency']}: "
        f"request_costs {first['effective_cost']} vs FOCUS {first['effective_cost_focus']} (EffectiveCost)",
        {"mismatches": compared.height},
    )


def single_currency_check(joined: pl.LazyFrame, buckets: int = 1) -> CheckOutcome:
    """An intent's cost is one currency's: a session billed in two currencies cannot be summed.
    Sessions are grouped one hash bucket at a time (memory)."""
    billed = joined.filter(pl.col("session_id").is_not_null() & pl.col("billing_currency").is_not_null())
    currency = pl.col("billing_currency").cast(pl.Categorical)
    mixed = (
        collected_by_bucket(
            lambda b: billed.filter(requests.in_bucket("session_id", b, buckets))
            .group_by("session_id")
            # min != max: n_unique's answer for a non-null column, on categorical codes (cheaper)
            .agg(currency.min().alias("lo"), currency.max().alias("hi"))
            .filter(pl.col("lo") != pl.col("hi"))
            .select("session_id"),
            buckets,
        )
        .sort("session_id")
        .head(5)
        .collect()
    )
    if mixed.is_empty():
        return CheckOutcome("single_currency", True, "every intent is billed in one currency")
    return CheckOutcome(
        "single_currency",
        False,
        f"sessions billed in more than one currency (first: {', '.join(mixed['session_id'])})",
    )


# --- reconciliation -------------------------------------------------------------------------------


def reconciliation_conservation_check(
    figures: pl.LazyFrame, rows: pl.LazyFrame, held: pl.LazyFrame, key: str, row_key: pl.Expr, held_key: pl.Expr
) -> CheckOutcome:
    """Per `key` (billing period or date) and currency, the output's totals and row counts equal
    those of the input rows (current staged FOCUS rows and current quarantined rows, `key` given
    by `row_key` / `held_key`), summed straight from the inputs: a row lost or doubled shows here."""
    by = [key]
    inputs = pl.concat(
        [
            rows.select(
                row_key.alias(key), billing_currency=pl.col("BillingCurrency"),
                billed=pl.col("BilledCost"), effective=pl.col("EffectiveCost"), staged=pl.lit(1), held=pl.lit(0),
            ),
            held.select(
                held_key.alias(key), billing_currency=pl.col("billing_currency"),
                billed=pl.col("billed_cost"), effective=pl.col("effective_cost"), staged=pl.lit(0), held=pl.lit(1),
            ),
        ]
    ).group_by(*by, "billing_currency").agg(
        billed_input=pl.col("billed").sum(),
        effective_input=pl.col("effective").sum(),
        rows_input=pl.col("staged").sum().cast(pl.Int64),
        held_input=pl.col("held").sum().cast(pl.Int64),
    )
    outputs = figures.group_by(*by, "billing_currency").agg(
        billed_input=pl.col("billed_total").sum(),
        effective_input=pl.col("effective_total").sum(),
        rows_input=pl.col("billing_rows").sum(),
        held_input=pl.col("quarantined_rows").sum(),
    )
    measures = ["billed_input", "effective_input", "rows_input", "held_input"]
    differ = (
        outputs.join(inputs, on=[*by, "billing_currency"], how="full", coalesce=True, nulls_equal=True, suffix="_expected")
        .filter(pl.any_horizontal([pl.col(m).fill_null(0) != pl.col(f"{m}_expected").fill_null(0) for m in measures]))
        .sort(*by, "billing_currency", nulls_last=True)
        .collect()
    )
    if differ.is_empty():
        return CheckOutcome("conservation", True, "every current FOCUS row (staged or quarantined) is counted once, to the last digit")
    first = differ.row(0, named=True)
    return CheckOutcome(
        "conservation",
        False,
        f"{differ.height} ({key}, currency) totals differ from the input rows; first {first[key]} {first['billing_currency']}: "
        f"billed_total {first['billed_input']} vs FOCUS {first['billed_input_expected']}, "
        f"rows {first['rows_input']}+{first['held_input']} vs {first['rows_input_expected']}+{first['held_input_expected']}",
        {"mismatches": differ.height},
    )


def delta_check(figures: pl.LazyFrame) -> CheckOutcome:
    """Every row's parts add up to its totals exactly: delta and effective_delta are 0."""
    uneven = figures.filter((pl.col("delta") != 0) | (pl.col("effective_delta") != 0)).collect()
    if uneven.is_empty():
        return CheckOutcome("delta_zero", True, "every row's parts add up to its billed and effective totals exactly")
    first = uneven.row(0, named=True)
    return CheckOutcome(
        "delta_zero",
        False,
        f"{uneven.height} row(s) whose parts do not add up; first {first['billing_period']} {first['billing_account_id']} "
        f"{first['invoice_id']} {first['service_provider_name']} {first['billing_currency']}: "
        f"delta {first['delta']}, effective_delta {first['effective_delta']}",
        {"uneven_rows": uneven.height},
    )


def placed_check(layout: Layout) -> CheckOutcome:
    """Every current quarantined FOCUS row has a billing period (its own or its delivery's only
    one): a row without one would be in no month's reconciliation."""
    unplaced = (
        scan_quarantined_focus(layout)
        .filter(pl.col("billing_period_start").is_null())
        .select("source_file", "source_line")
        .sort("source_file", "source_line")
        .collect()
    )
    if unplaced.is_empty():
        return CheckOutcome("quarantine_placed", True, "every quarantined FOCUS row is reconciled in its billing period")
    first = unplaced.row(0, named=True)
    return CheckOutcome(
        "quarantine_placed",
        False,
        f"{unplaced.height} quarantined FOCUS row(s) have no readable BillingPeriodStart and their delivery no single "
        f"billing period, so no month can reconcile them; first {first['source_file']} line {first['source_line']}",
        {"unplaced_rows": unplaced.height},
    )
