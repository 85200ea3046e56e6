"""The reconciliation steps: read staging (and landing/invoices/), call unitledger.reconcile,
validate, publish atomically. The Dagster assets in pipelines/reconciliation.py call these.

The monthly step reconciles whole billing periods (FOCUS rows by BillingPeriodStart); the daily
step gives the same figures per UTC day (FOCUS rows by ChargePeriodStart date) with the same
attribution rule, so a period's days add up to its month.
"""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl

from schemas.reconciliation import (
    Reconciliation,
    ReconciliationDaily,
    RequestConflicts,
    TokenMismatches,
    TokenReconciliation,
)
from unitledger import landing, months, reconcile, transforms
from unitledger.config import Settings
from unitledger.layout import Layout
from unitledger.pipeline import StepResult, polars_schema
from unitledger.validation import CheckOutcome, validate
from unitledger.warehouse.publish import Spill, clear_scratch, scan_partitions

MONTHLY_TABLES = {
    "reconciliation": Reconciliation,
    "token_reconciliation": TokenReconciliation,
    "token_mismatches": TokenMismatches,
    "request_conflicts": RequestConflicts,
}
DAILY_TABLES = {"reconciliation_daily": ReconciliationDaily}
MARGIN = reconcile.ATTRIBUTION_MARGIN


def _period_starts_within(column: str, lo: date, hi: date) -> pl.Expr:
    """A UTC timestamp column within [lo, hi) by date."""
    return pl.col(column).dt.date().is_between(pl.lit(lo), pl.lit(hi), closed="left")


def _calls_for(periods: pl.DataFrame, lo: date, hi: date) -> tuple[date, date]:
    """Dates of calls that can attribute rows of `periods` (default: [lo, hi) ± margin)."""
    return reconcile.call_window(periods) if periods.height else (lo - MARGIN, hi + MARGIN)


def _near(focus: pl.LazyFrame, lo: date, hi: date) -> pl.LazyFrame:
    """Current FOCUS rows whose billing period ± margin overlaps [lo, hi): those a call of these
    dates can be billed by."""
    return focus.filter(
        (pl.col("BillingPeriodStart").dt.date() - MARGIN < pl.lit(hi))
        & (pl.col("BillingPeriodEnd").dt.date() + MARGIN > pl.lit(lo))
    )


def _attributed(spill: Spill, rows: pl.LazyFrame, period_rows: pl.LazyFrame, calls: pl.LazyFrame) -> pl.LazyFrame:
    """`reconcile.attribute` written once to scratch: figures, tokens and conflicts all read it."""
    attributed = reconcile.attribute(rows, period_rows, calls)
    schema = attributed.collect_schema()
    spill.sink(attributed)
    return spill.scan(dict(schema))


