"""The text rows every telemetry reader returns: the flat event format's fields (flat_events.EVENT_FIELDS)
plus the fields below, all text, plus source_file and source_line (the physical line of the record,
or of the batch holding it, in its file; the record number for a JSON array).

So staging validates every source with one set of rules (flat_events.events_problems, extended with the
checks of these fields) and quarantines a record it cannot map with the reason in `problem`.

event_type: `llm_call` and `outcome` as in the flat format; an evaluation result is an `outcome`
with `evaluation_name` set and success/signal left to model.telemetry.evaluation_outcomes (they
depend on settings and on calls possibly in other files). Two more, never staged as calls or
outcomes: `span` (GenAI structure: invoke_agent, execute_tool, ... spans) and `ignored` (a non-GenAI
span or a log record that is no evaluation result: counted, then dropped).
"""

from __future__ import annotations

import polars as pl

from unitledger.sources import events as flat_events

# name -> what it holds (the data dictionary's text for the staged columns they become)
TELEMETRY_FIELDS: dict[str, str] = {
    "source_format": "Format the record came in: events, otlp, litellm, openrouter or helicone.",
    "trace_id": "OpenTelemetry trace id, 32 lowercase hex digits (base64 in the file is converted).",
    "span_id": "OpenTelemetry span id, 16 lowercase hex digits: of the call, or of the span an evaluation is attached to.",
    "parent_span_id": "The span's parent span id (16 hex digits); null for a root span.",
    "operation": "gen_ai.operation.name (chat, embeddings, invoke_agent, execute_tool, ...) or the gateway's call type.",
    "response_id": "The provider's response id as the record gives it (request_id may be a fallback when it is absent).",
    "tool_name": "gen_ai.tool.name of an execute_tool span.",
    "reasoning_output_tokens": "Reasoning tokens, already counted in output_tokens.",
    "reported_cost": "Cost the gateway reported for the call, exact decimal text as exported (cost_source gateway_reported).",
    "reported_currency": "ISO 4217 currency of reported_cost.",
    "api_key_id": "Gateway API key (hashed id or alias) the call was made with.",
    "project_id": "Gateway or provider project / workspace the call was made in.",
    "team_id": "Gateway team the call was made by.",
    "end_user_id": "End user the gateway attributes the call to.",
    "evaluation_name": "gen_ai.evaluation.name of an evaluation result (outcome rows only).",
    "evaluation_score_value": "gen_ai.evaluation.score.value as text (emitters send doubles or strings).",
    "evaluation_score_label": "gen_ai.evaluation.score.label, e.g. pass / fail.",
    "problem": "Why the record cannot be mapped (quarantine reason); null when it can.",
}
EVENT_TYPES = ("llm_call", "outcome", "span", "ignored")
ROW_FIELDS = flat_events.EVENT_FIELDS + tuple(TELEMETRY_FIELDS)


def finish_rows(rows: pl.LazyFrame, source_file: str) -> pl.LazyFrame:
    """`rows` with every ROW_FIELDS column (missing ones null), as text, plus source_file and
    source_line (Int64), in a fixed column order."""
    names = rows.collect_schema().names()
    return rows.select(
        *[pl.col(n).cast(pl.String) if n in names else pl.lit(None, pl.String).alias(n) for n in ROW_FIELDS],
        source_file=pl.lit(source_file),
        source_line=pl.col("source_line").cast(pl.Int64),
    )


def digits(text: pl.Expr) -> pl.Expr:
    """A count as the flat format writes it: JSON numbers decoded to text may read "12.0" or "1e3"
    ("1000" already); a whole number written with a zero fraction loses it, anything else is kept
    for the integer rule to reject."""
    return text.str.strip_chars().str.replace(r"^(-?\d+)\.0*$", "${1}")
