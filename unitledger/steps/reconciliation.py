"""The reconciliation steps: read staging (and landing/invoices/), call unitledger.model.reconciliation,
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
from unitledger import months
from unitledger.checks.conservation import delta_check, placed_check, reconciliation_conservation_check
from unitledger.checks.validation import validate
from unitledger.config import Settings
from unitledger.layout import Layout
from unitledger.model import reconciliation
from unitledger.model.requests import in_dates
from unitledger.sources.events import scan_staged_calls
from unitledger.sources.focus import scan_quarantined_focus, scan_staged_focus
from unitledger.sources.invoices import read_invoices
from unitledger.steps.result import StepResult
from unitledger.warehouse.publish import Publication, Spill, clear_scratch, polars_schema


MONTHLY_TABLES = {
    "reconciliation": Reconciliation,
    "token_reconciliation": TokenReconciliation,
    "token_mismatches": TokenMismatches,
    "request_conflicts": RequestConflicts,
}

DAILY_TABLES = {"reconciliation_daily": ReconciliationDaily}

MARGIN = reconciliation.ATTRIBUTION_MARGIN


def _period_starts_within(column: str, lo: date, hi: date) -> pl.Expr:
    """A UTC timestamp column within [lo, hi) by date."""
    return pl.col(column).dt.date().is_between(pl.lit(lo), pl.lit(hi), closed="left")


def _calls_for(periods: pl.DataFrame, lo: date, hi: date) -> tuple[date, date]:
    """Dates of calls that can attribute rows of `periods` (default: [lo, hi) ± margin)."""
    return reconciliation.call_window(periods) if periods.height else (lo - MARGIN, hi + MARGIN)


def _near(focus: pl.LazyFrame, lo: date, hi: date) -> pl.LazyFrame:
    """Current FOCUS rows whose billing period ± margin overlaps [lo, hi): those a call of these
    dates can be billed by."""
    return focus.filter(
        (pl.col("BillingPeriodStart").dt.date() - MARGIN < pl.lit(hi))
        & (pl.col("BillingPeriodEnd").dt.date() + MARGIN > pl.lit(lo))
    )


def _attributed(spill: Spill, rows: pl.LazyFrame, period_rows: pl.LazyFrame, calls: pl.LazyFrame) -> pl.LazyFrame:
    """`reconciliation.attribute` written once to scratch: figures, tokens and conflicts all read it."""
    attributed = reconciliation.attribute(rows, period_rows, calls)
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
            focus = scan_staged_focus(layout)
            rows = focus.filter(_period_starts_within("BillingPeriodStart", lo, hi))
            held = scan_quarantined_focus(layout).filter(_period_starts_within("billing_period_start", lo, hi))
            window = _calls_for(rows.select("BillingPeriodStart", "BillingPeriodEnd").unique().collect(), lo, hi)
            calls = scan_staged_calls(layout).filter(in_dates("call_date", *window))
            invoices = read_invoices(layout).filter(pl.col("billing_period").is_in(keys)).lazy()
        with result.timed("reconcile"):
            attributed = _attributed(spills["attributed"], rows, rows, calls)
            split = reconciliation.figures(reconciliation.ledger(attributed, held), reconciliation.KEY)
            logged = reconciliation.telemetry_only(
                scan_staged_calls(layout).filter(in_dates("call_date", lo, hi)),
                _near(focus, lo, hi),
                {"billing_period": reconciliation.billing_period(pl.col("timestamp")), "service_provider_name": pl.col("provider")},
            )
            figures = reconciliation.with_invoices(pl.concat([split, reconciliation.rows_like(logged, split)]), invoices)
            compared = reconciliation.token_comparison(reconciliation.billed_tokens(attributed), calls)
            outputs = {
                "reconciliation": reconciliation.with_status(figures, settings.reconciliation),
                "token_reconciliation": reconciliation.token_reconciliation(compared),
                "token_mismatches": reconciliation.token_mismatches(compared),
                "request_conflicts": reconciliation.conflict_rows(attributed),
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
                reconciliation_conservation_check(
                    published, rows, held, "billing_period",
                    reconciliation.billing_period(pl.col("BillingPeriodStart")), reconciliation.billing_period(pl.col("billing_period_start")),
                ),
                delta_check(published),
                placed_check(layout),
            ]
        if result.passed:
            with result.timed("write"):
                summary = _summary(spills["reconciliation"].scan(polars_schema(Reconciliation)))
                publication = Publication(layout)
                for name in MONTHLY_TABLES:
                    meta: dict = {"billing_periods": f"{keys[0]}..{keys[-1]}"}
                    meta["dagster/row_count"] = sum(publication.add(name, spills[name], keys).values())
                    result.tables[name] = meta | (summary if name == "reconciliation" else {})
                publication.commit()
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
            focus = scan_staged_focus(layout)
            rows = focus.filter(in_dates("charge_date", start, end))
            touched = rows.select("BillingPeriodStart", "BillingPeriodEnd").unique().collect()
            # Conflicts are per billing period: every row of the touched periods, any day.
            period_rows = focus.filter(pl.col("BillingPeriodStart").is_in(touched["BillingPeriodStart"].implode()))
            window = _calls_for(touched, start, end)
            calls = scan_staged_calls(layout).filter(in_dates("call_date", *window))
            held = (
                scan_quarantined_focus(layout)
                .with_columns(date=reconciliation.quarantine_charge_date())
                .filter(in_dates("date", start, end) & pl.col("billing_period_start").is_not_null())
            )
        with result.timed("reconcile"):
            attributed = _attributed(attributed_spill, rows, period_rows, calls)
            split = reconciliation.figures(
                reconciliation.ledger(attributed, held, {"date": (pl.col("charge_date"), pl.col("date"))}), ["date", *reconciliation.KEY]
            )
            logged = reconciliation.telemetry_only(
                scan_staged_calls(layout).filter(in_dates("call_date", start, end)),
                _near(focus, start, end),
                {
                    "date": pl.col("call_date"),
                    "billing_period": reconciliation.billing_period(pl.col("timestamp")),
                    "service_provider_name": pl.col("provider"),
                },
            )
            daily = reconciliation.with_status(pl.concat([split, reconciliation.rows_like(logged, split)]), settings.reconciliation)
            spill.sink(daily.select(list(ReconciliationDaily.to_schema().columns)))
        with result.timed("validate"):
            frame = spill.scan(polars_schema(ReconciliationDaily))
            result.checks["reconciliation_daily"] = [
                validate(ReconciliationDaily, frame),
                delta_check(frame),
                reconciliation_conservation_check(frame, rows, held, "date", pl.col("charge_date"), pl.col("date")),
            ]
        if result.passed:
            with result.timed("write"):
                publication = Publication(layout)
                counts = publication.add("reconciliation_daily", spill, keys)
                publication.commit()
                result.tables["reconciliation_daily"] = {"dates": f"{keys[0]}..{keys[-1]}", "dagster/row_count": sum(counts.values())}
        return result
    finally:
        spill.cleanup()
        attributed_spill.cleanup()


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
