"""Content check: a file's format from its first record, and the message for a file in the wrong folder."""

import gzip
import json

import pytest

from unitledger.sources.detect import detect_format, wrong_format_message

from tests.builders import FOCUS_HEADER, focus_row, llm_call, write_events, write_focus_csv
from tests.telemetry_builders import REAL_OTLP, chat, log_record, evaluation_event, logs_line, traces_line, write_lines


def test_each_format_is_told_from_its_first_record(tmp_path):
    files = {
        "events": write_events(tmp_path / "events.jsonl", [llm_call()]),
        "otlp_traces": REAL_OTLP,
        "otlp_logs": write_lines(tmp_path / "logs.jsonl", [logs_line([log_record(evaluation_event(label="pass"))]), traces_line([chat()])]),
        "litellm": tmp_path / "spend.csv",
        "openrouter": tmp_path / "gen.jsonl",
        "helicone": tmp_path / "helicone.json",
        "focus": write_focus_csv(tmp_path / "focus.csv", [focus_row()], FOCUS_HEADER),
        "unknown": tmp_path / "notes.csv",
    }
    files["litellm"].write_text("request_id,call_type,api_key,spend,startTime\nr1,acompletion,k,0.1,2026-03-02 10:00:00\n")
    files["openrouter"].write_text(json.dumps({"data": {"id": "gen-1", "upstream_id": "chatcmpl-1", "total_cost": 0.1}}) + "\n")
    files["helicone"].write_text(json.dumps([{"request_id": "r", "request_created_at": "2026-03-02T10:00:00Z", "costUSD": 0.1}], indent=2))
    files["unknown"].write_text("a,b\n1,2\n")
    for expected, path in files.items():
        assert detect_format(path) == expected, path.name


def test_gzip_and_empty_files(tmp_path):
    path = tmp_path / "traces.jsonl.gz"
    with gzip.open(path, "wt") as fh:
        fh.write(REAL_OTLP.read_text())
    assert detect_format(path) == "otlp_traces"
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    assert detect_format(empty) == "unknown"
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"resourceSpans": [\n')
    assert detect_format(broken) == "unknown"


@pytest.mark.parametrize("expected, message", [
    (("events",), "events/otlp.jsonl: this file holds OTLP JSON traces (ExportTraceServiceRequest lines), not unitledger flat events"),
    (("otlp_traces", "otlp_logs"), None),
])
def test_wrong_folder_message_names_the_format(expected, message):
    got = wrong_format_message(REAL_OTLP, "events/otlp.jsonl", expected)
    assert got == message or (message and got.startswith(message))
