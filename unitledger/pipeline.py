"""The pipeline's steps: read staging, call the pure transforms, validate, publish atomically.

Dagster assets (pipelines/) are thin wrappers around these functions; the CLI runs the assets, and
the benchmark calls these same functions, so there is one implementation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta

import polars as pl
from pandera.config import ValidationDepth

from schemas import CostPerIntent, CostPerSuccess, IntentCosts, RequestCosts, StagedFocus, StagedLlmCall, StagedOutcome
from schemas.monthly import BILLING_PERIOD, CostPerIntentMonthly, CostPerSuccessMonthly
from unitledger import landing, months, transforms
from unitledger.config import Settings
from unitledger.layout import Layout
from unitledger.validation import CheckOutcome, validate
from unitledger.warehouse.publish import Spill, clear_scratch, scan_partitions

DAILY_TABLES = {
    "request_costs": RequestCosts,
    "intent_costs": IntentCosts,
    "cost_per_intent": CostPerIntent,
    "cost_per_success": CostPerSuccess,
}


# Staged rows are what parse.*_typed let through: every value rule of the staged models (required,
# ISO currency, known categories, non-negative counts, forward periods) was applied to each row
# on the way in, failures quarantined. Re-running them over all of staging each run repeats that
# work at a cost growing with history; the schema (columns, types) is what can still drift.
STAGED_DEPTH = ValidationDepth.SCHEMA_ONLY
# Calls per bucket: past it, the daily step works in hash buckets of requests and sessions, one
# after the other (join, intents, the checks). Peak memory follows a bucket (about 4.7 GB at 10M
# calls, measured); each bucket more costs another pass over the day's staged rows and a merge of
# the parts on publish, so buckets are as large as a fifth of the 24 GB machine allows.
BUCKET_CALLS = 12_000_000


def polars_schema(model) -> dict[str, pl.DataType]:
    return {name: col.dtype.type for name, col in model.to_schema().columns.items()}


@dataclass
class StepResult:
    """What a step produced: per table metadata, check outcomes, and seconds per stage."""

    tables: dict[str, dict] = field(default_factory=dict)
    checks: dict[str, list[CheckOutcome]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(c.passed for outcomes in self.checks.values() for c in outcomes)

    def failures(self) -> list[str]:
        return [f"{table}.{c.name}: {c.description}" for table, cs in self.checks.items() for c in cs if not c.passed]

    @contextmanager
    def timed(self, stage: str):
        began = time.perf_counter()
        yield
        self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - began


# --- staging ------------------------------------------------------------------------------------


def stage_billing(layout: Layout) -> StepResult:
    """Stage new FOCUS landing files; validate what staging holds."""
    result = StepResult()
    with result.timed("ingest"):
        report = landing.stage_focus(layout)
    with result.timed("validate"):
        # Every staged row, superseded ones too: the same checks as on the current rows (a subset),
        # without re-ranking the deliveries in each of Pandera's queries.
        check = validate(StagedFocus, landing.scan_staged_focus_files(layout), "schema", STAGED_DEPTH)
    result.checks["staged_billing"] = [check]
    result.tables["staged_billing"] = {
        "files_staged": report.staged_files,
        "files_unchanged": report.reused_files,
        "files_removed": report.removed_files,
        "dagster/row_count": report.rows["focus"],
        "quarantined_rows": report.quarantined_rows,
    }
    return result


def stage_events(layout: Layout) -> StepResult:
    """Stage new event landing files; validate what staging holds."""
    result = StepResult()
    with result.timed("ingest"):
        report = landing.stage_events(layout)
    with result.timed("validate"):
        checks = [
            validate(StagedLlmCall, landing.scan_staged_calls(layout), "llm_call_schema", STAGED_DEPTH),
            validate(StagedOutcome, landing.scan_staged_outcomes(layout), "outcome_schema", STAGED_DEPTH),
        ]
    result.checks["staged_events"] = checks
    result.tables["staged_events"] = {
        "files_staged": report.staged_files,
        "files_unchanged": report.reused_files,
        "files_removed": report.removed_files,
        "llm_calls": report.rows["llm_calls"],
        "outcomes": report.rows["outcomes"],
        "dagster/row_count": report.rows["llm_calls"] + report.rows["outcomes"],
        "quarantined_rows": report.quarantined_rows,
    }
    return result


# --- daily tables -------------------------------------------------------------------------------


def _money_total(frame: pl.LazyFrame, column: str) -> dict[str, str]:
    """Exact per-currency total of a money column, as text (Dagster metadata has no decimal type)."""
    totals = (
        frame.group_by("billing_currency")
        .agg(pl.col(column).sum())
        .filter(pl.col("billing_currency").is_not_null())
        .sort("billing_currency")
        .collect()
    )
    return {row["billing_currency"]: str(row[column]) for row in totals.iter_rows(named=True)}


def build_daily_tables(layout: Layout, settings: Settings, start: date, end_inclusive: date) -> StepResult:
    """Compute request_costs, intent_costs, cost_per_intent and cost_per_success for the dates
    [start, end_inclusive]; validate them; publish them only if every check passed."""
    result = StepResult()
    end = end_inclusive + timedelta(days=1)
    keys = [(start + timedelta(days=i)).isoformat() for i in range((end - start).days)]
    lo, hi = transforms.with_lookaround(start, end)
    clear_scratch(layout.tmp, layout.warehouse)
    spills = {name: Spill(layout.tmp, name, "date") for name in DAILY_TABLES}
    billed = Spill(layout.tmp, "billed", "charge_date")

    def produced(name: str, part: int | None = None) -> pl.LazyFrame:
        # request_costs is spilled for the lookaround days too (see below): only [start, end) is its.
        return spills[name].scan(polars_schema(DAILY_TABLES[name]), part).filter(transforms.in_dates("date", start, end))

    try:
        with result.timed("join"):
            calls = landing.scan_staged_calls(layout).filter(transforms.in_dates("call_date", lo, hi))
            focus = landing.scan_staged_focus(layout).filter(transforms.in_dates("charge_date", lo, hi))
            # Past BUCKET_CALLS calls, the day is worked in buckets of requests (by a hash of their
            # id) one after the other: memory follows the requests of a bucket, not of the day.
            buckets = max(1, -(-calls.select(pl.len()).collect().item() // BUCKET_CALLS))
            # The few request ids logged more than once, found first: deduplicating within one
            # query would hold every call in memory until all were counted.
            repeated = collected_by_bucket(
                lambda b: transforms.repeated_keys(calls.filter(transforms.in_bucket("request_id", b, buckets)), "request_id"), buckets
            )
            # Requests billed to two accounts or currencies are left out (see request_conflicts): a
            # few ids, found once for the join and the conservation check.
            conflicts = collected_by_bucket(
                lambda b: transforms.request_conflicts(focus.filter(transforms.in_bucket("x_RequestId", b, buckets))), buckets
            ).collect()
            billing = transforms.without_request_conflicts(focus, conflicts)
            for bucket in range(buckets):
                # Summed per request apart from the join: one query holding both the sums and the
                # join's hash table needs about a third more memory than the two in turn.
                per_request = transforms.billing_by_request(billing.filter(transforms.in_bucket("x_RequestId", bucket, buckets)))
                billed.sink(per_request)
                ours = transforms.dedupe_calls(calls.filter(transforms.in_bucket("request_id", bucket, buckets)), repeated)
                joined = transforms.join_requests(ours, billed.scan(dict(per_request.collect_schema())))
                # Spilled for every date read: the intents need the calls of the lookaround days,
                # and the partitions of [start, end) are request_costs itself.
                spills["request_costs"].sink(transforms.request_costs(joined, lo, hi), part=bucket)
                billed.cleanup()
            joined = spills["request_costs"].scan(polars_schema(RequestCosts))
        with result.timed("intents"):
            all_outcomes = landing.scan_staged_outcomes(layout)
            for bucket in range(buckets):  # buckets of sessions: a session's calls share one
                ours = joined.filter(transforms.in_bucket("session_id", bucket, buckets))
                sessions = ours.select("session_id").filter(pl.col("session_id").is_not_null()).unique()
                outcomes = transforms.latest_outcomes(all_outcomes.join(sessions, on="session_id", how="semi"))
                spills["intent_costs"].sink(transforms.intent_costs(ours, outcomes, settings.labor_table(), start, end), part=bucket)
            intents = spills["intent_costs"].scan(polars_schema(IntentCosts))
        with result.timed("features"):
            pl.collect_all(
                [
                    spills["cost_per_intent"].sink(transforms.cost_per_intent(intents), lazy=True),
                    spills["cost_per_success"].sink(transforms.cost_per_success(intents), lazy=True),
                ]
            )
        with result.timed("validate"):
            for name, model in DAILY_TABLES.items():
                # request_costs and intent_costs were spilled one part per bucket (of requests, of
                # sessions): validated part by part, a key's rows all in one part.
                parts = range(buckets) if name in ("request_costs", "intent_costs") else [None]
                checks = [validate_each(model, [produced(name, part) for part in parts])]
                if name == "request_costs":
                    called = joined.filter(pl.col("session_id").is_not_null())
                    call_dates = called.select("request_id", call_date=pl.col("called_at").dt.date())
                    checks.append(conservation_check(produced(name), billing, call_dates, start, end, buckets))
                if name == "intent_costs":
                    checks.append(single_currency_check(joined, buckets))
                result.checks[name] = checks
        if result.passed:
            with result.timed("write"):
                for name, model in DAILY_TABLES.items():
                    frame = produced(name)
                    meta: dict = {"dates": f"{keys[0]}..{keys[-1]}"}
                    if "total_cost" in polars_schema(model):
                        meta["total_cost"] = _money_total(frame, "total_cost")
                    if name == "request_costs":
                        meta["effective_cost"] = _money_total(frame, "effective_cost")
                        meta["billed_cost"] = _money_total(frame, "billed_cost")
                    counts = spills[name].publish(layout.table(name), keys, polars_schema(model))
                    meta["dagster/row_count"] = sum(counts.values())
                    result.tables[name] = meta
        return result
    finally:
        for spill in [*spills.values(), billed]:
            spill.cleanup()


def collected_by_bucket(query: Callable[[int], pl.LazyFrame], buckets: int) -> pl.LazyFrame:
    """The (small) results of query(bucket) for each hash bucket, collected one after the other
    and stacked: memory follows one bucket's rows."""
    return pl.concat([query(b).collect() for b in range(buckets)]).lazy()


