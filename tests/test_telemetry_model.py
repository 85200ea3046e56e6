"""Cross-record telemetry transforms on hand-built frames: retries, evaluation results -> session
outcomes, list-price estimates. Every expectation is worked out by hand in the test."""

from datetime import date
from decimal import Decimal

import polars as pl

from unitledger.config import ListPrice, Telemetry
from unitledger.model.telemetry import OUTCOME_COLUMNS, after_tool_calls, evaluation_outcomes, evaluation_verdict, infer_attempts, list_price_costs

S = pl.String


def _calls(rows: list[tuple]) -> pl.LazyFrame:
    """(span_id, trace_id, parent_span_id, operation, timestamp, status, attempt) as reader text."""
    return pl.DataFrame(
        rows, schema={"span_id": S, "trace_id": S, "parent_span_id": S, "operation": S, "timestamp": S, "status": S, "attempt": S}, orient="row"
    ).lazy()


def test_retries_follow_failures_under_one_parent_and_operation():
    t = "2026-03-02T10:00:0{}.000000Z".format
    calls = _calls([
        ("a1", "T1", "P1", "chat", t(1), "error", None),
        ("a2", "T1", "P1", "chat", t(2), "error", None),
        ("a3", "T1", "P1", "chat", t(3), "ok", None),  # third attempt
        ("a4", "T1", "P1", "chat", t(4), "ok", None),  # after a success: a new step (agent loop)
        ("a5", "T1", "P1", "embeddings", t(5), "ok", None),  # another operation
        ("a6", "T1", "P2", "chat", t(6), "ok", None),  # another parent
        ("a7", "T1", "P1", "chat", t(7), "error", None),
        ("a8", "T1", "P1", "chat", t(8), "ok", None),  # retry of a7
        ("a2", "T1", "P1", "chat", t(2), "error", None),  # a2 delivered twice
        ("b1", "T2", None, "chat", t(1), "error", None),  # root spans of one trace
        ("b2", "T2", None, "chat", t(2), "ok", None),
        ("c1", "T3", "P1", "chat", t(1), "error", "1"),  # stated attempts are kept
        ("c2", "T3", "P1", "chat", t(2), "ok", "5"),
        ("d1", None, None, "chat", t(1), "ok", None),  # no trace: nothing to infer from
    ])
    result = infer_attempts(calls).collect()
    got = sorted(zip(result["span_id"], result["attempt"], strict=True), key=lambda x: (x[0], x[1] or ""))
    assert got == [
        ("a1", "1"), ("a2", "2"), ("a2", "2"), ("a3", "3"), ("a4", "1"), ("a5", "1"), ("a6", "1"), ("a7", "1"), ("a8", "2"),
        ("b1", "1"), ("b2", "2"), ("c1", "1"), ("c2", "5"), ("d1", None),
    ]
    assert result.schema["attempt"] == pl.String


def test_retries_on_typed_rows_keep_the_type():
    calls = _calls([("a1", "T", "P", "chat", "2026-03-02T10:00:01Z", "error", None), ("a2", "T", "P", "chat", "2026-03-02T10:00:02Z", "ok", None)])
    typed = calls.with_columns(pl.col("timestamp").str.to_datetime(time_zone="UTC"), pl.col("attempt").cast(pl.Int64))
    result = infer_attempts(typed).collect().sort("span_id")
    assert result["attempt"].to_list() == [1, 2] and result.schema["attempt"] == pl.Int64


def _evaluations(rows: list[dict]) -> pl.LazyFrame:
    columns = ["source_file", "source_line", "event_id", "timestamp", "session_id", "feature_tag", "escalated", "trace_id", "span_id",
               "parent_span_id", "response_id", "evaluation_name", "evaluation_score_value", "evaluation_score_label"]
    full = [{c: r.get(c) for c in columns} | {"source_file": "logs.jsonl", "source_line": i + 1, "event_id": f"ev{i}", "timestamp": "2026-03-03T09:00:00.000000Z"}
            for i, r in enumerate(rows)]
    return pl.DataFrame(full, schema={c: (pl.Int64 if c == "source_line" else S) for c in columns}).lazy()


CALLS = pl.DataFrame(
    {
        "trace_id": ["T1", "T1", "T2", "T3", "T3"],
        "span_id": ["s1", "s2", "s3", "s4", "s5"],
        "request_id": ["chatcmpl-1", "chatcmpl-2", "chatcmpl-3", "chatcmpl-4", "chatcmpl-5"],
        "session_id": ["ses-A", "ses-A", "ses-B", "ses-D", "ses-C"],
        "feature_tag": ["chat", "chat", "search", "f-D", "f-C"],
    }
).lazy()


