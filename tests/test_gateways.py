"""Gateway request logs -> telemetry rows: LiteLLM SpendLogs (CSV, JSON lines, JSON array),
OpenRouter generations, Helicone exports. Rows written by hand after the real schemas
(shared/data/real-inputs/*/SCHEMA.md, schema.prisma.excerpt)."""

import csv
import gzip
import json

import polars as pl
import pytest

from unitledger.config import Telemetry
from unitledger.sources.gateways import GatewayFileError, read_helicone_requests, read_litellm_spendlogs, read_openrouter_generations
from unitledger.sources.telemetry_rows import ROW_FIELDS

from tests.telemetry_builders import stage_rows

LITELLM_HEADER = [
    "request_id", "call_type", "api_key", "spend", "total_tokens", "prompt_tokens", "completion_tokens", "startTime", "endTime",
    "request_duration_ms", "completionStartTime", "model", "model_id", "model_group", "custom_llm_provider", "api_base", "user",
    "metadata", "cache_hit", "cache_key", "request_tags", "team_id", "organization_id", "end_user", "requester_ip_address",
    "messages", "response", "session_id", "status", "mcp_namespaced_tool_name", "agent_id", "proxy_server_request",
]


def _litellm_row(request_id="chatcmpl-9ZKMURhVYSi9D6r6PJ9vLcayIK0Vm", **overrides) -> dict:
    metadata = {
        "user_api_key_alias": "support-bot-key",
        "user_api_key_team_alias": "support",
        "spend_logs_metadata": {"app.feature": "support_chat", "app.prompt_version": "v4"},
        "additional_usage_values": {"cache_read_input_tokens": 800, "cache_creation_input_tokens": 100},
    }
    row = {
        "request_id": request_id, "call_type": "acompletion", "api_key": "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b",
        "spend": "0.00123456789", "total_tokens": "1250", "prompt_tokens": "1200", "completion_tokens": "50",
        "startTime": "2026-03-02 10:15:00.123", "endTime": "2026-03-02 10:15:01.456", "model": "claude-haiku-2026-01",
        "model_group": "claude-haiku", "custom_llm_provider": "anthropic", "metadata": json.dumps(metadata), "cache_hit": "False",
        "request_tags": "[]", "team_id": "team-1", "organization_id": None, "end_user": "", "messages": "{}", "response": "{}",
        "session_id": "ses-1", "status": "success",
    }
    row.update(overrides)
    return row


def _write_csv(path, header, rows):
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for row in rows:
            writer.writerow(["" if row.get(c) is None else row[c] for c in header])
    return path


def _rows(frame: pl.LazyFrame) -> list[dict]:
    collected = frame.collect()
    assert collected.columns == [*ROW_FIELDS, "source_file", "source_line"]
    return collected.sort("source_line").to_dicts()


def test_litellm_csv_export_maps_each_column(tmp_path):
    path = _write_csv(tmp_path / "spend.csv", LITELLM_HEADER, [
        _litellm_row(),
        _litellm_row("3c6d6f9e-0d4e-4a4e-9a57-8f1f0a2b1c3d", status="failure", spend="0", session_id=None, metadata="{}",
                     prompt_tokens="10", completion_tokens="0"),
    ])
    ok, failed = _rows(read_litellm_spendlogs(path, "spend.csv", Telemetry()))
    assert ok["event_id"] == ok["request_id"] == "chatcmpl-9ZKMURhVYSi9D6r6PJ9vLcayIK0Vm"
    assert (ok["timestamp"], ok["session_id"], ok["feature_tag"], ok["prompt_version"]) == ("2026-03-02 10:15:00.123", "ses-1", "support_chat", "v4")
    assert (ok["provider"], ok["model"], ok["model_version"]) == ("anthropic", "claude-haiku", "claude-haiku-2026-01")
    assert (ok["input_tokens"], ok["output_tokens"], ok["cache_read_input_tokens"], ok["cache_write_input_tokens"]) == ("1200", "50", "800", "100")
    assert (ok["reported_cost"], ok["reported_currency"], ok["status"], ok["attempt"]) == ("0.00123456789", "USD", "ok", "1")
    assert (ok["api_key_id"], ok["team_id"], ok["operation"], ok["source_format"], ok["source_line"]) == (
        "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b", "team-1", "acompletion", "litellm", 2)
    # no session, no metadata: its own intent, the default feature; status failure -> error
    assert failed["session_id"] == "call:3c6d6f9e-0d4e-4a4e-9a57-8f1f0a2b1c3d"
    assert (failed["feature_tag"], failed["status"], failed["cache_read_input_tokens"], failed["source_line"]) == ("untagged", "error", "0", 3)


