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
from unitledger.config import Bounds, Settings
from unitledger.layout import Layout
from unitledger.model import reconciliation
from unitledger.model import requests
from unitledger.model.allocation import allocate_billing, optimizations, placement
from unitledger.model.requests import COPY_DAYS, associate, dedupe_calls, in_dates
from unitledger.sources.events import scan_staged_calls
from unitledger.sources.focus import scan_quarantined_focus, scan_staged_focus
from unitledger.sources.invoices import read_invoices
from unitledger.steps.daily import classify_loose_rows
from unitledger.steps.monthly import allocate_long_periods
from unitledger.steps.result import StepResult
from unitledger.warehouse.publish import Publication, Spill, clear_scratch, polars_schema


MONTHLY_TABLES = {
    "reconciliation": Reconciliation,
    "token_reconciliation": TokenReconciliation,
    "token_mismatches": TokenMismatches,
    "request_conflicts": RequestConflicts,
}

DAILY_TABLES = {"reconciliation_daily": ReconciliationDaily}

def _period_starts_within(column: str, lo: date, hi: date) -> pl.Expr:
    """A UTC timestamp column within [lo, hi) by date."""
    return pl.col(column).dt.date().is_between(pl.lit(lo), pl.lit(hi), closed="left")


class _Attribution:
    """Which part each of `rows` (current FOCUS rows) falls in: the rules of the daily tables
    (model.requests), the calls and rows of other days looked up within the bounds."""

    def __init__(self, layout: Layout, bounds: Bounds, rows: pl.LazyFrame):
        self.bounds = bounds
        self.calls = scan_staged_calls(layout)
        self.focus = scan_staged_focus(layout).filter(pl.col("x_RequestId").is_not_null())
        self.rows = rows
        lo, hi = rows.filter(pl.col("x_RequestId").is_not_null()).select(
            lo=pl.col("charge_date").min(), hi=pl.col("charge_date").max()
        ).collect().row(0)
        # The dates of the rows with a request id, [lo, hi): their calls lie within B days.
        self.lo, self.hi = (lo, hi + timedelta(days=1)) if lo is not None else (date(1970, 1, 1), date(1970, 1, 1))
        reach = timedelta(days=bounds.billing_delay_days) + COPY_DAYS
        self.winners = dedupe_calls(self.calls.filter(in_dates("call_date", self.lo - reach, self.hi + reach)))

    def attributed(self, spill: Spill, period_rows: pl.LazyFrame) -> pl.LazyFrame:
        """`reconciliation.attribute` written once to scratch: figures, tokens and conflicts all read it."""
        associated = associate(self.rows, self.winners.select("request_id", "call_date"), self.bounds, how="left")
        loose = associated.filter(pl.col("x_RequestId").is_not_null() & pl.col("call_date").is_null()).drop("call_date")
        settled = classify_loose_rows(self.calls, self.focus, loose.collect(), self.lo, self.hi, self.bounds)
        attributed = reconciliation.attribute(associated, period_rows, settled.lazy())
        schema = attributed.collect_schema()
        spill.sink(attributed)
        return spill.scan(dict(schema))

    def billing_near(self, lo: date, hi: date) -> pl.LazyFrame:
        """Current FOCUS rows with a request id a call of [lo, hi) can be billed by."""
        margin = timedelta(days=self.bounds.billing_delay_days)
        return self.focus.filter(in_dates("charge_date", lo - margin, hi + margin))