def test_evaluations_find_their_session_by_each_route():
    evaluations = _evaluations([
        {"session_id": "ses-own", "evaluation_name": "e", "evaluation_score_label": "pass", "trace_id": "T1"},  # own session wins
        {"span_id": "s3", "trace_id": "T9", "evaluation_name": "e", "evaluation_score_label": "Fail"},  # the judged span
        {"span_id": "evaluator", "parent_span_id": "s2", "evaluation_name": "e", "evaluation_score_value": "0.9"},  # under the judged span
        {"response_id": "chatcmpl-3", "evaluation_name": "e", "evaluation_score_value": "0.2"},  # a response id
        {"response_id": "T1", "evaluation_name": "e", "evaluation_score_value": "0.5"},  # a trace id in response id
        {"trace_id": "T3", "evaluation_name": "e", "evaluation_score_label": "yes"},  # a trace of two sessions: the smallest
        {"trace_id": "T404", "span_id": "zz", "evaluation_name": "e", "evaluation_score_label": "pass"},  # unknown
        {"session_id": "ses-own", "evaluation_name": "e", "evaluation_score_label": "maybe", "evaluation_score_value": "n/a"},  # no verdict
        {"session_id": "ses-own", "evaluation_name": "e", "evaluation_score_label": "pass", "escalated": "sometimes"},
    ])
    result = evaluation_outcomes(evaluations, CALLS, Telemetry())
    outcomes = result.outcomes.collect().sort("source_line")
    assert outcomes.columns == list(OUTCOME_COLUMNS)
    assert outcomes.select("source_line", "session_id", "feature_tag", "success").rows() == [
        (1, "ses-own", None, True),
        (2, "ses-B", "search", False),
        (3, "ses-A", "chat", True),
        (4, "ses-B", "search", False),  # 0.2 < 0.5
        (5, "ses-A", "chat", True),  # 0.5 >= 0.5
        (6, "ses-C", "f-C", True),  # ses-C < ses-D, and its feature with it
    ]
    assert outcomes["signal"].unique().to_list() == ["implicit"] and not outcomes["escalated"].any()
    unresolved = result.unresolved.collect().sort("source_line")
    assert unresolved["source_line"].to_list() == [7, 8, 9]
    assert unresolved["reason"][0].startswith("evaluation for an unknown span, response or trace")
    assert unresolved["reason"][1] == "evaluation has no pass/fail: label maybe is not among pass_labels/fail_labels and score n/a is not a number"
    assert unresolved["reason"][2] == "escalated attribute is not true or false: sometimes"


def test_evaluator_names_threshold_signal_and_explicit_outcomes_win():
    evaluations = _evaluations([
        {"session_id": "ses-A", "evaluation_name": "user_feedback", "evaluation_score_label": "good", "escalated": "TRUE"},
        {"session_id": "ses-B", "evaluation_name": "task_success", "evaluation_score_value": "0.75"},
        {"session_id": "ses-B", "evaluation_name": "toxicity", "evaluation_score_value": "0.99"},
        {"session_id": "ses-C", "evaluation_name": "task_success", "evaluation_score_value": "0.9"},
    ])
    telemetry = Telemetry(success_evaluators=("task_success", "user_feedback"), score_threshold=0.8)
    explicit = pl.DataFrame({"session_id": ["ses-C"]}).lazy()
    result = evaluation_outcomes(evaluations, CALLS, telemetry, explicit_sessions=explicit)
    outcomes = result.outcomes.collect().sort("source_line")
    assert outcomes.select("session_id", "success", "escalated", "signal", "evaluation_name").rows() == [
        ("ses-A", True, True, "explicit", "user_feedback"),
        ("ses-B", False, False, "implicit", "task_success"),  # 0.75 < 0.8
    ]
    assert sorted(result.not_counted.collect()["source_line"].to_list()) == [3, 4]  # toxicity; ses-C has an explicit outcome


