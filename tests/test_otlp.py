"""OTLP JSON traces and logs -> telemetry rows: the real instrumentation's output, the OTLP JSON
rules (hex or base64 ids, 64-bit integers as strings or numbers, gzip), evaluation results, and bad
input that must come out as rows with a reason or a refused file naming the line."""

import base64
import gzip
import json
from datetime import datetime, timezone

import polars as pl
import pytest

from unitledger.config import Telemetry
from unitledger.sources.otlp import first_bad_line, read_otlp
from unitledger.sources.telemetry_rows import ROW_FIELDS

from tests.telemetry_builders import (
    REAL_OTLP, attr, chat, evaluation_event, log_record, logs_line, span, stage_rows, traces_line, write_lines,
)


def _rows(path, telemetry=Telemetry()) -> list[dict]:
    frame = read_otlp(path, path.name, telemetry).collect()
    assert frame.columns == [*ROW_FIELDS, "source_file", "source_line"]
    assert all(t == pl.String for n, t in frame.schema.items() if n != "source_line")
    return frame.to_dicts()


def _rfc3339(nanos: int) -> str:
    """The independent route: Python's datetime, microseconds truncated."""
    return datetime.fromtimestamp(nanos // 1000 / 1e6, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_real_instrumentation_output_success_and_404():
    rows = _rows(REAL_OTLP)
    assert [r["event_type"] for r in rows] == ["llm_call", "llm_call"]
    ok, failed = rows
    assert ok["request_id"] == ok["response_id"] == "chatcmpl-ASYMQRl3A3DXL9FWCK9tnGRcKIO7q"
    assert (ok["model"], ok["model_version"], ok["provider"]) == ("gpt-4o-mini", "gpt-4o-mini-2024-07-18", "openai")
    assert (ok["input_tokens"], ok["output_tokens"], ok["cache_read_input_tokens"], ok["cache_write_input_tokens"]) == ("12", "5", "0", "0")
    assert ok["status"] == "ok" and ok["problem"] is None
    assert ok["event_id"] == ok["span_id"] == "9ccb3639db25c633"
    assert ok["trace_id"] == "119e0da8467225a411f83b23e7267e37"
    assert ok["timestamp"] == _rfc3339(1796083715873694256) == "2026-12-01T00:08:35.873694Z"
    # no session attribute: the trace is the intent; no feature attribute: the service name
    assert ok["session_id"] == "trace:119e0da8467225a411f83b23e7267e37"
    assert ok["feature_tag"] == "realdata-replay"
    assert ok["source_line"] == failed["source_line"] == 1
    # the 404: an error call without usage and without a response id
    assert failed["status"] == "error" and failed["problem"] is None
    assert (failed["input_tokens"], failed["output_tokens"]) == ("0", "0")
    assert failed["response_id"] is None and failed["request_id"] == "span:689e16378e07d0f9"
    assert failed["model"] == failed["model_version"] == "this-model-does-not-exist"


def test_real_sample_passes_the_flat_formats_rules():
    staged = stage_rows(read_otlp(REAL_OTLP, "real.jsonl", Telemetry()))
    assert staged["quarantine"].is_empty()
    calls = staged["calls"].sort("timestamp")
    assert calls["request_id"].to_list() == ["chatcmpl-ASYMQRl3A3DXL9FWCK9tnGRcKIO7q", "span:689e16378e07d0f9"]
    assert calls["input_tokens"].to_list() == [12, 0] and calls["output_tokens"].to_list() == [5, 0]
    assert calls["status"].to_list() == ["ok", "error"]
    assert calls["attempt"].to_list() == [1, 1]  # each in a trace of its own: no retry
    assert calls["timestamp"][0] == datetime(2026, 12, 1, 0, 8, 35, 873694, tzinfo=timezone.utc)


def _hex_to_base64(hex_id: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_id)).decode()


