"""The pipeline's steps on hand-built landing files: staging, daily tables, checks, re-runs."""

from datetime import date
from decimal import Decimal

import polars as pl
import pytest

from schemas import RequestCosts
from tests.builders import focus_row, llm_call, outcome, write_events, write_focus_csv
from tests.compare import read_held
from tests.conftest import TODAY
from unitledger.checks.conservation import request_costs_conservation_check, single_currency_check
from unitledger.checks.validation import validate_each
from unitledger.model.requests import billed_cost_by_assigned_day, dedupe_calls, in_bucket
from unitledger.sources.events import scan_staged_calls
from unitledger.sources.focus import scan_staged_focus
from unitledger.steps.daily import DAILY_TABLES, build_daily_tables
from unitledger.steps.reconciliation import build_reconciliation
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
    assert stage_billing(layout, settings, TODAY).passed
    assert stage_events(layout).passed
    return build_daily_tables(layout, settings, start, end)


def conservation_inputs(layout):
    """What the daily step hands its conservation check, rebuilt by hand for `land`'s data: the
    FOCUS rows with a request id, one (request_id, call_date) per call, and the billing-only rows
    (only "billing-only" has no call) dated by their request."""
    billing = scan_staged_focus(layout).filter(pl.col("x_RequestId").is_not_null())
    calls = dedupe_calls(scan_staged_calls(layout)).select("request_id", "call_date")
    billing_only = billing.filter(pl.col("x_RequestId") == "billing-only").with_columns(request_date=pl.col("charge_date"))
    return billing, calls, billing_only


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
    billing, calls, billing_only = conservation_inputs(layout)
    requests = scan_table(layout, "request_costs", [DAY.isoformat()])
    args = (billing, calls, billing_only, DAY, date(2026, 3, 3), settings.bounds, buckets)
    assert request_costs_conservation_check(requests, *args).passed
    lost = request_costs_conservation_check(requests.filter(pl.col("request_id") != "r2"), *args)
    assert not lost.passed
    assert "2026-03-02 USD" in lost.description


