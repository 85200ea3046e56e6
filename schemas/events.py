"""Staged telemetry events: `llm_call` and `outcome`, typed and validated, and evaluation results
waiting for their session. Sources: flat events, OTLP JSON spans and logs, gateway logs
(docs/telemetry-sources.md)."""

import polars as pl
import pandera.polars as pa
from pandera.engines import polars_engine as pe

from schemas.types import CALL_STATUSES, MONEY, OUTCOME_SIGNALS

SOURCE_FORMATS = ("events", "otlp", "litellm", "openrouter", "helicone")

_TS = pe.DateTime(time_unit="us", time_zone="UTC")


class StagedLlmCall(pa.DataFrameModel):
    """One LLM call as logged by the application or gateway."""

    source_file: str = pa.Field(description="Landing file the event came from: relative to landing/events/, else to landing/ (otlp/..., gateways/<gateway>/...).")
    source_line: pl.Int64 = pa.Field(ge=1, description="Line (JSONL; an OTLP batch's line), row (Parquet, CSV: header is line 1) or JSON array element of the event in its file.")
    event_id: str = pa.Field(description="Delivery-level id; an id seen twice counts once.")
    timestamp: _TS = pa.Field(description="When the call was made, UTC.")
    call_date: pl.Date = pa.Field(description="UTC date of timestamp.")
    request_id: str = pa.Field(description="Request id, the join key to FOCUS x_RequestId.")
    session_id: str = pa.Field(description="Session (= intent) the call belongs to.")
    feature_tag: str = pa.Field(description="Product feature.")
    provider: str = pa.Field(nullable=True, description="Model provider.")
    model: str = pa.Field(nullable=True, description="Model name.")
    model_version: str = pa.Field(nullable=True, description="Model version.")
    prompt_version: str = pa.Field(nullable=True, description="Prompt version.")
    input_tokens: pl.Int64 = pa.Field(ge=0, description="Input tokens, cache reads and writes included (OpenTelemetry convention).")
    output_tokens: pl.Int64 = pa.Field(ge=0, description="Output tokens.")
    cache_read_input_tokens: pl.Int64 = pa.Field(ge=0, description="Input tokens read from the prompt cache.")
    cache_write_input_tokens: pl.Int64 = pa.Field(ge=0, description="Input tokens written to the prompt cache.")
    attempt: pl.Int64 = pa.Field(ge=1, description="1 for the first try, 2+ for retries; for OTLP calls that do not state it, inferred from the trace (a call right after a failed one of the same operation under the same parent span).")
    status: str = pa.Field(isin=list(CALL_STATUSES), description="ok or error.")
    source_format: str = pa.Field(isin=list(SOURCE_FORMATS), description="Format the call came in: events, otlp, litellm, openrouter or helicone.")
    trace_id: str = pa.Field(nullable=True, description="OpenTelemetry trace id (32 lowercase hex digits); OTLP only.")
    span_id: str = pa.Field(nullable=True, description="OpenTelemetry span id of the call (16 lowercase hex digits); OTLP only.")
    parent_span_id: str = pa.Field(nullable=True, description="The call span's parent span id; null for a root span.")
    operation: str = pa.Field(nullable=True, description="gen_ai.operation.name (chat, embeddings, ...) or the gateway's call type.")
    response_id: str = pa.Field(nullable=True, description="The provider's response id as the record gives it (request_id falls back to the span or gateway id without one).")
    reasoning_output_tokens: pl.Int64 = pa.Field(nullable=True, ge=0, description="Reasoning tokens, already counted in output_tokens.")
    reported_cost: MONEY = pa.Field(nullable=True, description="Cost the gateway reported for the call (cost_source gateway_reported): LiteLLM's and Helicone's estimates, what OpenRouter charged.")
    reported_currency: str = pa.Field(nullable=True, description="ISO 4217 currency of reported_cost.")
    after_tool_call: bool = pa.Field(nullable=True, description="The call sends tool results back to the model (model.telemetry.after_tool_calls: the span before it under the same parent in its trace is an execute_tool span); null without a trace (flat events, gateway logs). Staged null and derived across files, as attempt.")
    api_key_id: str = pa.Field(nullable=True, description="Gateway API key the call was made with (LiteLLM api_key, the hashed key); null when the source does not say. [[allocation.account_rules]] map it to a billing account.")
    project_id: str = pa.Field(nullable=True, description="Gateway or provider project / workspace of the call (LiteLLM organization_id, OpenRouter app_id); null when the source does not say.")
    team_id: str = pa.Field(nullable=True, description="Gateway team of the call (LiteLLM team_id); null when the source does not say.")
    end_user_id: str = pa.Field(nullable=True, description="End user the gateway attributes the call to (LiteLLM end_user, OpenRouter external_user, Helicone user id); null when the source does not say.")

    class Config:
        strict = True


