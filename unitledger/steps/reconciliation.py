"""The reconciliation steps: read staging (and landing/invoices/), call unitledger.model.reconciliation,
validate, publish atomically. The Dagster assets in pipelines/reconciliation.py call these.

The monthly step reconciles whole billing periods (FOCUS rows by BillingPeriodStart), each in
parts that add up exactly (plan_month, reconcile_part, publish_reconciliation: "the month in parts"
below); the daily step gives the same figures per UTC day (FOCUS rows by ChargePeriodStart date)
with the same attribution rule, so a period's days add up to its month.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

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
from unitledger.model.allocation import PLACEMENT_AMOUNTS, allocate_billing, classify_for_allocation, optimizations, placement
from schemas.types import MONEY
from unitledger.model.requests import COPY_DAYS, associate, dedupe_calls, in_dates
from unitledger.sources.events import scan_staged_calls
from unitledger.sources.focus import scan_quarantined_focus, scan_staged_focus
from unitledger.sources.invoices import read_invoices
from unitledger.steps import parts
from unitledger.steps.daily import classify_loose_rows
from unitledger.steps.monthly import allocate_long_periods
from unitledger.steps.result import StepResult
from unitledger.warehouse.manifest import scan_table
from unitledger.warehouse.publish import WRITE_OPTIONS, Publication, Spill, clear_scratch, polars_schema, remove_folder, scratch_folder


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
    (model.requests), the calls and rows of other days looked up within the bounds. `calls`: the
    staged calls and `focus` the current FOCUS rows to look them up in (every one, or a hash
    bucket's within the dates _bucket_reach gives, `rows` being theirs); `dates`: the charge dates
    [lo, hi) of the rows with a request id (computed when not given)."""

    def __init__(self, bounds: Bounds, calls: pl.LazyFrame, focus: pl.LazyFrame, rows: pl.LazyFrame, dates: tuple[date, date] | None = None):
        self.bounds = bounds
        self.calls = calls
        self.focus = focus.filter(pl.col("x_RequestId").is_not_null())
        self.rows = rows
        # The dates of the rows with a request id, [lo, hi): their calls lie within B days.
        self.lo, self.hi = dates or request_dates(rows)
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


def request_dates(rows: pl.LazyFrame) -> tuple[date, date]:
    """[lo, hi): the charge dates of `rows` with a request id (an empty range when there is none)."""
    lo, hi = rows.filter(pl.col("x_RequestId").is_not_null()).select(
        lo=pl.col("charge_date").min(), hi=pl.col("charge_date").max()
    ).collect().row(0)
    return (lo, hi + timedelta(days=1)) if lo is not None else (date(1970, 1, 1), date(1970, 1, 1))


def _placed(layout: Layout, focus: pl.LazyFrame, lo: date, hi: date, settings: Settings) -> pl.LazyFrame:
    """Where the invoice allocation puts each current row without a request id charged within
    [lo, hi) (model.allocation.placement): the daily step's own call (allocate_billing) on the
    same inputs, the days' rows and calls with the daily step's lookaround, and the monthly step's
    for token rows of a charge period longer than a day (_placed_long_periods), so the
    reconciliation shows the cents the daily and monthly tables allocated. Collected: one row per
    row without request id."""
    long_periods = _placed_long_periods(layout, settings, lo, hi)
    by_day = _placed_by_day(layout, focus, lo, hi, settings)
    return (by_day if long_periods is None else pl.concat([by_day, long_periods])).lazy()


def _placed_by_day(layout: Layout, focus: pl.LazyFrame, lo: date, hi: date, settings: Settings) -> pl.DataFrame:
    """_placed without the rows of a charge period longer than a day (their usage_class only)."""
    days = requests.with_lookaround(lo, hi)
    window = focus.filter(in_dates("charge_date", *days))
    # The days' rows without a request id, classified (few). Without an AI token row of a day or
    # hour to split (the usual day of a request-billed provider) there are no daily pools: none of
    # the allocation's reading of the days' requests and calls.
    classified = classify_for_allocation(window.filter(pl.col("x_RequestId").is_null()), settings.allocation)
    if not classified.filter(pl.col("usage_class") == "token").select(pl.len()).collect().item():
        placed = [placement(classified, _NO_POOLS)]
    else:
        calls = requests.dedupe_calls(scan_staged_calls(layout).filter(in_dates("call_date", *days)))
        run = allocate_billing(requests.without_request_conflicts(window, requests.request_conflicts(window).collect()), calls, settings.allocation)
        placed = [placement(run.classified, run.tables.pools)]
    return pl.concat(placed).collect(optimizations=optimizations())


