"""Hand-built OTLP JSON and the way staging will take telemetry rows in (for tests)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from unitledger.sources import events as flat_events
from unitledger.config import Telemetry

REAL_OTLP = Path(__file__).resolve().parents[2] / "shared" / "data" / "real-inputs" / "otel-genai-openai-v2" / "otlp-traces.jsonl"
if not REAL_OTLP.exists():
    REAL_OTLP = Path("/work/shared/data/real-inputs/otel-genai-openai-v2/otlp-traces.jsonl")


def attr(key: str, value) -> dict:
    """One OTLP KeyValue: str -> stringValue, bool -> boolValue, int -> intValue (as a decimal
    string, as the spec says), float -> doubleValue."""
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    if isinstance(value, float):
        return {"key": key, "value": {"doubleValue": value}}
    return {"key": key, "value": {"stringValue": value}}


def span(span_id: str = "00000000000000a1", trace_id: str = "0000000000000000000000000000000a", *, start_ns: int = 1_772_445_600_000_000_000,
         parent: str | None = None, status_code: int | None = None, events: list | None = None, **attributes) -> dict:
    """A span; keyword attributes use '__' for '.' (gen_ai__usage__input_tokens=12)."""
    record = {"traceId": trace_id, "spanId": span_id, "name": "span", "kind": 3, "startTimeUnixNano": str(start_ns),
              "endTimeUnixNano": str(start_ns + 1_000_000), "attributes": [attr(k.replace("__", "."), v) for k, v in attributes.items()],
              "status": {} if status_code is None else {"code": status_code}}
    if parent:
        record["parentSpanId"] = parent
    if events:
        record["events"] = events
    return record


def chat(span_id: str = "00000000000000a1", trace_id: str = "0000000000000000000000000000000a", **overrides) -> dict:
    """A successful chat span with the usual attributes (override or add with '__' keywords)."""
    attributes = {"gen_ai__operation__name": "chat", "gen_ai__provider__name": "openai", "gen_ai__request__model": "gpt-4o-mini",
                  "gen_ai__response__model": "gpt-4o-mini-2024-07-18", "gen_ai__response__id": f"chatcmpl-{span_id}",
                  "gen_ai__usage__input_tokens": 100, "gen_ai__usage__output_tokens": 10}
    keywords = {k: overrides.pop(k) for k in ("start_ns", "parent", "status_code", "events") if k in overrides}
    attributes.update(overrides)
    return span(span_id, trace_id, **keywords, **{k: v for k, v in attributes.items() if v is not None})


def evaluation_event(name: str = "task_success", *, time_ns: int = 1_772_449_200_000_000_000, label: str | None = None, score=None, **attributes) -> dict:
    attrs = [attr("gen_ai.evaluation.name", name)]
    if label is not None:
        attrs.append(attr("gen_ai.evaluation.score.label", label))
    if score is not None:
        attrs.append(attr("gen_ai.evaluation.score.value", score))
    attrs += [attr(k.replace("__", "."), v) for k, v in attributes.items()]
    return {"timeUnixNano": str(time_ns), "name": "gen_ai.evaluation.result", "attributes": attrs}


def log_record(event: dict, *, trace_id: str | None = None, span_id: str | None = None, event_name: str | None = "gen_ai.evaluation.result") -> dict:
    record = {"timeUnixNano": event["timeUnixNano"], "attributes": event["attributes"]}
    if event_name:
        record["eventName"] = event_name
    if trace_id:
        record["traceId"] = trace_id
    if span_id:
        record["spanId"] = span_id
    return record


def traces_line(spans: list[dict], resource: dict | None = None) -> str:
    resource_attrs = [attr(k, v) for k, v in ({"service.name": "test-service"} if resource is None else resource).items()]
    return json.dumps({"resourceSpans": [{"resource": {"attributes": resource_attrs}, "scopeSpans": [{"scope": {"name": "t"}, "spans": spans}]}]})


def logs_line(records: list[dict], resource: dict | None = None) -> str:
    resource_attrs = [attr(k, v) for k, v in ({"service.name": "evaluator"} if resource is None else resource).items()]
    return json.dumps({"resourceLogs": [{"resource": {"attributes": resource_attrs}, "scopeLogs": [{"scope": {"name": "t"}, "logRecords": records}]}]})


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))
    return path


def stage_rows(rows: pl.LazyFrame, telemetry: Telemetry = Telemetry()) -> dict[str, pl.DataFrame]:
    """Telemetry reader rows through staging's own transforms, as if they were every staged file:
    the flat format's rules and typing (flat_events.events_problems, llm_calls_typed, outcomes_typed,
    evaluations_typed), then what staging derives across files (flat_events.derive: retries,
    evaluations -> outcomes, explicit labels winning). Returns calls (attempts filled) and outcomes
    (labels and derived), typed, and the quarantined rows (`reason`)."""
    checked = flat_events.events_problems(flat_events.staged_rows(rows.collect().lazy())).collect().lazy()
    calls = flat_events.once_per_record(flat_events.llm_calls_typed(checked))
    labels = flat_events.once_per_record(flat_events.outcomes_typed(checked))
    spans = flat_events.once_per_record(flat_events.spans_typed(rows.collect().lazy()))
    derived = flat_events.derive(calls, labels, flat_events.once_per_record(flat_events.evaluations_typed(checked)), telemetry, spans)
    quarantined = pl.concat([flat_events.events_quarantine(checked), derived.unresolved])
    return {
        "calls": flat_events.with_derived(calls, derived.attempts, derived.tools).collect(),
        "outcomes": pl.concat([labels, derived.outcomes]).collect(),
        "quarantine": quarantined.select("source_file", "source_line", "reason").collect(),
    }
