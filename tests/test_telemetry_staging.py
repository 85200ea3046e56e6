"""Staging (unitledger.steps.staging.stage_events) takes OTLP JSON and gateway logs from their landing
folders, or recognized by content in landing/events/, into the staged calls and outcomes the daily
step reads: the real instrumentation's sample, retries across files, evaluation results in another
file, bad records quarantined with file, line and reason, files in the wrong folder refused."""

from __future__ import annotations

import json
import shutil
from decimal import Decimal

import polars as pl
import pytest

from unitledger.config import Telemetry
from unitledger.sources import events
from unitledger.sources.files import InputFileError
from unitledger.steps import staging
from unitledger.warehouse.manifest import read_manifest

from tests.telemetry_builders import REAL_OTLP, chat, evaluation_event, log_record, logs_line, traces_line, write_lines

T0 = 1_772_445_600_000_000_000  # 2026-03-02T10:00:00Z
SECOND = 1_000_000_000
TRACE = "0000000000000000000000000000000a"


def _calls(layout) -> pl.DataFrame:
    return events.scan_staged_calls(layout).collect().sort("timestamp", "span_id")


def _outcomes(layout) -> pl.DataFrame:
    return events.scan_staged_outcomes(layout).collect().sort("timestamp")


def _quarantine(layout) -> pl.DataFrame:
    return read_manifest(layout).scan(layout, "quarantine").collect().sort("source_file", "source_line", "reason")


def test_real_otlp_sample_from_its_landing_folder(layout):
    (layout.landing_otlp).mkdir(parents=True)
    shutil.copy(REAL_OTLP, layout.landing_otlp / "traces.jsonl")
    result = staging.stage_events(layout)
    assert result.passed and result.tables["staged_events"]["llm_calls"] == 2
    ok, failed = _calls(layout).to_dicts()
    assert (ok["request_id"], ok["response_id"]) == ("chatcmpl-ASYMQRl3A3DXL9FWCK9tnGRcKIO7q",) * 2
    assert (ok["model"], ok["model_version"], ok["input_tokens"], ok["output_tokens"], ok["status"]) == (
        "gpt-4o-mini", "gpt-4o-mini-2024-07-18", 12, 5, "ok")
    assert (ok["source_file"], ok["source_format"], ok["trace_id"], ok["span_id"], ok["operation"]) == (
        "otlp/traces.jsonl", "otlp", "119e0da8467225a411f83b23e7267e37", "9ccb3639db25c633", "chat")
    # the 404: an error call with no tokens, attempt 1 (nothing failed before it under its parent)
    assert (failed["status"], failed["input_tokens"], failed["output_tokens"], failed["response_id"]) == ("error", 0, 0, None)
    assert ok["attempt"] == failed["attempt"] == 1


def test_otlp_recognized_by_content_in_the_events_folder(layout):
    write_lines(layout.landing_events / "spans.jsonl", [traces_line([chat("00000000000000a1", gen_ai__conversation__id="ses-1")])])
    assert staging.stage_events(layout).passed
    [call] = _calls(layout).to_dicts()
    assert (call["source_file"], call["source_format"], call["session_id"]) == ("spans.jsonl", "otlp", "ses-1")


def test_a_file_in_the_wrong_folder_is_refused_naming_its_format(layout):
    path = layout.landing_otlp / "events.jsonl"
    write_lines(path, [json.dumps({"event_type": "outcome", "event_id": "e1", "timestamp": "2026-03-02T10:00:00Z",
                                   "session_id": "s", "success": "true", "escalated": "false", "signal": "explicit"})])
    with pytest.raises(InputFileError, match=r"otlp/events.jsonl: this file holds unitledger flat events .*not OTLP JSON traces"):
        staging.stage_events(layout)


def test_otlp_metrics_among_the_events_are_refused_naming_them(layout):
    write_lines(layout.landing_events / "metrics.jsonl", [json.dumps({"resourceMetrics": []})])
    with pytest.raises(InputFileError, match=r"metrics.jsonl: this file holds OTLP JSON metrics \(not read by unitledger\), not unitledger flat events"):
        staging.stage_events(layout)


