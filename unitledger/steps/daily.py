"""The daily step: request_costs, intent_costs, cost_per_intent, cost_per_success and
cost_breakdown for a range of days, from staging through the pure transforms (unitledger.model) to the checks and the publish.

A run for the days [start, end) reads what its days need and nothing it would have to drop (bounds
from [pipeline], config.Bounds: S session_days, B billing_delay_days, H detection_horizon_days):
- the calls of its days, their copies a day either side (dedupe), and the later calls, up to S days
  after end, of the intents its days start (found from the (session_id, call_date) pairs of 2 × S
  days before, model.intents);
- the FOCUS rows within B days of those calls, by request id;
- the FOCUS rows of its days (and the B days after) that belong to no call within B days: their
  request's calls within H days and the request's earlier rows within H days decide whether each is
  billing-only (a request of its own, dated by its first row) or late billing (quarantined, dated
  by its charge date).
Every rule is relative to a row or a call, so a range run and day-by-day runs give the same tables.

With them the invoice allocation's tables (allocation_pools, unrecognized_usage, unmatched_models:
AI bill rows without a request id split over the day's calls by token share, see allocate_days)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import polars as pl

from schemas import CostPerIntent, CostPerSuccess, IntentCosts, Quarantine, RequestCosts
from schemas.allocation import AllocatedByRequest, AllocatedCostsDaily, AllocationPoolsDaily, UnmatchedModels, UnrecognizedUsageDaily
from schemas.events import StagedLlmCall
from unitledger.checks.conservation import (
    allocated_costs_check,
    allocation_conservation_check,
    request_costs_conservation_check,
    single_currency_outcome,
)
from unitledger.checks.validation import CheckOutcome, validate, validate_each
from unitledger.config import Bounds, Settings
from schemas.decisions import CostBreakdown
from schemas.reconciliation import GatewayGap
from unitledger.layout import Layout
from unitledger.model import intents, requests
from unitledger.model.allocation import allocate_billing, allocation_buckets, allocated_by_day, allocated_by_request, allocated_costs, billed_models
from unitledger.model.allocation import by_pool_hours, classify_for_allocation, lost_token_sums, merge_unmatched, unpooled_unmatched
from unitledger.model.allocation import optimizations as allocation_optimizations
from unitledger.model.decisions import breakdown_of_intents, intent_components
from unitledger.model.features import cost_per_intent, cost_per_success
from unitledger.model.quarantine import calls_held, focus_held
from unitledger.model.reconciliation import gateway_gap
from unitledger.model.requests import BILLING_ONLY, COPY_DAYS, LATE, TOOL_COLUMN, days, days_apart, in_dates
from unitledger.sources.ai_usage import unrecognized_usage
from unitledger.sources.events import scan_staged_calls, scan_staged_outcomes
from unitledger.sources.focus import scan_staged_focus
from unitledger.steps import parts
from unitledger.steps.result import StepResult, money_total
from schemas.types import MONEY, TOKEN_TYPES, TYPED_COSTS
from unitledger.model.requests import COST_COLUMNS
from unitledger.warehouse.publish import Publication, Spill, clear_scratch, polars_schema, remove_folder, scratch_folder, write_parquet_atomic


DAILY_TABLES = {
    # Invoice allocation (issue 16): see allocate_days. First: request_costs depends on them.
    "allocation_pools": AllocationPoolsDaily,
    "unrecognized_usage": UnrecognizedUsageDaily,
    "unmatched_models": UnmatchedModels,
    "allocated_costs": AllocatedCostsDaily,
    "request_costs": RequestCosts,
    "intent_costs": IntentCosts,
    "cost_per_intent": CostPerIntent,
    "cost_per_success": CostPerSuccess,
    "cost_breakdown": CostBreakdown,
    "gateway_gap": GatewayGap,
}
ALLOCATION_TABLES = ("allocation_pools", "unrecognized_usage", "unmatched_models", "allocated_costs")

# Calls per bucket: past it, the daily step works in hash buckets of requests and sessions, one
# after the other (join, intents, the checks), or side by side as steps of their own (daily_fanout).
# Peak memory follows a bucket: a 5M-call day in two buckets peaks at 2.8 GiB in its join, in one
# at 4.9 GiB (measured, docs/performance.md); each bucket more costs another pass over the day's
# staged rows and a merge of the parts on publish (+8 s, about 7 %, at 5M). Small enough that a 5M
# day's join stays below its staging's peak.
BUCKET_CALLS = 4_000_000

# model.requests.billing_by_request's rows, as spilled.
_BILLED = {
    "request_id": pl.String, "billed_cost": pl.Decimal(38, 18), "effective_cost": pl.Decimal(38, 18),
    "list_cost": pl.Decimal(38, 18), "billing_rows": pl.Int64, "charge_date": pl.Date, "last_charge_date": pl.Date,
    "conflict": pl.Boolean, "billing_account_id": pl.Categorical, "billing_currency": pl.Categorical,
    "billed_feature_tag": pl.Categorical, "billed_model_version": pl.Categorical, "billed_prompt_version": pl.Categorical,
    "billed_provider": pl.Categorical,
    "cost_source": pl.String, **{f"allocated_{c}": pl.Decimal(38, 18) for c in ("billed_cost", "effective_cost", "list_cost")},
    **{c: pl.Decimal(38, 18) for c in TYPED_COSTS}, **{f"covers_{t}": pl.Boolean for t in TOKEN_TYPES},
}  # fmt: skip

# allocation.lost_token_sums' rows, as spilled.
_LOST_SUMS = {"date": pl.Date, "provider": pl.String, "call_model": pl.String, "token_type": pl.String, "calls": pl.Int64, "tokens": pl.Int64}

_INTENT_DAYS = {"session_id": pl.String, "call_date": pl.Date, "intent_date": pl.Date}
_INTENT_KEY = {"session_id": pl.String, "intent_date": pl.Date}
# The columns of the intent calls the intents' pass reads (the beyond-bound count, intent_costs
# with the breakdown's decisions.intent_components and the currency range): selected before the
# join with intent_days, so the other request_costs columns are not carried through it.
_INTENT_CALL_COLUMNS = [
    "request_id", "date", "session_id", "intent_date", "called_at", "feature_tag", "model", "model_version", "prompt_version",
    "billing_currency", "billing_rows", "cost_source", "effective_cost", "allocated_effective_cost", *TYPED_COSTS,
    "input_tokens", "output_tokens", "cache_read_input_tokens", "cache_write_input_tokens", "attempt", "status", TOOL_COLUMN,
]  # fmt: skip


def one_of(column: str, values: pl.Series) -> pl.Expr:
    """`column` among a few `values`: as a filter (not a semi-join) the scan below it reads the
    column first and the others of the matching rows only (about ten times less work)."""
    return pl.col(column).is_in(values.implode())


class _Inputs:
    """The staged inputs of a run for the days [start, end), read lazily within its bounds."""

    def __init__(self, layout: Layout, bounds: Bounds, start: date, end: date):
        # Every current staged FOCUS row (scan_staged_focus finds the current deliveries: once), and those with x_RequestId.
        self.all_focus = scan_staged_focus(layout)
        self.calls, self.focus = scan_staged_calls(layout), self.all_focus.filter(pl.col("x_RequestId").is_not_null())
        self.bounds, self.start, self.end = bounds, start, end
        self.S, self.B, self.H = days(bounds.session_days), days(bounds.billing_delay_days), days(bounds.detection_horizon_days)
        self.run_calls = self.calls_between(start, end)

    def calls_between(self, lo: date, hi: date) -> pl.LazyFrame:
        return self.calls.filter(in_dates("call_date", lo, hi))

    def focus_between(self, lo: date, hi: date) -> pl.LazyFrame:
        return self.focus.filter(in_dates("charge_date", lo, hi))

    def session_pairs(self) -> pl.LazyFrame:
        """(session_id, call_date) of the run's sessions from 2 × S days before its first day to S
        days after its last: enough to place every call of its days and of its intents."""
        inside = self.run_calls.select("session_id", "call_date")
        before = self.calls_between(self.start - 2 * self.S, self.start)
        after = self.calls_between(self.end, self.end + self.S)
        outside = pl.concat([before, after]).join(inside.select("session_id"), on="session_id", how="semi")
        return intents.session_dates(pl.concat([inside, outside.select("session_id", "call_date")]))

    def calls_read(self, later_sessions: pl.Series, bucket: int, buckets: int) -> pl.LazyFrame:
        """The calls of request bucket `bucket` the run deduplicates: those of its days, the later
        calls of its intents (sessions `later_sessions`, up to S days after end), and the copies of
        both (same request id) a day either side. Disjoint parts: no staged row is read twice."""
        start, end, S = self.start, self.end, self.S

        def part(frame: pl.LazyFrame) -> pl.LazyFrame:
            return frame.filter(requests.in_bucket("request_id", bucket, buckets))

        ours = part(self.run_calls)
        ids = ours.select("request_id")
        later = pl.col("session_id").is_in(later_sessions.implode())
        after = part(self.calls_between(end, end + max(S, COPY_DAYS)))
        later_calls = after.filter(later & in_dates("call_date", end, end + S))
        copies_after = after.filter(~later & in_dates("call_date", end, end + COPY_DAYS)).join(ids, on="request_id", how="semi")
        copies_before = part(self.calls_between(start - COPY_DAYS, start)).join(ids, on="request_id", how="semi")
        copies_later = part(self.calls_between(end + S, end + S + COPY_DAYS)).join(
            later_calls.select("request_id"), on="request_id", how="semi"
        )
        return pl.concat([ours, later_calls, copies_after, copies_before, copies_later])

    def settle(self, rows: pl.DataFrame, lo: date, hi: date) -> pl.DataFrame:
        return classify_loose_rows(self.calls, self.focus, rows, lo, hi, self.bounds)


def classify_loose_rows(
    calls: pl.LazyFrame, focus: pl.LazyFrame, rows: pl.DataFrame, lo: date, hi: date, bounds: Bounds
) -> pl.DataFrame:
    """FOCUS `rows` (current staged rows with x_RequestId) dated within [lo, hi) whose request has
    no call among those a step looked at: the rows with a call within B days elsewhere dropped, the
    rest classified as billing-only or late (model.requests.classify_unassociated). `calls`: every
    staged call; `focus`: every current FOCUS row with x_RequestId. Few rows: looked up by request
    id (one_of: the scans read the other columns of the matching rows only)."""
    B, H = days(bounds.billing_delay_days), days(bounds.detection_horizon_days)
    if rows.is_empty():
        return rows.with_columns(
            call_date=pl.lit(None, pl.Date), first_charge_date=pl.lit(None, pl.Date),
            billing_class=pl.lit(None, pl.String), request_date=pl.lit(None, pl.Date),
        )

    def calls_between(a: date, b: date) -> pl.LazyFrame:
        return calls.filter(in_dates("call_date", a, b) & one_of("request_id", ids))

    ids = rows["x_RequestId"].unique()
    near = requests.dedupe_calls(calls_between(lo - B - COPY_DAYS, hi + B + COPY_DAYS))
    elsewhere = requests.associate(rows.lazy(), near, bounds).select("source_file", "source_line")
    candidates = rows.lazy().join(elsewhere, on=["source_file", "source_line"], how="anti")
    far = calls_between(lo - H, hi + H).select("request_id", "call_date")
    earlier = focus.filter(in_dates("charge_date", lo - H, hi) & one_of("x_RequestId", ids)).select("x_RequestId", "charge_date")
    return requests.classify_unassociated(candidates, far, earlier, bounds).collect()


def build_daily_tables(layout: Layout, settings: Settings, start: date, end_inclusive: date, buckets: int | None = None) -> StepResult:
    """Compute request_costs, intent_costs, cost_per_intent, cost_per_success and cost_breakdown for
    the dates [start, end_inclusive]; validate them; publish them only if every check passed. The
    phases of "the days in phases" below one after the other, in one process, in a scratch folder;
    `buckets`: as many as the days' calls need (BUCKET_CALLS) unless given."""
    result = StepResult()
    with scratch_folder(layout.tmp, "daily_parts") as folder:
        plan = plan_daily(layout, settings, start, end_inclusive, folder, buckets, result)
        for bucket in range(plan.buckets):
            join_daily_bucket(layout, settings, folder, bucket, result)
        settle_daily(layout, settings, folder, result)
        for bucket in range(plan.buckets):
            intents_daily_bucket(layout, settings, folder, bucket, result)
        return finish_daily(layout, settings, folder, result)


