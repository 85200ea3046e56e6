"""Restated and repeated deliveries: a newer delivery of a billing account and period replaces the
older one, never adds to it; events delivered twice count once. Each test builds the warehouse
twice, with and without the repetition, and compares every table."""

import os
import shutil
from datetime import date
from decimal import Decimal

import polars as pl

from tests.builders import focus_row, llm_call, outcome, write_events, write_focus_csv
from tests.compare import assert_same_tables, read_table
from tests.compare import build_with_reconciliation as build
from unitledger.layout import Layout
from unitledger.tools.generate import generate

MARCH = date(2026, 3, 1)
TABLES = ["request_costs", "intent_costs", "reconciliation", "reconciliation_daily", "token_reconciliation"]
OLD, NEW = 1_772_500_000, 1_772_600_000  # delivery modification times (seconds), OLD < NEW


def deliver(layout, folder, rows, mtime):
    path = write_focus_csv(layout.landing_focus / folder / "export.csv", rows, mtime=mtime)
    os.utime(path.parent, (mtime, mtime))
    return path


def calls(layout):
    write_events(
        layout.landing_events / "calls.jsonl",
        [llm_call("r1", "s1"), llm_call("r2", "s1", "2026-03-02T10:20:00Z"), llm_call("r3", "s2", "2026-03-03T09:00:00Z"),
         outcome("s1", True)],
    )


MONTH = [focus_row("r1", "0.010000000000"), focus_row("r2", "0.020000000000"), focus_row(None, "1.000000000000", ChargeCategory="Tax")]
RESTATED = [
    focus_row("r1", "0.012000000000"),  # re-rated
    focus_row("r3", "0.030000000000", hour="2026-03-03T09:00:00Z"),  # added; r2 dropped
    focus_row(None, "1.100000000000", ChargeCategory="Tax"),
]


def billed(layout, **where) -> Decimal:
    frame = read_table(layout, "reconciliation").filter(pl.col("billing_account_id").is_not_null(), **where)
    return sum(frame["billed_total"], Decimal(0))


def test_same_month_delivered_twice_counts_once(tmp_path, settings):
    once, twice = Layout(tmp_path / "once"), Layout(tmp_path / "twice")
    for layout in (once, twice):
        deliver(layout, "acct-us/2026-03/delivery-1", MONTH, OLD)
        calls(layout)
    deliver(twice, "acct-us/2026-03/delivery-2", MONTH, NEW)
    build(once, settings)
    build(twice, settings)
    assert_same_tables(once, twice, TABLES)
    assert billed(twice) == Decimal("1.03")


def test_updated_month_replaces_the_old_one(tmp_path, settings):
    updated, only_new = Layout(tmp_path / "updated"), Layout(tmp_path / "only-new")
    deliver(updated, "acct-us/2026-03/delivery-1", MONTH, OLD)
    calls(updated)
    build(updated, settings)  # the month as first delivered is staged and published
    assert billed(updated) == Decimal("1.03")
    deliver(updated, "acct-us/2026-03/delivery-2", RESTATED, NEW)
    build(updated, settings)
    deliver(only_new, "acct-us/2026-03/delivery-2", RESTATED, NEW)
    calls(only_new)
    build(only_new, settings)
    assert_same_tables(updated, only_new, TABLES)
    assert billed(updated) == Decimal("1.142")
    r2 = read_table(updated, "request_costs").filter(pl.col("request_id") == "r2").row(0, named=True)
    assert (r2["match_status"], r2["billed_cost"]) == ("telemetry_only", None)


def test_newer_delivery_of_one_account_keeps_the_other_accounts(layout, settings):
    eu = [focus_row("e1", "0.500000000000", BillingAccountId="acct-eu", BillingCurrency="EUR", InvoiceId="INV-EU")]
    deliver(layout, "export-1", MONTH + eu, OLD)  # one delivery folder holding both accounts
    deliver(layout, "export-2", RESTATED, NEW)  # restates acct-us only
    calls(layout)
    build(layout, settings)
    assert billed(layout, billing_account_id="acct-us") == Decimal("1.142")
    assert billed(layout, billing_account_id="acct-eu") == Decimal("0.5")