def build_reconciliation(layout: Layout, settings: Settings, first_month: date, last_month: date) -> StepResult:
    """reconciliation, token_reconciliation, token_mismatches and request_conflicts for the billing
    periods from `first_month` to `last_month`; validated; published only if every check passed."""
    result = StepResult()
    periods = months.months(first_month, last_month)
    keys = [months.period_key(m) for m in periods]
    lo, hi = periods[0], months.next_month(periods[-1])
    clear_scratch(layout.tmp, layout.warehouse)
    spills = {name: Spill(layout.tmp, name, "billing_period", pl.String) for name in [*MONTHLY_TABLES, "attributed"]}
    try:
        with result.timed("read"):
            focus = landing.scan_staged_focus(layout)
            rows = focus.filter(_period_starts_within("BillingPeriodStart", lo, hi))
            held = landing.scan_quarantined_focus(layout).filter(_period_starts_within("billing_period_start", lo, hi))
            window = _calls_for(rows.select("BillingPeriodStart", "BillingPeriodEnd").unique().collect(), lo, hi)
            calls = landing.scan_staged_calls(layout).filter(transforms.in_dates("call_date", *window))
            invoices = landing.read_invoices(layout).filter(pl.col("billing_period").is_in(keys)).lazy()
        with result.timed("reconcile"):
            attributed = _attributed(spills["attributed"], rows, rows, calls)
            split = reconcile.figures(reconcile.ledger(attributed, held), reconcile.KEY)
            logged = reconcile.telemetry_only(
                landing.scan_staged_calls(layout).filter(transforms.in_dates("call_date", lo, hi)),
                _near(focus, lo, hi),
                {"billing_period": reconcile.billing_period(pl.col("timestamp")), "service_provider_name": pl.col("provider")},
            )
            figures = reconcile.with_invoices(pl.concat([split, reconcile.rows_like(logged, split)]), invoices)
            compared = reconcile.token_comparison(reconcile.billed_tokens(attributed), calls)
            outputs = {
                "reconciliation": reconcile.with_status(figures, settings.reconciliation),
                "token_reconciliation": reconcile.token_reconciliation(compared),
                "token_mismatches": reconcile.token_mismatches(compared),
                "request_conflicts": reconcile.conflict_rows(attributed),
            }
            pl.collect_all(
                [
                    spills[name].sink(frame.select(list(MONTHLY_TABLES[name].to_schema().columns)), lazy=True)
                    for name, frame in outputs.items()
                ]
            )
        with result.timed("validate"):
            for name, model in MONTHLY_TABLES.items():
                result.checks[name] = [validate(model, spills[name].scan(polars_schema(model)))]
            published = spills["reconciliation"].scan(polars_schema(Reconciliation))
            result.checks["reconciliation"] += [
                conservation_check(
                    published, rows, held, "billing_period",
                    reconcile.billing_period(pl.col("BillingPeriodStart")), reconcile.billing_period(pl.col("billing_period_start")),
                ),
                delta_check(published),
                placed_check(layout),
            ]
        if result.passed:
            with result.timed("write"):
                summary = _summary(spills["reconciliation"].scan(polars_schema(Reconciliation)))
                for name, model in MONTHLY_TABLES.items():
                    meta: dict = {"billing_periods": f"{keys[0]}..{keys[-1]}"}
                    counts = spills[name].publish(layout.table(name), keys, polars_schema(model))
                    meta["dagster/row_count"] = sum(counts.values())
                    result.tables[name] = meta | (summary if name == "reconciliation" else {})
        return result
    finally:
        for spill in spills.values():
            spill.cleanup()


def build_reconciliation_daily(layout: Layout, settings: Settings, start: date, end_inclusive: date) -> StepResult:
    """reconciliation_daily for the dates [start, end_inclusive]; validated; published only if
    every check passed."""
    result = StepResult()
    end = end_inclusive + timedelta(days=1)
    keys = [d.isoformat() for d in months.days(start, end_inclusive)]
    clear_scratch(layout.tmp, layout.warehouse)
    spill = Spill(layout.tmp, "reconciliation_daily", "date")
    attributed_spill = Spill(layout.tmp, "attributed", "billing_period", pl.String)
    try:
        with result.timed("read"):
            focus = landing.scan_staged_focus(layout)
            rows = focus.filter(transforms.in_dates("charge_date", start, end))
            touched = rows.select("BillingPeriodStart", "BillingPeriodEnd").unique().collect()
            # Conflicts are per billing period: every row of the touched periods, any day.
            period_rows = focus.filter(pl.col("BillingPeriodStart").is_in(touched["BillingPeriodStart"].implode()))
            window = _calls_for(touched, start, end)
            calls = landing.scan_staged_calls(layout).filter(transforms.in_dates("call_date", *window))
            held = (
                landing.scan_quarantined_focus(layout)
                .with_columns(date=reconcile.quarantine_charge_date())
                .filter(transforms.in_dates("date", start, end) & pl.col("billing_period_start").is_not_null())
            )
        with result.timed("reconcile"):
            attributed = _attributed(attributed_spill, rows, period_rows, calls)
            split = reconcile.figures(
                reconcile.ledger(attributed, held, {"date": (pl.col("charge_date"), pl.col("date"))}), ["date", *reconcile.KEY]
            )
            logged = reconcile.telemetry_only(
                landing.scan_staged_calls(layout).filter(transforms.in_dates("call_date", start, end)),
                _near(focus, start, end),
                {
                    "date": pl.col("call_date"),
                    "billing_period": reconcile.billing_period(pl.col("timestamp")),
                    "service_provider_name": pl.col("provider"),
                },
            )
            daily = reconcile.with_status(pl.concat([split, reconcile.rows_like(logged, split)]), settings.reconciliation)
            spill.sink(daily.select(list(ReconciliationDaily.to_schema().columns)))
        with result.timed("validate"):
            frame = spill.scan(polars_schema(ReconciliationDaily))
            result.checks["reconciliation_daily"] = [
                validate(ReconciliationDaily, frame),
                delta_check(frame),
                conservation_check(frame, rows, held, "date", pl.col("charge_date"), pl.col("date")),
            ]
        if result.passed:
            with result.timed("write"):
                counts = spill.publish(layout.table("reconciliation_daily"), keys, polars_schema(ReconciliationDaily))
                result.tables["reconciliation_daily"] = {"dates": f"{keys[0]}..{keys[-1]}", "dagster/row_count": sum(counts.values())}
        return result
    finally:
        spill.cleanup()
        attributed_spill.cleanup()


