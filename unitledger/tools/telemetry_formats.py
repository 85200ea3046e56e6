"""Flat events (unitledger's own `llm_call` / `outcome` rows) written as real systems emit them:
OTLP JSON (the OpenTelemetry Collector's file exporter) and LiteLLM SpendLogs exports.

The generator writes its synthetic day in these formats with these functions, and tests read them
back to show that the tables come out the same whichever format carried the data. Input: a frame
with the flat event columns (generate.EVENT_COLUMNS; text or typed: tokens and attempt as numbers
or digits, success/escalated as booleans or "true"/"false").

OTLP shape (docs/telemetry-sources.md has the reader's side of it):
- every turn of a session (a first attempt and its retries) is one trace: an `invoke_agent` root
  span (gen_ai.agent.name = the feature) with one `chat` client span per attempt under it;
- a call's span id is derived from its event_id, so a duplicated event is the same span twice;
- a retry whose earlier attempt is missing from the events (billing-only in the generator) states
  its attempt in `app.attempt`: nothing in the trace could say it is one;
- an outcome is a `gen_ai.evaluation.result` log record keyed by session.id, evaluator
  `user_feedback` (explicit signal) or `task_success` (implicit), label pass/fail, score "1"/"0"
  as text (as real emitters send it), `app.escalated`, and `log.record.uid` = the event_id;
  or, with outcomes_as="span_events", the same attributes on a span event of an evaluator span.
Every id is derived from the flat ids with Polars' hash: stable for one Polars version.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from unitledger.model.telemetry import list_price_costs

EXPLICIT_EVALUATOR = "user_feedback"
IMPLICIT_EVALUATOR = "task_success"
_NS_PER_US = 1000
_CALL_SECONDS = 1  # a call span's duration: the flat format has none


# --- helpers ----------------------------------------------------------------------------------


def _hex64(value: pl.Expr) -> pl.Expr:
    """16 lowercase hex digits of a UInt64."""
    return value.map_batches(_hex_batch, return_dtype=pl.String, is_elementwise=True)


_HEX_PAIRS = np.array([f"{i:02x}".encode() for i in range(256)], dtype="S2")


def _hex_batch(values: pl.Series) -> pl.Series:
    big_endian = values.to_numpy().astype(">u8")
    digits = _HEX_PAIRS[big_endian.view(np.uint8).reshape(-1, 8)].view("S16").ravel()
    return pl.Series(values.name, digits.astype(str), dtype=pl.String)


def _id64(*parts: pl.Expr | str, seed: int) -> pl.Expr:
    """A 64-bit id (16 hex digits) derived from text parts; never all zeros (invalid in OTLP)."""
    text = pl.concat_str([pl.lit(p) if isinstance(p, str) else p.cast(pl.String) for p in parts], separator="\x1f")
    value = text.hash(seed=seed)
    return _hex64(pl.when(value == 0).then(pl.lit(1, pl.UInt64)).otherwise(value))


def _json_text(value: pl.Expr) -> pl.Expr:
    """`value` as the inside of a JSON string (quotes, backslashes and control characters escaped)."""
    return (
        value.str.replace_all("\\", "\\\\", literal=True)
        .str.replace_all('"', '\\"', literal=True)
        .str.replace_all("\n", "\\n", literal=True)
        .str.replace_all("\r", "\\r", literal=True)
        .str.replace_all("\t", "\\t", literal=True)
    )


def _attr(key: str, value: pl.Expr, kind: str = "stringValue") -> pl.Expr:
    """One OTLP KeyValue as JSON text, or null when `value` is null (zero-valued fields are left out)."""
    inner = pl.concat_str(pl.lit('"'), _json_text(value.cast(pl.String)), pl.lit('"')) if kind != "boolValue" else value.cast(pl.String)
    return pl.concat_str(pl.lit(f'{{"key":"{key}","value":{{"{kind}":'), inner, pl.lit("}}"))


def _join_attrs(*attrs: pl.Expr) -> pl.Expr:
    """A JSON array of the non-null KeyValues."""
    return pl.concat_str(pl.lit("["), pl.concat_list(attrs).list.drop_nulls().list.join(","), pl.lit("]"))


def _flat(events: pl.LazyFrame) -> pl.LazyFrame:
    """The flat event columns with tokens/attempt as Int64, success/escalated as Boolean and the
    timestamp parsed (microseconds since the epoch in `_ts_us`)."""
    schema = events.collect_schema()

    def number(name: str) -> pl.Expr:
        col = pl.col(name)
        return (col.str.strip_chars().str.to_integer(strict=True) if schema[name] == pl.String else col).cast(pl.Int64)

    def boolean(name: str) -> pl.Expr:
        return (pl.col(name) == "true") if schema[name] == pl.String else pl.col(name).cast(pl.Boolean)

    ts = pl.col("timestamp").str.to_datetime(time_unit="us", time_zone="UTC") if schema["timestamp"] == pl.String else pl.col("timestamp")
    return events.with_columns(
        *[number(n).alias(n) for n in ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_write_input_tokens", "attempt")],
        *[boolean(n).alias(n) for n in ("success", "escalated")],
        _ts_us=ts.dt.epoch("us"),
    )


def with_turns(events: pl.LazyFrame) -> pl.LazyFrame:
    """`events` plus `turn` (llm_call rows; null on outcomes): the session's turn the call belongs
    to. A turn starts at a first attempt, and at any attempt that does not follow its predecessor
    (attempt n-1) in the session's calls in time order: its earlier attempts are missing, so
    `missing_earlier` is true on it. Duplicated events (same event_id) get the same turn.

    Compute turns over all of a run's events before splitting them into files: a turn's retries
    may land in the next day's file."""
    flat = _flat(events)
    calls = (
        flat.filter(pl.col("event_type") == "llm_call")
        .unique("event_id", keep="first")
        .select("event_id", "session_id", "attempt", "_ts_us")
        .sort("session_id", "_ts_us", "event_id")
    )
    follows = pl.col("attempt") == pl.col("attempt").shift(1).over("session_id") + 1
    turns = calls.with_columns(
        turn=(~follows.fill_null(False)).cast(pl.Int64).cum_sum().over("session_id"),
        missing_earlier=~follows.fill_null(False) & (pl.col("attempt") > 1),
    ).select("event_id", "turn", "missing_earlier")
    return flat.join(turns, on="event_id", how="left", maintain_order="left")