class StagedOutcome(pa.DataFrameModel):
    """One outcome label of a session; a session's latest label (by timestamp) is its outcome."""

    source_file: str = pa.Field(description="Landing file the event came from: relative to landing/events/, else to landing/ (otlp/..., gateways/<gateway>/...).")
    source_line: pl.Int64 = pa.Field(ge=1, description="Line (JSONL; an OTLP batch's line), row (Parquet, CSV: header is line 1) or JSON array element of the event in its file.")
    event_id: str = pa.Field(description="Delivery-level id; an id seen twice counts once.")
    timestamp: _TS = pa.Field(description="When the label was observed, UTC.")
    session_id: str = pa.Field(description="Session labelled.")
    feature_tag: str = pa.Field(nullable=True, description="Product feature.")
    success: bool = pa.Field(description="Whether the intent succeeded.")
    escalated: bool = pa.Field(description="Whether a human had to take over.")
    signal: str = pa.Field(isin=list(OUTCOME_SIGNALS), description="explicit (user said so) or implicit (inferred).")
    source_format: str = pa.Field(isin=list(SOURCE_FORMATS), description="Format the label came in: events, otlp (an evaluation result), helicone (a feedback rating).")
    evaluation_name: str = pa.Field(nullable=True, description="Evaluator of an OTLP gen_ai.evaluation.result the label was derived from; null for outcome events.")

    class Config:
        strict = True


class StagedEvaluation(pa.DataFrameModel):
    """One gen_ai.evaluation.result (OTLP span event or log record) waiting for its session: staging
    finds it across every staged file (unitledger.sources.events.derive_telemetry) and turns it
    into a session outcome, or quarantines it."""

    source_file: str = pa.Field(description="Landing file the result came from.")
    source_line: pl.Int64 = pa.Field(ge=1, description="Line of the OTLP batch holding it.")
    event_id: str = pa.Field(description="log.record.uid, else derived from trace, span, time and evaluator; an id seen twice counts once.")
    timestamp: _TS = pa.Field(description="When the result was recorded, UTC.")
    session_id: str = pa.Field(nullable=True, description="Its own session attribute; null: found from the call it names.")
    feature_tag: str = pa.Field(nullable=True, description="Its own feature attribute; null: the call's.")
    escalated: str = pa.Field(nullable=True, description="Its escalated attribute as text (true / false).")
    trace_id: str = pa.Field(nullable=True, description="Trace of the span it is attached to or names.")
    span_id: str = pa.Field(nullable=True, description="Span it is attached to or names.")
    parent_span_id: str = pa.Field(nullable=True, description="Parent of that span (an evaluator span under the judged call).")
    response_id: str = pa.Field(nullable=True, description="gen_ai.response.id of the judged response.")
    evaluation_name: str = pa.Field(description="gen_ai.evaluation.name: the evaluator.")
    evaluation_score_value: str = pa.Field(nullable=True, description="gen_ai.evaluation.score.value as text.")
    evaluation_score_label: str = pa.Field(nullable=True, description="gen_ai.evaluation.score.label, e.g. pass / fail.")
    source_format: str = pa.Field(isin=list(SOURCE_FORMATS), description="Format the result came in (otlp).")

    class Config:
        strict = True


class StagedSpan(pa.DataFrameModel):
    """One GenAI structure span of an OTLP trace (invoke_agent, execute_tool, create_agent, ...: a
    gen_ai.operation.name that is no model call). Never a call or a cost: staged so that a call's
    place in its trace can be read (model.telemetry.after_tool_calls)."""

    source_file: str = pa.Field(description="Landing file the span came from (otlp/... or events/...).")
    source_line: pl.Int64 = pa.Field(ge=1, description="Line of the OTLP batch holding it.")
    event_id: str = pa.Field(description="The span id (an id seen twice counts once).")
    timestamp: _TS = pa.Field(description="startTimeUnixNano, UTC.")
    trace_id: str = pa.Field(description="Trace id (32 lowercase hex digits).")
    span_id: str = pa.Field(description="Span id (16 lowercase hex digits).")
    parent_span_id: str = pa.Field(nullable=True, description="Parent span id; null for a root span.")
    operation: str = pa.Field(description="gen_ai.operation.name, e.g. execute_tool, invoke_agent.")
    tool_name: str = pa.Field(nullable=True, description="gen_ai.tool.name of an execute_tool span.")
    source_format: str = pa.Field(isin=list(SOURCE_FORMATS), description="Format it came in (otlp).")

    class Config:
        strict = True


class IgnoredRecord(pa.DataFrameModel):
    """A record of a telemetry file that is neither a GenAI call, structure span nor evaluation
    result (an HTTP or database span, another log record): nothing to stage, counted per file so
    the run can say a file held no GenAI records rather than fail or stay silent."""

    source_file: str = pa.Field(description="Landing file the record came from.")
    source_line: pl.Int64 = pa.Field(ge=1, description="Line of the OTLP batch holding it.")

    class Config:
        strict = True