def test_newest_delivery_by_modification_time_then_folder_name(tmp_path, settings):
    by_time = Layout(tmp_path / "by-time")
    deliver(by_time, "acct-us/z-first", MONTH, NEW)  # later name, but delivered last: it counts
    deliver(by_time, "acct-us/a-second", RESTATED, OLD)
    calls(by_time)
    build(by_time, settings)
    assert billed(by_time) == Decimal("1.03")

    by_name = Layout(tmp_path / "by-name")
    deliver(by_name, "acct-us/a", MONTH, NEW)
    deliver(by_name, "acct-us/b", RESTATED, NEW)  # same time: the later folder name counts
    calls(by_name)
    build(by_name, settings)
    assert billed(by_name) == Decimal("1.142")


def test_newer_delivery_wholly_quarantined_still_replaces_the_old_one(layout, settings):
    deliver(layout, "acct-us/2026-03/delivery-1", MONTH, OLD)
    deliver(layout, "acct-us/2026-03/delivery-2", [focus_row("r1", "0.250000000000", ChargeCategory="Refund")], NEW)
    calls(layout)
    build(layout, settings)
    [row] = read_table(layout, "reconciliation").filter(pl.col("billing_account_id").is_not_null()).iter_rows(named=True)
    assert (row["billed_total"], row["quarantined_cost"], row["billing_rows"]) == (Decimal("0.25"), Decimal("0.25"), 0)
    assert read_table(layout, "request_costs")["billing_rows"].sum() == 0  # nothing of delivery-1 is left


def test_quarantined_rows_of_a_replaced_delivery_drop_out(layout, settings):
    deliver(layout, "acct-us/2026-03/delivery-1", [*MONTH, focus_row("r9", "0.070000000000", BillingCurrency="US$")], OLD)
    calls(layout)
    build(layout, settings)
    assert billed(layout, quarantined_rows=1) == Decimal("0.07")
    deliver(layout, "acct-us/2026-03/delivery-2", MONTH, NEW)  # the fixed export
    build(layout, settings)
    rec = read_table(layout, "reconciliation")
    assert rec["quarantined_rows"].sum() == 0
    assert billed(layout) == Decimal("1.03")


def test_events_delivered_twice_count_once(tmp_path, settings):
    once, twice = Layout(tmp_path / "once"), Layout(tmp_path / "twice")
    for layout in (once, twice):
        deliver(layout, "acct-us/2026-03/delivery-1", MONTH, OLD)
        calls(layout)
    events = (twice.landing_events / "calls.jsonl").read_text()
    (twice.landing_events / "calls.jsonl").write_text(events + events.splitlines(keepends=True)[0])  # same file
    (twice.landing_events / "redelivered.jsonl").write_text(events)  # and a whole second delivery
    build(once, settings)
    build(twice, settings)
    assert_same_tables(once, twice, TABLES)
    intents = read_table(twice, "intent_costs").filter(pl.col("session_id") == "s1").row(0, named=True)
    assert intents["requests"] == 2
    telemetry = read_table(twice, "reconciliation").filter(pl.col("telemetry_requests").is_not_null())
    assert telemetry["telemetry_requests"].sum() == 3


def test_generated_month_with_an_earlier_delivery_equals_the_final_one(tmp_path, settings):
    final, restated = Layout(tmp_path / "final"), Layout(tmp_path / "restated")
    generate(final.data_dir, start=MARCH, days=3, requests_per_day=150, restated_delivery=False)
    summary = generate(restated.data_dir, start=MARCH, days=3, requests_per_day=150, restated_delivery=True)
    assert len(summary.focus_files) == 4  # an earlier and a final delivery per account
    for layout in (final, restated):
        build(layout, settings, MARCH, date(2026, 3, 3))
    assert_same_tables(final, restated, TABLES)


def test_removed_delivery_leaves_staging(layout, settings):
    old = deliver(layout, "acct-us/2026-03/delivery-1", MONTH, OLD)
    deliver(layout, "acct-us/2026-03/delivery-2", RESTATED, NEW)
    calls(layout)
    build(layout, settings)
    shutil.rmtree(layout.landing_focus / "acct-us" / "2026-03" / "delivery-2")  # withdrawn
    build(layout, settings)
    assert billed(layout) == Decimal("1.03")
    assert old.exists()