# --- OTLP -------------------------------------------------------------------------------------


def _trace_id(session: pl.Expr, turn: pl.Expr) -> pl.Expr:
    return pl.concat_str(_id64(session, turn, seed=11), _id64(session, turn, seed=12))


def _call_spans(calls: pl.LazyFrame) -> pl.LazyFrame:
    start_ns = pl.col("_ts_us") * _NS_PER_US
    error = pl.col("status") == "error"
    attrs = _join_attrs(
        _attr("gen_ai.operation.name", pl.lit("chat")),
        _attr("gen_ai.provider.name", pl.col("provider")),
        _attr("gen_ai.request.model", pl.col("model")),
        _attr("gen_ai.response.model", pl.col("model_version")),
        _attr("gen_ai.response.id", pl.col("request_id")),
        pl.when(~error).then(pl.lit('{"key":"gen_ai.response.finish_reasons","value":{"arrayValue":{"values":[{"stringValue":"stop"}]}}}')),
        _attr("gen_ai.usage.input_tokens", pl.col("input_tokens"), "intValue"),
        _attr("gen_ai.usage.output_tokens", pl.col("output_tokens"), "intValue"),
        _attr("gen_ai.usage.cache_read.input_tokens", pl.when(pl.col("cache_read_input_tokens") > 0).then(pl.col("cache_read_input_tokens")), "intValue"),
        _attr("gen_ai.usage.cache_creation.input_tokens", pl.when(pl.col("cache_write_input_tokens") > 0).then(pl.col("cache_write_input_tokens")), "intValue"),
        _attr("gen_ai.conversation.id", pl.col("session_id")),
        _attr("app.feature", pl.col("feature_tag")),
        _attr("app.prompt_version", pl.col("prompt_version")),
        _attr("app.attempt", pl.when(pl.col("missing_earlier")).then(pl.col("attempt")), "intValue"),
        _attr("error.type", pl.when(error).then(pl.lit("provider_error"))),
    )
    status = pl.when(error).then(pl.lit('{"code":2,"message":"provider error"}')).otherwise(pl.lit("{}"))
    return calls.select(
        "_order",
        span=pl.concat_str(
            pl.lit('{"traceId":"'), pl.col("_trace_id"), pl.lit('","spanId":"'), pl.col("_span_id"),
            pl.lit('","parentSpanId":"'), pl.col("_parent_id"),
            pl.lit('","name":"chat '), _json_text(pl.col("model").fill_null("")), pl.lit('","kind":3,"startTimeUnixNano":"'),
            start_ns.cast(pl.String), pl.lit('","endTimeUnixNano":"'), (start_ns + _CALL_SECONDS * 10**9).cast(pl.String),
            pl.lit('","attributes":'), attrs, pl.lit(',"status":'), status, pl.lit("}"),
        ),
    )


