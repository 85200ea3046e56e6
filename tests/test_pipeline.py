"""The pipeline's steps on hand-built landing files: staging, daily tables, checks, re-runs."""

from datetime import date
from decimal import Decimal

import polars as pl
import pytest

from schemas import RequestCosts
from tests.builders import focus_row, llm_call, outcome, write_events, write_focus_csv
from unitledger.checks.conservation import request_costs_conservation_check, single_currency_check
from unitledger.checks.validation import validate_each
from unitledger.model.requests import billed_cost_by_assigned_day, dedupe_calls, in_bucket
from unitledger.sources.events import scan_staged_calls
from unitledger.sources.focus import scan_staged_focus
from unitledger.steps.daily import DAILY_TABLES, build_daily_tables
from unitledger.steps.staging import stage_billing, stage_events
from unitledger.warehouse.manifest import scan_table

DAY = date(2026, 3, 2)


def land(layout):
    write_focus_csv(
        layout.landing_focus / "acct-us" / "2026-03" / "export.csv",
        [
            focus_row("r1", "0.010000000000", SkuMeter="Input Tokens"),
            focus_row("r1", "0.020000000000", SkuMeter="Output Tokens"),
            focus_row("r2", "0.030000000000", hour="2026-03-02T23:00:00Z"),
            focus_row("r3", "0.004000000000", hour="2026-03-03T00:00:00Z"),  # billed after midnight
            focus_row("billing-only", "0.500000000000"),
            focus_row(None, "1.250000000000", ChargeCategory="Tax"),  # no request id: not a request
        ],
    )
    write_events(
        layout.landing_events / "2026-03-02.jsonl",
        [
            llm_call("r1", "s1", "2026-03-02T10:15:00Z"),
            llm_call("r2", "s2", "2026-03-02T23:58:00Z", status="error"),
            llm_call("r3", "s2", "2026-03-03T00:01:00Z", attempt=2),
            llm_call("tel-only", "s3", "2026-03-02T12:00:00Z"),
            outcome("s1", True, "2026-03-03T08:00:00Z"),
            outcome("s2", False, "2026-03-04T08:00:00Z"),
        ],
    )
    write_events(layout.landing_events / "redelivered.jsonl", [llm_call("r1", "s1", "2026-03-02T10:15:00Z")])


def run(layout, settings, start=DAY, end=DAY):
    assert stage_billing(layout).passed
    assert stage_events(layout).passed
    return build_daily_tables(layout, settings, start, end)


def read(layout, table, days=(DAY.isoformat(),)):
    return scan_table(layout, table, days).collect()


def test_daily_tables_follow_the_definitions(layout, settings):
    land(layout)
    result = run(layout, settings)
    assert result.passed, result.failures()

    requests = read(layout, "request_costs").sort("request_id")
    # r3 was called after midnight: it belongs to the next day's partition.
    assert requests["request_id"].to_list() == ["billing-only", "r1", "r2", "tel-only"]
    assert requests["match_status"].to_list() == ["billing_only", "matched", "matched", "telemetry_only"]
    costs = dict(zip(requests["request_id"], requests["effective_cost"]))
    assert costs == {"billing-only": Decimal("0.5"), "r1": Decimal("0.03"), "r2": Decimal("0.03"), "tel-only": None}
    assert requests.filter(pl.col("request_id") == "r1")["billing_rows"].item() == 2  # duplicate event ignored

    intents = read(layout, "intent_costs").sort("session_id")
    assert intents["session_id"].to_list() == ["s1", "s2", "s3"]
    s2 = intents.row(1, named=True)
    # r3 is called after midnight and billed the next day, yet belongs to s2 of DAY.
    assert (s2["requests"], s2["retries"], s2["outcome"]) == (2, 1, "failure")
    assert s2["token_cost"] == Decimal("0.034")
    labor = Decimal("10.00")  # unitledger.toml: "chat" is not listed, the USD default is 60.00/h × 10 min
    assert s2["labor_cost"] == labor and s2["total_cost"] == Decimal("0.034") + labor

    per_success = read(layout, "cost_per_success").filter(pl.col("billing_currency") == "USD").row(0, named=True)
    assert (per_success["intents"], per_success["labeled_intents"], per_success["successes"]) == (2, 2, 1)
    assert per_success["total_cost"] == Decimal("0.03") + Decimal("0.034") + labor
    assert per_success["cost_per_success"] == float(Decimal("0.03") + Decimal("0.034") + labor)

    assert Decimal(result.tables["request_costs"]["effective_cost"]["USD"]) == Decimal("0.56")


def test_request_after_midnight_is_dated_by_its_call(layout, settings):
    land(layout)
    assert run(layout, settings, DAY, date(2026, 3, 3)).passed
    next_day = read(layout, "request_costs", ["2026-03-03"])
    assert next_day["request_id"].to_list() == ["r3"]
    assert next_day["effective_cost"].to_list() == [Decimal("0.004")]
    assert read(layout, "intent_costs", ["2026-03-03"]).is_empty()  # s2 belongs to its first day


def test_rerun_gives_the_same_rows(layout, settings):
    land(layout)
    run(layout, settings)
    first = {t: read(layout, t) for t in DAILY_TABLES}
    run(layout, settings)
    for table, frame in first.items():
        assert read(layout, table).sort(pl.all()).equals(frame.sort(pl.all())), table


