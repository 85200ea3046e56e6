"""Telemetry transforms that need more than one record: retries, evaluation results -> session
outcomes, and list-price estimates. Pure: LazyFrames in and out, no I/O.

They run on a day's calls from every file (an evaluation usually arrives in a log file, the spans
it judges in a trace file; a retry may land in the next file). Column types are taken as they come:
the readers' text rows or staged, typed rows (timestamps as Datetime, attempt as Int64) both work,
as long as timestamps order correctly (the readers write fixed-width RFC 3339 text, which does).
"""

from __future__ import annotations

from typing import NamedTuple

import polars as pl

from schemas.types import MONEY
from unitledger.config import LIST_PRICE_TOKEN_TYPES, Telemetry

# --- retries ----------------------------------------------------------------------------------


def infer_attempts(calls: pl.LazyFrame) -> pl.LazyFrame:
    """`calls` with `attempt` filled where the source left it null and the call has a trace
    (OTLP): within a trace, the calls of one operation under one parent span (or at the trace's
    root) are taken in time order; a call right after a failed one is its next attempt, any other
    call a first attempt (an agent's second chat under the same parent after a success is a new
    step, not a retry). The same span delivered twice counts once and gets the same attempt.
    Stated attempts are kept. Rows come back in no particular order; `attempt` keeps its type
    (text digits for reader rows)."""
    schema = calls.collect_schema()
    attempt_type = schema["attempt"]
    needs = pl.col("attempt").is_null() & pl.col("trace_id").is_not_null() & pl.col("span_id").is_not_null()
    key = ["trace_id", "_parent", "_operation"]
    todo = calls.filter(needs).with_columns(_parent=pl.col("parent_span_id").fill_null(""), _operation=pl.col("operation").fill_null(""))
    spans = todo.group_by("trace_id", "span_id").agg(
        pl.col("_parent").min(), pl.col("_operation").min(), _time=pl.col("timestamp").min(), _failed=(pl.col("status") == "error").any()
    )
    shared = spans.group_by(key).agg(pl.len()).filter(pl.col("len") > 1).select(key)
    after_failure = pl.col("_failed").shift(1).over(key).fill_null(False)
    numbered = (
        spans.join(shared, on=key, how="semi")
        .sort(*key, "_time", "span_id")
        .with_columns(_run=(~after_failure).cast(pl.Int64).cum_sum().over(key))
        .with_columns(_attempt=pl.int_range(1, pl.len() + 1, dtype=pl.Int64).over(*key, "_run"))
        .select("trace_id", "span_id", "_attempt")
    )
    filled = (
        todo.join(numbered, on=["trace_id", "span_id"], how="left")
        .with_columns(attempt=pl.col("_attempt").fill_null(1).cast(attempt_type))
        .drop("_attempt", "_parent", "_operation")
    )
    return pl.concat([calls.filter(~needs), filled], how="vertical")


# --- tool calls -------------------------------------------------------------------------------

TOOL_OPERATION = "execute_tool"


def after_tool_calls(calls: pl.LazyFrame, spans: pl.LazyFrame) -> pl.LazyFrame:
    """(source_file, source_line, event_id, after_tool_call = true) of the `calls` (OTLP, with a
    trace) that send tool results back to the model, read from the trace's structure.

    Rule: among the spans sharing the call's trace and parent span (or the trace's root), calls
    and structure spans (`spans`: execute_tool, invoke_agent, ...) alike, ordered by start time
    (then span id), the one right before the call is an execute_tool span. An agent's loop
    (chat → tools → chat under one invoke_agent span) makes the second chat's predecessor its
    last tool; a retry's predecessor is the failed call, so a retry is never counted here (it is
    retry cost). A call with no sibling before it is false. The same span delivered twice counts
    once. Only the calls for which it is true are returned (a few: the rest of the traced calls
    are false, sources.events.with_derived; calls without a trace stay null)."""
    traced = pl.col("trace_id").is_not_null() & pl.col("span_id").is_not_null()
    members = pl.concat(
        [
            frame.filter(traced).select("trace_id", "span_id", "parent_span_id", "timestamp", operation=pl.col("operation").fill_null(""))
            for frame in (calls, spans)
        ]
    ).unique(["trace_id", "span_id"], keep="any")
    key = ["trace_id", "_parent"]
    previous = (
        members.with_columns(_parent=pl.col("parent_span_id").fill_null(""))
        .sort(*key, "timestamp", "span_id")
        .with_columns(after_tool_call=(pl.col("operation").shift(1).over(key) == TOOL_OPERATION).fill_null(False))
        .select("trace_id", "span_id", "after_tool_call")
    )
    return calls.filter(traced).join(previous.filter("after_tool_call"), on=["trace_id", "span_id"], how="semi").select(
        "source_file", "source_line", "event_id", after_tool_call=pl.lit(True)
    )


# --- evaluations -> outcomes ------------------------------------------------------------------

OUTCOME_COLUMNS = ("source_file", "source_line", "event_id", "timestamp", "session_id", "feature_tag", "success", "escalated", "signal", "evaluation_name")