# --- the days in phases -------------------------------------------------------------------------
#
# A run of the daily step is five phases whose state lives on disk in a run folder, so each can run
# in a process of its own (fanned out by Dagster, pipelines/daily.py) or all in one
# (build_daily_tables): plan_daily (bucket count, intent days, the allocation: pools span every
# request of a day, so once per run), join_daily_bucket (per hash bucket of requests), settle_daily
# (the requests no bucket could place alone), intents_daily_bucket (per hash bucket of sessions) and
# finish_daily (features, breakdown, checks, publish: the one writer). Each reads what the earlier
# ones wrote: spills of the tables (one part per bucket) and a few small frames (ids, pool hours).


@dataclass(frozen=True)
class DailyPlan:
    """How the days [start, end) are worked: `buckets` hash buckets of requests and sessions."""

    start: date
    end: date
    buckets: int

    @property
    def key(self) -> str:
        return daily_run_key(self.start, self.end - timedelta(days=1))


def daily_run_key(start: date, end_inclusive: date) -> str:
    return f"{start.isoformat()}_{end_inclusive.isoformat()}"


def daily_parts_folder(layout: Layout, start: date, end_inclusive: date) -> Path:
    """The run folder of the days [start, end_inclusive] when their phases are steps of their own."""
    return parts.parts_folder(layout, "daily", daily_run_key(start, end_inclusive))