@pytest.mark.parametrize("buckets", [1, 3])
def test_conservation_check_catches_a_lost_row(layout, settings, buckets):
    land(layout)
    run(layout, settings)
    billing = scan_staged_focus(layout)
    calls = dedupe_calls(scan_staged_calls(layout))
    requests = scan_table(layout, "request_costs", [DAY.isoformat()])
    ok = request_costs_conservation_check(requests, billing, calls, DAY, date(2026, 3, 3), buckets)
    assert ok.passed
    lost = request_costs_conservation_check(
        requests.filter(pl.col("request_id") != "r2"), billing, calls, DAY, date(2026, 3, 3), buckets
    )
    assert not lost.passed
    assert "2026-03-02 USD" in lost.description


def test_conservation_rechecks_a_hashed_mismatch_on_the_request_ids(layout, settings, monkeypatch):
    """Hashed request ids give the ids' answer on real data; a mismatch on hashes (what two ids
    sharing a hash would cause) is re-checked on the ids, and only their answer counts."""
    land(layout)
    run(layout, settings)
    billing = scan_staged_focus(layout)
    calls = dedupe_calls(scan_staged_calls(layout)).select("request_id", "call_date")
    requests = scan_table(layout, "request_costs", [DAY.isoformat()])
    by_ids, by_hashes = (
        billed_cost_by_assigned_day(billing, calls, DAY, date(2026, 3, 3), hashed).sort(pl.all()).collect()
        for hashed in (False, True)
    )
    assert by_ids.height > 0 and by_hashes.equals(by_ids)

    real, routes = billed_cost_by_assigned_day, []

    def colliding(billing, calls, start, end, hashed=False):
        routes.append(hashed)
        summed = real(billing, calls, start, end, hashed)
        # A collision moves cents to another day: here, a cent more on every day.
        return summed.with_columns(pl.col("effective_cost") + pl.lit(1)) if hashed else summed

    monkeypatch.setattr("unitledger.model.requests.billed_cost_by_assigned_day", colliding)
    assert request_costs_conservation_check(requests, billing, calls, DAY, date(2026, 3, 3)).passed
    assert routes == [True, False]
    lost = request_costs_conservation_check(requests.filter(pl.col("request_id") != "r2"), billing, calls, DAY, date(2026, 3, 3))
    assert not lost.passed and routes == [True, False, True, False]


def test_a_billing_only_request_across_midnight_is_conserved_on_its_first_day(layout, settings):
    """A request with no telemetry whose FOCUS rows fall on both sides of midnight is dated by its
    earliest row; conservation must date its rows the same way, not row by row."""
    write_focus_csv(
        layout.landing_focus / "acct-us" / "2026-03" / "export.csv",
        [focus_row("b", "0.010000000000", hour="2026-03-02T23:00:00Z"), focus_row("b", "0.020000000000", hour="2026-03-03T00:00:00Z")],
    )
    write_events(layout.landing_events / "e.jsonl", [llm_call("r1", "s1", "2026-03-02T10:15:00Z")])
    result = run(layout, settings, DAY, date(2026, 3, 3))
    assert result.passed, result.failures()
    rows = read(layout, "request_costs", (DAY.isoformat(), "2026-03-03")).filter(pl.col("request_id") == "b")
    assert rows.select("date", "effective_cost", "match_status").rows() == [(DAY, Decimal("0.03"), "billing_only")]


@pytest.mark.parametrize("buckets", [1, 3])
def test_checks_in_hash_buckets_still_see_every_row(layout, settings, buckets):
    """Validated bucket by bucket, a repeated request id or a session billed in two currencies is
    still caught: the rows of one key value share a bucket."""
    land(layout)
    run(layout, settings, DAY, date(2026, 3, 3))
    requests = scan_table(layout, "request_costs", [DAY.isoformat(), "2026-03-03"]).collect()

    def split(frame):
        return [frame.lazy().filter(in_bucket("request_id", b, buckets)) for b in range(buckets)]

    assert validate_each(RequestCosts, split(requests)).passed
    repeated = pl.concat([requests, requests.filter(pl.col("request_id") == "r2")])
    failed = validate_each(RequestCosts, split(repeated))
    assert not failed.passed and "unique" in failed.description, failed.description
    assert single_currency_check(requests.lazy(), buckets).passed
    # s2's second call (r3) billed in EUR: the session now has two currencies.
    mixed = requests.with_columns(
        billing_currency=pl.when(pl.col("request_id") == "r3").then(pl.lit("EUR")).otherwise("billing_currency")
    )
    failed = single_currency_check(mixed.lazy(), buckets)
    assert not failed.passed and "s2" in failed.description


def test_failed_check_publishes_nothing(layout, settings):
    land(layout)
    run(layout, settings)
    before = read(layout, "intent_costs")
    # A labor config without USD: failed USD intents have no labor cost, the schema check fails.
    no_usd = type(settings)(settings.path, settings.start_date, tuple(c for c in settings.labor if c.currency != "USD"))
    write_events(layout.landing_events / "late.jsonl", [outcome("s3", False, "2026-03-05T00:00:00Z")])
    result = run(layout, no_usd)
    assert not result.passed
    assert any("failures_have_labor_cost" in f for f in result.failures())
    assert read(layout, "intent_costs").equals(before)
