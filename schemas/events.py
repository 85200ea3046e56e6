"""Staged telemetry events: `llm_call` and `outcome`, typed and validated."""

import polars as pl
import pandera.polars as pa
from pandera.engines import polars_engine as pe

from schemas.types import CALL_STATUSES, OUTCOME_SIGNALS

_TS = pe.DateTime(time_unit="us", time_zone="UTC")


class StagedLlmCall(pa.DataFrameModel):
    """One LLM call as logged by the application or gateway."""

    source_file: str = pa.Field(description="Landing file the event came from, relative to landing/events/.")
    source_line: pl.Int64 = pa.Field(ge=1, description="Line (JSONL) or row (Parquet) of the event in its file.")
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
    attempt: pl.Int64 = pa.Field(ge=1, description="1 for the first try, 2+ for retries.")
    status: str = pa.Field(isin=list(CALL_STATUSES), description="ok or error.")

    class Config:
        strict = True


class StagedOutcome(pa.DataFrameModel):
    """One outcome label of a session; a session's latest label (by timestamp) is its outcome."""

    source_file: str = pa.Field(description="Landing file the event came from, relative to landing/events/.")
    source_line: pl.Int64 = pa.Field(ge=1, description="Line (JSONL) or row (Parquet) of the event in its file.")
    event_id: str = pa.Field(description="Delivery-level id; an id seen twice counts once.")
    timestamp: _TS = pa.Field(description="When the label was observed, UTC.")
    session_id: str = pa.Field(description="Session labelled.")
    feature_tag: str = pa.Field(nullable=True, description="Product feature.")
    success: bool = pa.Field(description="Whether the intent succeeded.")
    escalated: bool = pa.Field(description="Whether a human had to take over.")
    signal: str = pa.Field(isin=list(OUTCOME_SIGNALS), description="explicit (user said so) or implicit (inferred).")

    class Config:
        strict = True