def test_conservation_rechecks_a_hashed_mismatch_on_the_request_ids(layout, settings, monkeypatch):
    """Hashed request ids give the ids' answer on real data; a mismatch on hashes (what two ids
    sharing a hash would cause) is re-checked on the ids, and only their answer counts."""
    land(layout)
    run(layout, settings)
    billing, calls, billing_only = conservation_inputs(layout)
    requests = scan_table(layout, "request_costs", [DAY.isoformat()])
    by_ids, by_hashes = (
        billed_cost_by_assigned_day(billing, calls, billing_only, DAY, date(2026, 3, 3), settings.bounds, hashed).sort(pl.all()).collect()
        for hashed in (False, True)
    )
    assert by_ids.height > 0 and by_hashes.equals(by_ids)

    real, routes = billed_cost_by_assigned_day, []

    def colliding(billing, calls, billing_only, start, end, bounds, hashed=False):
        routes.append(hashed)
        summed = real(billing, calls, billing_only, start, end, bounds, hashed)
        # A collision moves cents to another day: here, a cent more on every day.
        return summed.with_columns(pl.col("effective_cost") + pl.lit(1)) if hashed else summed

    monkeypatch.setattr("unitledger.model.requests.billed_cost_by_assigned_day", colliding)
    args = (billing, calls, billing_only, DAY, date(2026, 3, 3), settings.bounds)
    assert request_costs_conservation_check(requests, *args).passed
    assert routes == [True, False]
    lost = request_costs_conservation_check(requests.filter(pl.col("request_id") != "r2"), *args)
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
    # Every call of `land` belongs to an intent of DAY (s2's r3 is called after midnight).
    calls = requests.filter(pl.col("session_id").is_not_null()).with_columns(intent_date=pl.lit(DAY))
    assert single_currency_check(calls.lazy(), buckets).passed
    # s2's second call (r3) billed in EUR: the intent now has two currencies.
    mixed = calls.with_columns(
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


def test_an_intent_billed_in_two_currencies_is_quarantined_naming_its_rows_and_the_rest_published(layout, settings):
    """s1's two calls are billed in USD and EUR: its calls go to the quarantine with a reason naming
    both currencies and the FOCUS files and lines; s2 is published; both requests keep their cost
    in request_costs and conservation holds. The single_currency check still fails on such an
    intent when the quarantine is bypassed."""
    write_focus_csv(layout.landing_focus / "acct-us" / "2026-03" / "export.csv", [focus_row("r1", "0.010000000000"), focus_row("r3", "0.300000000000")])
    write_focus_csv(
        layout.landing_focus / "acct-eu" / "2026-03" / "export.csv",
        [focus_row("r2", "0.020000000000", BillingAccountId="acct-eu", BillingCurrency="EUR", InvoiceId="INV-EU")],
    )
    write_events(
        layout.landing_events / "calls.jsonl",
        [llm_call("r1", "s1", "2026-03-02T10:15:00Z"), llm_call("r2", "s1", "2026-03-02T10:20:00Z"), llm_call("r3", "s2", "2026-03-02T11:00:00Z")],
    )
    result = run(layout, settings)
    assert result.passed, result.failures()
    assert read(layout, "intent_costs")["session_id"].to_list() == ["s2"]
    requests = read(layout, "request_costs").sort("request_id")
    assert requests.select("request_id", "match_status", "billing_currency", "effective_cost").rows() == [
        ("r1", "matched", "USD", Decimal("0.01")),
        ("r2", "matched", "EUR", Decimal("0.02")),
        ("r3", "matched", "USD", Decimal("0.3")),
    ]
    held = read_held(layout)["2026-03-02"].sort("source_line")
    assert held.select("source", "source_file", "source_line", "column").rows() == [
        ("events", "calls.jsonl", 1, "session_id"),
        ("events", "calls.jsonl", 2, "session_id"),
    ]
    reason = held["reason"][0]
    assert reason == held["reason"][1]
    assert "session s1 (intent of 2026-03-02) is billed in EUR and USD" in reason
    assert "EUR by acct-eu/2026-03/export.csv line 2" in reason and "USD by acct-us/2026-03/export.csv line 2" in reason
    assert held["billed_cost"].null_count() == 2  # the money stays with the requests
    assert result.tables["intent_costs"]["intents_billed_in_two_currencies"] == 1
    assert [c.name for c in result.checks["intent_costs"] if c.passed] == ["schema", "single_currency"]
    # Reconciled to the cent: each row attributed to its call, in its own currency's row.
    monthly = build_reconciliation(layout, settings, date(2026, 3, 1), date(2026, 3, 1))
    assert monthly.passed, monthly.failures()
    rec = scan_table(layout, "reconciliation", ["2026-03"]).collect()
    billed = rec.filter(pl.col("billing_account_id").is_not_null()).sort("billing_currency")
    assert billed.select("billing_currency", "attributed_cost", "delta").rows() == [("EUR", Decimal("0.02"), 0), ("USD", Decimal("0.31"), 0)]

    from unitledger.model.intents import intent_calls, intent_days, session_dates

    days = intent_days(session_dates(scan_staged_calls(layout)), settings.bounds.session_days)
    bypassed = intent_calls(scan_table(layout, "request_costs", [DAY.isoformat()]), days)
    failed = single_currency_check(bypassed)
    assert not failed.passed and "s1 (2026-03-02)" in failed.description


def _late_and_long(layout):
    """s1 calls on four consecutive days (r1..r4); r1 is billed on its day, 2 days later (its cost)
    and 3 days later (late); billing-only b is billed on 03-03, 03-04 (one request) and 03-07 (late)."""
    write_focus_csv(
        layout.landing_focus / "acct-us" / "2026-03" / "export.csv",
        [
            focus_row("r1", "0.010000000000", hour="2026-03-02T10:00:00Z"),
            focus_row("r1", "0.020000000000", hour="2026-03-04T10:00:00Z"),
            focus_row("r1", "0.040000000000", hour="2026-03-05T10:00:00Z"),
            focus_row("r2", "0.001000000000", hour="2026-03-03T10:00:00Z"),
            focus_row("r3", "0.001000000000", hour="2026-03-04T10:00:00Z"),
            focus_row("r4", "0.001000000000", hour="2026-03-05T10:00:00Z"),
            focus_row("b", "0.100000000000", hour="2026-03-03T10:00:00Z"),
            focus_row("b", "0.200000000000", hour="2026-03-04T10:00:00Z"),
            focus_row("b", "0.400000000000", hour="2026-03-07T10:00:00Z"),
        ],
    )
    write_events(
        layout.landing_events / "calls.jsonl",
        [llm_call(f"r{d - 1}", "s1", f"2026-03-0{d}T10:15:00Z") for d in (2, 3, 4, 5)] + [outcome("s1", False, "2026-03-06T09:00:00Z")],
    )


@pytest.mark.parametrize("split", ["range", "day_by_day"])
def test_late_billing_and_long_sessions_are_bounded_reported_and_the_same_in_every_split(layout, settings, split):
    _late_and_long(layout)
    days = [date(2026, 3, d) for d in range(2, 8)]
    assert stage_billing(layout, settings, TODAY).passed and stage_events(layout).passed
    results = [build_daily_tables(layout, settings, days[0], days[-1])] if split == "range" else [build_daily_tables(layout, settings, d, d) for d in days]
    assert all(r.passed for r in results), [r.failures() for r in results]
    keys = [d.isoformat() for d in days]

    requests = read(layout, "request_costs", keys).sort("request_id")
    assert requests.select("request_id", "date", "match_status", "effective_cost").rows() == [
        ("b", date(2026, 3, 3), "billing_only", Decimal("0.3")),  # its rows of 03-03 and 03-04
        ("r1", DAY, "matched", Decimal("0.03")),  # its rows of 03-02 and 03-04, not the late one
        ("r2", date(2026, 3, 3), "matched", Decimal("0.001")),
        ("r3", date(2026, 3, 4), "matched", Decimal("0.001")),
        ("r4", date(2026, 3, 5), "matched", Decimal("0.001")),
    ]
    intents = read(layout, "intent_costs", keys)
    # r1..r3 within 2 days of the first call; r4 is beyond the bound.
    assert intents.select("session_id", "date", "requests", "token_cost", "outcome").rows() == [("s1", DAY, 3, Decimal("0.032"), "failure")]
    held = read_held(layout)
    assert sorted(held) == ["2026-03-05", "2026-03-07"]
    assert held["2026-03-05"].select("source_line", "effective_cost").rows() == [(4, Decimal("0.04"))]
    assert "3 days from its request's call on 2026-03-02" in held["2026-03-05"]["reason"][0]
    assert held["2026-03-07"].select("source_line", "effective_cost").rows() == [(10, Decimal("0.4"))]
    assert "4 days after its billing-only request's first row on 2026-03-03" in held["2026-03-07"]["reason"][0]
    warned = [c for r in results for cs in r.warnings.values() for c in cs if not c.passed]
    assert ["2026-03-05: 1" in c.description for c in warned if c.name == "session_bound"] == [True]
    assert sum(c.metadata["late_billing_rows"] for c in warned if c.name == "late_billing") == 2


def test_held_rows_are_published_with_their_days_and_a_rerun_drops_what_it_no_longer_holds(layout, settings):
    """The late rows of 03-05 and 03-07 become the quarantine's partitions of those days in the same
    manifest version as the daily tables; after a corrected export without them, a re-run of the
    range leaves those partitions empty (no stale record) and the other days untouched."""
    from unitledger.warehouse.manifest import read_manifest

    _late_and_long(layout)
    assert stage_billing(layout, settings, TODAY).passed and stage_events(layout).passed
    before = read_manifest(layout).version
    assert build_daily_tables(layout, settings, DAY, date(2026, 3, 7)).passed
    published = read_manifest(layout)
    assert published.version == before + 1  # tables and held rows: one swap
    assert sorted(read_held(layout)) == ["2026-03-05", "2026-03-07"]
    assert {p for p in published.partitions("quarantine") if p.startswith("daily=")} == {f"daily=2026-03-0{d}" for d in range(2, 8)}

    export = layout.landing_focus / "acct-us" / "2026-03" / "export.csv"
    kept = [line for line in export.read_text().splitlines(keepends=True) if "2026-03-05T10:00:00Z" not in line or ",r1," not in line]
    export.write_text("".join(kept))  # r1's late row of 03-05 is gone
    assert stage_billing(layout, settings, TODAY).passed
    assert build_daily_tables(layout, settings, date(2026, 3, 5), date(2026, 3, 5)).passed
    assert sorted(read_held(layout)) == ["2026-03-07"]
