"""The daily step: request_costs, intent_costs, cost_per_intent, cost_per_success and cost_breakdown
for a range of days, from staging through the pure transforms (unitledger.model) to the checks and
the publish."""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl

from schemas import CostPerIntent, CostPerSuccess, IntentCosts, RequestCosts
from schemas.decisions import CostBreakdown
from unitledger.checks.conservation import collected_by_bucket, request_costs_conservation_check, single_currency_check
from unitledger.checks.validation import validate_each
from unitledger.config import Settings
from unitledger.layout import Layout
from unitledger.model import requests
from unitledger.model.features import cost_per_intent, cost_per_success
from unitledger.model.intents import intent_costs, latest_outcomes
from unitledger.sources.events import scan_staged_calls, scan_staged_outcomes
from unitledger.sources.focus import scan_staged_focus
from unitledger.steps.breakdown import spill_cost_breakdown
from unitledger.steps.result import StepResult, money_total
from unitledger.warehouse.publish import Publication, Spill, clear_scratch, polars_schema


DAILY_TABLES = {
    "request_costs": RequestCosts,
    "intent_costs": IntentCosts,
    "cost_per_intent": CostPerIntent,
    "cost_per_success": CostPerSuccess,
    "cost_breakdown": CostBreakdown,
}

# Calls per bucket: past it, the daily step works in hash buckets of requests and sessions, one
# after the other (join, intents, the checks). Peak memory follows a bucket (about 4.7 GB at 10M
# calls, measured); each bucket more costs another pass over the day's staged rows and a merge of
# the parts on publish, so buckets are as large as a fifth of the 24 GB machine allows.
BUCKET_CALLS = 12_000_000


def build_daily_tables(layout: Layout, settings: Settings, start: date, end_inclusive: date) -> StepResult:
    """Compute request_costs, intent_costs, cost_per_intent, cost_per_success and cost_breakdown for
    the dates [start, end_inclusive]; validate them; publish them only if every check passed."""
    result = StepResult()
    end = end_inclusive + timedelta(days=1)
    keys = [(start + timedelta(days=i)).isoformat() for i in range((end - start).days)]
    lo, hi = requests.with_lookaround(start, end)
    clear_scratch(layout.tmp, layout.warehouse)
    spills = {name: Spill(layout.tmp, name, "date") for name in DAILY_TABLES}
    billed = Spill(layout.tmp, "billed", "charge_date")

    def produced(name: str, part: int | None = None) -> pl.LazyFrame:
        # request_costs is spilled for the lookaround days too (see below): only [start, end) is its.
        return spills[name].scan(polars_schema(DAILY_TABLES[name]), part).filter(requests.in_dates("date", start, end))

    try:
        with result.timed("join"):
            calls = scan_staged_calls(layout).filter(requests.in_dates("call_date", lo, hi))
            focus = scan_staged_focus(layout).filter(requests.in_dates("charge_date", lo, hi))
            # Past BUCKET_CALLS calls, the day is worked in buckets of requests (by a hash of their
            # id) one after the other: memory follows the requests of a bucket, not of the day.
            buckets = max(1, -(-calls.select(pl.len()).collect().item() // BUCKET_CALLS))
            # The few request ids logged more than once, found first: deduplicating within one
            # query would hold every call in memory until all were counted.
            repeated = collected_by_bucket(
                lambda b: requests.repeated_keys(calls.filter(requests.in_bucket("request_id", b, buckets)), "request_id"), buckets
            )
            # Requests billed to two accounts or currencies are left out (see request_conflicts): a
            # few ids, found once for the join and the conservation check.
            conflicts = collected_by_bucket(
                lambda b: requests.request_conflicts(focus.filter(requests.in_bucket("x_RequestId", b, buckets))), buckets
            ).collect()
            billing = requests.without_request_conflicts(focus, conflicts)
            for bucket in range(buckets):
                # Summed per request apart from the join: one query holding both the sums and the
                # join's hash table needs about a third more memory than the two in turn.
                per_request = requests.billing_by_request(billing.filter(requests.in_bucket("x_RequestId", bucket, buckets)))
                billed.sink(per_request)
                ours = requests.dedupe_calls(calls.filter(requests.in_bucket("request_id", bucket, buckets)), repeated)
                joined = requests.join_requests(ours, billed.scan(dict(per_request.collect_schema())))
                # Spilled for every date read: the intents need the calls of the lookaround days,
                # and the partitions of [start, end) are request_costs itself.
                spills["request_costs"].sink(requests.request_costs(joined, lo, hi), part=bucket)
                billed.cleanup()
            joined = spills["request_costs"].scan(polars_schema(RequestCosts))
        with result.timed("intents"):
            all_outcomes = scan_staged_outcomes(layout)
            for bucket in range(buckets):  # buckets of sessions: a session's calls share one
                ours = joined.filter(requests.in_bucket("session_id", bucket, buckets))
                sessions = ours.select("session_id").filter(pl.col("session_id").is_not_null()).unique()
                outcomes = latest_outcomes(all_outcomes.join(sessions, on="session_id", how="semi"))
                spills["intent_costs"].sink(intent_costs(ours, outcomes, settings.labor_table(), start, end), part=bucket)
            intents = spills["intent_costs"].scan(polars_schema(IntentCosts))
        with result.timed("features"):
            pl.collect_all(
                [
                    spills["cost_per_intent"].sink(cost_per_intent(intents), lazy=True),
                    spills["cost_per_success"].sink(cost_per_success(intents), lazy=True),
                ]
            )
        with result.timed("breakdown"):  # where the money goes, from the same requests and intents
            spill_cost_breakdown(joined, spills["intent_costs"], spills["cost_breakdown"], buckets, layout.tmp)
        with result.timed("validate"):
            for name, model in DAILY_TABLES.items():
                # request_costs and intent_costs were spilled one part per bucket (of requests, of
                # sessions): validated part by part, a key's rows all in one part.
                parts = range(buckets) if name in ("request_costs", "intent_costs") else [None]
                checks = [validate_each(model, [produced(name, part) for part in parts])]
                if name == "request_costs":
                    called = joined.filter(pl.col("session_id").is_not_null())
                    call_dates = called.select("request_id", call_date=pl.col("called_at").dt.date())
                    checks.append(request_costs_conservation_check(produced(name), billing, call_dates, start, end, buckets))
                if name == "intent_costs":
                    checks.append(single_currency_check(joined, buckets))
                result.checks[name] = checks
        if result.passed:
            with result.timed("write"):
                publication = Publication(layout)  # the daily tables become current together
                for name, model in DAILY_TABLES.items():
                    frame = produced(name)
                    meta: dict = {"dates": f"{keys[0]}..{keys[-1]}"}
                    if "total_cost" in polars_schema(model):
                        meta["total_cost"] = money_total(frame, "total_cost")
                    if name == "request_costs":
                        meta["effective_cost"] = money_total(frame, "effective_cost")
                        meta["billed_cost"] = money_total(frame, "billed_cost")
                    meta["dagster/row_count"] = sum(publication.add(name, spills[name], keys).values())
                    result.tables[name] = meta
                publication.commit()
        return result
    finally:
        for spill in [*spills.values(), billed]:
            spill.cleanup()