def _placed(layout: Layout, focus: pl.LazyFrame, lo: date, hi: date, settings: Settings) -> pl.LazyFrame:
    """Where the invoice allocation puts each current row without a request id charged within
    [lo, hi) (model.allocation.placement): the daily step's own call (allocate_billing) on the
    same inputs, the days' rows and calls with the daily step's lookaround, so the reconciliation
    shows the cents the daily tables allocated. Collected: one row per row without request id."""
    days = requests.with_lookaround(lo, hi)
    rows = requests.without_request_conflicts(focus.filter(in_dates("charge_date", *days)))
    calls = requests.dedupe_calls(scan_staged_calls(layout).filter(in_dates("call_date", *days)))
    run = allocate_billing(rows, calls, settings.allocation)
    placed = [placement(run.classified, run.tables.pools)]
    # Token rows of a charge period longer than a day: as the monthly step allocates them.
    monthly = allocate_long_periods(layout, settings, lo, hi)
    if monthly is not None:
        placed.append(placement(monthly.classified, monthly.tables.pools))
    return pl.concat(placed).collect(optimizations=optimizations()).lazy()


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
            invoices = read_invoices(layout).filter(pl.col("billing_period").is_in(keys)).lazy()
        with result.timed("reconcile"):
            found = _Attribution(layout, settings.bounds, rows)
            attributed = found.attributed(spills["attributed"], rows)
            charged = rows.select(pl.col("charge_date").min().alias("lo"), pl.col("charge_date").max().alias("hi")).collect()
            placed = _placed(layout, focus, charged["lo"][0] or lo, (charged["hi"][0] or lo) + timedelta(days=1), settings)
            split = reconciliation.figures(reconciliation.ledger(attributed, held, placed=placed), reconciliation.KEY)
            logged = reconciliation.telemetry_only(
                scan_staged_calls(layout).filter(in_dates("call_date", lo, hi)),
                found.billing_near(lo, hi),
                {"billing_period": reconciliation.billing_period(pl.col("timestamp")), "service_provider_name": pl.col("provider")},
                settings.bounds,
            )
            figures = reconciliation.with_invoices(pl.concat([split, reconciliation.rows_like(logged, split)]), invoices)
            compared = reconciliation.token_comparison(reconciliation.billed_tokens(attributed), found.winners)
            outputs = {
                "reconciliation": reconciliation.with_status(figures, settings.reconciliation, settings.allocation.token_coverage_warn),
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
            touched = rows.select("BillingPeriodStart").unique().collect()
            # Conflicts are per billing period: every row of the touched periods, any day.
            period_rows = focus.filter(pl.col("BillingPeriodStart").is_in(touched["BillingPeriodStart"].implode()))
            held = (
                scan_quarantined_focus(layout)
                .with_columns(date=reconciliation.quarantine_charge_date())
                .filter(in_dates("date", start, end) & pl.col("billing_period_start").is_not_null())
            )
        with result.timed("reconcile"):
            found = _Attribution(layout, settings.bounds, rows)
            attributed = found.attributed(attributed_spill, period_rows)
            placed = _placed(layout, focus, start, end, settings)
            split = reconciliation.figures(
                reconciliation.ledger(attributed, held, {"date": (pl.col("charge_date"), pl.col("date"))}, placed),
                ["date", *reconciliation.KEY],
            )
            logged = reconciliation.telemetry_only(
                scan_staged_calls(layout).filter(in_dates("call_date", start, end)),
                found.billing_near(start, end),
                {
                    "date": pl.col("call_date"),
                    "billing_period": reconciliation.billing_period(pl.col("timestamp")),
                    "service_provider_name": pl.col("provider"),
                },
                settings.bounds,
            )
            daily = reconciliation.with_status(
                pl.concat([split, reconciliation.rows_like(logged, split)]), settings.reconciliation, settings.allocation.token_coverage_warn
            )
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
        .agg(pl.col("billed_total", "attributed_cost", "allocated_cost", "unlogged_usage_cost").sum())
        .sort("billing_currency")
        .collect()
    )
    statuses = figures.group_by("status").len().collect()
    return {
        "billed_total": {r["billing_currency"]: str(r["billed_total"]) for r in totals.iter_rows(named=True)},
        **{c: {r["billing_currency"]: str(r[c]) for r in totals.iter_rows(named=True)} for c in ("attributed_cost", "allocated_cost", "unlogged_usage_cost")},
        "status_counts": dict(zip(statuses["status"], statuses["len"].cast(pl.Int64))),
    }
