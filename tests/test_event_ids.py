"""At-least-once delivery by event_id: an event delivered twice counts once even when its copies
differ (another request id, another label), wherever the copies landed; the copy kept is the first by
(file path, line). The request-id rule still holds for distinct events of one request."""

from datetime import date
from decimal import Decimal

import polars as pl

from tests.builders import focus_row, llm_call, outcome, write_events, write_focus_csv
from tests.conftest import TODAY
from unitledger.model.requests import duplicate_event_rows
from unitledger.sources.events import scan_staged_calls, scan_staged_outcomes
from unitledger.steps.daily import build_daily_tables
from unitledger.steps.staging import stage_billing, stage_events
from unitledger.warehouse.manifest import scan_table

DAY = date(2026, 3, 2)


def _build(layout, settings, start=DAY, end=DAY):
    assert stage_billing(layout, settings, TODAY).passed
    assert stage_events(layout).passed
    result = build_daily_tables(layout, settings, start, end)
    assert result.passed, result.failures()


def _read(layout, table, days=(DAY.isoformat(),)):
    return scan_table(layout, table, list(days)).collect()


def test_a_call_event_delivered_twice_with_another_request_id_counts_once(layout, settings):
    write_focus_csv(layout.landing_focus / "acct" / "d1" / "export.csv", [focus_row("r1", "0.01"), focus_row("r2", "0.02")])
    # e-1 first in a.jsonl (line 2), again in b.jsonl (line 1) with another request id, a day later.
    write_events(layout.landing_events / "a.jsonl", [llm_call("r2", "s2", event_id="e-2"), llm_call("r1", "s1", event_id="e-1")])
    write_events(layout.landing_events / "b.jsonl", [llm_call("r9", "s1", "2026-03-03T09:00:00Z", event_id="e-1")])
    _build(layout, settings, DAY, date(2026, 3, 3))
    calls = scan_staged_calls(layout).sort("event_id").collect()
    assert calls.select("event_id", "request_id", "source_file", "source_line").rows() == [
        ("e-1", "r1", "a.jsonl", 2), ("e-2", "r2", "a.jsonl", 1)
    ]
    requests = pl.concat([_read(layout, "request_costs", [d]) for d in ("2026-03-02", "2026-03-03")])
    assert requests.sort("request_id").select("request_id", "match_status").rows() == [("r1", "matched"), ("r2", "matched")]
    s1 = _read(layout, "intent_costs").filter(pl.col("session_id") == "s1").row(0, named=True)
    assert (s1["requests"], s1["token_cost"]) == (1, Decimal("0.01"))


def test_the_first_copy_by_path_and_line_is_kept_whichever_file_landed_first(layout, settings):
    # The copy in the file whose path sorts first wins, not the file staged first: re-runs and
    # re-stagings keep the same row.
    write_events(layout.landing_events / "z.jsonl", [llm_call("r-z", "s1", event_id="e-1")])
    assert stage_events(layout).passed
    assert scan_staged_calls(layout).collect()["request_id"].to_list() == ["r-z"]
    write_events(layout.landing_events / "m" / "late.jsonl", [llm_call("r-m", "s1", event_id="e-1")])
    assert stage_events(layout).passed
    assert scan_staged_calls(layout).collect()["request_id"].to_list() == ["r-m"]  # "m/late.jsonl" < "z.jsonl"
    (layout.landing_events / "m" / "late.jsonl").unlink()
    assert stage_events(layout).passed
    assert scan_staged_calls(layout).collect()["request_id"].to_list() == ["r-z"]


def test_an_outcome_delivered_twice_with_another_label_counts_once(layout, settings):
    write_focus_csv(layout.landing_focus / "acct" / "d1" / "export.csv", [focus_row("r1"), focus_row("r2")])
    write_events(
        layout.landing_events / "a.jsonl",
        [llm_call("r1", "s1"), llm_call("r2", "s2"), outcome("s1", True, "2026-03-02T12:00:00Z", event_id="o-1")],
    )
    # o-1 again: a later label that would otherwise win as the session's latest, and the same id
    # labelling another session, which would otherwise be labelled.
    write_events(
        layout.landing_events / "b.jsonl",
        [outcome("s1", False, "2026-03-02T18:00:00Z", event_id="o-1"), outcome("s2", False, "2026-03-02T18:00:00Z", event_id="o-1")],
    )
    _build(layout, settings)
    assert scan_staged_outcomes(layout).select("event_id", "session_id", "success").collect().rows() == [("o-1", "s1", True)]
    intents = _read(layout, "intent_costs").sort("session_id")
    assert intents.select("session_id", "outcome").rows() == [("s1", "success"), ("s2", "unlabeled")]


def test_an_event_id_shared_by_a_call_and_an_outcome_counts_once(layout):
    write_events(layout.landing_events / "a.jsonl", [llm_call("r1", "s1", event_id="x-1"), outcome("s1", True, event_id="x-1")])
    assert stage_events(layout).passed
    assert scan_staged_calls(layout).collect()["event_id"].to_list() == ["x-1"]
    assert scan_staged_outcomes(layout).collect().is_empty()


def test_duplicate_event_rows_are_every_copy_but_the_first():
    rows = pl.LazyFrame(
        {
            "event_id": ["e1", "e1", "e1", "e2", "e3", "e3"],
            "source_file": ["b.jsonl", "a.jsonl", "a.jsonl", "a.jsonl", "x/y.jsonl", "x.jsonl"],
            "source_line": [1, 10, 9, 1, 1, 7],
        }
    )
    later = duplicate_event_rows(rows).sort(pl.all()).collect()
    assert later.rows() == [("e1", "a.jsonl", 10), ("e1", "b.jsonl", 1), ("e3", "x/y.jsonl", 1)]


def test_distinct_events_of_one_request_still_count_once(layout, settings):
    write_focus_csv(layout.landing_focus / "acct" / "d1" / "export.csv", [focus_row("r1", "0.01")])
    write_events(layout.landing_events / "a.jsonl", [llm_call("r1", "s1", event_id="e-1"), llm_call("r1", "s1", event_id="e-2")])
    _build(layout, settings)
    requests = _read(layout, "request_costs")
    assert requests.select("request_id", "effective_cost").rows() == [("r1", Decimal("0.01"))]
    assert _read(layout, "intent_costs")["requests"].to_list() == [1]


def test_a_copy_landing_elsewhere_rebuilds_the_day_of_the_copy_it_displaces(layout, settings):
    from unitledger.sources import changes

    write_events(layout.landing_events / "z.jsonl", [llm_call("r-z", "s1", "2026-03-05T10:00:00Z", event_id="e-1")])
    assert stage_events(layout).passed
    before = changes.fingerprints(changes.landing_files(layout))
    # A redelivery of e-1 dated five days later, in a file whose path sorts first: it now counts, and
    # the copy of March 5 no longer does, so March 5's partitions change too.
    write_events(layout.landing_events / "a.jsonl", [llm_call("r-a", "s9", "2026-03-10T10:00:00Z", event_id="e-1")])
    found = changes.compare(before, changes.landing_files(layout))
    days = changes.affected_days(layout, found, settings.bounds).days
    assert {date(2026, 3, d) for d in (4, 5, 6, 9, 10, 11)} <= days