def validate_each(model, frames: list[pl.LazyFrame]) -> CheckOutcome:
    """`validate` (its data checks load the rows) each of `frames` in turn: the first failure, else
    a pass. Right for a table split by a hash of its unique key: the models' checks are per row or,
    for uniqueness, per key value, whose rows share a part."""
    for frame in frames:
        outcome = validate(model, frame)
        if not outcome.passed:
            break
    return outcome


def conservation_check(
    request_costs: pl.LazyFrame, billing: pl.LazyFrame, calls: pl.LazyFrame, start: date, end: date, buckets: int = 1
) -> CheckOutcome:
    """Per day and currency, request_costs' cost equals the FOCUS rows with a request id dated by
    their request, summed apart from the join (transforms.billed_cost_by_assigned_day), exactly.
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
            lambda b: transforms.billed_cost_by_assigned_day(
                billing.filter(transforms.in_bucket("x_RequestId", b, buckets)),
                calls.filter(transforms.in_bucket("request_id", b, buckets)),
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
            lambda b: billed.filter(transforms.in_bucket("session_id", b, buckets))
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


# --- monthly rollups ----------------------------------------------------------------------------

# monthly table → (daily table it rolls up, re-aggregation)
MONTHLY_TABLES = {
    "cost_per_intent_monthly": (CostPerIntentMonthly, "cost_per_intent", transforms.reaggregate_cost_per_intent),
    "cost_per_success_monthly": (CostPerSuccessMonthly, "cost_per_success", transforms.reaggregate_cost_per_success),
}
MONTHLY_GRAIN = [BILLING_PERIOD, *(c for c in transforms.GRAIN if c != "date")]


def build_monthly_tables(layout: Layout, first_month: date, last_month: date) -> StepResult:
    """Roll the published daily cost_per_intent and cost_per_success partitions of the months from
    `first_month` to `last_month` up into the monthly tables (sums added, ratios and interval
    recomputed); validate; publish every month's partition only if every check passed.

    Reads the daily tables only, never staging or landing: one code path from raw data."""
    result = StepResult()
    periods = months.months(first_month, last_month)
    keys = [months.period_key(m) for m in periods]
    day_keys = [d.isoformat() for d in months.days(periods[0], months.month_end(periods[-1]))]
    clear_scratch(layout.tmp, layout.warehouse)
    spills = {name: Spill(layout.tmp, name, BILLING_PERIOD, pl.String) for name in MONTHLY_TABLES}
    try:
        with result.timed("rollup"):
            for name, (model, daily_name, reaggregate) in MONTHLY_TABLES.items():
                daily = scan_partitions(layout.table(daily_name), "date", day_keys)
                if daily is None:
                    daily = pl.DataFrame(schema=polars_schema(DAILY_TABLES[daily_name])).lazy()
                by_month = daily.with_columns(pl.col("date").dt.strftime("%Y-%m").alias(BILLING_PERIOD))
                spills[name].sink(reaggregate(by_month, MONTHLY_GRAIN))
        with result.timed("validate"):
            for name, (model, _, _) in MONTHLY_TABLES.items():
                result.checks[name] = [validate(model, spills[name].scan(polars_schema(model)))]
        if result.passed:
            with result.timed("write"):
                for name, (model, _, _) in MONTHLY_TABLES.items():
                    frame = spills[name].scan(polars_schema(model))
                    meta: dict = {"billing_periods": f"{keys[0]}..{keys[-1]}", "total_cost": _money_total(frame, "total_cost")}
                    counts = spills[name].publish(layout.table(name), keys, polars_schema(model))
                    meta["dagster/row_count"] = sum(counts.values())
                    result.tables[name] = meta
        return result
    finally:
        for spill in spills.values():
            spill.cleanup()