def test_litellm_json_lines_array_and_gzip_agree_with_csv(tmp_path):
    rows = [_litellm_row(), _litellm_row("chatcmpl-2", metadata=json.dumps({"user_api_key_alias": "k", "spend_logs_metadata": {"app.attempt": 2}}))]
    as_json = [dict(r, metadata=json.loads(r["metadata"]), spend=float(r["spend"]), prompt_tokens=int(r["prompt_tokens"])) for r in rows]
    (tmp_path / "s.jsonl").write_text("".join(json.dumps(r) + "\n" for r in as_json))
    (tmp_path / "s.json").write_text(json.dumps(as_json, indent=2))
    with gzip.open(tmp_path / "s.jsonl.gz", "wt") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in as_json))
    _write_csv(tmp_path / "s.csv", LITELLM_HEADER, rows)
    read = {name: _rows(read_litellm_spendlogs(tmp_path / name, name, Telemetry())) for name in ("s.jsonl", "s.json", "s.jsonl.gz", "s.csv")}
    def without_place(rs):
        return [{k: v for k, v in r.items() if k not in ("source_file", "source_line")} for r in rs]
    assert without_place(read["s.jsonl"]) == without_place(read["s.json"]) == without_place(read["s.jsonl.gz"]) == without_place(read["s.csv"])
    assert read["s.jsonl"][0]["reported_cost"] == "0.00123456789"  # a JSON number, its digits kept
    assert read["s.jsonl"][1]["attempt"] == "2" and read["s.jsonl"][1]["feature_tag"] == "k"
    assert [r["source_line"] for r in read["s.json"]] == [1, 2]  # element numbers


def test_litellm_rows_pass_the_flat_rules_and_bad_values_are_quarantined(tmp_path):
    path = _write_csv(tmp_path / "spend.csv", LITELLM_HEADER, [
        _litellm_row(), _litellm_row("r2", prompt_tokens="-3"), _litellm_row("r3", startTime="yesterday"), _litellm_row("r4", status="pending"),
    ])
    staged = stage_rows(read_litellm_spendlogs(path, "spend.csv", Telemetry()))
    assert staged["calls"]["request_id"].to_list() == ["chatcmpl-9ZKMURhVYSi9D6r6PJ9vLcayIK0Vm"]
    assert staged["calls"]["input_tokens"].to_list() == [1200]
    reasons = dict(zip(staged["quarantine"]["source_line"], staged["quarantine"]["reason"], strict=True))
    assert reasons == {3: "input_tokens is below 0: -3", 4: "timestamp is not a timestamp: yesterday", 5: "status is not ok or error: pending"}


def test_litellm_missing_header_is_refused(tmp_path):
    path = tmp_path / "spend.csv"
    path.write_bytes(b"")
    with pytest.raises(GatewayFileError, match="spend.csv: line 1"):
        read_litellm_spendlogs(path, "spend.csv", Telemetry()).collect()