def test_retry_across_files_and_evaluation_in_a_log_file(layout):
    """A trace split across two files (a Collector rotating its file): the call after the failed one
    is attempt 2. The evaluation, in a third file, names the retried call's span: its session
    (the conversation id) gets the outcome."""
    root = chat("00000000000000f0", TRACE, start_ns=T0, gen_ai__operation__name="invoke_agent", gen_ai__conversation__id="ses-1",
                gen_ai__usage__input_tokens=None, gen_ai__usage__output_tokens=None)
    first = chat("00000000000000a1", TRACE, start_ns=T0 + SECOND, parent="00000000000000f0", status_code=2, error__type="500",
                 gen_ai__conversation__id="ses-1", gen_ai__usage__input_tokens=None, gen_ai__usage__output_tokens=None, gen_ai__response__id=None)
    retry = chat("00000000000000a2", TRACE, start_ns=T0 + 3 * SECOND, parent="00000000000000f0", gen_ai__conversation__id="ses-1")
    write_lines(layout.landing_otlp / "a.jsonl", [traces_line([root, first])])
    write_lines(layout.landing_otlp / "b.jsonl", [traces_line([retry])])
    verdict = log_record(evaluation_event("task_success", time_ns=T0 + 60 * SECOND, label="fail"), trace_id=TRACE, span_id="00000000000000a2")
    write_lines(layout.landing_otlp / "evals.jsonl", [logs_line([verdict])])
    result = staging.stage_events(layout)
    assert result.passed, result.failures()
    calls = _calls(layout)
    assert calls.select("span_id", "status", "attempt", "session_id").rows() == [
        ("00000000000000a1", "error", 1, "ses-1"), ("00000000000000a2", "ok", 2, "ses-1")]
    [outcome] = _outcomes(layout).to_dicts()
    assert (outcome["session_id"], outcome["success"], outcome["signal"], outcome["evaluation_name"], outcome["source_format"]) == (
        "ses-1", False, "implicit", "task_success", "otlp")
    assert result.tables["staged_events"]["outcomes"] == 1


def test_explicit_outcome_event_wins_over_the_evaluators(layout):
    write_lines(layout.landing_otlp / "t.jsonl", [traces_line([chat("00000000000000a1", TRACE, start_ns=T0, gen_ai__conversation__id="ses-1")])])
    verdict = log_record(evaluation_event("task_success", time_ns=T0 + 99 * SECOND, label="fail", session__id="ses-1"))
    write_lines(layout.landing_otlp / "e.jsonl", [logs_line([verdict])])
    write_lines(layout.landing_events / "labels.jsonl", [json.dumps({
        "event_type": "outcome", "event_id": "o1", "timestamp": "2026-03-02T10:00:30Z", "session_id": "ses-1",
        "success": "true", "escalated": "false", "signal": "explicit"})])
    assert staging.stage_events(layout).passed
    assert _outcomes(layout).select("session_id", "success", "source_format").rows() == [("ses-1", True, "events")]


def test_bad_records_are_quarantined_with_file_line_and_reason(layout):
    good = chat("00000000000000a1", TRACE, start_ns=T0)
    no_usage = chat("00000000000000a2", TRACE, start_ns=T0, gen_ai__usage__input_tokens=None, gen_ai__usage__output_tokens=None)
    negative = chat("00000000000000a3", TRACE, start_ns=T0, gen_ai__usage__output_tokens=-5)
    short_id = chat("00a4", TRACE, start_ns=T0)
    write_lines(layout.landing_otlp / "t.jsonl", [traces_line([good]), json.dumps({"hello": "world"}), traces_line([no_usage, negative, short_id])])
    orphan = log_record(evaluation_event("task_success", time_ns=T0, label="pass"), trace_id="000000000000000000000000000000ff", span_id="00000000000000ff")
    write_lines(layout.landing_otlp / "e.jsonl", [logs_line([orphan])])
    result = staging.stage_events(layout)
    assert result.passed and result.tables["staged_events"]["quarantined_rows"] == 5
    assert _calls(layout)["span_id"].to_list() == ["00000000000000a1"]
    assert _quarantine(layout).select("source_file", "source_line", "column", "reason").rows() == [
        ("otlp/e.jsonl", 1, "evaluation_name", "evaluation for an unknown span, response or trace: no staged call has the span, "
         "parent span, response id or trace it names, and it has no session attribute"),
        ("otlp/t.jsonl", 2, "record", "line is not an OTLP JSON batch: it has neither resourceSpans nor resourceLogs"),
        ("otlp/t.jsonl", 3, "output_tokens", "output_tokens is below 0: -5"),
        ("otlp/t.jsonl", 3, "record", "span has no token usage (gen_ai.usage.input_tokens or prompt_tokens); "
         "span has no output token count (gen_ai.usage.output_tokens or completion_tokens)"),
        ("otlp/t.jsonl", 3, "record", "spanId is not 16 hex digits nor base64 of 8 bytes (nor may it be all zeros): 00a4"),
    ]