# --- checks ---------------------------------------------------------------------------------------


def conservation_check(
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
        landing.scan_quarantined_focus(layout)
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


def scan_published(layout: Layout, table: str, keys: list[str]) -> pl.LazyFrame:
    """The published partitions `keys` of a reconciliation table (empty when none exists)."""
    model = MONTHLY_TABLES.get(table) or DAILY_TABLES[table]
    key, key_dtype = ("date", pl.Date) if table in DAILY_TABLES else ("billing_period", pl.String)
    frame = scan_partitions(layout.table(table), key, keys, key_dtype)
    return frame if frame is not None else pl.DataFrame(schema=polars_schema(model)).lazy()


# Advisory checks (status, tokens_match) run on published partitions and never block a run.


def status_check(figures: pl.LazyFrame) -> CheckOutcome:
    """How many rows are warn or fail, with the first failing row's reason."""
    flagged = figures.filter(pl.col("status") != "ok").sort("status", *reconcile.KEY, nulls_last=True).collect()
    fails = flagged.filter(pl.col("status") == "fail")
    meta = {"fail_rows": fails.height, "warn_rows": flagged.height - fails.height}
    if fails.is_empty():
        return CheckOutcome("status", True, f"no row fails ({meta['warn_rows']} warn)", meta)
    first = fails.row(0, named=True)
    return CheckOutcome(
        "status",
        False,
        f"{fails.height} row(s) fail; first {first['billing_period']} {first['billing_account_id']} "
        f"{first['invoice_id']} {first['service_provider_name']}: {first['status_reason']}",
        meta,
    )


def token_check(tokens: pl.LazyFrame) -> CheckOutcome:
    """Requests whose billed tokens differ from telemetry's, per provider and model."""
    counted = (
        tokens.group_by("service_provider_name", "model")
        .agg(pl.col("requests_compared").sum(), pl.col("requests_mismatched").sum())
        .sort("service_provider_name", "model", nulls_last=True)
        .collect()
    )
    by_model = {f"{r['service_provider_name']}/{r['model']}": f"{r['requests_mismatched']} of {r['requests_compared']}" for r in counted.iter_rows(named=True)}
    mismatched = int(counted["requests_mismatched"].sum()) if counted.height else 0
    return CheckOutcome(
        "tokens_match",
        mismatched == 0,
        f"{mismatched} request(s) billed for other token counts than telemetry logged (see token_mismatches)"
        if mismatched
        else "billed tokens equal telemetry's for every compared request",
        {"mismatched_by_provider_model": by_model},
    )


def _summary(figures: pl.LazyFrame) -> dict:
    """Exact per-currency totals and status counts, as Dagster metadata (text: no decimal type)."""
    totals = (
        figures.filter(pl.col("billing_currency").is_not_null())
        .group_by("billing_currency")
        .agg(pl.col("billed_total", "attributed_cost", "unmatched_billing_cost", "conflicting_cost", "unattributable_cost", "quarantined_cost").sum())
        .sort("billing_currency")
        .collect()
    )
    statuses = figures.group_by("status").len().collect()
    return {
        "billed_total": {r["billing_currency"]: str(r["billed_total"]) for r in totals.iter_rows(named=True)},
        "attributed_cost": {r["billing_currency"]: str(r["attributed_cost"]) for r in totals.iter_rows(named=True)},
        "status_counts": dict(zip(statuses["status"], statuses["len"].cast(pl.Int64))),
    }