class EvaluationOutcomes(NamedTuple):
    outcomes: pl.LazyFrame  # OUTCOME_COLUMNS: success/escalated Boolean, signal explicit|implicit
    unresolved: pl.LazyFrame  # the evaluation rows that cannot become an outcome, with `reason`
    not_counted: pl.LazyFrame  # evaluations of evaluators not in success_evaluators, or superseded by explicit outcomes


def evaluation_verdict(telemetry: Telemetry) -> pl.Expr:
    """Pass (true) / fail (false) of an evaluation row: its score label when it is one of the
    configured labels (case-insensitive), else score value >= score_threshold; null when neither
    says (an unknown label and no numeric score)."""
    label = pl.col("evaluation_score_label").str.strip_chars().str.to_lowercase()
    score = pl.col("evaluation_score_value").cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False)
    return (
        pl.when(label.is_in([v.lower() for v in telemetry.pass_labels])).then(pl.lit(True))
        .when(label.is_in([v.lower() for v in telemetry.fail_labels])).then(pl.lit(False))
        .when(score.is_not_null() & score.is_not_nan()).then(score >= telemetry.score_threshold)
    )


def evaluation_outcomes(
    evaluations: pl.LazyFrame,
    calls: pl.LazyFrame,
    telemetry: Telemetry,
    explicit_sessions: pl.LazyFrame | None = None,
) -> EvaluationOutcomes:
    """Session outcomes from evaluation results (outcome rows with `evaluation_name`).

    Session: the evaluation's own session attribute; else the call it points at, tried in this
    order: the span it is attached to (span_id), that span's parent (an evaluator span under the
    judged call), its response id as a call's request id, its response id as a trace id (some
    emitters put the trace there), its trace. A trace whose calls belong to several sessions gives
    the smallest session id. Feature: the evaluation's own, else the call's. Pass/fail:
    evaluation_verdict. Signal: explicit for Telemetry.explicit_evaluators, else implicit.
    escalated: its escalated attribute (true/false), false when absent.

    Only evaluators in Telemetry.success_evaluators count (all when the list is empty), and none
    for a session in `explicit_sessions` (session_id of outcome events in unitledger's own format:
    those win whatever their time). `calls`: session_id, feature_tag, trace_id, span_id, request_id."""
    evaluations = evaluations.with_row_index("_evaluation")
    counted = pl.lit(True) if not telemetry.success_evaluators else pl.col("evaluation_name").is_in(list(telemetry.success_evaluators))
    candidates = evaluations.filter(counted)
    not_counted = evaluations.filter(~counted)

    call_keys = calls.select("trace_id", "span_id", "request_id", "session_id", "feature_tag").filter(pl.col("session_id").is_not_null())

    def first_session(frame: pl.LazyFrame, key: str) -> pl.LazyFrame:
        return (
            frame.filter(pl.col(key).is_not_null())
            .group_by(key)
            .agg(pl.col("session_id", "feature_tag").sort_by("session_id").first())
        )

    by_span = first_session(call_keys, "span_id")
    by_request = first_session(call_keys, "request_id")
    by_trace = first_session(call_keys, "trace_id")
    routes = [("span_id", by_span), ("parent_span_id", by_span), ("response_id", by_request), ("response_id", by_trace), ("trace_id", by_trace)]
    resolved = candidates
    for i, (column, lookup) in enumerate(routes):
        resolved = resolved.join(
            lookup.rename({lookup.collect_schema().names()[0]: column, "session_id": f"_session{i}", "feature_tag": f"_feature{i}"}),
            on=column, how="left",
        )
    found_session = pl.coalesce(pl.col("session_id"), *[pl.col(f"_session{i}") for i in range(len(routes))])
    # the feature of the call that gave the session (not of another route)
    found_feature = pl.coalesce(
        pl.col("feature_tag"),
        *[pl.when(pl.col("session_id").is_null() & pl.col(f"_session{i}").is_not_null() & pl.all_horizontal(pl.lit(True), *[pl.col(f"_session{j}").is_null() for j in range(i)]))
          .then(pl.col(f"_feature{i}")) for i in range(len(routes))],
    )
    verdict = evaluation_verdict(telemetry)
    escalated = pl.col("escalated").cast(pl.String).str.strip_chars().str.to_lowercase()
    resolved = resolved.with_columns(
        _found_session=found_session,
        _found_feature=found_feature,
        _verdict=verdict,
        _reason=pl.when(found_session.is_null())
        .then(pl.lit("evaluation for an unknown span, response or trace: no staged call has the span, parent span, response id or trace it names, and it has no session attribute"))
        .when(verdict.is_null())
        .then(pl.lit("evaluation has no pass/fail: label ") + pl.col("evaluation_score_label").cast(pl.String).fill_null("(none)").str.slice(0, 40)
              + pl.lit(" is not among pass_labels/fail_labels and score ") + pl.col("evaluation_score_value").cast(pl.String).fill_null("(none)").str.slice(0, 40)
              + pl.lit(" is not a number"))
        .when(escalated.is_not_null() & ~escalated.is_in(["true", "false"]))
        .then(pl.lit("escalated attribute is not true or false: ") + escalated.str.slice(0, 40)),
    )
    original = evaluations.collect_schema().names()
    unresolved = resolved.filter(pl.col("_reason").is_not_null()).select(*[c for c in original if c != "_evaluation"], reason=pl.col("_reason"))
    outcomes = resolved.filter(pl.col("_reason").is_null()).select(
        "source_file",
        "source_line",
        "event_id",
        "timestamp",
        session_id=pl.col("_found_session"),
        feature_tag=pl.col("_found_feature"),
        success=pl.col("_verdict"),
        escalated=escalated.fill_null("false") == "true",
        signal=pl.when(pl.col("evaluation_name").is_in(list(telemetry.explicit_evaluators))).then(pl.lit("explicit")).otherwise(pl.lit("implicit")),
        evaluation_name=pl.col("evaluation_name"),
    )
    drop = ["_evaluation"]
    if explicit_sessions is not None:
        sessions = explicit_sessions.select("session_id").unique()
        superseded = outcomes.join(sessions, on="session_id", how="semi")
        outcomes = outcomes.join(sessions, on="session_id", how="anti")
        not_counted = pl.concat([not_counted.drop(drop), evaluations.join(superseded.select("source_file", "source_line", "event_id"), on=["source_file", "source_line", "event_id"], how="semi").drop(drop)])
        return EvaluationOutcomes(outcomes, unresolved, not_counted)
    return EvaluationOutcomes(outcomes, unresolved, not_counted.drop(drop))


