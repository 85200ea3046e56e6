"""End to end: the same generated days landed as flat events, as OTLP JSON (GenAI spans + evaluation
log records) and as LiteLLM SpendLogs (+ flat outcome labels) give the same published request,
intent and feature tables, through the pipeline's own step functions (staging, daily, monthly)."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from unitledger.layout import Layout
from unitledger.tools.generate import generate

from unitledger.config import load_settings

from tests.compare import assert_same_tables, build_warehouse, read_table
from tests.conftest import REPO

START, DAYS = date(2026, 3, 14), 3
DAILY = ["request_costs", "intent_costs", "cost_per_intent", "cost_per_success", "cost_per_intent_monthly", "cost_per_success_monthly"]


def _built(root, settings, telemetry_format: str) -> Layout:
    generate(root, start=START, days=DAYS, requests_per_day=300, seed=5, events_format="jsonl",
             telemetry_format=telemetry_format, list_prices=settings.telemetry.list_price_table())
    layout = Layout(root)
    build_warehouse(layout, settings, START, date(2026, 3, 16))
    return layout


@pytest.fixture(scope="module")
def module_settings():
    return load_settings(REPO / "unitledger.toml")


@pytest.fixture(scope="module")
def flat(tmp_path_factory, module_settings):
    return _built(tmp_path_factory.mktemp("flat"), module_settings, "events")


def test_otlp_landing_gives_the_same_tables(flat, tmp_path, module_settings):
    otlp = _built(tmp_path, module_settings, "otlp")
    assert not list((tmp_path / "landing" / "events").glob("*.jsonl"))  # the calls came only as spans
    calls = read_table(otlp, "request_costs")
    assert calls["attempt"].max() >= 2  # retries recovered from trace structure, not stated
    # a trace says whether a call follows a tool (none does here); flat events cannot say
    called = calls.filter(pl.col("session_id").is_not_null())["after_tool_call"]  # billing-only requests have no call
    assert called.null_count() == 0 and not called.any()
    assert read_table(flat, "request_costs")["after_tool_call"].is_null().all()
    assert_frame_equal(_without(otlp, "request_costs", "after_tool_call"), _without(flat, "request_costs", "after_tool_call"))
    assert_same_tables(flat, otlp, [t for t in DAILY if t != "request_costs"])
    assert read_table(otlp, "quarantine").is_empty() and read_table(flat, "quarantine").is_empty()


def _without(layout: Layout, table: str, *columns: str) -> pl.DataFrame:
    frame = read_table(layout, table).drop(*columns)
    return frame.sort(frame.columns, nulls_last=True)


# The per-feature tables' part of token_cost per estimate source: the same calls' cost, which the
# flat side estimates from list prices and the gateway reports (its spend is that list price).
SOURCE_PARTS = {"gateway_reported_token_cost": "list_estimate_token_cost", "list_estimate_token_cost": "gateway_reported_token_cost"}


def test_litellm_landing_gives_the_same_tables(flat, tmp_path, module_settings):
    litellm = _built(tmp_path, module_settings, "litellm")
    assert list((tmp_path / "landing" / "gateways" / "litellm").glob("*.csv"))
    # SpendLogs keep milliseconds (timestamp(3)): the flat calls compared at that precision
    expected = read_table(flat, "request_costs").with_columns(pl.col("called_at").dt.truncate("1ms"))
    got = read_table(litellm, "request_costs")
    # every call carries the gateway's spend: the list price the generator wrote, so for the
    # calls nothing billed it is the flat side's list estimate, now labelled gateway_reported
    estimated = expected.filter(pl.col("cost_source") == "list_estimate")
    assert estimated.height > 0 and got.filter(pl.col("session_id").is_not_null())["gateway_reported_cost"].null_count() == 0
    expected = expected.with_columns(
        cost_source=pl.when(pl.col("cost_source") == "list_estimate").then(pl.lit("gateway_reported")).otherwise("cost_source")
    )
    provenance = ["gateway_reported_cost", "gateway_reported_currency"]
    assert_frame_equal(got.drop(provenance), expected.drop(provenance))
    reported = got.filter(pl.col("cost_source") == "gateway_reported")
    assert reported["request_id"].sort().to_list() == estimated["request_id"].sort().to_list()
    assert (reported["gateway_reported_cost"] == reported["effective_cost"]).all()
    for table in [t for t in DAILY if t != "request_costs"]:
        left = read_table(litellm, table).rename(SOURCE_PARTS)
        assert_frame_equal(left.select(read_table(flat, table).columns), read_table(flat, table), check_exact=False, rel_tol=1e-12, abs_tol=1e-12)
    assert read_table(litellm, "quarantine").is_empty()