def _turn_spans(calls: pl.LazyFrame) -> pl.LazyFrame:
    """One invoke_agent root span per turn, emitted beside the turn's earliest call present."""
    first = calls.filter(pl.col("_ts_us") == pl.col("_ts_us").min().over("_trace_id")).unique("_trace_id", keep="first", maintain_order=True)
    start_ns = pl.col("_ts_us") * _NS_PER_US - 1000  # 1 microsecond before its first call
    attrs = _join_attrs(
        _attr("gen_ai.operation.name", pl.lit("invoke_agent")),
        _attr("gen_ai.agent.name", pl.col("feature_tag")),
        _attr("gen_ai.conversation.id", pl.col("session_id")),
    )
    return first.select(
        pl.col("_order") - 0.5,  # just before the call
        span=pl.concat_str(
            pl.lit('{"traceId":"'), pl.col("_trace_id"), pl.lit('","spanId":"'), pl.col("_parent_id"),
            pl.lit('","name":"invoke_agent '), _json_text(pl.col("feature_tag").fill_null("")),
            pl.lit('","kind":1,"startTimeUnixNano":"'), start_ns.cast(pl.String),
            pl.lit('","endTimeUnixNano":"'), (start_ns + 2 * _CALL_SECONDS * 10**9).cast(pl.String),
            pl.lit('","attributes":'), attrs, pl.lit(',"status":{}}'),
        ),
    )


def _outcome_attrs() -> pl.Expr:
    explicit = pl.col("signal") == "explicit"
    return _join_attrs(
        _attr("gen_ai.evaluation.name", pl.when(explicit).then(pl.lit(EXPLICIT_EVALUATOR)).otherwise(pl.lit(IMPLICIT_EVALUATOR))),
        _attr("gen_ai.evaluation.score.label", pl.when(pl.col("success")).then(pl.lit("pass")).otherwise(pl.lit("fail"))),
        _attr("gen_ai.evaluation.score.value", pl.when(pl.col("success")).then(pl.lit("1")).otherwise(pl.lit("0"))),
        _attr("session.id", pl.col("session_id")),
        _attr("app.feature", pl.col("feature_tag")),
        _attr("app.escalated", pl.col("escalated"), "boolValue"),
        _attr("log.record.uid", pl.col("event_id")),
    )