def _placed_long_periods(layout: Layout, settings: Settings, lo: date, hi: date) -> pl.DataFrame | None:
    """Token rows without a request id charged within [lo, hi) whose charge period is longer than a
    day, placed as the monthly step allocates them (allocate_long_periods: each over the calls of its
    charge period, whatever range it is asked for). Collected; None when there is none."""
    monthly = allocate_long_periods(layout, settings, lo, hi)
    return None if monthly is None else placement(monthly.classified, monthly.tables.pools).collect(optimizations=optimizations())


def _allocated_requests(layout: Layout, lo: date, hi: date) -> pl.LazyFrame:
    """The requests called in [lo, hi) that the published request_costs bill only by allocated
    shares of aggregated AI rows (cost_source invoice_allocated): billed, though no FOCUS row names
    them. (Which calls share a pool is the allocation's to say, and the daily step ran it.)"""
    days = [d.isoformat() for d in months.days(lo, hi - timedelta(days=1))]
    return scan_table(layout, "request_costs", days).filter(pl.col("cost_source") == "invoice_allocated").select("request_id")


# model.allocation.placement's pools when there are none: the columns it reads.
_NO_POOLS = pl.DataFrame(
    schema={"source_file": pl.String, "source_line": pl.Int64, **{f"{p}_{c}": MONEY for p in PLACEMENT_AMOUNTS for c in ("billed_cost", "effective_cost")}}
).lazy()


# --- the month in parts -----------------------------------------------------------------------------
#
# A billing period is reconciled in parts whose sums add up exactly (model.reconciliation.figure_sums,
# add_up): its FOCUS rows with a request id one hash bucket of request ids at a time (every row and
# call of a request in one bucket: its request counts, conflicts, late billing and tokens are found
# there), and its rows without one (allocated by day) with its quarantined rows. Memory follows a
# bucket or a day, never the month. prepare_parts splits the rows and calls the buckets read into
# one set of files per bucket, in one pass: each bucket then reads its own files, so the month's
# time grows with its rows, not with rows × buckets. The parts are steps of their own
# (reconcile_part), run one after the other here or fanned out by Dagster
# (pipelines/reconciliation.py); publish_reconciliation adds them up, checks and publishes: the one
# writer.

# FOCUS rows with a request id per bucket: the month is split into as many buckets as it needs. A
# bucket of 12M rows peaked at 7.4 GB (docs/performance.md): 10M keeps a part within 8 GB.
BUCKET_ROWS = 10_000_000
UNREQUESTED = "unrequested"  # the part of the rows without a request id and the quarantined rows
# Partial tables a part writes, one file per part: summed (figures, telemetry, token_reconciliation)
# or stacked (token_mismatches, request_conflicts) by publish_reconciliation. The unrequested part
# has figures only.
PARTIALS = ("figures", "telemetry", "token_reconciliation", "token_mismatches", "request_conflicts")
_TELEMETRY_GRAIN = ["billing_period", "service_provider_name"]
_TOKEN_GRAIN = ["billing_period", "service_provider_name", "model"]


