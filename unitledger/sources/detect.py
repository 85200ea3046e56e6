"""Which input format a landing file holds, from its first record: so a file in the wrong folder
gets a message naming what it is instead of a quarantine full of "is required but empty"."""

from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path

FORMATS = {
    "events": "unitledger flat events (JSON lines with event_type)",
    "otlp_traces": "OTLP JSON traces (ExportTraceServiceRequest lines)",
    "otlp_logs": "OTLP JSON logs (ExportLogsServiceRequest lines)",
    "otlp_metrics": "OTLP JSON metrics (not read by unitledger)",
    "litellm": "a LiteLLM SpendLogs export",
    "openrouter": "OpenRouter generation records",
    "helicone": "a Helicone request export",
    "focus": "a FOCUS cost and usage export",
    "unknown": "no format unitledger knows",
}
_FIRST_RECORD_LIMIT = 64 << 20  # an OTLP batch line can be large; enough for any first record


def detect_format(path: Path) -> str:
    """One of FORMATS' keys, from the first record of `path` (JSON line, first element of a JSON
    array, CSV header or Parquet schema; gzip too). Unreadable or empty files are "unknown": the
    reader reports what is wrong with them."""
    try:
        keys = _first_record_keys(path)
    except (OSError, EOFError, ValueError, UnicodeDecodeError):
        return "unknown"
    return classify(keys) if keys is not None else "unknown"


def wrong_format_message(path: Path, shown_as: str, expected: tuple[str, ...]) -> str | None:
    """A message when `path` (named `shown_as`) holds none of the `expected` formats, naming the
    format it holds; None when it is one of them or cannot be told."""
    found = detect_format(path)
    if found in expected or found == "unknown":
        return None
    wanted = " or ".join(FORMATS[e] for e in expected)
    return f"{shown_as}: this file holds {FORMATS[found]}, not {wanted}: move it to the folder of its format"


def classify(keys: set[str]) -> str:
    """The format of a record with these top-level keys (column names)."""
    if "resourceSpans" in keys:
        return "otlp_traces"
    if "resourceLogs" in keys:
        return "otlp_logs"
    if "resourceMetrics" in keys:
        return "otlp_metrics"
    if "event_type" in keys:
        return "events"
    if {"BilledCost", "ChargePeriodStart"} <= keys:
        return "focus"
    if "spend" in keys and ("startTime" in keys or "request_id" in keys):
        return "litellm"
    if "upstream_id" in keys or "native_tokens_prompt" in keys or {"total_cost", "provider_name"} <= keys:
        return "openrouter"
    if keys & {"request_created_at", "costUSD", "request_properties", "prompt_cache_read_tokens"} or {"response_status", "prompt_tokens"} <= keys:
        return "helicone"
    return "unknown"


def _first_record_keys(path: Path) -> set[str] | None:
    name = path.name.lower()
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        return set(pq.read_schema(path).names)
    opener = gzip.open if name.endswith(".gz") else open
    with opener(path, "rb") as fh:
        head = fh.read(1 << 16)
        stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
        if not stripped:
            return None
        if stripped[:1] == b"{":
            line = (head + fh.readline(_FIRST_RECORD_LIMIT)).lstrip(b"\xef\xbb\xbf \t\r\n").split(b"\n", 1)[0]
            return _object_keys(json.loads(line))
        if stripped[:1] == b"[":
            text = (head + fh.read(_FIRST_RECORD_LIMIT)).decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")[1:].lstrip()
            first, _ = json.JSONDecoder().raw_decode(text)
            return _object_keys(first)
        header = head.decode("utf-8-sig").splitlines()[0]
        return set(next(csv.reader(io.StringIO(header))))


def _object_keys(value: object) -> set[str] | None:
    if not isinstance(value, dict):
        return None
    data = value.get("data")
    if isinstance(data, dict) and len(value) <= 2:  # an API response saved whole: {"data": {...}}
        return set(data)
    return set(value)
