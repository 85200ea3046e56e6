"""OTLP JSON traces and logs (the OpenTelemetry Collector's file exporter) -> telemetry rows.

One line = one ExportTraceServiceRequest or ExportLogsServiceRequest (both may share a file, as
when one file exporter serves both pipelines); .json / .jsonl, gzip too. The whole line is decoded
once with an explicit type (Polars json_decode), exploded down to spans and log records, and every
attribute read is a lookup in the record's key/value list: no Python per record, and the file is
streamed (a batch line at a time), never held whole.

Mapping (docs/telemetry-sources.md has the full table):
- a span whose gen_ai.operation.name is chat, text_completion, generate_content or embeddings is an
  `llm_call`: event_id = span id; request_id = the first of Telemetry.request_id_attributes
  (gen_ai.response.id), else "span:<span id>" (an error response has none, nor does a failed
  connection); provider = gen_ai.provider.name, else gen_ai.system; model = request model, else
  response model; model_version = response model (the snapshot that answered), else request
  model; tokens from gen_ai.usage.* new and old names (cache read/write are part of input, reasoning
  of output); status error when status.code is 2 or error.type is set; timestamp =
  startTimeUnixNano; attempt from Telemetry.attempt_attributes, else null (inferred later by
  model.telemetry.infer_attempts); session, feature and prompt version from the configured
  attribute lists (span first, then resource); a call without a session: "trace:<trace id>" or,
  with session_fallback = "call", "call:<span id>";
- any other gen_ai.operation.name (invoke_agent, execute_tool, create_agent, ...) is a `span`
  row: structure, kept with its ids, operation, tool name, session and feature; usage on it
  (agents report totals of their children) is never counted;
- a `gen_ai.evaluation.result` span event or log record (eventName, or the older event.name
  attribute) is an `outcome` row with the evaluation fields; its session is its own session
  attribute if any, else resolved from the calls it points at (model.telemetry.evaluation_outcomes);
  event_id = log.record.uid if present, else "eval:<trace>:<span>:<time>:<evaluator>";
- spans without gen_ai.operation.name and other log records are `ignored` rows (counted);
- ids in hex or base64 (converted to hex), 64-bit integers as strings or numbers, unknown fields
  ignored. A line that is valid JSON but not an OTLP batch, a call without usage, an id of the
  wrong length, a missing start time: a row with the reason in `problem`. A line that is not JSON,
  or whose fields have the wrong JSON types, makes the read fail: `first_bad_line` names it.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import polars as pl

from unitledger.config import Telemetry
from unitledger.sources.telemetry_rows import digits, finish_rows

SOURCE_FORMAT = "otlp"
CALL_OPERATIONS = ("chat", "text_completion", "generate_content", "embeddings")
EVALUATION_EVENT = "gen_ai.evaluation.result"
STATUS_ERROR = ("2", "STATUS_CODE_ERROR")  # use_integers_for_enums, or protobuf's enum names

_VALUE = pl.Struct({"stringValue": pl.String, "intValue": pl.String, "doubleValue": pl.String, "boolValue": pl.String})
_ATTRIBUTES = pl.List(pl.Struct({"key": pl.String, "value": _VALUE}))
_STATUS = pl.Struct({"code": pl.String})
# Spans and log records decode into one record type (the fields of the other signal stay null), so
# scopeSpans/scopeLogs and spans/logRecords are one list type and both signals one pipeline.
# Span events are not decoded here: see _span_evaluations.
_RECORD = pl.Struct(
    {
        "traceId": pl.String, "spanId": pl.String, "parentSpanId": pl.String,
        "startTimeUnixNano": pl.String, "timeUnixNano": pl.String, "observedTimeUnixNano": pl.String,
        "eventName": pl.String, "attributes": _ATTRIBUTES, "status": _STATUS,
    }
)


def _line_type(record: pl.Struct) -> pl.Struct:
    scope = pl.Struct({"spans": pl.List(record), "logRecords": pl.List(record)})
    resource = pl.Struct({"resource": pl.Struct({"attributes": _ATTRIBUTES}), "scopeSpans": pl.List(scope), "scopeLogs": pl.List(scope)})
    return pl.Struct({"resourceSpans": pl.List(resource), "resourceLogs": pl.List(resource)})


LINE_TYPE = _line_type(_RECORD)
_EVENTS = pl.List(pl.Struct({"timeUnixNano": pl.String, "name": pl.String, "attributes": _ATTRIBUTES}))
_EVENTS_LINE_TYPE = _line_type(pl.Struct({"traceId": pl.String, "spanId": pl.String, "parentSpanId": pl.String, "events": _EVENTS}))

_INPUT = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")
_OUTPUT = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")
_CACHE_READ = ("gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens")
_CACHE_WRITE = ("gen_ai.usage.cache_write.input_tokens", "gen_ai.usage.cache_creation.input_tokens", "gen_ai.usage.cache_creation_input_tokens")
_REASONING = ("gen_ai.usage.reasoning.output_tokens",)
_FIXED_KEYS = (
    "gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.system", "gen_ai.request.model", "gen_ai.response.model",
    "gen_ai.response.id", "error.type", "gen_ai.tool.name", "event.name", "log.record.uid",
    "gen_ai.evaluation.name", "gen_ai.evaluation.score.value", "gen_ai.evaluation.score.label",
    *_INPUT, *_OUTPUT, *_CACHE_READ, *_CACHE_WRITE, *_REASONING,
)


def read_otlp(path: Path, source_file: str, telemetry: Telemetry) -> pl.LazyFrame:
    """Rows (telemetry_rows.ROW_FIELDS) of one OTLP JSON file: one per span, span evaluation
    event and log record, and one per line that is not an OTLP batch."""
    lines = pl.scan_lines(path, name="_json", glob=False).with_row_index("source_line", offset=1)
    resource_keys = _context_keys(telemetry)
    records = (
        _records(lines.filter(pl.col("_json").str.strip_chars() != ""), LINE_TYPE, resource_keys)
        .select(
            "source_line", "_signal", "_line_problem", "_res", "traceId", "spanId", "parentSpanId", "status",
            kind=pl.lit("record"),
            time=pl.coalesce("startTimeUnixNano", "timeUnixNano", "observedTimeUnixNano"),
            name="eventName",
            attributes="attributes",
        )
    )
    items = pl.concat([records, _span_evaluations(lines, resource_keys)]) if _may_mention(path, EVALUATION_EVENT) else records
    record_keys = tuple(dict.fromkeys(_FIXED_KEYS + resource_keys))
    mapped = _with_lookup(items, "attributes", record_keys, "_attrs").drop("attributes")
    return finish_rows(_rows(mapped, telemetry), source_file)


def _records(lines: pl.LazyFrame, line_type: pl.Struct, resource_keys: tuple[str, ...]) -> pl.LazyFrame:
    """One row per span or log record of the decoded `lines` (unnested), with `_signal` (traces or
    logs), `_res` (the resource's attributes of `resource_keys`) and `_line_problem`; a line that
    is not an OTLP batch is one row with its problem and no record."""
    line = pl.col("_line")
    spans, logs = line.struct.field("resourceSpans"), line.struct.field("resourceLogs")
    kept = pl.col("_line_problem").is_not_null()  # an empty batch, resource or scope has no records: no row
    return (
        lines.select("source_line", _line=pl.col("_json").str.json_decode(line_type))
        .select(
            "source_line",
            _signal=pl.when(spans.is_not_null()).then(pl.lit("traces")).when(logs.is_not_null()).then(pl.lit("logs")),
            _line_problem=pl.when(spans.is_null() & logs.is_null())
            .then(pl.lit("line is not an OTLP JSON batch: it has neither resourceSpans nor resourceLogs"))
            .when(spans.is_not_null() & logs.is_not_null())
            .then(pl.lit("line has both resourceSpans and resourceLogs: not one OTLP export request")),
            _resource=pl.when(spans.is_null() | logs.is_null()).then(pl.coalesce(spans, logs)),
        )
        .explode("_resource")
        .filter(pl.col("_resource").is_not_null() | kept)
        .with_columns(
            _resource_attributes=pl.col("_resource").struct.field("resource").struct.field("attributes"),
            _scope=pl.coalesce(pl.col("_resource").struct.field("scopeSpans"), pl.col("_resource").struct.field("scopeLogs")),
        )
        .drop("_resource")
        .pipe(_with_lookup, "_resource_attributes", resource_keys, "_res")
        .drop("_resource_attributes")
        .explode("_scope")
        .filter(pl.col("_scope").is_not_null() | kept)
        .with_columns(_record=pl.coalesce(pl.col("_scope").struct.field("spans"), pl.col("_scope").struct.field("logRecords")))
        .drop("_scope")
        .explode("_record")
        .filter(pl.col("_record").is_not_null() | kept)
        .unnest("_record")
    )


def _may_mention(path: Path, text: str, piece_size: int = 16 << 20) -> bool:
    """False only when an uncompressed file surely does not contain `text`: one search through
    it, a piece at a time, far cheaper than a second scan of its lines; a gzip file may."""
    if path.name.lower().endswith(".gz"):
        return True
    needle = text.encode()
    tail = b""
    with open(path, "rb") as fh:
        while piece := fh.read(piece_size):
            seen = tail + piece
            if needle in seen:
                return True
            tail = seen[max(0, len(seen) - len(needle) + 1) :]  # a match may start here and end in the next piece
    return False


def _span_evaluations(lines: pl.LazyFrame, resource_keys: tuple[str, ...]) -> pl.LazyFrame:
    """gen_ai.evaluation.result span events, a row each with their span's ids. Only the lines
    that mention the event name are decoded (again): spans carry no events in most files, and
    decoding every span's events would slow every file down for their sake."""
    el = pl.element()
    mentioning = lines.filter(pl.col("_json").str.contains(EVALUATION_EVENT, literal=True))
    return (
        _records(mentioning, _EVENTS_LINE_TYPE, resource_keys)
        .filter((pl.col("_signal") == "traces") & pl.col("_line_problem").is_null())
        .with_columns(pl.col("events").list.eval(el.filter(el.struct.field("name") == EVALUATION_EVENT)))
        .explode("events")
        .filter(pl.col("events").is_not_null())
        .select(
            "source_line", "_signal", "_line_problem", "_res", "traceId", "spanId", "parentSpanId",
            status=pl.lit(None, _STATUS),
            kind=pl.lit("event"),
            time=pl.col("events").struct.field("timeUnixNano"),
            name=pl.col("events").struct.field("name"),
            attributes=pl.col("events").struct.field("attributes"),
        )
    )


def _context_keys(telemetry: Telemetry) -> tuple[str, ...]:
    return tuple(
        dict.fromkeys(
            telemetry.session_attributes + telemetry.feature_attributes + telemetry.prompt_version_attributes
            + telemetry.request_id_attributes + telemetry.attempt_attributes + telemetry.escalated_attributes
        )
    )


def _with_lookup(frame: pl.LazyFrame, attributes: str, keys: tuple[str, ...], name: str) -> pl.LazyFrame:
    """`frame` with column `name`: a struct with the first value (as text) of each of `keys` in
    the OTLP attribute list `attributes`. The list is first cut to the wanted keys, each as a small
    integer (one pass over the keys' text, kept as a column: an expression used twice is computed
    twice), so each key's lookup compares integers."""
    el = pl.element()
    value = el.struct.field("value")
    text = pl.coalesce(value.struct.field(f) for f in ("stringValue", "intValue", "doubleValue", "boolValue"))
    slot = el.struct.field("key").replace_strict({key: i for i, key in enumerate(keys)}, default=None, return_dtype=pl.UInt8)
    wanted = pl.col(attributes).list.eval(pl.struct(_slot=slot, _text=text)).list.eval(el.filter(el.struct.field("_slot").is_not_null()))
    first = {key: pl.col("_wanted").list.eval(el.filter(el.struct.field("_slot") == i).struct.field("_text")).list.first() for i, key in enumerate(keys)}
    return frame.with_columns(_wanted=wanted).with_columns(pl.struct(**first).alias(name)).drop("_wanted")


def _attr(*keys: str, resource: bool = False) -> pl.Expr:
    """The first of `keys` present on the record (then on its resource, when `resource`)."""
    columns = []
    for key in keys:
        columns.append(pl.col("_attrs").struct.field(key))
        if resource:
            columns.append(pl.col("_res").struct.field(key))
    return pl.coalesce(columns) if columns else pl.lit(None, pl.String)


def normalize_id(text: pl.Expr, n_bytes: int) -> pl.Expr:
    """An OTLP id as lowercase hex: hex as is, base64 (protobuf's generic JSON) decoded; null when
    it is neither, all zeros (invalid) or empty (absent)."""
    width = 2 * n_bytes
    is_hex = text.str.contains(f"^[0-9a-fA-F]{{{width}}}$")
    # decoded only where it is not hex: the rest are nulls, which cost the decoder nothing
    decoded = pl.when(~is_hex).then(text).str.decode("base64", strict=False).bin.encode("hex")
    hex_id = pl.when(is_hex).then(text.str.to_lowercase()).when(decoded.str.len_bytes() == width).then(decoded)
    return pl.when(hex_id != "0" * width).then(hex_id)


def _id_problem(raw: pl.Expr, normalized: pl.Expr, name: str, n_bytes: int) -> pl.Expr:
    present = raw.is_not_null() & (raw != "")
    return pl.when(present & normalized.is_null()).then(
        pl.lit(f"{name} is not {2 * n_bytes} hex digits nor base64 of {n_bytes} bytes (nor may it be all zeros): ") + raw.str.slice(0, 48)
    )


def _time_text(nanos: pl.Expr) -> pl.Expr:
    """Unix nanoseconds (text) as the flat format's RFC 3339 text, microseconds, UTC."""
    value = nanos.str.strip_chars().str.to_integer(strict=False)
    return pl.when(value > 0).then(pl.from_epoch(value // 1000, time_unit="us").dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ"))


def _rows(mapped: pl.LazyFrame, telemetry: Telemetry) -> pl.LazyFrame:
    traces = pl.col("_signal") == "traces"
    operation = _attr("gen_ai.operation.name")
    is_event = pl.col("kind") == "event"
    is_record = pl.col("kind") == "record"
    log_event = pl.coalesce(pl.col("name"), _attr("event.name"))
    is_call = traces & is_record & operation.is_in(CALL_OPERATIONS)
    is_evaluation = is_event | (~traces & is_record & (log_event == EVALUATION_EVENT))
    is_structure = traces & is_record & operation.is_not_null() & ~operation.is_in(CALL_OPERATIONS)
    event_type = (
        pl.when(pl.col("_line_problem").is_not_null()).then(pl.lit(None, pl.String))
        .when(is_call).then(pl.lit("llm_call"))
        .when(is_evaluation).then(pl.lit("outcome"))
        .when(is_structure).then(pl.lit("span"))
        .otherwise(pl.lit("ignored"))
    )
    mapped = mapped.with_columns(
        _trace=normalize_id(pl.col("traceId"), 16),
        _span=normalize_id(pl.col("spanId"), 8),
        _parent=normalize_id(pl.col("parentSpanId"), 8),
        event_type=event_type,
    )
    call = pl.col("event_type") == "llm_call"
    evaluation = pl.col("event_type") == "outcome"
    spanlike = pl.col("event_type").is_in(["llm_call", "span"])
    error = pl.col("status").struct.field("code").is_in(STATUS_ERROR).fill_null(False) | _attr("error.type").is_not_null()

    def tokens(keys: tuple[str, ...]) -> pl.Expr:
        return digits(_attr(*keys))

    excludes_cache = SOURCE_FORMAT in telemetry.input_excludes_cache
    input_text, output_text = tokens(_INPUT), tokens(_OUTPUT)
    cache_read, cache_write = tokens(_CACHE_READ).fill_null("0"), tokens(_CACHE_WRITE).fill_null("0")
    as_int = lambda t: t.str.to_integer(strict=False)  # noqa: E731 - for the cache check only
    if excludes_cache:
        input_text = (as_int(input_text) + as_int(cache_read) + as_int(cache_write)).cast(pl.String).fill_null(input_text)
    embeddings = _attr("gen_ai.operation.name") == "embeddings"
    session = _attr(*telemetry.session_attributes, resource=True)
    fallback_session = pl.lit("trace:") + pl.col("_trace") if telemetry.session_fallback == "trace" else pl.lit("call:") + pl.col("_span")
    request_id = _attr(*telemetry.request_id_attributes)
    record_time = _time_text(pl.col("time"))
    evaluator = _attr("gen_ai.evaluation.name")
    problems = [
        pl.col("_line_problem"),
        pl.when(pl.col("event_type").is_in(["llm_call", "span", "outcome"])).then(
            pl.coalesce(
                _id_problem(pl.col("traceId"), pl.col("_trace"), "traceId", 16),
                _id_problem(pl.col("spanId"), pl.col("_span"), "spanId", 8),
                _id_problem(pl.col("parentSpanId"), pl.col("_parent"), "parentSpanId", 8),
            )
        ),
        pl.when(spanlike & pl.col("_span").is_null() & (pl.col("spanId").is_null() | (pl.col("spanId") == ""))).then(pl.lit("span has no spanId")),
        pl.when(spanlike & pl.col("_trace").is_null() & (pl.col("traceId").is_null() | (pl.col("traceId") == ""))).then(pl.lit("span has no traceId")),
        pl.when((spanlike | evaluation) & record_time.is_null()).then(
            pl.lit("time is missing or not a positive count of Unix nanoseconds: ") + pl.col("time").fill_null("(none)").str.slice(0, 40)
        ),
        pl.when(call & ~error & input_text.is_null()).then(pl.lit("span has no token usage (gen_ai.usage.input_tokens or prompt_tokens)")),
        pl.when(call & ~error & ~embeddings & output_text.is_null()).then(pl.lit("span has no output token count (gen_ai.usage.output_tokens or completion_tokens)")),
        pl.when(call & (as_int(input_text) < as_int(cache_read) + as_int(cache_write))).then(
            pl.lit("input tokens ") + input_text + pl.lit(" are fewer than cache read + write (") + cache_read + pl.lit(" + ") + cache_write
            + pl.lit("): does this emitter count input without cache? see telemetry.input_excludes_cache")
        ),
        pl.when(evaluation & _attr("gen_ai.evaluation.score.label").is_null() & _attr("gen_ai.evaluation.score.value").is_null()).then(
            pl.lit("evaluation result has neither gen_ai.evaluation.score.label nor score.value")
        ),
        pl.when(evaluation & session.is_null() & pl.col("_trace").is_null() & pl.col("_span").is_null() & _attr("gen_ai.response.id").is_null()).then(
            pl.lit("evaluation result names no session, span, trace or response id: nothing to attach it to")
        ),
    ]
    when_call = lambda value: pl.when(call).then(value)  # noqa: E731
    when_spanlike = lambda value: pl.when(spanlike).then(value)  # noqa: E731
    when_eval = lambda value: pl.when(evaluation).then(value)  # noqa: E731
    uid = pl.coalesce(
        _attr("log.record.uid"),
        pl.concat_str(pl.lit("eval:"), pl.col("_trace").fill_null(""), pl.lit(":"), pl.col("_span").fill_null(""), pl.lit(":"),
                      pl.col("time").fill_null(""), pl.lit(":"), evaluator.fill_null("")),
    )
    return mapped.select(
        "source_line",
        "event_type",
        event_id=pl.when(spanlike).then(pl.coalesce("_span", "spanId")).when(evaluation).then(uid),
        timestamp=pl.when(spanlike | evaluation).then(record_time),
        request_id=when_call(pl.coalesce(request_id, pl.lit("span:") + pl.coalesce("_span", "spanId"))),
        session_id=pl.when(spanlike).then(pl.coalesce(session, fallback_session)).when(evaluation).then(session),
        feature_tag=pl.when(spanlike).then(pl.coalesce(_attr(*telemetry.feature_attributes, resource=True), pl.lit(telemetry.default_feature)))
        .when(evaluation).then(_attr(*telemetry.feature_attributes)),
        provider=when_call(_attr("gen_ai.provider.name", "gen_ai.system")),
        model=when_call(_attr("gen_ai.request.model", "gen_ai.response.model")),
        model_version=when_call(_attr("gen_ai.response.model", "gen_ai.request.model")),
        prompt_version=when_spanlike(_attr(*telemetry.prompt_version_attributes, resource=True)),
        input_tokens=when_call(input_text.fill_null("0")),
        output_tokens=when_call(output_text.fill_null("0")),
        cache_read_input_tokens=when_call(cache_read),
        cache_write_input_tokens=when_call(cache_write),
        attempt=when_call(digits(_attr(*telemetry.attempt_attributes))),
        status=when_spanlike(pl.when(error).then(pl.lit("error")).otherwise(pl.lit("ok"))),
        escalated=when_eval(_attr(*telemetry.escalated_attributes).str.to_lowercase()),
        source_format=pl.lit(SOURCE_FORMAT),
        trace_id=pl.when(spanlike | evaluation).then(pl.coalesce("_trace", "traceId")),
        span_id=pl.when(spanlike | evaluation).then(pl.coalesce("_span", "spanId")),
        parent_span_id=pl.when(spanlike | evaluation).then(pl.coalesce("_parent", "parentSpanId")),
        operation=when_spanlike(operation),
        response_id=pl.when(call | evaluation).then(_attr("gen_ai.response.id")),
        tool_name=when_spanlike(_attr("gen_ai.tool.name")),
        reasoning_output_tokens=when_call(tokens(_REASONING)),
        evaluation_name=when_eval(evaluator.fill_null("")),
        evaluation_score_value=when_eval(_attr("gen_ai.evaluation.score.value")),
        evaluation_score_label=when_eval(_attr("gen_ai.evaluation.score.label")),
        problem=pl.concat_str(problems, separator="; ", ignore_nulls=True),
    ).with_columns(problem=pl.when(pl.col("problem") != "").then(pl.col("problem"))
    )


def first_bad_line(path: Path) -> str | None:
    """Where and why a file fails to decode: the first line that is not a JSON object, or whose
    OTLP fields have the wrong JSON type (say a list where an object belongs), as
    "line N: <reason>"; None if every line decodes. Only called once the reader has failed: the
    decoder's own error names no line."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                value = json.loads(raw)
            except (ValueError, UnicodeDecodeError) as exc:
                return f"line {number}: not valid JSON ({exc})"
            wrong = _type_mismatch(value, LINE_TYPE, "")
            if wrong:
                return f"line {number}: {wrong}"
    return None


def _type_mismatch(value: object, dtype: pl.DataType, where: str) -> str | None:
    """The first place in `value` whose JSON type does not fit `dtype` (Polars' decoding rules:
    any scalar fits a String), or None."""
    if value is None:
        return None
    if isinstance(dtype, pl.Struct):
        if not isinstance(value, dict):
            return f"{where or 'the line'} is a JSON {type(value).__name__}, not an object"
        for f in dtype.fields:
            found = _type_mismatch(value.get(f.name), f.dtype, f"{where}.{f.name}" if where else f.name)
            if found:
                return found
        return None
    if isinstance(dtype, pl.List):
        if not isinstance(value, list):
            return f"{where} is not a JSON array"
        for i, item in enumerate(value):
            found = _type_mismatch(item, dtype.inner, f"{where}[{i}]")
            if found:
                return found
        return None
    if isinstance(value, dict | list):
        return f"{where} is a JSON {'object' if isinstance(value, dict) else 'array'}, not a scalar"
    return None