def _batches(items: pl.LazyFrame, per_line: int, prefix: str, suffix: str) -> pl.LazyFrame:
    """Items (`_order`, `item` JSON text) joined `per_line` to a line, in `_order`."""
    return (
        items.sort("_order")
        .with_row_index("_n")
        .group_by(pl.col("_n") // per_line, maintain_order=True)
        .agg(pl.col("item").str.join(","))
        .select(line=pl.concat_str(pl.lit(prefix), pl.col("item"), pl.lit(suffix)))
    )


def _resource(service_name: str) -> str:
    return f'{{"attributes":[{{"key":"service.name","value":{{"stringValue":"{service_name}"}}}}]}}'


def otlp_trace_lines(
    events: pl.LazyFrame,
    *,
    spans_per_line: int = 512,
    service_name: str = "unitledger-synthetic",
    outcomes_as: str = "logs",
) -> pl.LazyFrame:
    """The llm_call rows of `events` as OTLP JSON trace batches (column `line`, one
    ExportTraceServiceRequest each), in the events' order; with outcomes_as="span_events" the
    outcome rows too, as evaluator spans carrying a gen_ai.evaluation.result event. `events` may
    carry `turn`/`missing_earlier` from with_turns (computed here otherwise)."""
    if outcomes_as not in ("logs", "span_events"):
        raise ValueError(f"outcomes_as must be 'logs' or 'span_events', not {outcomes_as!r}")
    if "turn" not in events.collect_schema().names():
        events = with_turns(events)
    else:
        events = _flat(events)
    events = events.with_row_index("_order").with_columns(pl.col("_order").cast(pl.Float64))
    calls = events.filter(pl.col("event_type") == "llm_call").with_columns(
        _trace_id=_trace_id(pl.col("session_id"), pl.col("turn")),
        _span_id=_id64(pl.col("event_id"), seed=13),
        _parent_id=_id64(pl.col("session_id"), pl.col("turn"), seed=14),
    )
    parts = [_call_spans(calls), _turn_spans(calls)]
    if outcomes_as == "span_events":
        parts.append(_evaluator_spans(events.filter(pl.col("event_type") == "outcome")))
    items = pl.concat(parts).rename({"span": "item"})
    prefix = f'{{"resourceSpans":[{{"resource":{_resource(service_name)},"scopeSpans":[{{"scope":{{"name":"unitledger.synthetic","version":"1"}},"spans":['
    return _batches(items, spans_per_line, prefix, "]}]}]}")


def _evaluator_spans(outcomes: pl.LazyFrame) -> pl.LazyFrame:
    """An outcome as a span event on an evaluator span of its own trace (no GenAI operation)."""
    ns = (pl.col("_ts_us") * _NS_PER_US).cast(pl.String)
    trace = pl.concat_str(_id64(pl.col("event_id"), seed=15), _id64(pl.col("event_id"), seed=16))
    return outcomes.select(
        "_order",
        span=pl.concat_str(
            pl.lit('{"traceId":"'), trace, pl.lit('","spanId":"'), _id64(pl.col("event_id"), seed=17),
            pl.lit('","name":"evaluate session","kind":1,"startTimeUnixNano":"'), ns, pl.lit('","endTimeUnixNano":"'), ns,
            pl.lit('","events":[{"timeUnixNano":"'), ns, pl.lit('","name":"gen_ai.evaluation.result","attributes":'),
            _outcome_attrs(), pl.lit('}],"status":{}}'),
        ),
    )


def otlp_log_lines(events: pl.LazyFrame, *, records_per_line: int = 512, service_name: str = "unitledger-synthetic") -> pl.LazyFrame:
    """The outcome rows of `events` as OTLP JSON log batches (column `line`, one
    ExportLogsServiceRequest each): gen_ai.evaluation.result log records, in the events' order."""
    outcomes = _flat(events).with_row_index("_order").filter(pl.col("event_type") == "outcome")
    ns = (pl.col("_ts_us") * _NS_PER_US).cast(pl.String)
    items = outcomes.select(
        "_order",
        item=pl.concat_str(
            pl.lit('{"timeUnixNano":"'), ns, pl.lit('","observedTimeUnixNano":"'), ns,
            pl.lit('","severityNumber":9,"eventName":"gen_ai.evaluation.result","attributes":'), _outcome_attrs(), pl.lit("}"),
        ),
    )
    prefix = f'{{"resourceLogs":[{{"resource":{_resource(service_name)},"scopeLogs":[{{"scope":{{"name":"unitledger.evaluations"}},"logRecords":['
    return _batches(items, records_per_line, prefix, "]}]}]}")


def write_lines(lines: pl.LazyFrame, path: Path) -> None:
    """Write a frame of `line` text as a file, gzip-compressed when `path` ends in .gz."""
    gz = path.name.lower().endswith(".gz")
    lines.sink_csv(path, include_header=False, quote_style="never", compression="gzip" if gz else "uncompressed")


# --- LiteLLM SpendLogs ------------------------------------------------------------------------

LITELLM_COLUMNS = (
    "request_id", "call_type", "api_key", "spend", "total_tokens", "prompt_tokens", "completion_tokens",
    "startTime", "endTime", "model", "model_group", "custom_llm_provider", "user", "metadata", "cache_hit",
    "request_tags", "team_id", "end_user", "session_id", "status",
)


def litellm_spendlogs(events: pl.LazyFrame, prices: pl.LazyFrame) -> pl.LazyFrame:
    """The llm_call rows of `events` as LiteLLM_SpendLogs rows (LITELLM_COLUMNS, all text, as a CSV
    export of the table holds them). `spend` is the list-price cost LiteLLM would log, from `prices`
    (model.telemetry.list_price_costs), exact; a call with no price gets spend 0, as LiteLLM logs
    unknown models.

    Mapping: request_id = the call's request id; model_group = model (what the app asked for),
    model = model_version (what served it); session_id; status success/failure; times at
    millisecond precision (timestamp(3)); cache tokens in metadata.additional_usage_values; feature,
    prompt version and a stated attempt in metadata.spend_logs_metadata under app.feature,
    app.prompt_version and app.attempt (retries are not visible to a gateway otherwise)."""
    calls = _flat(events).filter(pl.col("event_type") == "llm_call").with_columns(_date=pl.from_epoch("_ts_us", time_unit="us").dt.date())
    spend = list_price_costs(calls, prices, date_column="_date")
    start = pl.from_epoch("_ts_us", time_unit="us").dt.truncate("1ms")
    meta = pl.struct(
        spend_logs_metadata=pl.struct(
            **{"app.feature": pl.col("feature_tag"), "app.prompt_version": pl.col("prompt_version"),
               "app.attempt": pl.when(pl.col("attempt") > 1).then(pl.col("attempt"))}
        ),
        additional_usage_values=pl.struct(
            cache_read_input_tokens=pl.col("cache_read_input_tokens"), cache_creation_input_tokens=pl.col("cache_write_input_tokens")
        ),
        user_api_key_alias=pl.lit("unitledger-synthetic"),
    )
    return spend.select(
        request_id=pl.col("request_id"),
        call_type=pl.lit("acompletion"),
        api_key=pl.lit("88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b"),
        spend=pl.col("list_estimate_cost").cast(pl.String).fill_null("0"),
        total_tokens=(pl.col("input_tokens") + pl.col("output_tokens")).cast(pl.String),
        prompt_tokens=pl.col("input_tokens").cast(pl.String),
        completion_tokens=pl.col("output_tokens").cast(pl.String),
        startTime=start.dt.strftime("%Y-%m-%d %H:%M:%S%.3f"),
        endTime=(start + pl.duration(seconds=_CALL_SECONDS)).dt.strftime("%Y-%m-%d %H:%M:%S%.3f"),
        model=pl.col("model_version"),
        model_group=pl.col("model"),
        custom_llm_provider=pl.col("provider"),
        user=pl.lit(""),
        metadata=meta.struct.json_encode(),
        cache_hit=pl.lit("False"),
        request_tags=pl.lit("[]"),
        team_id=pl.lit(None, pl.String),
        end_user=pl.lit(""),
        session_id=pl.col("session_id"),
        status=pl.when(pl.col("status") == "error").then(pl.lit("failure")).otherwise(pl.lit("success")),
    )