# --- list-price estimates ---------------------------------------------------------------------


def list_price_costs(calls: pl.LazyFrame, prices: pl.LazyFrame, date_column: str = "call_date", key: str | None = None) -> pl.LazyFrame:
    """`calls` plus `list_estimate_cost` (MONEY) and `list_estimate_currency`: input tokens
    excluding cache, output, cache read and cache write tokens, each times its list price
    (Telemetry.list_price_table()) for the call's provider and model_version, else its model, valid
    on `date_column`. Null when a token type the call used has no price (an estimate that leaves
    tokens out would understate), its prices are in more than one currency, or it used no tokens
    (nothing to price, no currency to say 0 in). The cost_source of
    such a cost is `list_estimate`: use it only for calls with neither an invoice nor a gateway cost.

    `key`: a column unique per call that ties each call to its prices. Without one, a row index
    does: only for `calls` whose row order is the same on every evaluation (a file scan), not for
    the output of a join, whose order can differ between the two uses of the plan below."""
    tokens = {
        "input": pl.col("input_tokens").cast(pl.Int64) - pl.col("cache_read_input_tokens").cast(pl.Int64) - pl.col("cache_write_input_tokens").cast(pl.Int64),
        "output": pl.col("output_tokens").cast(pl.Int64),
        "cache_read": pl.col("cache_read_input_tokens").cast(pl.Int64),
        "cache_write": pl.col("cache_write_input_tokens").cast(pl.Int64),
    }
    assert tuple(tokens) == LIST_PRICE_TOKEN_TYPES
    calls = calls.with_row_index("_call") if key is None else calls.with_columns(_call=pl.col(key))
    used = (
        calls.select("_call", "provider", "model", "model_version", _date=pl.col(date_column), **{f"_n_{t}": c for t, c in tokens.items()})
        .unpivot(index=["_call", "provider", "model", "model_version", "_date"], variable_name="token_type", value_name="tokens")
        .with_columns(pl.col("token_type").str.strip_prefix("_n_"))
        .filter(pl.col("tokens") != 0)
    )
    valid = (pl.col("_date") >= pl.col("effective_from")) & (pl.col("effective_to").is_null() | (pl.col("_date") < pl.col("effective_to")))
    priced = [
        used.join(prices.rename({"model": "_price_model"}), left_on=["provider", name, "token_type"], right_on=["provider", "_price_model", "token_type"], how="inner")
        .filter(valid)
        .select("_call", "token_type", "tokens", "price_per_token", "currency", _rank=pl.lit(rank))
        for rank, name in enumerate(("model_version", "model"))
    ]
    best = (
        pl.concat(priced)
        .group_by("_call", "token_type")
        .agg(pl.col("tokens").first(), pl.col("price_per_token", "currency").sort_by("_rank").first())
    )
    per_call = best.group_by("_call").agg(
        list_estimate_cost=(pl.col("tokens") * pl.col("price_per_token")).sum().cast(MONEY),
        _currencies=pl.col("currency").n_unique(),
        list_estimate_currency=pl.col("currency").first(),
        _priced=pl.len(),
    )
    needed = used.group_by("_call").agg(_needed=pl.len())
    complete = (pl.col("_priced") == pl.col("_needed").fill_null(0)) & (pl.col("_currencies") <= 1)
    return (
        calls.join(per_call, on="_call", how="left")
        .join(needed, on="_call", how="left")
        .with_columns(
            list_estimate_cost=pl.when(complete).then(pl.col("list_estimate_cost")),
            list_estimate_currency=pl.when(complete).then(pl.col("list_estimate_currency")),
        )
        .drop("_call", "_currencies", "_priced", "_needed")
    )