def test_base64_ids_numbers_as_numbers_and_gzip_read_the_same(tmp_path):
    line = json.loads(REAL_OTLP.read_text())
    for s in line["resourceSpans"][0]["scopeSpans"][0]["spans"]:
        s["traceId"], s["spanId"] = _hex_to_base64(s["traceId"]), _hex_to_base64(s["spanId"])
        s["startTimeUnixNano"] = int(s["startTimeUnixNano"])  # a JSON number, not a string
        for a in s["attributes"]:
            if "intValue" in a["value"]:
                a["value"]["intValue"] = int(a["value"]["intValue"])
    variant = tmp_path / "variant.jsonl.gz"
    with gzip.open(variant, "wt") as fh:
        fh.write(json.dumps(line) + "\n")
    assert line["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["spanId"] == "nMs2OdslxjM="
    expected = [{k: v for k, v in r.items() if k != "source_file"} for r in _rows(REAL_OTLP)]
    assert [{k: v for k, v in r.items() if k != "source_file"} for r in _rows(variant)] == expected


def test_attributes_old_and_new_names_cache_and_reasoning(tmp_path):
    path = write_lines(tmp_path / "t.jsonl", [traces_line([
        span("00000000000000b1", gen_ai__operation__name="text_completion", gen_ai__system="anthropic", gen_ai__request__model="claude",
             gen_ai__usage__prompt_tokens=900, gen_ai__usage__completion_tokens=40, gen_ai__usage__cache_read_input_tokens=300,
             gen_ai__usage__cache_creation__input_tokens=200),
        chat("00000000000000b2", gen_ai__usage__cache_read__input_tokens=60, gen_ai__usage__cache_write__input_tokens=30,
             gen_ai__usage__reasoning__output_tokens=7, gen_ai__response__model=None),
        span("00000000000000b3", gen_ai__operation__name="embeddings", gen_ai__provider__name="openai", gen_ai__request__model="emb",
             gen_ai__usage__input_tokens=50),
    ])])
    old, new, embed = _rows(path)
    assert (old["provider"], old["model"], old["model_version"]) == ("anthropic", "claude", "claude")
    assert (old["input_tokens"], old["output_tokens"], old["cache_read_input_tokens"], old["cache_write_input_tokens"]) == ("900", "40", "300", "200")
    assert (new["cache_read_input_tokens"], new["cache_write_input_tokens"], new["reasoning_output_tokens"]) == ("60", "30", "7")
    assert new["model_version"] == "gpt-4o-mini"  # no response model: the request model
    assert (embed["event_type"], embed["input_tokens"], embed["output_tokens"], embed["problem"]) == ("llm_call", "50", "0", None)


def test_session_feature_and_prompt_version_lookups(tmp_path):
    path = write_lines(tmp_path / "t.jsonl", [
        traces_line([
            chat("00000000000000c1", session__id="s-span", app__feature="from-span", gen_ai__agent__name="agent"),
            chat("00000000000000c2", gen_ai__agent__name="agent", app__prompt_version="v9"),
            chat("00000000000000c3", "0000000000000000000000000000000c"),
        ], resource={"service.name": "svc", "gen_ai.conversation.id": "s-resource"}),
        traces_line([chat("00000000000000c4", "0000000000000000000000000000000d")], resource={}),
    ])
    span_level, agent, resource_level, bare = _rows(path)
    # gen_ai.conversation.id comes before session.id in the list: found on the resource, it wins
    assert span_level["session_id"] == "s-resource" and span_level["feature_tag"] == "from-span"
    assert agent["feature_tag"] == "agent" and agent["prompt_version"] == "v9"
    assert resource_level["feature_tag"] == "svc"
    assert bare["session_id"] == "trace:0000000000000000000000000000000d" and bare["feature_tag"] == "untagged"
    own = _rows(path, Telemetry(session_fallback="call", session_attributes=("session.id",)))
    assert own[0]["session_id"] == "s-span"
    assert own[3]["session_id"] == "call:00000000000000c4"


def test_errors_from_status_code_or_error_type(tmp_path):
    path = write_lines(tmp_path / "t.jsonl", [traces_line([
        chat("00000000000000d1", status_code=2, gen_ai__usage__input_tokens=None, gen_ai__usage__output_tokens=None),
        chat("00000000000000d2", error__type="timeout"),
        chat("00000000000000d3", status_code=1),
    ])])
    assert [r["status"] for r in _rows(path)] == ["error", "error", "ok"]


def test_structure_spans_ignored_spans_and_span_evaluations(tmp_path):
    agent = span("00000000000000e1", gen_ai__operation__name="invoke_agent", gen_ai__agent__name="helper",
                 gen_ai__usage__input_tokens=5000, gen_ai__usage__output_tokens=500)  # totals of its children
    tool = span("00000000000000e2", parent="00000000000000e1", gen_ai__operation__name="execute_tool", gen_ai__tool__name="search")
    call = chat("00000000000000e3", parent="00000000000000e1", events=[
        {"timeUnixNano": "1772449200000000000", "name": "exception", "attributes": [attr("exception.type", "X")]},
        evaluation_event("relevance", score="0.8", time_ns=1_772_449_200_000_000_000),
        evaluation_event("user_feedback", label="fail", app__escalated=True),
    ])
    http = span("00000000000000e4", http__request__method="POST")
    path = write_lines(tmp_path / "t.jsonl", [traces_line([agent, tool, call, http])])
    rows = _rows(path)
    assert [r["event_type"] for r in rows] == ["span", "span", "llm_call", "ignored", "outcome", "outcome"]
    assert rows[0]["operation"] == "invoke_agent" and rows[0]["input_tokens"] is None  # never a call
    assert (rows[1]["operation"], rows[1]["tool_name"], rows[1]["parent_span_id"]) == ("execute_tool", "search", "00000000000000e1")
    relevance, feedback = rows[4], rows[5]
    assert (relevance["evaluation_name"], relevance["evaluation_score_value"], relevance["evaluation_score_label"]) == ("relevance", "0.8", None)
    assert (relevance["trace_id"], relevance["span_id"], relevance["parent_span_id"]) == ("0000000000000000000000000000000a", "00000000000000e3", "00000000000000e1")
    assert relevance["timestamp"] == _rfc3339(1_772_449_200_000_000_000)
    assert relevance["session_id"] is None  # resolved from the call later
    assert relevance["event_id"] == "eval:0000000000000000000000000000000a:00000000000000e3:1772449200000000000:relevance"
    assert (feedback["evaluation_score_label"], feedback["escalated"]) == ("fail", "true")


def test_log_evaluations_other_logs_and_mixed_file(tmp_path):
    strands_like = log_record(evaluation_event("Custom.Helpfulness", score="0.35", session__id="s1", log__record__uid="uid-1"),
                              trace_id="0000000000000000000000000000000a")
    old_style = log_record(evaluation_event("task_success", label="PASS", gen_ai__response__id="chatcmpl-x", event__name="gen_ai.evaluation.result"),
                           event_name=None)
    other = log_record(evaluation_event("n/a"), event_name="app.log")
    path = write_lines(tmp_path / "t.jsonl", [traces_line([chat()]), logs_line([strands_like, old_style, other])])
    rows = _rows(path)
    assert [(r["event_type"], r["source_line"]) for r in rows] == [("llm_call", 1), ("outcome", 2), ("outcome", 2), ("ignored", 2)]
    first, second = rows[1], rows[2]
    assert (first["event_id"], first["session_id"], first["evaluation_score_value"]) == ("uid-1", "s1", "0.35")
    assert first["feature_tag"] is None  # an evaluator's service.name is not the judged feature
    assert (second["response_id"], second["evaluation_score_label"], second["session_id"]) == ("chatcmpl-x", "PASS", None)


def test_bad_records_become_rows_with_reasons(tmp_path):
    lines = [
        json.dumps({"event_type": "llm_call", "event_id": "e1"}),  # a flat event in the OTLP folder
        traces_line([
            chat("00000000000000f1", gen_ai__usage__input_tokens=None),  # success without usage
            chat("00000000000000f2", gen_ai__usage__output_tokens=-5),
            chat("abc"),  # span id of the wrong length
            chat("0000000000000000"),  # all zeros: invalid
            chat("00000000000000f3", "zz"),
            chat("00000000000000f4", start_ns=0),
            chat("00000000000000f5", gen_ai__usage__cache_read__input_tokens=150),  # more cache than input
        ]),
        "",
        json.dumps({"resourceSpans": [], "resourceLogs": []}),
        logs_line([log_record(evaluation_event("judge"))]),  # no label, no score, nothing to attach to
        json.dumps({"resourceSpans": []}),  # an empty batch: nothing to report
    ]
    rows = _rows(write_lines(tmp_path / "bad.jsonl", lines))
    problems = [(r["source_line"], r["problem"]) for r in rows if r["problem"]]
    assert problems[0] == (1, "line is not an OTLP JSON batch: it has neither resourceSpans nor resourceLogs")
    assert problems[1] == (2, "span has no token usage (gen_ai.usage.input_tokens or prompt_tokens)")
    assert problems[2][1].startswith("spanId is not 16 hex digits nor base64 of 8 bytes") and problems[2][1].endswith(": abc")
    assert problems[3][1].endswith(": 0000000000000000")
    assert problems[4][1].startswith("traceId is not 32 hex digits")
    assert problems[5][1] == "time is missing or not a positive count of Unix nanoseconds: 0"
    assert problems[6][1].startswith("input tokens 100 are fewer than cache read + write (150 + 0)")
    assert problems[7] == (4, "line has both resourceSpans and resourceLogs: not one OTLP export request")
    assert problems[8][0] == 5 and "neither gen_ai.evaluation.score.label nor score.value" in problems[8][1]
    assert "names no session, span, trace or response id" in problems[8][1]
    assert len(problems) == 9 and len(rows) == 10  # nothing dropped: the negative count is for the flat rules
    negative = next(r for r in rows if r["span_id"] == "00000000000000f2")
    staged = stage_rows(pl.DataFrame([negative], schema={c: (pl.Int64 if c == "source_line" else pl.String) for c in negative}).lazy())
    assert staged["quarantine"]["reason"].to_list() == ["output_tokens is below 0: -5"]


@pytest.mark.parametrize(
    "line, where",
    [
        ("{not json", "line 2: not valid JSON"),
        (json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{"attributes": {"key": "x"}}]}]}]}),
         "line 2: resourceSpans[0].scopeSpans[0].spans[0].attributes is not a JSON array"),
        (json.dumps([1, 2]), "line 2: the line is a JSON list, not an object"),
    ],
)
def test_undecodable_line_fails_the_read_and_is_named(tmp_path, line, where):
    path = write_lines(tmp_path / "bad.jsonl", [traces_line([chat()]), line])
    with pytest.raises(pl.exceptions.PolarsError):
        read_otlp(path, path.name, Telemetry()).collect()
    assert first_bad_line(path).startswith(where)
    assert first_bad_line(write_lines(tmp_path / "good.jsonl", [traces_line([chat()])])) is None


