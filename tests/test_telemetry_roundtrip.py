"""The same synthetic days carried as flat events, as OTLP JSON (spans + evaluation log records or
span events) and as LiteLLM SpendLogs give the same staged calls and outcomes.

The flat side goes through the existing flat reader and rules (landing.read_events_raw,
flat_events.events_problems); the other side through the writers, the new readers and the transforms.
Retries are not written into OTLP spans: they come back from the trace structure."""

from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from unitledger.sources import events as flat_events
from unitledger.config import Telemetry
from unitledger.tools.generate import generate
from unitledger.sources.events import ACCOUNT_FIELDS, read_events_raw
from unitledger.sources.files import LandingFile
from unitledger.sources.gateways import read_litellm_spendlogs
from unitledger.sources.otlp import read_otlp
from unitledger.tools.telemetry_formats import LITELLM_COLUMNS, litellm_spendlogs, otlp_log_lines, otlp_trace_lines, with_turns, write_lines

from tests.telemetry_builders import stage_rows

DAYS = 2


@pytest.fixture(scope="module")
def flat_days(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("flat")
    summary = generate(root, start=date(2026, 3, 15), days=DAYS, requests_per_day=400, seed=11, events_format="jsonl")
    return summary.event_files


def _landing(path: Path) -> LandingFile:
    st = path.stat()
    return LandingFile(path, path.name, st.st_size, st.st_mtime_ns)


def _flat_staged(files: list[Path]) -> dict[str, pl.DataFrame]:
    checked = flat_events.events_problems(pl.concat([read_events_raw(_landing(f)) for f in files]))
    assert flat_events.events_quarantine(checked).collect().is_empty()
    return {"calls": flat_events.llm_calls_typed(checked).collect(), "outcomes": flat_events.outcomes_typed(checked).collect()}


def _events_by_file(files: list[Path]) -> pl.DataFrame:
    """Every flat event as text, with the index of its file (turns are computed over all days)."""
    return pl.concat([read_events_raw(_landing(f)).with_columns(_file=pl.lit(i)) for i, f in enumerate(files)]).collect()


# what says how a row came rather than what it says (after_tool_call: a trace can tell, flat events cannot)
FORMAT_COLUMNS = ("source_format", "trace_id", "span_id", "parent_span_id", "operation", "response_id",
                  "reasoning_output_tokens", "reported_cost", "reported_currency", "evaluation_name", "after_tool_call",
                  *ACCOUNT_FIELDS)  # a gateway's key, team, project and user: flat events carry none


def _comparable(frame: pl.DataFrame, drop: tuple[str, ...]) -> pl.DataFrame:
    """`frame` without its place and format columns, each distinct row once (a copy of an event
    delivered twice in one OTLP batch line is staged once; staging counts copies once anyway)."""
    kept = frame.drop(*drop, *[c for c in FORMAT_COLUMNS if c in frame.columns]).unique()
    return kept.sort(kept.columns, nulls_last=True)


@pytest.mark.parametrize("outcomes_as", ["logs", "span_events"])
def test_otlp_gives_the_same_calls_and_outcomes(flat_days, tmp_path, outcomes_as):
    flat = _flat_staged(flat_days)
    events = with_turns(_events_by_file(flat_days).lazy()).collect()
    rows = []
    for i, _ in enumerate(flat_days):
        day = events.filter(pl.col("_file") == i).drop("_file").lazy()
        traces = tmp_path / f"traces-{i}.jsonl.gz"
        write_lines(otlp_trace_lines(day, spans_per_line=64, outcomes_as=outcomes_as), traces)
        rows.append(read_otlp(traces, traces.name, Telemetry()))
        if outcomes_as == "logs":
            logs = tmp_path / f"logs-{i}.jsonl"
            write_lines(otlp_log_lines(day, records_per_line=50), logs)
            rows.append(read_otlp(logs, logs.name, Telemetry()))
    all_rows = pl.concat(rows).collect()
    assert all_rows.filter(pl.col("problem").is_not_null()).is_empty()
    staged = stage_rows(all_rows.lazy())
    assert staged["quarantine"].is_empty()

    # every call, retries included: only its event id (the span id), place and format columns differ
    assert flat["calls"]["attempt"].max() >= 2  # the data has retries to recover
    place = ("event_id", "source_file", "source_line")
    assert_frame_equal(_comparable(staged["calls"], place), _comparable(flat["calls"], place))
    assert staged["calls"]["event_id"].n_unique() == flat["calls"]["event_id"].n_unique()
    # outcomes keep their event id (log.record.uid), explicit and implicit signals, escalations
    assert set(flat["outcomes"]["signal"]) == {"explicit", "implicit"} and flat["outcomes"]["escalated"].any()
    assert_frame_equal(_comparable(staged["outcomes"], place[1:]), _comparable(flat["outcomes"], place[1:]))


def test_litellm_spendlogs_give_the_same_calls_and_list_cost(flat_days, tmp_path, settings):
    flat = _flat_staged(flat_days)
    events = _events_by_file(flat_days)
    prices = settings.telemetry.list_price_table()
    rows = []
    for i, flat_file in enumerate(flat_days):
        day = events.filter(pl.col("_file") == i).drop("_file").lazy()
        spend = tmp_path / f"spend-{i}.csv"
        spend_rows = litellm_spendlogs(day, prices)
        assert spend_rows.collect_schema().names() == list(LITELLM_COLUMNS)
        spend_rows.sink_csv(spend)
        rows.append(read_litellm_spendlogs(spend, spend.name, Telemetry()))
        # outcomes stay in unitledger's own format: a gateway has none
        outcomes_only = tmp_path / f"outcomes-{i}.jsonl"
        pl.scan_lines(flat_file).filter(pl.col("line").str.contains('"event_type":"outcome"', literal=True)).sink_csv(
            outcomes_only, include_header=False, quote_style="never")
        rows.append(read_events_raw(_landing(outcomes_only)))
    all_rows = pl.concat(rows, how="diagonal").collect()
    staged = stage_rows(all_rows.lazy())
    assert staged["quarantine"].is_empty()

    # SpendLogs keep milliseconds (timestamp(3)): the flat calls compared at that precision
    expected_calls = flat["calls"].with_columns(pl.col("timestamp").dt.truncate("1ms"))
    place = ("event_id", "source_file", "source_line")
    assert_frame_equal(_comparable(staged["calls"], place), _comparable(expected_calls, place))
    assert_frame_equal(_comparable(staged["outcomes"], place[1:]), _comparable(flat["outcomes"], place[1:]))

    # spend: the list price of each call, recomputed here with Python decimals
    per_million = {  # unitledger.toml's demo list prices: input, output, cache read, cache write
        "claude-haiku": ("1.00", "5.00", "0.10", "1.25"), "claude-opus": ("5.00", "25.00", "0.50", "6.25"),
        "gpt-5-mini": ("0.25", "2.00", "0.025", None), "gpt-5": ("1.25", "10.00", "0.125", None),
    }
    calls = all_rows.filter(pl.col("event_type") == "llm_call")
    for row in calls.head(300).iter_rows(named=True):
        n_in, n_out, n_cr, n_cw = (int(row[c]) for c in ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_write_input_tokens"))
        p_in, p_out, p_cr, p_cw = (Decimal(p) / 1_000_000 if p else None for p in per_million[row["model"]])
        expected = (n_in - n_cr - n_cw) * p_in + n_out * p_out + n_cr * p_cr + (n_cw * p_cw if n_cw else 0)
        assert Decimal(row["reported_cost"]) == expected, row["request_id"]