def bucket_count(request_rows: int) -> int:
    """Buckets for a month with `request_rows` FOCUS rows with a request id."""
    return max(1, -(-request_rows // BUCKET_ROWS))


def part_names(buckets: int) -> list[str]:
    """The names of the parts of a month in `buckets` buckets (letters, digits and _: Dagster keys)."""
    return [f"bucket_{b:04}" for b in range(buckets)] + [UNREQUESTED]


@dataclass(frozen=True)
class MonthPlan:
    """How one billing period is reconciled in parts: `buckets` hash buckets of request ids, the
    charge dates [lo, hi) of its rows with a request id (`request_dates`: the calls looked up) and
    the charge dates of its rows without one (`days`: allocated day by day)."""

    period: date
    buckets: int
    request_dates: tuple[date, date]
    days: tuple[date, ...]

    @property
    def key(self) -> str:
        return months.period_key(self.period)

    def parts(self) -> list[str]:
        return part_names(self.buckets)

    def files(self, folder: Path, table: str) -> list[Path]:
        """The files of partial table `table` its parts write into `folder`."""
        parts = self.parts() if table == "figures" else self.parts()[:-1]
        return [folder / table / f"{part}.parquet" for part in parts]


def parts_folder(layout: Layout, key: str) -> Path:
    """Where the parts of billing period `key` (YYYY-MM) are kept between the steps that write them
    and the one that publishes them, when those are steps of their own (Dagster): parts.parts_folder."""
    return parts.parts_folder(layout, "reconciliation", key)


# The rows and calls of each bucket (prepare_parts), kept beside the parts: <folder>/split/<source>/bucket=<b>/.
SPLIT = "split"


def _bucket_reach(plan: MonthPlan, bounds: Bounds) -> dict[str, tuple[date, date]]:
    """The dates [lo, hi) of what a bucket part reads: "focus", the charge dates of the current
    FOCUS rows with a request id (the month's rows, the rows near its telemetry that bill it, and
    the earlier rows of its loose rows' requests: _Attribution, classify_loose_rows); "calls", the
    call dates of the staged calls (the month's telemetry and every call its rows are looked up
    in). Every read filters its own dates within these."""
    start, end = plan.period, months.next_month(plan.period)
    B, H = timedelta(days=bounds.billing_delay_days), timedelta(days=bounds.detection_horizon_days)
    focus, calls = [(start - B, end + B)], [(start, end)]
    lo, hi = plan.request_dates
    if lo < hi:
        around = max(B + COPY_DAYS, H)
        focus.append((lo - H, hi))
        calls.append((lo - around, hi + around))
    return {name: (min(a for a, _ in spans), max(b for _, b in spans)) for name, spans in (("focus", focus), ("calls", calls))}


def prepare_parts(layout: Layout, settings: Settings, plan: MonthPlan, folder: Path) -> None:
    """Start `folder` afresh for `plan`: the parts of an earlier plan removed; the FOCUS rows with a
    request id and the calls the buckets read (_bucket_reach) split by hash bucket of request id,
    one streaming pass each, into `folder/split/`; then the plan saved (read_plan: the parts run
    only on a complete split)."""
    remove_folder(folder)
    reach = _bucket_reach(plan, settings.bounds)
    sources = {
        "focus": (scan_staged_focus(layout).filter(pl.col("x_RequestId").is_not_null() & in_dates("charge_date", *reach["focus"])), "x_RequestId"),
        "calls": (scan_staged_calls(layout).filter(in_dates("call_date", *reach["calls"])), "request_id"),
    }
    for name, (rows, column) in sources.items():
        target = folder / SPLIT / name
        schema = rows.collect_schema()
        rows.sink_parquet(pl.PartitionBy(target, key={"bucket": requests.bucket_of(column, plan.buckets)}, include_key=False), mkdir=True, **WRITE_OPTIONS)
        for bucket in range(plan.buckets):  # a bucket without rows: an empty file, its columns
            if not (target / f"bucket={bucket}").exists():
                (target / f"bucket={bucket}").mkdir(parents=True)
                pl.DataFrame(schema=schema).write_parquet(target / f"bucket={bucket}" / "empty.parquet")
    _write_plan(plan, folder)


def _scan_bucket(folder: Path, source: str, bucket: int) -> pl.LazyFrame:
    """Bucket `bucket`'s rows of `source` ("focus" or "calls") split by prepare_parts."""
    files = sorted((folder / SPLIT / source / f"bucket={bucket}").glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no {source} rows split for bucket {bucket} in {folder}: materialize reconciliation_parts for this billing period again")
    return pl.scan_parquet(files, glob=False)


def _write_plan(plan: MonthPlan, folder: Path) -> None:
    parts.write_plan(
        {"period": plan.period.isoformat(), "buckets": plan.buckets,
         "request_dates": [d.isoformat() for d in plan.request_dates], "days": [d.isoformat() for d in plan.days]},
        folder,
    )  # fmt: skip


def read_plan(folder: Path) -> MonthPlan:
    saved = parts.read_plan(folder, "materialize reconciliation_parts for this billing period first")
    dates = tuple(date.fromisoformat(d) for d in saved["request_dates"])
    return MonthPlan(date.fromisoformat(saved["period"]), saved["buckets"], dates, tuple(date.fromisoformat(d) for d in saved["days"]))


def _period_rows(layout: Layout, period: date) -> pl.LazyFrame:
    return scan_staged_focus(layout).filter(_period_starts_within("BillingPeriodStart", period, months.next_month(period)))


def _period_held(layout: Layout, period: date) -> pl.LazyFrame:
    return scan_quarantined_focus(layout).filter(_period_starts_within("billing_period_start", period, months.next_month(period)))


def plan_month(layout: Layout, period: date, buckets: int | None = None) -> MonthPlan:
    """The parts of billing period `period` (first day of the month); `buckets`: as many as its
    rows need (bucket_count) unless given (e.g. more, to spread them over more machines)."""
    rows = _period_rows(layout, period)
    has_id = pl.col("x_RequestId").is_not_null()
    count = rows.select(has_id.sum()).collect().item()
    days = rows.filter(~has_id).select(pl.col("charge_date").unique().sort()).collect().to_series().to_list()
    return MonthPlan(period, buckets or bucket_count(count), request_dates(rows), tuple(days))


def reconcile_part(layout: Layout, settings: Settings, plan: MonthPlan, part: str, out: Path) -> None:
    """Write part `part` of `plan` (one of plan.parts()) into `out`, the folder prepare_parts
    prepared: its files of PARTIALS,
    `out/<table>/<part>.parquet` (MonthPlan.files), each replaced whole (a retried part leaves no
    trace of the first try)."""
    attributed = Spill(layout.tmp, f"attributed_{part}", "billing_period", pl.String)
    try:
        if part == UNREQUESTED:
            frames = {"figures": _unrequested_figures(layout, settings, plan)}
        else:
            frames = _bucket_part(layout, settings, plan, out, int(part.removeprefix("bucket_")), attributed)
        written = {name: out / name / f"{part}.parquet" for name in frames}
        pending = {name: target.with_name(f".{part}.{os.getpid()}.tmp") for name, target in written.items()}
        for tmp in pending.values():
            tmp.parent.mkdir(parents=True, exist_ok=True)
        # One after the other, not in one collect_all: the queries' hash tables (calls, per-request
        # sums) would be held at once; each reads the attributed rows from their spill.
        for name, frame in frames.items():
            frame.sink_parquet(pending[name], **WRITE_OPTIONS)
        for name in frames:
            os.replace(pending[name], written[name])
    finally:
        attributed.cleanup()
        for name in PARTIALS:
            (out / name / f".{part}.{os.getpid()}.tmp").unlink(missing_ok=True)


def _bucket_part(layout: Layout, settings: Settings, plan: MonthPlan, folder: Path, bucket: int, spill: Spill) -> dict[str, pl.LazyFrame]:
    """The rows with a request id of hash bucket `bucket` (its files in `folder`, prepare_parts):
    their figures, the telemetry of the bucket's calls, their tokens and conflicts (the attributed
    rows spilled to `spill`)."""
    lo, hi = plan.period, months.next_month(plan.period)
    focus = _scan_bucket(folder, "focus", bucket)
    rows = focus.filter(_period_starts_within("BillingPeriodStart", lo, hi))
    found = _Attribution(settings.bounds, _scan_bucket(folder, "calls", bucket), focus, rows, plan.request_dates)
    attributed = found.attributed(spill, rows)  # conflicts: a request's rows are all in its bucket
    compared = reconciliation.token_comparison(reconciliation.billed_tokens(attributed), found.winners)
    logged = reconciliation.telemetry_only(
        found.calls.filter(in_dates("call_date", lo, hi)),
        found.billing_near(lo, hi),
        {"billing_period": reconciliation.billing_period(pl.col("timestamp")), "service_provider_name": pl.col("provider")},
        settings.bounds,
        _allocated_requests(layout, lo, hi).filter(requests.in_bucket("request_id", bucket, plan.buckets)),
    )
    return {
        "figures": reconciliation.figure_sums(reconciliation.ledger(attributed, None), reconciliation.KEY),
        "telemetry": logged,
        "token_reconciliation": reconciliation.token_reconciliation(compared),
        "token_mismatches": reconciliation.token_mismatches(compared),
        "request_conflicts": reconciliation.conflict_rows(attributed).select(list(RequestConflicts.to_schema().columns)),
    }


def _unrequested_figures(layout: Layout, settings: Settings, plan: MonthPlan) -> pl.LazyFrame:
    """Figures of the rows without a request id, one charge date at a time (allocated with that
    day's calls, as the daily step does; those of a charge period longer than a day as the monthly
    step does, once for the month), and of the quarantined rows."""
    focus = scan_staged_focus(layout)
    rows = _period_rows(layout, plan.period).filter(pl.col("x_RequestId").is_null())
    sums = [reconciliation.figure_sums(reconciliation.ledger(None, _period_held(layout, plan.period)), reconciliation.KEY).collect()]
    long_periods = _placed_long_periods(layout, settings, plan.days[0], plan.days[-1] + timedelta(days=1)) if plan.days else None
    for day in plan.days:
        by_day = _placed_by_day(layout, focus, day, day + timedelta(days=1), settings)
        placed = (by_day if long_periods is None else pl.concat([by_day, long_periods])).lazy()
        day_rows = reconciliation.unrequested(rows.filter(pl.col("charge_date") == day))
        sums.append(reconciliation.figure_sums(reconciliation.ledger(day_rows, None, placed=placed), reconciliation.KEY).collect())
    return pl.concat(sums).lazy()


def publish_reconciliation(
    layout: Layout, settings: Settings, plans: list[MonthPlan], partials: list[Path], result: StepResult | None = None
) -> StepResult:
    """reconciliation, token_reconciliation, token_mismatches and request_conflicts of the billing
    periods of `plans`, from the parts reconcile_part wrote (`partials[i]`: plans[i]'s folder):
    the sums added up, telemetry rows, invoices and status; validated; published only if every
    check passed."""
    result = result or StepResult()
    keys = [plan.key for plan in plans]
    periods = [plan.period for plan in plans]
    lo, hi = periods[0], months.next_month(periods[-1])
    clear_scratch(layout.tmp, layout.warehouse)
    spills = {name: Spill(layout.tmp, name, "billing_period", pl.String) for name in MONTHLY_TABLES}

    def stacked(name: str) -> pl.LazyFrame:
        files = [file for plan, folder in zip(plans, partials) for file in plan.files(folder, name)]
        missing = [f for f in files if not f.exists()]
        if missing:
            raise FileNotFoundError(f"reconciliation part not written: {missing[0]} (materialize reconciliation_parts first)")
        return pl.scan_parquet(files, glob=False)

    try:
        with result.timed("read"):
            rows = scan_staged_focus(layout).filter(_period_starts_within("BillingPeriodStart", lo, hi))
            held = scan_quarantined_focus(layout).filter(_period_starts_within("billing_period_start", lo, hi))
            invoices = read_invoices(layout).filter(pl.col("billing_period").is_in(keys)).lazy()
        with result.timed("reconcile"):
            split = reconciliation.finish_figures(reconciliation.add_up(stacked("figures"), reconciliation.KEY))
            logged = reconciliation.add_up(stacked("telemetry"), _TELEMETRY_GRAIN)
            figures = reconciliation.with_invoices(pl.concat([split, reconciliation.rows_like(logged, split)]), invoices)
            outputs = {
                "reconciliation": reconciliation.with_status(figures, settings.reconciliation, settings.allocation.token_coverage_warn),
                "token_reconciliation": reconciliation.add_up(stacked("token_reconciliation"), _TOKEN_GRAIN),
                "token_mismatches": stacked("token_mismatches"),
                "request_conflicts": stacked("request_conflicts"),
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
            for folder in partials:  # the bucket files are read again only by the parts of a new plan
                remove_folder(folder / SPLIT)
        return result
    finally:
        for spill in spills.values():
            spill.cleanup()


def build_reconciliation(layout: Layout, settings: Settings, first_month: date, last_month: date, buckets: int | None = None) -> StepResult:
    """reconciliation, token_reconciliation, token_mismatches and request_conflicts for the billing
    periods from `first_month` to `last_month`, in one process: each month planned (plan_month)
    and split by bucket (prepare_parts), its parts written one after the other to scratch
    (reconcile_part), then all published
    (publish_reconciliation) only if every check passed."""
    result = StepResult()
    clear_scratch(layout.tmp, layout.warehouse)
    with scratch_folder(layout.tmp, "reconciliation_parts") as scratch:
        with result.timed("plan"):
            plans = [plan_month(layout, period, buckets) for period in months.months(first_month, last_month)]
        folders = [scratch / plan.key for plan in plans]
        with result.timed("split"):
            for plan, folder in zip(plans, folders):
                prepare_parts(layout, settings, plan, folder)
        with result.timed("parts"):
            for plan, folder in zip(plans, folders):
                for part in plan.parts():
                    reconcile_part(layout, settings, plan, part, folder)
        return publish_reconciliation(layout, settings, plans, folders, result)


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
            found = _Attribution(settings.bounds, scan_staged_calls(layout), focus, rows)
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
                _allocated_requests(layout, start, end),
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