def test_gateway_logs_keep_their_reported_cost(layout):
    path = layout.landing_gateway("litellm") / "spend.csv"
    path.parent.mkdir(parents=True)
    pl.DataFrame({
        "request_id": ["chatcmpl-1"], "call_type": ["acompletion"], "spend": ["0.000123456789"], "prompt_tokens": ["100"],
        "completion_tokens": ["10"], "startTime": ["2026-03-02 10:00:00.123"], "model": ["gpt-4o-mini-2024-07-18"],
        "model_group": ["gpt-4o-mini"], "custom_llm_provider": ["openai"], "session_id": ["ses-9"], "status": ["success"],
        "metadata": ["{}"],
    }).write_csv(path)
    assert staging.stage_events(layout).passed
    [call] = _calls(layout).to_dicts()
    assert (call["source_file"], call["source_format"], call["request_id"], call["session_id"]) == (
        "gateways/litellm/spend.csv", "litellm", "chatcmpl-1", "ses-9")
    assert (call["reported_cost"], call["reported_currency"]) == (Decimal("0.000123456789"), "USD")


def test_changed_telemetry_settings_stage_the_file_again(layout):
    write_lines(layout.landing_otlp / "t.jsonl", [traces_line([chat("00000000000000a1", TRACE, start_ns=T0, app__area="billing")])])
    assert staging.stage_events(layout).passed
    assert _calls(layout)["feature_tag"].to_list() == ["test-service"]
    by_area = Telemetry(feature_attributes=("app.area", "service.name"))
    result = staging.stage_events(layout, by_area)
    assert result.tables["staged_events"]["files_staged"] == 1
    assert _calls(layout)["feature_tag"].to_list() == ["billing"]


def test_the_summary_says_how_many_rows_of_each_file_were_quarantined(layout):
    write_lines(layout.landing_otlp / "good.jsonl", [traces_line([chat("00000000000000a1", TRACE, start_ns=T0)])])
    write_lines(layout.landing_otlp / "bad.jsonl", [json.dumps({"hello": "world"}), "{}", traces_line([chat("00000000000000a2", TRACE, start_ns=T0)])])
    write_lines(layout.landing_otlp / "worse.jsonl", [json.dumps({"hello": "world"}), "{}", "{}"])
    result = staging.stage_events(layout)
    assert result.tables["staged_events"]["quarantined_rows_by_file"] == "otlp/worse.jsonl: 3 of 3; otlp/bad.jsonl: 2 of 3"
    # worse.jsonl has nothing but quarantined rows: the run fails, naming it and its first reason
    # (bad.jsonl, with a good call, does not)
    assert not result.passed
    [failed] = [c for c in result.checks["staged_events"] if not c.passed]
    assert failed.name == "telemetry_files" and "bad.jsonl" not in failed.description
    assert "otlp/worse.jsonl: all 3 row(s) quarantined; first: line 1, record: line is not an OTLP JSON batch" in failed.description


def test_a_file_of_non_genai_spans_is_staged_with_no_calls_and_said_so(layout):
    from tests.telemetry_builders import span

    http = [span(f"00000000000000b{i}", TRACE, start_ns=T0 + i * SECOND, http__request__method="GET") for i in range(3)]
    write_lines(layout.landing_otlp / "http.jsonl", [traces_line(http)])
    write_lines(layout.landing_otlp / "good.jsonl", [traces_line([chat("00000000000000a1", TRACE, start_ns=T0)])])
    result = staging.stage_events(layout)
    assert result.passed  # not an error: an exporter's file may hold no GenAI span at all
    summary = result.tables["staged_events"]
    assert (summary["llm_calls"], summary["ignored_records"], summary["quarantined_rows"]) == (1, 3, 0)
    assert summary["files_without_genai_records"] == "otlp/http.jsonl: 3 non-GenAI record(s) ignored, 0 calls"
    assert staging.stage_events(layout).tables["staged_events"]["files_unchanged"] == 2  # staged once, not retried