def read_daily_plan(folder: Path) -> DailyPlan:
    saved = parts.read_plan(folder, "run the daily plan for these days first")
    return DailyPlan(date.fromisoformat(saved["start"]), date.fromisoformat(saved["end"]), saved["buckets"])


class _DailyRun:
    """A daily run's files in its folder (each phase opens them afresh): the spills of the tables
    and of the work between phases, and the small frames the phases hand on (`save`, `saved`)."""

    def __init__(self, layout: Layout, settings: Settings, folder: Path, plan: DailyPlan | None = None):
        self.layout, self.settings, self.folder = layout, settings, folder
        self.plan = plan or read_daily_plan(folder)
        self.start, self.end, self.buckets = self.plan.start, self.plan.end, self.plan.buckets
        self.bounds = settings.bounds
        self.read = _Inputs(layout, self.bounds, self.start, self.end)

        def spill(name: str, key: str) -> Spill:
            return Spill(folder, name, key, shared=True)

        self.spills = {name: spill(name, "date") for name in DAILY_TABLES}
        self.held = spill("quarantine", "date")  # rows the run holds back, by the day they are reported on
        self.work = {name: spill(name, "call_date") for name in ("calls", "intent_days")}
        # unmatched_models in two parts: the pooled calls' (allocate_days), the others' (the join)
        self.work |= {name: spill(name, "date") for name in ("pooled_lost", "unpooled_lost")}
        self.work["allocation"] = spill("allocation", "date")  # the allocation's intermediate files (allocate_days)
        self.work["intents"] = spill("intents", "date")  # intent_costs rows with breakdown components, currency range
        self.billed = spill("billed", "charge_date")
        self.allocated = spill("allocated", "charge_date")  # allocated shares per request
        self.shares_by_day = spill("allocated_by_day", "date")  # conservation's allocated side
        self.calls_schema = polars_schema(StagedLlmCall)
        self.prices = settings.telemetry.list_price_table() if settings.telemetry.list_prices else None

    def produced(self, name: str, part: int | None = None) -> pl.LazyFrame:
        # request_costs is spilled for the later days of the run's intents too: only [start, end) is its.
        return self.spills[name].scan(polars_schema(DAILY_TABLES[name]), part).filter(in_dates("date", self.start, self.end))

    def intent_days(self) -> pl.LazyFrame:
        return self.work["intent_days"].scan(_INTENT_DAYS)

    def ours(self) -> pl.Expr:
        return in_dates("intent_date", self.start, self.end)

    def save(self, name: str, frame: pl.DataFrame, bucket: int | None = None) -> None:
        """A small frame handed to a later phase: `name`, or `name`'s part of bucket `bucket`."""
        write_parquet_atomic(frame, self._frame_path(name, bucket))

    def saved(self, name: str, bucket: int | None = None) -> pl.DataFrame:
        """A frame `save`d (with `bucket`: that bucket's)."""
        return self.stacked(name, [bucket])

    def stacked(self, name: str, buckets: list[int | None] | None = None) -> pl.DataFrame:
        """The frames `save`d per bucket under `name`, every bucket's (or `buckets`'), stacked."""
        paths = [self._frame_path(name, b) for b in (range(self.buckets) if buckets is None else buckets)]
        missing = [p for p in paths if not p.exists()]
        if missing:
            raise FileNotFoundError(f"{missing[0]} not written: run the daily phases before this one for {self.plan.key}")
        return pl.concat([pl.read_parquet(p, glob=False) for p in paths])

    def _frame_path(self, name: str, bucket: int | None) -> Path:
        return self.folder / "frames" / (f"{name}.parquet" if bucket is None else f"{name}/bucket_{bucket:04}.parquet")