def test_openrouter_generation_records(tmp_path):
    record = {
        "id": "gen-1764581234-abc", "upstream_id": "chatcmpl-Xyz", "total_cost": 0.0004512, "cache_discount": -0.00001,
        "created_at": "2026-03-02T10:15:00.000Z", "model": "openai/gpt-4o-mini", "provider_name": "OpenAI", "api_type": "completions",
        "app_id": 12345, "streamed": True, "cancelled": False, "finish_reason": "stop", "native_finish_reason": "stop",
        "tokens_prompt": 1190, "tokens_completion": 48, "native_tokens_prompt": 1200, "native_tokens_completion": 50,
        "native_tokens_reasoning": 20, "native_tokens_cached": 1000, "external_user": "u-7",
    }
    cancelled = dict(record, id="gen-2", upstream_id=None, cancelled=True)
    path = tmp_path / "gen.jsonl"
    path.write_text(json.dumps({"data": record}) + "\n" + json.dumps(cancelled) + "\n")
    ok, stopped = _rows(read_openrouter_generations(path, "gen.jsonl", Telemetry()))
    assert (ok["event_id"], ok["request_id"], ok["response_id"]) == ("gen-1764581234-abc", "chatcmpl-Xyz", "chatcmpl-Xyz")
    assert (ok["input_tokens"], ok["output_tokens"], ok["cache_read_input_tokens"], ok["cache_write_input_tokens"], ok["reasoning_output_tokens"]) == (
        "1200", "50", "1000", "0", "20")
    assert (ok["reported_cost"], ok["provider"], ok["model"], ok["status"], ok["session_id"]) == ("0.0004512", "OpenAI", "openai/gpt-4o-mini", "ok", "call:gen-1764581234-abc")
    assert (ok["project_id"], ok["end_user_id"], ok["timestamp"]) == ("12345", "u-7", "2026-03-02T10:15:00.000Z")
    assert (stopped["request_id"], stopped["status"]) == ("gen-2", "error")


def test_helicone_export_with_feedback_as_outcome(tmp_path):
    row = {
        "request_id": "5f1c-req", "response_id": "9a2b-resp", "request_created_at": "2026-03-02T10:15:00.000Z", "response_status": 200,
        "provider": "ANTHROPIC", "request_model": "claude-haiku", "response_model": "claude-haiku-2026-01", "prompt_tokens": 1200,
        "completion_tokens": 50, "prompt_cache_read_tokens": 800, "prompt_cache_write_tokens": 100, "costUSD": 0.0021,
        "request_properties": {"Helicone-Session-Id": "ses-9", "app.feature": "support_chat"},
        "response_body": {"id": "msg_01ABC", "content": [{"type": "text", "text": "never read"}]},
        "feedback_id": "fb-1", "feedback_created_at": "2026-03-02T11:00:00.000Z", "feedback_rating": False,
    }
    failed = dict(row, request_id="6e-req", response_status=429, response_body=None, feedback_rating=None, request_properties=None)
    path = tmp_path / "helicone.json"
    path.write_text(json.dumps([row, failed]))
    rows = _rows(read_helicone_requests(path, "helicone.json", Telemetry()))
    call, feedback, throttled = sorted(rows, key=lambda r: (r["source_line"], r["event_type"]))
    assert (call["event_id"], call["request_id"], call["response_id"], call["session_id"], call["feature_tag"]) == ("5f1c-req", "msg_01ABC", "msg_01ABC", "ses-9", "support_chat")
    assert (call["provider"], call["model"], call["model_version"], call["reported_cost"], call["status"]) == ("anthropic", "claude-haiku", "claude-haiku-2026-01", "0.0021", "ok")
    assert (call["cache_read_input_tokens"], call["cache_write_input_tokens"]) == ("800", "100")
    assert (feedback["event_type"], feedback["event_id"], feedback["session_id"], feedback["success"], feedback["signal"], feedback["timestamp"]) == (
        "outcome", "feedback:fb-1", "ses-9", "false", "explicit", "2026-03-02T11:00:00.000Z")
    assert (throttled["request_id"], throttled["status"], throttled["session_id"]) == ("6e-req", "error", "call:6e-req")
    staged = stage_rows(read_helicone_requests(path, "helicone.json", Telemetry()))
    assert staged["quarantine"].is_empty()
    assert staged["outcomes"].select("session_id", "success", "signal").rows() == [("ses-9", False, "explicit")]


def test_array_element_that_is_not_an_object_is_a_row_with_a_reason(tmp_path):
    path = tmp_path / "gen.json"
    path.write_text(json.dumps([{"id": "gen-1", "created_at": "2026-03-02T10:00:00Z", "native_tokens_prompt": 1, "native_tokens_completion": 1}, 42]))
    rows = _rows(read_openrouter_generations(path, "gen.json", Telemetry()))
    assert [r["problem"] for r in rows] == [None, "record is not a JSON object"]
