"""Tool-call overhead from trace structure: execute_tool spans staged as structure, a call right
after one under the same parent is `after_tool_call`, and its cost lands in cost_breakdown's and
money_breakdown's tool_cost, and the report draws it. A tiny OTLP trace, every expectation
computed by hand."""

from __future__ import annotations

import re
from datetime import date, datetime, timezone
from decimal import Decimal

import polars as pl

from unitledger.steps import daily, decisions, reconciliation, report, staging

from tests.builders import focus_row, write_focus_csv
from tests.compare import read_table
from tests.conftest import TODAY
from tests.telemetry_builders import chat, span, traces_line, write_lines

DAY = date(2026, 3, 2)
T0 = 1_772_445_600_000_000_000  # 2026-03-02T10:00:00Z
S = 1_000_000_000  # one second in nanoseconds
TRACE = "0000000000000000000000000000000a"
AGENT = "00000000000000f0"


def _trace(layout) -> None:
    """An agent's loop under one invoke_agent span: chat c1 asks for a tool, the tool runs, chat c2
    sends its result back, chat c3 follows c2 (no tool between them). A second trace: chat d1 is
    its root's only call, and a tool span after it (nothing follows the tool)."""
    conversation = {"gen_ai__conversation__id": "conv-1"}
    spans = [
        span(AGENT, TRACE, start_ns=T0, gen_ai__operation__name="invoke_agent", gen_ai__agent__name="support", **conversation),
        chat("00000000000000c1", TRACE, start_ns=T0 + 1 * S, parent=AGENT, gen_ai__response__id="resp-1", **conversation),
        span("00000000000000e1", TRACE, start_ns=T0 + 2 * S, parent=AGENT, gen_ai__operation__name="execute_tool", gen_ai__tool__name="search", **conversation),
        chat("00000000000000c2", TRACE, start_ns=T0 + 3 * S, parent=AGENT, gen_ai__response__id="resp-2", **conversation),
        chat("00000000000000c3", TRACE, start_ns=T0 + 4 * S, parent=AGENT, gen_ai__response__id="resp-3", **conversation),
        chat("00000000000000d1", "0000000000000000000000000000000b", start_ns=T0 + 5 * S, gen_ai__response__id="resp-4"),
        span("00000000000000e2", "0000000000000000000000000000000b", start_ns=T0 + 6 * S, gen_ai__operation__name="execute_tool"),
    ]
    write_lines(layout.landing_otlp / "traces.jsonl", [traces_line(spans, {"service.name": "support"})])
    write_focus_csv(layout.landing_focus / "d1" / "focus.csv", [
        focus_row("resp-1", "0.10"), focus_row("resp-2", "0.30"), focus_row("resp-3", "0.05"), focus_row("resp-4", "0.07"),
    ])


def test_a_call_after_a_tool_span_is_tool_overhead_end_to_end(layout, settings):
    _trace(layout)
    assert staging.stage_billing(layout, settings, TODAY).passed
    events = staging.stage_events(layout, settings.telemetry)
    assert events.passed and events.tables["staged_events"]["spans"] == 3  # the agent and two tools
    assert daily.build_daily_tables(layout, settings, DAY, DAY).passed

    calls = dict(read_table(layout, "request_costs").select("request_id", "after_tool_call").iter_rows())
    assert calls == {"resp-1": False, "resp-2": True, "resp-3": False, "resp-4": False}

    breakdown = read_table(layout, "cost_breakdown").filter(pl.col("turns_bucket") == "2-3").row(0, named=True)
    # conv-1: c1 first turn 0.10, c2 after the tool 0.30, c3 a later turn 0.05: 0.45 in all
    assert (breakdown["first_attempt_cost"], breakdown["tool_cost"], breakdown["multi_turn_cost"]) == (Decimal("0.10"), Decimal("0.30"), Decimal("0.05"))
    assert (breakdown["tool_requests"], breakdown["token_cost"]) == (1, Decimal("0.45"))

    assert decisions.build_decision_tables(layout, settings).passed
    money = read_table(layout, "money_breakdown").row(0, named=True)  # one feature (service.name), model, currency
    # both intents: 0.45 + d1's 0.07, no labor (unlabeled); the tool overhead is c2's 0.30
    assert (money["feature_tag"], money["tool_cost"], money["total_cost"]) == ("support", Decimal("0.30"), Decimal("0.52"))
    assert money["tool_share"] == 0.30 / 0.52

    # the report's "where the money goes" chart draws it: 0.30 / 0.52 = 57.69 % of the total
    assert reconciliation.build_reconciliation(layout, settings, date(2026, 3, 1), date(2026, 3, 1)).passed
    html = report.build_report(layout, settings, now=datetime(2026, 3, 5, tzinfo=timezone.utc)).path.read_text()
    assert re.search(r'"name":"tool calls","orientation":"h","visible":true,"x":\[57\.69', html)


def test_flat_events_leave_tool_overhead_unknown(layout, settings):
    from tests.builders import llm_call, write_events

    write_events(layout.landing_events / "events.jsonl", [llm_call("r1", "s1")])
    write_focus_csv(layout.landing_focus / "d1" / "focus.csv", [focus_row("r1", "0.10")])
    assert staging.stage_billing(layout, settings, TODAY).passed
    assert staging.stage_events(layout, settings.telemetry).passed
    assert daily.build_daily_tables(layout, settings, DAY, DAY).passed
    assert read_table(layout, "request_costs")["after_tool_call"].to_list() == [None]
    breakdown = read_table(layout, "cost_breakdown").row(0, named=True)
    assert breakdown["tool_cost"] is None and breakdown["tool_requests"] is None and breakdown["first_attempt_cost"] == Decimal("0.10")


def test_a_late_evaluation_without_a_session_reruns_the_days_of_the_call_it_judges(layout, settings):
    """An evaluation log record naming only the span it judges (no session attribute), landed days
    later: the sensor finds the session through the staged call's span, so the call's day re-runs."""
    from unitledger.sources import changes
    from tests.telemetry_builders import evaluation_event, log_record, logs_line

    conversation = {"gen_ai__conversation__id": "conv-late"}
    write_lines(layout.landing_otlp / "traces.jsonl", [traces_line([chat("00000000000000c1", TRACE, start_ns=T0, **conversation)])])
    assert staging.stage_events(layout, settings.telemetry).passed
    before = changes.fingerprints(changes.landing_files(layout, settings.telemetry))
    four_days_later = T0 + 4 * 86_400 * S
    record = log_record(evaluation_event("task_success", time_ns=four_days_later, label="pass"), trace_id=TRACE, span_id="00000000000000c1")
    write_lines(layout.landing_otlp / "evaluations.jsonl", [logs_line([record])])
    found = changes.compare(before, changes.landing_files(layout, settings.telemetry))
    days = changes.affected_days(layout, found, settings.bounds, settings.telemetry).days
    assert DAY in days  # the judged call's day (its intent's), found from the span id alone
    # without the span in staging, nothing tells the day: the record names no session
    layout_without = type(layout)(layout.data_dir.parent / "empty")
    write_lines(layout_without.landing_otlp / "evaluations.jsonl", [logs_line([record])])
    found = changes.compare({}, changes.landing_files(layout_without, settings.telemetry))
    assert DAY not in changes.affected_days(layout_without, found, settings.bounds, settings.telemetry).days