def plan_daily(
    layout: Layout, settings: Settings, start: date, end_inclusive: date, folder: Path, buckets: int | None = None, result: StepResult | None = None
) -> DailyPlan:
    """Start `folder` afresh for the days [start, end_inclusive]: the bucket count (`buckets`, or
    as many as BUCKET_CALLS needs), the intent days of the run's sessions, the later days of its
    intents and the allocation (allocate_days); then the plan saved (the other phases run only on a
    complete plan)."""
    result = result or StepResult()
    bounds = settings.bounds
    end = end_inclusive + timedelta(days=1)
    clear_scratch(layout.tmp, layout.warehouse)  # (dead processes' leftovers only: a live run's folder stays)
    remove_folder(folder)
    folder.mkdir(parents=True)
    with result.timed("join"):
        read = _Inputs(layout, bounds, start, end)
        # Past BUCKET_CALLS calls, the day is worked in buckets of requests (by a hash of their
        # id), one after the other or as steps of their own: memory follows the requests of a
        # bucket, not of the day.
        buckets = buckets or max(1, -(-read.run_calls.select(pl.len()).collect().item() // BUCKET_CALLS))
        run = _DailyRun(layout, settings, folder, DailyPlan(start, end, buckets))
        # Which intent each call of the run's sessions belongs to: a few columns of a few days.
        run.work["intent_days"].sink(intents.intent_days(read.session_pairs(), bounds.session_days))
        # The (session, day) pairs of the calls after the run that belong to its intents: few.
        later = pl.col("call_date") >= end
        run.save("later_days", run.intent_days().filter(run.ours() & later).select("session_id", "call_date").unique().collect())
    with result.timed("allocate"):
        hours, bill_models = allocate_days(read, settings, run.spills, run.allocated, run.shares_by_day, run.work["pooled_lost"], run.work["allocation"])
        run.work["allocation"].cleanup()  # (read back within allocate_days only)
        run.save("pool_hours", hours)
        run.save("billed_models", bill_models)
    parts.write_plan({"start": start.isoformat(), "end": end.isoformat(), "buckets": buckets}, folder)
    return run.plan


def join_daily_bucket(layout: Layout, settings: Settings, folder: Path, bucket: int, result: StepResult | None = None) -> None:
    """The join of request bucket `bucket`: its calls deduplicated, its FOCUS rows summed per
    request, its part of request_costs and of the unpooled calls' lost tokens; the ids of its
    requests the settle phase takes up (spread, uncalled) and of its conflicting ones saved."""
    result = result or StepResult()
    run = _DailyRun(layout, settings, folder)
    read, bounds, start, end, buckets, work, spills, billed = run.read, run.bounds, run.start, run.end, run.buckets, run.work, run.spills, run.billed
    later_days = run.saved("later_days")
    later_sessions = later_days["session_id"].unique()
    shares = run.allocated.scan(polars_schema(AllocatedByRequest))
    with result.timed("join"):
        # The calls, deduplicated (the few repeated ids found first: deduplicating within
        # one query would hold every call until all were counted), each request's winning
        # copy kept when it is dated in the run or is a later call of one of its intents.
        read_calls = read.calls_read(later_sessions, bucket, buckets)
        repeated = requests.repeated_keys(read_calls, "request_id").collect().lazy()
        winners = requests.dedupe_calls(read_calls, repeated)
        # One filter, not a concat of two: each part of a concat deduplicated again.
        later = pl.col("_later").fill_null(False)
        marked = winners.join(later_days.lazy().with_columns(_later=pl.lit(True)), on=["session_id", "call_date"], how="left")
        work["calls"].sink(marked.filter(in_dates("call_date", start, end) | later).drop("_later"), part=bucket)
        part_calls = work["calls"].scan(run.calls_schema, part=bucket)
        # The FOCUS rows a request of the bucket can be billed by, summed per request (apart
        # from the join: one query holding both the sums and the join's hash table needs
        # about a third more memory than the two in turn): those within B days of the run's
        # days, and those up to B days after its later calls (by request id).
        near = read.focus_between(start - read.B, end + read.B).filter(requests.in_bucket("x_RequestId", bucket, buckets))
        after = read.focus_between(end + read.B, end + read.S + read.B).filter(requests.in_bucket("x_RequestId", bucket, buckets))
        after = after.join(part_calls.filter(pl.col("call_date") >= end).select(x_RequestId="request_id"), on="x_RequestId", how="semi")
        # with the requests' allocated shares (allocate_days) added
        billed.sink(
            requests.with_allocated(
                requests.billing_by_request(pl.concat([near, after]), settings.allocation),
                shares.filter(requests.in_bucket("request_id", bucket, buckets)),
            ),
            part=bucket,
        )
        joined = requests.join_requests(part_calls, billed.scan(_BILLED, part=bucket))
        # Most requests' rows all lie within B days of their call: joined as they are.
        # Requests with a row further away are summed again row by row below; rows
        # without a call of the run are placed (settle) or belong to other runs.
        within = (days_apart("charge_date", "call_date") <= bounds.billing_delay_days) & (
            days_apart("last_charge_date", "call_date") <= bounds.billing_delay_days
        )
        called = pl.col("call_date").is_not_null()
        flags = joined.with_columns(
            _kept=called & (within.fill_null(False) | (pl.col("billing_rows") == 0)),
            _spread=called & (pl.col("billing_rows") > 0) & ~within.fill_null(False),
            # not called in the run, with rows that may be dated in it
            _uncalled=~called & (pl.col("charge_date") < end) & (pl.col("last_charge_date") >= start),
        ).cache()
        # In one pass over the join (cached above: the queries read different columns of
        # it, and Polars would otherwise join once per projection): the bucket's part of
        # request_costs (the kept requests, unbilled calls estimated: the gateway's cost,
        # else list price), the unpooled calls' lost tokens and the few ids the rest of
        # the step needs.
        _, _, spread, no_call, conflicts = pl.collect_all(
            [
                spills["request_costs"].sink(
                    requests.with_estimates(flags.filter(pl.col("_kept")).select(list(polars_schema(RequestCosts))), run.prices),
                    part=bucket,
                    lazy=True,
                ),
                work["unpooled_lost"].sink(_unpooled_lost_tokens(flags, run.saved("pool_hours"), settings, start, end), part=bucket, lazy=True),
                flags.filter(pl.col("_spread")).select("request_id"),
                flags.filter(pl.col("_uncalled")).select("request_id"),
                # (a request summed again below is judged on the rows it keeps)
                billed.scan(_BILLED, part=bucket).filter(pl.col("conflict")).select("request_id")
                .join(flags.filter(pl.col("_spread")), on="request_id", how="anti"),
            ]
        )
        run.save("spread", spread, bucket)
        run.save("uncalled", no_call, bucket)
        run.save("conflicts", conflicts, bucket)


def settle_daily(layout: Layout, settings: Settings, folder: Path, result: StepResult | None = None) -> None:
    """After every bucket's join: the requests no bucket could place alone (a row further than B
    days from its call, rows without a call of the run: billing-only, late billing) summed again
    and added to request_costs, each in its bucket's part; unmatched_models; the late rows, the
    billing-only rows and the conflicting requests saved for finish_daily."""
    result = result or StepResult()
    run = _DailyRun(layout, settings, folder)
    read, bounds, start, end, buckets, work, spills = run.read, run.bounds, run.start, run.end, run.buckets, run.work, run.spills
    shares = run.allocated.scan(polars_schema(AllocatedByRequest))
    with result.timed("join"):
        spread, uncalled = run.stacked("spread")["request_id"], run.stacked("uncalled")["request_id"]

        # Rows of requests called in the run with a row further than B days: assigned row by row.
        spread_rows = requests.associate(
            pl.concat(
                [
                    read.focus_between(start - read.B, end + read.B),
                    read.focus_between(end + read.B, end + read.S + read.B),
                ]
            ).filter(one_of("x_RequestId", spread)),
            work["calls"].scan(run.calls_schema).filter(one_of("request_id", spread)).select("request_id", "call_date"),
            bounds,
            how="left",
        ).collect()
        # FOCUS rows of the run's days whose request has no call of the run within B days:
        # rows of calls on other days, late billing, billing-only requests. Few.
        loose = pl.concat(
            [
                spread_rows.filter(pl.col("call_date").is_null() & in_dates("charge_date", start, end)).drop("call_date"),
                read.focus_between(start, end).filter(one_of("x_RequestId", uncalled)).collect(),
            ]
        )
        settled = read.settle(loose, start, end)
        late = settled.filter(pl.col("billing_class") == LATE)
        anchored = settled.filter((pl.col("billing_class") == BILLING_ONLY) & in_dates("request_date", start, end))
        # A billing-only request dated in the run has its rows up to B days after its date.
        following = read.focus_between(end, end + read.B).filter(one_of("x_RequestId", anchored["x_RequestId"]))
        more = read.settle(following.collect(), end, end + read.B)
        billing_only = pl.concat(
            [anchored, more.filter((pl.col("billing_class") == BILLING_ONLY) & in_dates("request_date", start, end))]
        )
        # The requests summed again: called ones with a row further away, billing-only ones
        # (dated by their request, whichever of its rows comes first).
        resummed = requests.with_allocated(
            requests.billing_by_request(
                pl.concat(
                    [
                        spread_rows.lazy().filter(pl.col("call_date").is_not_null()).drop("call_date"),
                        billing_only.lazy().with_columns(charge_date=pl.col("request_date")).select(spread_rows.drop("call_date").columns),
                    ]
                ),
                settings.allocation,
            ),
            shares.filter(one_of("request_id", spread)),
        ).collect()
        conflicting = pl.concat([run.stacked("conflicts"), resummed.filter(pl.col("conflict")).select("request_id")])
        redone = requests.request_costs(
            requests.join_requests(work["calls"].scan(run.calls_schema).filter(one_of("request_id", spread)), resummed.lazy()),
            start,
            end + read.S,
        ).collect()
        redone = requests.with_estimates(redone.lazy(), run.prices).collect()  # (it reads its input twice)
        for bucket in range(buckets):
            # Each bucket's requests in one part (validated part by part, a request id in one):
            # beside the kept ones written above, in files of their own.
            bucket_rows = redone.filter(requests.in_bucket("request_id", bucket, buckets))
            if bucket_rows.height:
                spills["request_costs"].sink(bucket_rows.lazy(), part=bucket, prefix="resummed-")
        unpooled = unpooled_unmatched(work["unpooled_lost"].scan(_LOST_SUMS), run.saved("billed_models").lazy(), settings.allocation)
        spills["unmatched_models"].sink(merge_unmatched([work["pooled_lost"].scan(polars_schema(UnmatchedModels)), unpooled]))
        run.save("late", late)
        run.save("billing_only", billing_only)
        run.save("conflicting", conflicting)


def intents_daily_bucket(layout: Layout, settings: Settings, folder: Path, bucket: int, result: StepResult | None = None) -> None:
    """The intents of session bucket `bucket` (a session's calls share one), from request_costs
    once settle_daily has completed it: its part of intent_costs; the calls beyond the session
    bound, the intents billed in two currencies and those the guard missed saved."""
    result = result or StepResult()
    run = _DailyRun(layout, settings, folder)
    start, end, buckets, ours = run.start, run.end, run.buckets, run.ours()
    joined, intent_days = run.spills["request_costs"].scan(polars_schema(RequestCosts)), run.intent_days()
    with result.timed("intents"):
        all_outcomes = scan_staged_outcomes(layout)
        # Summed with each intent: its breakdown components and its currencies' range (two
        # apart: billed in two currencies, as model.intents.mixed_currency_intents finds them).
        per_intent = [
            *intent_components(_INTENT_CALL_COLUMNS),
            pl.col("billing_currency").min().alias("_lowest_currency"),
            pl.col("billing_currency").max().alias("_highest_currency"),
        ]
        two_currencies = pl.col("_lowest_currency") != pl.col("_highest_currency")
        # One pass over the bucket's calls with their intent (the columns read only, not
        # spilled): the calls beyond the bound counted, the run's intents summed and spilled.
        calls = intents.intent_calls(
            joined.filter(requests.in_bucket("session_id", bucket, buckets)).select([c for c in _INTENT_CALL_COLUMNS if c != "intent_date"]),
            intent_days,
        )
        # The labels of the bucket's sessions with an intent of the run (from the small
        # intent_days: a superset of the intents' sessions, the left join drops the rest).
        sessions = intent_days.filter(ours & requests.in_bucket("session_id", bucket, buckets)).select("session_id").unique()
        outcomes = intents.latest_outcomes(all_outcomes.join(sessions, on="session_id", how="semi"))
        summed = intents.intent_costs(calls.filter(ours), outcomes, settings.labor_table(), start, end, per_intent)
        intents_schema = summed.collect_schema()
        beyond_bound_calls, _ = pl.collect_all(
            [
                calls.filter(in_dates("date", start, end) & pl.col("intent_date").is_null()).group_by("date").len(),
                run.work["intents"].sink(summed, lazy=True, part=bucket),
            ]
        )
        run.save("beyond", beyond_bound_calls, bucket)
        # The spill's columns, for finish_daily to read it when no bucket had an intent (every bucket's the same).
        run.save("intents_columns", pl.DataFrame(schema=intents_schema))
        rows = run.work["intents"].scan(intents_schema, part=bucket)
        two = rows.filter(two_currencies).select("session_id", intent_date=pl.col("date")).collect()
        run.save("mixed", two, bucket)
        kept, unguarded = rows, two  # (none when no intent has two currencies)
        if not two.is_empty():
            kept = rows.join(two.lazy().rename({"intent_date": "date"}), on=["session_id", "date"], how="anti")
            # The guard behind the quarantine: no intent kept has two currencies.
            unguarded = kept.filter(two_currencies).select("session_id", intent_date=pl.col("date")).collect()
        run.save("unguarded", unguarded, bucket)
        run.spills["intent_costs"].sink(kept.select(list(polars_schema(IntentCosts))), part=bucket)


def finish_daily(layout: Layout, settings: Settings, folder: Path, result: StepResult | None = None) -> StepResult:
    """After every phase: cost_per_intent, cost_per_success, gateway_gap, the rows held back and
    cost_breakdown; every table validated; all published only if every check passed (the one
    writer). The spills published are moved out of `folder`; the rest stays for its owner to remove."""
    result = result or StepResult()
    run = _DailyRun(layout, settings, folder)
    read, bounds, start, end, buckets, work, spills, held = run.read, run.bounds, run.start, run.end, run.buckets, run.work, run.spills, run.held
    produced = run.produced
    keys = [(start + timedelta(days=i)).isoformat() for i in range((end - start).days)]
    late, billing_only, conflicting = run.saved("late"), run.saved("billing_only").lazy(), run.saved("conflicting")
    mixed_intents = run.stacked("mixed")
    beyond_bound = run.stacked("beyond").group_by("date").agg(pl.col("len").sum()).sort("date")
    unguarded = run.stacked("unguarded")
    joined = spills["request_costs"].scan(polars_schema(RequestCosts))
    intent_rows = spills["intent_costs"].scan(polars_schema(IntentCosts))
    with result.timed("features"):
        pl.collect_all(
            [
                spills["cost_per_intent"].sink(cost_per_intent(intent_rows), lazy=True),
                spills["cost_per_success"].sink(cost_per_success(intent_rows), lazy=True),
                spills["gateway_gap"].sink(gateway_gap(produced("request_costs")), lazy=True),
            ]
        )
    with result.timed("intents"):  # the rows held back: late billing, intents in two currencies
        held_rows = [focus_held(late.lazy(), "ChargePeriodStart", requests.late_reason(bounds), {"date": pl.col("charge_date")})]
        if not mixed_intents.is_empty():
            winners = work["calls"].scan(run.calls_schema)
            held_rows.append(_mixed_currency_calls(read, mixed_intents, intents.intent_calls(joined, run.intent_days()), winners))
        held.sink(pl.concat(held_rows))
    with result.timed("breakdown"):  # where the money goes, from the intents and their components
        one_currency = work["intents"].scan(run.saved("intents_columns").schema).join(mixed_intents.lazy().rename({"intent_date": "date"}), on=["session_id", "date"], how="anti")
        spills["cost_breakdown"].sink(breakdown_of_intents(one_currency))
    with result.timed("validate"):
        run_calls = work["calls"].scan(run.calls_schema).filter(in_dates("call_date", start, end))
        by_day = run.shares_by_day.scan({"date": pl.Date, "billing_currency": pl.String, **{c: MONEY for c in COST_COLUMNS}})
        for name, model in DAILY_TABLES.items():
            # request_costs and intent_costs were spilled one part per bucket (of requests, of
            # sessions): validated part by part, a key's rows all in one part.
            parts_of = range(buckets) if name in ("request_costs", "intent_costs") else [None]
            checks = [validate_each(model, [produced(name, part) for part in parts_of])]
            if name == "request_costs":
                billing = read.focus_between(start - read.B, end + read.B)
                if conflicting.height:
                    billing = billing.join(conflicting.lazy().rename({"request_id": "x_RequestId"}), on="x_RequestId", how="anti")
                checks.append(
                    request_costs_conservation_check(
                        produced(name), billing, run_calls.select("request_id", "call_date"),
                        billing_only.join(conflicting.lazy().rename({"request_id": "x_RequestId"}), on="x_RequestId", how="anti"),
                        start, end, bounds, buckets, by_day,
                    )
                )
            if name == "allocation_pools":
                # Every date read, lookaround days too: the shares of a pool's calls are all there.
                checks.append(allocation_conservation_check(spills[name].scan(polars_schema(model)), by_day))
            if name == "allocated_costs":
                checks.append(allocated_costs_check(produced(name), produced("allocation_pools")))
            if name == "intent_costs":
                checks.append(single_currency_outcome(unguarded))
            result.checks[name] = checks
        result.checks["request_costs"].append(validate(Quarantine, held.scan(polars_schema(Quarantine)).select(list(polars_schema(Quarantine))), "quarantine_schema"))
        result.warnings["request_costs"] = [_late_billing_outcome(late, bounds)]
        result.warnings["intent_costs"] = [_session_bound_outcome(beyond_bound, bounds)]
        result.warnings["gateway_gap"] = [_gateway_gap_outcome(produced("gateway_gap").collect(), settings.reconciliation.gateway_gap_warn)]
    if result.passed:
        with result.timed("write"):
            publication = Publication(layout)  # the daily tables become current together
            for name, model in DAILY_TABLES.items():
                frame = produced(name)
                meta: dict = {"dates": f"{keys[0]}..{keys[-1]}"}
                if "total_cost" in polars_schema(model):
                    meta["total_cost"] = money_total(frame, "total_cost")
                if name == "request_costs":
                    invoiced = frame.filter(pl.col("billing_rows") > 0)  # estimates apart, labelled
                    meta["effective_cost"] = money_total(invoiced, "effective_cost")
                    meta["billed_cost"] = money_total(invoiced, "billed_cost")
                    meta["allocated_effective_cost"] = money_total(invoiced, "allocated_effective_cost")
                    for source in requests.ESTIMATED_COSTS:
                        meta[f"{source}_effective_cost"] = money_total(frame.filter(pl.col("cost_source") == source), "effective_cost")
                if name == "allocation_pools":
                    for part in ("allocated", "unlogged", "unmatched"):
                        meta[f"{part}_billed_cost"] = money_total(frame, f"{part}_billed_cost")
                meta["dagster/row_count"] = sum(publication.add(name, spills[name], keys).values())
                result.tables[name] = meta
            _publish_held(held, publication, keys)
            publication.commit()
        result.tables["request_costs"] |= {
            "late_billing_rows": late.height,
            "late_billing_effective_cost": _money_by_currency(late),
        }
        result.tables["intent_costs"] |= {
            "calls_beyond_session_days": {str(d): n for d, n in beyond_bound.iter_rows()},
            "intents_billed_in_two_currencies": mixed_intents.height,
        }
    return result


# --- invoice allocation (issue 16) ---------------------------------------------------------------


def allocate_days(
    read: _Inputs, settings: Settings, spills: dict[str, Spill], allocated: Spill, shares_by_day: Spill, pooled_lost: Spill, scratch: Spill
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The daily step's one call of the allocation (unitledger.model.allocation.allocate_billing):
    the AI token rows without a request id of the days read (hour and day rows; longer charge
    periods are reported in unrecognized_usage) are split over those days' calls by token share.
    Writes the shares per request (`allocated`, joined to request_costs bucket by bucket), their
    sums per call date (`shares_by_day`, the conservation check's allocated side) and the tables
    allocation_pools and unrecognized_usage, and `pooled_lost`: unmatched_models'
    rows of the calls in pool hours (the others' are summed in the join, _unpooled_lost_tokens:
    it joins every call to its rows anyway). Returns the pool hours and billed models those need.
    The days read: the run's, up to session_days after it (the later calls of its intents) and
    COPY_DAYS either side; every one whole (current FOCUS rows, request conflicts removed; calls,
    one per request), the same inputs as the reconciliation's (steps.reconciliation._placed).
    Pools span every request of a day, so this runs once for the days, not per bucket. Also the
    FOCUS allocated_costs export of the allocated rows (model.allocation.allocated_costs).
    The allocation's intermediate frames are written to `scratch` and read back (allocate_billing's
    spill): memory follows a bucket of calls (allocation_buckets), not the days."""
    lo, hi = requests.with_lookaround(read.start, read.end + read.S)
    window = read.all_focus.filter(in_dates("charge_date", lo, hi))
    # The rows of requests billed to two accounts or currencies are left out of the shares' side
    # (found once: the plan below reads `billing` several times). Without a token row to split
    # (a day billed per request) no call takes a share: no pass over every row to find them.
    shared = classify_for_allocation(window.filter(pl.col("x_RequestId").is_null()), settings.allocation)
    if shared.filter(pl.col("usage_class") == "token").select(pl.len()).collect().item():
        billing = requests.without_request_conflicts(window, requests.request_conflicts(window).collect())
    else:
        billing = window
    raw_calls = read.calls_between(lo, hi)
    calls = requests.dedupe_calls(raw_calls)
    buckets = allocation_buckets(raw_calls.select(pl.len()).collect().item())
    run = allocate_billing(billing, calls, settings.allocation, report_unpooled=False, buckets=buckets, spill=scratch.stash)

    def from_shares(frame: pl.LazyFrame) -> pl.LazyFrame:
        # No token row to allocate (a day billed per request): no share, so these are empty; their
        # plans would still read every call and FOCUS row of the days (a join's other side is read
        # even when one side is empty).
        return frame if run.pooled else pl.LazyFrame(schema=frame.collect_schema())

    # Summed per request in the buckets of the pooled calls (a hash table of every request: 4 GB at 5M calls).
    for bucket in range(buckets):
        allocated.sink(allocated_by_request(run.tables.requests.filter(requests.in_bucket("request_id", bucket, buckets))), part=bucket)
    *_, bill_models = pl.collect_all(
        [
            shares_by_day.sink(from_shares(allocated_by_day(run.tables.requests)), lazy=True),
            spills["allocation_pools"].sink(run.tables.pools.with_columns(date=pl.col("charge_period_start").dt.date()), lazy=True),
            spills["unrecognized_usage"].sink(
                unrecognized_usage(run.classified).with_columns(date=pl.col("ChargePeriodStart").dt.date()), lazy=True
            ),
            pooled_lost.sink(run.tables.unmatched_models, lazy=True),
            spills["allocated_costs"].sink(
                from_shares(
                    allocated_costs(billing.filter(pl.col("x_RequestId").is_null()), run.tables.requests, run.tables.pools)
                    .with_columns(date=pl.col("ChargePeriodStart").dt.date())
                    .select(list(polars_schema(AllocatedCostsDaily)))
                ),
                lazy=True,
            ),
            billed_models(run.classified, settings.allocation),
        ],
        optimizations=allocation_optimizations(),
    )
    return run.hours, bill_models


def _unpooled_lost_tokens(joined: pl.LazyFrame, hours: pl.DataFrame, settings: Settings, start: date, end: date) -> pl.LazyFrame:
    """allocation.lost_token_sums of the calls of [start, end) outside every pool hour (`hours`):
    the tokens of the types their own rows do not bill (billing_by_request's covers_<type>; a
    request whose rows conflict has none). `joined`: join_requests rows, which carry the call's
    own provider and model version beside the billed ones."""
    # the calls of the run's days (a called request's `date` is its call's)
    calls = joined.filter((pl.col("match_status") != "billing_only") & in_dates("date", start, end)).select(
        "model", "input_tokens", "output_tokens", "cache_read_input_tokens", "cache_write_input_tokens",
        *[f"covers_{t}" for t in TOKEN_TYPES], timestamp="called_at", provider="call_provider", model_version="call_model_version",
    )  # fmt: skip
    if not hours.is_empty():
        calls = by_pool_hours(calls, hours, settings.allocation, "anti")
    return lost_token_sums(calls, settings.allocation)


def held_partition(day: str) -> str:
    """The `quarantine` table's partition of the rows the daily run of `day` held back."""
    return f"daily={day}"


def _publish_held(held: Spill, publication: Publication, keys: list[str]) -> None:
    """The rows a run held back become, per day, the quarantine's partition held_partition(day),
    published with the daily tables (one manifest swap); a day without any becomes empty: a re-run
    drops the decisions it no longer makes. One file per day, named by its content, so a re-run
    that decides the same keeps the published file."""
    schema = polars_schema(Quarantine)
    for key in keys:
        produced = sorted((held.dir / f"date={key}").glob("*.parquet"))
        files = {}
        if produced:
            written = held.dir / "published" / f"{key}.parquet"
            write_parquet_atomic(pl.scan_parquet(produced, glob=False).select(list(schema)), written)
            digest = hashlib.sha256(written.read_bytes()).hexdigest()[:16]
            files[written] = f"{held_partition(key)}/{digest}.parquet"
        publication.link("quarantine", held_partition(key), files)


def _money_by_currency(rows: pl.DataFrame, column: str = "EffectiveCost") -> dict[str, str]:
    totals = rows.group_by("BillingCurrency").agg(pl.col(column).sum()).sort("BillingCurrency")
    return {currency: str(total) for currency, total in totals.iter_rows()}


def _late_billing_outcome(late: pl.DataFrame, bounds: Bounds) -> CheckOutcome:
    """Warning: FOCUS rows of the run's days billed further than billing_delay_days from their
    request (quarantined, reconciled as late_billing_cost)."""
    if late.is_empty():
        return CheckOutcome("late_billing", True, f"every FOCUS row is within {bounds.billing_delay_days} days of its request")
    first = late.sort("charge_date", "source_file", "source_line").row(0, named=True)
    return CheckOutcome(
        "late_billing",
        False,
        f"{late.height} FOCUS row(s) billed more than pipeline.billing_delay_days = {bounds.billing_delay_days} days from "
        f"their request: quarantined, not in request_costs (reconciled as late_billing_cost); first {first['source_file']} "
        f"line {first['source_line']} (request {first['x_RequestId']}, charged {first['charge_date']})",
        {"late_billing_rows": late.height},
    )


def _gateway_gap_outcome(gaps: pl.DataFrame, warn_share: float) -> CheckOutcome:
    """Warning: for some provider and model, what the gateway reported for billed requests differs
    from the invoice by more than reconciliation.gateway_gap_warn of the invoice (gateway_gap)."""
    compared = gaps.filter(pl.col("requests") > 0)
    if compared.is_empty():
        return CheckOutcome("gateway_gap", True, "no request is both billed and gateway-reported in the same currency")
    off = compared.filter((pl.col("gap_share").abs() > warn_share) | (pl.col("gap_share").is_null() & (pl.col("gap") != 0)))
    if off.is_empty():
        return CheckOutcome("gateway_gap", True, f"gateway-reported costs within {warn_share:.2%} of the invoice for every provider and model ({compared['requests'].sum()} requests compared)")
    worst = off.sort(pl.col("gap").abs().cast(pl.Float64), descending=True).row(0, named=True)
    share = "n/a" if worst["gap_share"] is None else f"{worst['gap_share']:+.2%}"
    return CheckOutcome(
        "gateway_gap",
        False,
        f"{off.height} provider/model/day group(s) where the gateway's reported cost differs from the invoice by more than "
        f"reconciliation.gateway_gap_warn = {warn_share:.2%}; largest: {worst['provider']} {worst['model']} on {worst['date']}: "
        f"gateway {worst['gateway_reported_cost']} vs invoice {worst['invoice_cost']} {worst['billing_currency']} "
        f"(gap {worst['gap']}, {share}, {worst['requests']} requests); the invoice's cost is the one used (see gateway_gap)",
        {"groups_over_threshold": off.height},
    )


def _session_bound_outcome(beyond: pl.DataFrame, bounds: Bounds) -> CheckOutcome:
    """Warning: calls of the run's days that belong to no intent, being more than session_days
    after their session's first call (their cost is in request_costs)."""
    if beyond.is_empty():
        return CheckOutcome("session_bound", True, f"every call is within {bounds.session_days} days of its intent's first call")
    per_day = ", ".join(f"{d}: {n}" for d, n in beyond.iter_rows())
    return CheckOutcome(
        "session_bound",
        False,
        f"{beyond['len'].sum()} call(s) more than pipeline.session_days = {bounds.session_days} days after their "
        f"session's first call are in no intent (their cost stays in request_costs); per day: {per_day}",
        {"calls_beyond_session_days": int(beyond["len"].sum())},
    )


def _mixed_currency_calls(read: _Inputs, mixed: pl.DataFrame, calls: pl.LazyFrame, winners: pl.LazyFrame) -> pl.LazyFrame:
    """Quarantine records of the calls of the intents (`mixed`: session_id, intent_date) billed in
    more than one currency, each naming the currencies and the FOCUS files and lines that bill them.
    `calls`: intent_calls of the run; `winners`: the run's deduplicated staged calls."""
    key = ["session_id", "intent_date"]
    members = calls.join(mixed.lazy().select(key), on=key).select("request_id", *key).collect()
    billed = (
        requests.associate(
            read.focus_between(read.start - read.B, read.end + read.S + read.B).filter(one_of("x_RequestId", members["request_id"])),
            winners.select("request_id", "call_date"),
            read.bounds,
        )
        .join(members.lazy().rename({"request_id": "x_RequestId"}), on="x_RequestId")
        .group_by(*key, "BillingCurrency")
        .agg(pl.format("{} line {}", "source_file", "source_line").sort().alias("rows"))
        .sort(*key, "BillingCurrency")
        .collect()
    )
    reasons = []
    for (session, day), group in billed.group_by(key, maintain_order=True):
        currencies = group["BillingCurrency"].to_list()
        where = "; ".join(
            f"{currency} by {', '.join(rows[:3])}{f' and {len(rows) - 3} more' if len(rows) > 3 else ''}"
            for currency, rows in zip(currencies, group["rows"].to_list())
        )
        reasons.append(
            (session, day, f"session {session} (intent of {day}) is billed in {' and '.join(currencies)} ({where}): "
             "an intent's cost is one currency's, so its calls are left out of intent_costs; their cost stays in request_costs")
        )
    reason = pl.DataFrame(reasons, schema={"session_id": pl.String, "intent_date": pl.Date, "_reason": pl.String}, orient="row")
    held = winners.join(members.lazy(), on=["request_id", "session_id"]).join(reason.lazy(), on=key)
    return calls_held(held, "session_id", pl.col("_reason"), {"date": pl.col("intent_date")})