def test_input_excluding_cache_is_added_when_configured(tmp_path):
    path = write_lines(tmp_path / "t.jsonl", [traces_line([chat(gen_ai__usage__cache_read__input_tokens=150, gen_ai__usage__cache_write__input_tokens=20)])])
    (row,) = _rows(path, Telemetry(input_excludes_cache=("otlp",)))
    assert (row["input_tokens"], row["problem"]) == ("270", None)


def test_file_name_is_data_not_a_pattern(tmp_path):
    path = write_lines(tmp_path / "traces[1]*.jsonl", [traces_line([chat()])])
    write_lines(tmp_path / "traces1x.jsonl", [traces_line([chat("00000000000000aa"), chat("00000000000000ab")])])
    assert len(_rows(path)) == 1


def test_a_repeated_attribute_key_keeps_its_first_value(tmp_path):
    call = chat()
    call["attributes"].append(attr("gen_ai.usage.input_tokens", 999))  # invalid OTLP: keys must be unique
    call["attributes"].insert(0, attr("gen_ai.request.model", "first-model"))
    (row,) = _rows(write_lines(tmp_path / "t.jsonl", [traces_line([call])]))
    assert (row["input_tokens"], row["model"]) == ("100", "first-model")


def test_search_for_span_events_sees_a_name_across_pieces(tmp_path):
    from unitledger.sources.otlp import _may_mention

    path = tmp_path / "t.jsonl"
    path.write_bytes(b"x" * 10 + b"gen_ai.evaluation.result" + b"y" * 10)
    assert all(_may_mention(path, "gen_ai.evaluation.result", piece_size=size) for size in (1, 7, 11, 20, 1000))
    path.write_bytes(b"x" * 10 + b"gen_ai.evaluation.resul" + b"y" * 10)
    assert not any(_may_mention(path, "gen_ai.evaluation.result", piece_size=size) for size in (1, 7, 11, 1000))


def test_the_bench_day_in_shards_holds_every_shards_calls_once(tmp_path):
    """otlp_bench writes a large day shard by shard into one file (the generator holds a day in
    memory): the file holds the calls of each shard, as each shard written on its own does."""
    from unitledger.tools.otlp_bench import write_otlp_day

    def calls(path):
        frame = read_otlp(path, path.name, Telemetry()).filter(pl.col("event_type") == "llm_call").collect()
        return frame["request_id"].to_list()

    sharded = calls(write_otlp_day(tmp_path / "sharded", 250, seed=7, shard_requests=100))
    shards = [calls(write_otlp_day(tmp_path / f"alone{k}", size, seed=7 + k)) for k, size in enumerate((84, 83, 83))]
    # 250 requests in 3 shards, the remainder first; each shard its own ids
    assert all(len(shard) >= 70 for shard in shards)
    assert not set(shards[0]) & set(shards[1]) and not set(shards[1]) & set(shards[2])
    assert sorted(sharded) == sorted(shards[0] + shards[1] + shards[2])