def test_verdict_reads_labels_case_insensitively_and_scores_as_text_or_numbers():
    frame = pl.DataFrame({
        "evaluation_score_label": ["PASS", " failed ", None, None, "unknown", None],
        "evaluation_score_value": [None, "0.99", "0.5", "0.49", "0.7", "NaN"],
    })
    assert frame.select(evaluation_verdict(Telemetry())).to_series().to_list() == [True, False, True, False, True, None]
    numbers = pl.DataFrame({"evaluation_score_label": [None, None], "evaluation_score_value": [0.5, 0.1]}, schema={"evaluation_score_label": S, "evaluation_score_value": pl.Float64})
    assert numbers.select(evaluation_verdict(Telemetry())).to_series().to_list() == [True, False]


def test_list_price_estimates_by_token_type_model_version_and_date():
    prices = Telemetry(list_prices=(
        ListPrice("openai", "gpt-x", "input", "USD", date(2026, 1, 1), Decimal("0.000001")),
        ListPrice("openai", "gpt-x", "input", "USD", date(2026, 3, 1), Decimal("0.0000008")),
        ListPrice("openai", "gpt-x", "output", "USD", date(2026, 1, 1), Decimal("0.000004")),
        ListPrice("openai", "gpt-x", "cache_read", "USD", date(2026, 1, 1), Decimal("0.0000001")),
        ListPrice("openai", "gpt-x-2026-02", "output", "USD", date(2026, 1, 1), Decimal("0.000003")),
    )).list_price_table()
    calls = pl.DataFrame({
        "request_id": ["feb", "mar", "snapshot", "cache_write", "unknown", "nothing"],
        "provider": ["openai"] * 6,
        "model": ["gpt-x", "gpt-x", "gpt-x", "gpt-x", "gpt-y", "gpt-x"],
        "model_version": [None, None, "gpt-x-2026-02", None, None, None],
        "call_date": [date(2026, 2, 28), date(2026, 3, 1), date(2026, 3, 1), date(2026, 3, 1), date(2026, 3, 1), date(2026, 3, 1)],
        "input_tokens": [1000, 1000, 1000, 1000, 10, 0],
        "output_tokens": [100, 100, 100, 0, 10, 0],
        "cache_read_input_tokens": [400, 400, 0, 0, 0, 0],
        "cache_write_input_tokens": [0, 0, 0, 10, 0, 0],
    }).lazy()
    result = list_price_costs(calls, prices).collect().sort("request_id")
    got = dict(zip(result["request_id"], result["list_estimate_cost"], strict=True))
    # feb: 600 x 0.000001 + 100 x 0.000004 + 400 x 0.0000001 = 0.0006 + 0.0004 + 0.00004
    assert got["feb"] == Decimal("0.00104")
    # mar: the March input price, 600 x 0.0000008 = 0.00048
    assert got["mar"] == Decimal("0.00048") + Decimal("0.0004") + Decimal("0.00004")
    # snapshot: output priced by model_version (0.000003), input by model (March)
    assert got["snapshot"] == Decimal("0.0008") + Decimal("0.0003")
    assert got["cache_write"] is None  # cache writes have no price: no estimate rather than too low a one
    assert got["unknown"] is None and got["nothing"] is None
    assert result.filter(pl.col("request_id") == "feb")["list_estimate_currency"].item() == "USD"
    assert result.schema["list_estimate_cost"] == pl.Decimal(38, 18)


def test_a_call_follows_a_tool_only_as_its_next_sibling():
    """Trace t: under agent A, chat c1, tools x1 and x2 (parallel), chat c2 (after x2: true), chat
    c3 (after c2: false); under another parent B, chat c4 starting after x2 (not its sibling:
    false); c2 delivered twice (same span): one place in the trace, both copies true (staging keeps
    the first); a call without a trace is never returned."""
    def row(span, parent, op, t, source_line=1, trace="t"):
        return {"source_file": "f", "source_line": source_line, "event_id": span, "trace_id": trace, "span_id": span,
                "parent_span_id": parent, "timestamp": f"2026-03-02T10:00:0{t}Z", "operation": op}

    calls = pl.DataFrame([row("c1", "A", "chat", 1), row("c2", "A", "chat", 5), row("c2", "A", "chat", 5, source_line=2),
                          row("c3", "A", "chat", 6), row("c4", "B", "chat", 7), row("c5", None, "chat", 8, trace=None)]).lazy()
    spans = pl.DataFrame([row("A", None, "invoke_agent", 0), row("x1", "A", "execute_tool", 2), row("x2", "A", "execute_tool", 3)]).lazy()
    found = after_tool_calls(calls, spans).collect().sort("source_line")
    assert found.select("event_id", "source_line", "after_tool_call").rows() == [("c2", 1, True), ("c2", 2, True)]
