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
    assert_same_tables(flat, otlp, DAILY)
    assert read_table(otlp, "quarantine").is_empty() and read_table(flat, "quarantine").is_empty()


def test_litellm_landing_gives_the_same_tables(flat, tmp_path, module_settings):
    litellm = _built(tmp_path, module_settings, "litellm")
    assert list((tmp_path / "landing" / "gateways" / "litellm").glob("*.csv"))
    # SpendLogs keep milliseconds (timestamp(3)): the flat calls compared at that precision
    expected = read_table(flat, "request_costs").with_columns(pl.col("called_at").dt.truncate("1ms"))
    assert_frame_equal(read_table(litellm, "request_costs"), expected)
    assert_same_tables(flat, litellm, [t for t in DAILY if t != "request_costs"])
    assert read_table(litellm, "quarantine").is_empty()
