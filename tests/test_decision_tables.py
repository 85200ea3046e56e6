"""The decision tables in the warehouse: cost_breakdown built by the daily step (components checked
against DuckDB SQL over the published request_costs and intent_costs; the same in hash buckets),
its monthly rollup, the decision step's tables over the window ending at the latest built day
(checked against DuckDB SQL over cost_per_success), the Dagster assets with their warning check on
regressions, and the column schemas every asset shows."""

from __future__ import annotations

import dataclasses
import re
import shutil
from datetime import date, timedelta
from decimal import Decimal

import dagster as dg
import duckdb
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from pipelines.automation import monthly_job
from pipelines.decisions import DECISION_ASSETS, decision_tables
from pipelines.definitions import ALL_ASSETS, defs
from pipelines.resources import Warehouse
from tests.builders import llm_call, outcome, write_events
from tests.compare import build_warehouse, read_table
from tests.conftest import REPO
from tests.test_decisions import DAY1, daily_rows, version_intents
from tests.test_report import browser  # noqa: F401 (the headless Chromium fixture)
from unitledger.config import load_settings
from unitledger.layout import Layout
from unitledger.model.features import cost_per_success_ratios
from unitledger.steps import daily, reconciliation, staging
from unitledger.steps.decisions import DECISION_TABLES, NothingBuiltError, build_decision_tables, latest_window
from unitledger.tools.generate import generate
from unitledger.warehouse import dictionary
from unitledger.warehouse.manifest import read_manifest, scan_table
from unitledger.warehouse.publish import Publication, Spill

FIRST, LAST = date(2026, 3, 1), date(2026, 3, 14)
CONFIG = REPO / "unitledger.toml"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Layout:
    """Two weeks of generated traffic plus a session none of whose calls was billed; daily and
    monthly tables built by the pipeline steps, then the decision tables."""
    layout = Layout(tmp_path_factory.mktemp("decisions") / "data")
    generate(layout.data_dir, start=FIRST, days=(LAST - FIRST).days + 1, requests_per_day=120, seed=5)
    unbilled = [llm_call("r-unbilled", "s-unbilled", "2026-03-05T12:00:00Z"), outcome("s-unbilled", False, "2026-03-05T13:00:00Z")]
    write_events(layout.landing_events / "unbilled.jsonl", unbilled)
    # Without list prices: the unbilled session keeps null money (no list_estimate), so token_cost is
    # invoice cost only and splits by token type exactly.
    settings = load_settings(CONFIG)
    settings = dataclasses.replace(settings, telemetry=dataclasses.replace(settings.telemetry, list_prices=()))
    build_warehouse(layout, settings, FIRST, LAST)
    assert reconciliation.build_reconciliation(layout, settings, FIRST.replace(day=1), LAST.replace(day=1)).passed  # the report shows it
    assert build_decision_tables(layout, settings).passed
    return layout


def sql(layout: Layout, query: str) -> pl.DataFrame:
    """`query` with {table} placeholders read straight from the manifest's files (not the views)."""
    published = read_manifest(layout)

    def source(name: str) -> str:
        files = ", ".join(f"'{layout.warehouse / f}'" for f in published.files(name))
        return f"read_parquet([{files}], hive_partitioning = true)"

    names = {name: source(name) for name in ("request_costs", "intent_costs", "cost_per_success", "cost_breakdown")}
    with duckdb.connect() as con:
        return con.sql(query.format(**names)).pl()


# ---------------------------------------------------------------------------------------------
# cost_breakdown, daily and monthly
# ---------------------------------------------------------------------------------------------

BREAKDOWN_SQL = """
WITH calls AS (
    SELECT i.date, i.feature_tag, i.model_version, i.prompt_version, i.billing_currency, i.session_id, i.turns,
           r.request_id, r.called_at, r.attempt, r.status,
           r.effective_cost - coalesce(r.cache_write_cost, 0) AS effective_cost, r.cache_write_cost,
           (r.attempt >= 2 OR r.status = 'error') AS wasted,
           row_number() OVER (PARTITION BY i.session_id ORDER BY (r.attempt = 1) DESC, r.called_at, r.request_id) = 1
               AND r.attempt = 1 AS first_turn
    FROM {intent_costs} AS i JOIN {request_costs} AS r USING (session_id)
    WHERE i.date <= DATE '2026-03-13'
)
SELECT date, feature_tag, model_version, prompt_version, billing_currency,
       CASE WHEN max(turns) <= 1 THEN '1' WHEN max(turns) <= 3 THEN '2-3' WHEN max(turns) <= 5 THEN '4-5' ELSE '6+' END AS turns_bucket,
       session_id,
       sum(effective_cost) FILTER (WHERE first_turn AND NOT wasted) AS first_attempt_cost,
       sum(effective_cost) FILTER (WHERE NOT first_turn AND NOT wasted) AS multi_turn_cost,
       sum(effective_cost) FILTER (WHERE wasted) AS retry_cost,
       sum(cache_write_cost) AS cache_write_cost,
       count(*) FILTER (WHERE wasted) AS wasted_requests,
       count(*) AS requests
FROM calls
GROUP BY date, feature_tag, model_version, prompt_version, billing_currency, session_id
"""


def test_cost_breakdown_components_equal_sql_over_the_published_requests(built):
    """Every call of an intent in one component, by hand in SQL: its cache writes (request_costs'
    cache_write_cost: the generated rows bill each token type), then the retry tax (attempt >= 2
    or an error), the first turn, the later turns; no tool flag in request_costs, so tool calls
    are null and their cost is in the others."""
    grain = ["date", "feature_tag", "model_version", "prompt_version", "billing_currency", "turns_bucket"]
    expected = sql(built, f"""
        SELECT {", ".join(grain)},
               CASE WHEN billing_currency IS NOT NULL THEN coalesce(sum(first_attempt_cost), 0) END AS first_attempt_cost,
               CASE WHEN billing_currency IS NOT NULL THEN coalesce(sum(multi_turn_cost), 0) END AS multi_turn_cost,
               CASE WHEN billing_currency IS NOT NULL THEN coalesce(sum(retry_cost), 0) END AS retry_cost,
               CASE WHEN billing_currency IS NOT NULL THEN sum(cache_write_cost) END AS cache_write_cost,
               sum(wasted_requests)::BIGINT AS wasted_requests, sum(requests)::BIGINT AS requests, count(*)::BIGINT AS intents
        FROM ({BREAKDOWN_SQL}) GROUP BY {", ".join(grain)}
    """).sort(grain, nulls_last=True)
    ours = (
        read_table(built, "cost_breakdown")
        .filter(pl.col("date") <= date(2026, 3, 13))
        .select(*grain, "first_attempt_cost", "multi_turn_cost", "retry_cost", "cache_write_cost", "wasted_requests", "requests", "intents")
        .sort(grain, nulls_last=True)
    )
    assert ours.height > 50 and ours["retry_cost"].drop_nulls().sum() > 0 and ours["multi_turn_cost"].drop_nulls().sum() > 0
    assert_frame_equal(ours, expected, check_dtypes=False)
    whole = read_table(built, "cost_breakdown")
    assert whole["tool_cost"].is_null().all() and whole["cache_write_cost"].drop_nulls().sum() > 0
    billed = whole.filter(pl.col("billing_currency").is_not_null())
    typed = ["input_cost", "output_cost", "cache_read_cost", "cache_write_cost"]
    assert billed.select(pl.sum_horizontal(typed) == pl.col("token_cost")).to_series().all()
    unbilled = whole.filter(pl.col("billing_currency").is_null())
    assert unbilled.height >= 1 and unbilled["total_cost"].is_null().all() and unbilled["first_attempt_cost"].is_null().all()


def test_cost_breakdown_agrees_with_cost_per_intent(built):
    grain = ["date", "feature_tag", "model_version", "prompt_version", "billing_currency"]
    summed = (
        read_table(built, "cost_breakdown")
        .group_by(grain)
        .agg(pl.col("intents").sum(), pl.col("requests").sum(), pl.col("token_cost").sum(), pl.col("total_cost").sum())
        .with_columns(pl.when(pl.col("billing_currency").is_not_null()).then(pl.col(c)).alias(c) for c in ("token_cost", "total_cost"))
        .sort(grain, nulls_last=True)
    )
    per_intent = read_table(built, "cost_per_intent").select(*grain, "intents", "requests", "token_cost", "total_cost").sort(grain, nulls_last=True)
    assert_frame_equal(summed, per_intent, check_dtypes=False)


def test_cost_breakdown_monthly_is_the_sum_of_its_days(built):
    grain = ["billing_period", "feature_tag", "model_version", "prompt_version", "billing_currency", "turns_bucket"]
    expected = sql(built, f"""
        SELECT strftime(date, '%Y-%m') AS billing_period, feature_tag, model_version, prompt_version, billing_currency, turns_bucket,
               sum(intents)::BIGINT AS intents, sum(token_cost) AS token_cost, sum(retry_cost) AS retry_cost,
               sum(multi_turn_cost) AS multi_turn_cost, sum(labeled_total_cost) AS labeled_total_cost, sum(cache_write_cost) AS cache_write_cost
        FROM {{cost_breakdown}} GROUP BY ALL
    """).sort(grain, nulls_last=True)
    monthly = read_table(built, "cost_breakdown_monthly").select(expected.columns).sort(grain, nulls_last=True)
    assert monthly.height > 20
    assert_frame_equal(monthly, expected, check_dtypes=False)


def test_cost_breakdown_is_the_same_built_in_hash_buckets(tmp_path, monkeypatch, settings):
    """Past BUCKET_CALLS calls the day is worked one hash bucket of sessions at a time: the
    intents of every bucket are summed to the grain once, and the table does not change."""
    from unitledger.model import intents

    layouts = [Layout(tmp_path / name / "data") for name in ("whole", "buckets")]
    generate(layouts[0].data_dir, start=FIRST, days=3, requests_per_day=1500, seed=8)
    shutil.copytree(layouts[0].landing, layouts[1].landing, copy_function=shutil.copy2)
    seen = []
    intent_costs = intents.intent_costs

    def spy(*args, **kwargs):  # called once per bucket of sessions
        seen[-1] += 1
        return intent_costs(*args, **kwargs)

    monkeypatch.setattr(intents, "intent_costs", spy)
    for layout, bucket_calls in zip(layouts, (daily.BUCKET_CALLS, 1_000)):
        monkeypatch.setattr("unitledger.steps.daily.BUCKET_CALLS", bucket_calls)
        staging.stage_billing(layout, settings, FIRST + timedelta(days=2))
        staging.stage_events(layout)
        seen.append(0)
        assert daily.build_daily_tables(layout, settings, FIRST + timedelta(days=1), FIRST + timedelta(days=1)).passed
    assert seen[0] == 1 and seen[1] >= 2
    whole, buckets = (read_table(layout, "cost_breakdown") for layout in layouts)
    assert whole.height > 10
    assert_frame_equal(whole, buckets)


# ---------------------------------------------------------------------------------------------
# The decision step
# ---------------------------------------------------------------------------------------------


def test_the_window_ends_at_the_latest_built_day_and_starts_no_earlier_than_the_first(built):
    published = read_manifest(built)
    assert (latest_window(published, 30).first, latest_window(published, 30).last) == (FIRST, LAST)
    assert (latest_window(published, 7).first, latest_window(published, 7).last) == (LAST - timedelta(days=6), LAST)
    tables = {name: read_table(built, name) for name in DECISION_TABLES if name != "what_if"}
    assert tables.pop("version_regressions").is_empty()  # the generator's prompt change is on the 16th: after the window
    assert all(frame.height > 0 for frame in tables.values()), {n: f.height for n, f in tables.items()}
    assert set(tables["break_even"]["window_start"]) == {FIRST} and set(tables["break_even"]["window_end"]) == {LAST}


def test_break_even_equals_sql_over_cost_per_success(built):
    """C, p and TCO = (token cost + failures × L) / labeled intents per model, summed in SQL from
    the daily cost_per_success rows of the window; L from the settings file."""
    per_model = sql(built, """
        SELECT feature_tag, model_version, billing_currency, sum(labeled_intents)::BIGINT AS n, sum(failures)::BIGINT AS f,
               sum(token_cost) AS token_cost, sum(labor_cost) AS labor_cost
        FROM {cost_per_success} WHERE billing_currency IS NOT NULL AND labeled_intents > 0 GROUP BY ALL
    """)
    settings = load_settings(CONFIG)
    labor = {(c.currency, c.feature_tag): c.amount for c in settings.labor}
    rows = read_table(built, "break_even")
    assert rows.height >= 5
    for row in rows.iter_rows(named=True):
        for side in ("a", "b"):
            model = per_model.filter(
                (pl.col("feature_tag") == row["feature_tag"]) & (pl.col("billing_currency") == row["billing_currency"])
                & (pl.col("model_version") == row[f"model_{side}"])
            ).row(0, named=True)
            amount = labor.get((row["billing_currency"], row["feature_tag"]), labor[(row["billing_currency"], None)])
            assert row["labor_cost_per_failure"] == amount
            assert model["labor_cost"] == amount * model["f"]  # the daily rows were built with the same L
            c, p = float(model["token_cost"]) / model["n"], model["f"] / model["n"]
            assert row[f"labeled_intents_{side}"] == model["n"] and row[f"token_cost_{side}"] == model["token_cost"]
            assert row[f"token_cost_per_intent_{side}"] == pytest.approx(c, rel=1e-12)
            assert row[f"tco_{side}"] == pytest.approx(c + p * float(amount), rel=1e-12)
        assert row["token_cost_per_intent_a"] <= row["token_cost_per_intent_b"]
        assert row["break_even_failure_gap"] == pytest.approx((row["token_cost_per_intent_b"] - row["token_cost_per_intent_a"]) / float(amount))


def test_money_breakdown_sums_the_window_and_adds_up(built):
    money = read_table(built, "money_breakdown")
    expected = sql(built, """
        SELECT feature_tag, model_version, billing_currency, sum(total_cost) AS total_cost, sum(retry_cost) AS retry_cost,
               sum(labor_cost) AS labor_cost
        FROM {cost_breakdown} WHERE billing_currency IS NOT NULL GROUP BY ALL
    """)
    joined = money.join(expected, on=["feature_tag", "model_version", "billing_currency"], how="full", nulls_equal=True, suffix="_sql")
    assert joined.height == money.height == expected.height > 5
    for column in ("total_cost", "retry_cost", "labor_cost"):
        assert (joined[column] == joined[f"{column}_sql"]).all(), column
    parts = ["first_attempt_cost", "multi_turn_cost", "retry_cost", "cache_write_cost", "labor_cost"]  # tool calls unknown: null
    assert money.select(pl.sum_horizontal(parts) == pl.col("total_cost")).to_series().all()
    assert money["tool_cost"].is_null().all() and money["cache_write_share"].is_not_null().all()
    assert money["no_cache_token_cost"].is_not_null().all()


def test_what_if_rows_are_labelled_and_only_the_scenario_changes(built, tmp_path):
    config = tmp_path / "what-if.toml"
    config.write_text(CONFIG.read_text().replace('# "claude-opus-2026-02" = "0.8"', '"claude-opus-2026-02" = "0.8"'))
    settings = load_settings(config)
    assert dict(settings.decisions.what_if.price_multipliers) == {"claude-opus-2026-02": Decimal("0.8")}
    assert build_decision_tables(built, settings).passed
    actual, scenario = read_table(built, "break_even"), read_table(built, "what_if")
    assert set(scenario["scenario"]) == {"what-if"} and set(actual["scenario"]) == {"actual"}
    assert set(scenario["scenario_description"]) == {"prices of claude-opus-2026-02 x 0.8"}
    key = ["feature_tag", "billing_currency", "model_a", "model_b"]
    pairs = actual.join(scenario, on=key, how="inner", suffix="_what_if")
    assert pairs.height == actual.height == scenario.height
    for row in pairs.iter_rows(named=True):
        for side in ("a", "b"):
            factor = Decimal("0.8") if row[f"model_{side}"] == "claude-opus-2026-02" else Decimal(1)
            assert row[f"token_cost_{side}_what_if"] == row[f"token_cost_{side}"] * factor
            assert row[f"failure_rate_{side}_what_if"] == row[f"failure_rate_{side}"]  # outcomes are not repriced
    assert any(r["model_b"] == "claude-opus-2026-02" for r in pairs.iter_rows(named=True))
    assert build_decision_tables(built, load_settings(CONFIG)).passed  # back to no scenario: what_if empty
    assert read_table(built, "what_if").is_empty()


def test_nothing_built_yet_says_so(layout, settings):
    layout.landing.mkdir(parents=True)
    with pytest.raises(NothingBuiltError, match="run `unitledger materialize` first"):
        build_decision_tables(layout, settings)


# ---------------------------------------------------------------------------------------------
# Dagster
# ---------------------------------------------------------------------------------------------


def publish_days(layout: Layout, table: str, frame: pl.DataFrame) -> None:
    spill = Spill(layout.tmp, table, "date")
    try:
        spill.sink(frame.lazy())
        publication = Publication(layout)
        publication.add(table, spill, sorted({d.isoformat() for d in frame["date"]}))
        publication.commit()
    finally:
        spill.cleanup()


def test_a_regression_warns_with_its_numbers_and_the_run_succeeds(layout):
    """A prompt change that made cost per success dearer (test_decisions' hand-built intents):
    the asset check warns, naming the feature and the numbers; nothing fails."""
    layout.landing.mkdir(parents=True)
    from schemas import CostPerSuccess

    rows = cost_per_success_ratios(daily_rows(version_intents("support_chat", "3.00"))).select(list(CostPerSuccess.to_schema().columns))
    publish_days(layout, "cost_per_success", rows.collect())
    result = dg.materialize(
        ALL_ASSETS, selection=[decision_tables], instance=dg.DagsterInstance.ephemeral(),
        resources={"warehouse": Warehouse(data_dir=str(layout.data_dir), config_path=str(CONFIG))},
    )  # fmt: skip
    assert result.success
    (check,) = [c for c in result.get_asset_check_evaluations() if c.check_name == "no_regression"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    regression = read_table(layout, "version_regressions").filter(pl.col("regressed")).row(0, named=True)
    assert check.metadata["regressions"].value == 1
    assert regression["change_date"] == DAY1 + timedelta(days=14)
    assert f"{regression['cost_per_success_before']:.4f} -> {regression['cost_per_success_after']:.4f}" in check.description
    assert "support_chat (USD) prompt change on 2026-03-16" in check.description
    assert check.metadata["regression_1"].value["difference_ci95_low"] == regression["difference_ci95_low"] > 0
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialized == set(DECISION_TABLES)


def test_no_regression_passes(built):
    from pipelines.decisions import regression_check

    check = regression_check(read_table(built, "version_regressions").with_columns(regressed=pl.lit(False)))
    assert check.passed and getattr(check.metadata["regressions"], "value", check.metadata["regressions"]) == 0


def test_the_monthly_job_after_every_daily_run_refreshes_the_decisions_and_the_report():
    """monthly_after_daily requests the `monthly` job after each successful daily run (the nightly
    one included): the decision tables and the report are in it."""
    job = defs.resolve_job_def(monthly_job.name)
    assert {"decision_tables", "report"} <= set(job.graph.node_names())
    assert {a.node_def.name for a in DECISION_ASSETS} == {"decision_tables", "report"}


def test_every_table_asset_shows_its_columns_from_the_data_dictionary():
    graph = defs.resolve_asset_graph()
    seen = set()
    for key in graph.get_all_asset_keys():
        name = key.to_user_string()
        schema = graph.get(key).metadata.get("dagster/column_schema")
        if name in ("report", "reconciliation_parts"):  # an HTML file; partial sums under .parts/, not a table
            assert schema is None
            continue
        columns = [c.name for c in schema.schema.columns] if hasattr(schema, "schema") else [c.name for c in schema.columns]
        if name in dictionary.TABLES:
            model = dictionary.TABLES[name][0]
            assert columns == [n for n, *_ in dictionary.columns(model)], name
            described = {c.name: c.description for c in (schema.schema.columns if hasattr(schema, "schema") else schema.columns)}
            assert described["billing_currency" if "billing_currency" in described else columns[0]]
            seen.add(name)
        else:
            assert name in ("staged_billing", "staged_events") and columns, name
    assert seen == {t for t in dictionary.TABLES if t != "quarantine"}
    staged = graph.get(dg.AssetKey("staged_events")).metadata["dagster/column_schema"]
    names = [c.name for c in (staged.schema.columns if hasattr(staged, "schema") else staged.columns)]
    assert "llm_calls.request_id" in names and "outcomes.success" in names



# ---------------------------------------------------------------------------------------------
# The analyst's commands on the built warehouse: compare and report
# ---------------------------------------------------------------------------------------------


def run_cli(layout: Layout, command: str, *args: str) -> int:
    from unitledger.cli import main

    return main([command, "--data-dir", str(layout.data_dir), "--config", str(CONFIG), *args])


def assert_rounded(text: str, value) -> None:
    """`text` is `value` rounded for reading: cents from 1 up, 4 places below."""
    unit = 0.01 if abs(value) >= 1 else 0.0001
    assert abs(float(text.replace(",", "")) - float(value)) <= unit / 2 + 1e-12, (text, value)
    assert len(text.rpartition(".")[2]) == (2 if abs(value) >= 1 else 4), text


TCO_LINE = re.compile(r"TCO per intent = C \+ p·L\s+(\S+)\s+(\S+)")
GAP_LINE = re.compile(r"break-even Δp\* = ΔC / L\s+(-?[\d.]+) pp")
LABOR_LINE = re.compile(r"L: labor cost per failure\s+(\S+)")


def support_chat_pairs(layout: Layout) -> pl.DataFrame:
    return read_table(layout, "break_even").filter(pl.col("feature_tag") == "support_chat").sort("billing_currency", "model_a", "model_b")


def test_compare_prints_the_warehouse_break_even_of_the_feature(built, capsys):
    assert run_cli(built, "compare", "--feature", "support_chat") == 0
    out = capsys.readouterr().out
    rows = support_chat_pairs(built)
    blocks = out.split("\nACTUAL (billed data")[1:]
    assert rows.height >= 1 and len(blocks) == rows.height and "SCENARIO" not in out
    for block, row in zip(blocks, rows.iter_rows(named=True)):
        assert f"{row['model_b']} (b) vs {row['model_a']} (a)" in block and row["verdict"] in block
        tco_a, tco_b = TCO_LINE.search(block).groups()
        assert_rounded(tco_a, row["tco_a"])
        assert_rounded(tco_b, row["tco_b"])
        delta_c = row["token_cost_per_intent_b"] - row["token_cost_per_intent_a"]
        gap = float(GAP_LINE.search(block).group(1))
        assert abs(gap - 100 * delta_c / float(row["labor_cost_per_failure"])) <= 0.005 + 1e-9


def test_compare_what_if_labor_is_labelled_and_changes_only_l(built, capsys):
    before = read_table(built, "break_even")
    assert run_cli(built, "compare", "--feature", "support_chat", "--labor", "150") == 0
    out = capsys.readouterr().out
    rows = support_chat_pairs(built)
    actual = out.split("\nACTUAL (billed data")[1:]
    scenario = out.split("\nSCENARIO what-if (command line)")[1:]
    assert len(actual) == len(scenario) == rows.height >= 1
    assert all("a what-if: the billed data is unchanged" in block for block in scenario)
    for block, row in zip(scenario, rows.iter_rows(named=True)):
        block = block.split("\nACTUAL")[0]
        assert LABOR_LINE.search(block).group(1) == "150.00"
        # By hand from the actual row: C and p unchanged, L = 150.
        for k, side in enumerate(("a", "b")):
            c, p = row[f"token_cost_per_intent_{side}"], row[f"failure_rate_{side}"]
            assert_rounded(TCO_LINE.search(block).group(k + 1), c + p * 150)
        delta_c = row["token_cost_per_intent_b"] - row["token_cost_per_intent_a"]
        assert abs(float(GAP_LINE.search(block).group(1)) - 100 * delta_c / 150) <= 0.005 + 1e-9
    assert_frame_equal(read_table(built, "break_even"), before)  # read-only: the warehouse is unchanged


def test_compare_names_the_known_features_when_the_feature_is_unknown(built, capsys):
    assert run_cli(built, "compare", "--feature", "no_such_feature") == 1
    err = capsys.readouterr().err
    assert "no intents of feature 'no_such_feature'" in err and "support_chat" in err


def test_report_command_shows_the_warehouse_numbers_and_opens_in_chromium(built, tmp_path, capsys, browser):
    from tests.test_report import overlapping_charts, parsed, png_colours

    target = tmp_path / "report.html"
    assert run_cli(built, "report", "--output", str(target)) == 0
    assert str(target) in capsys.readouterr().out
    page = parsed(target.read_text())
    assert page.sources == []  # nothing fetched: works offline
    pairs = read_table(built, "break_even").sort("feature_tag", "billing_currency", "model_a", "model_b", nulls_last=True)
    cells = page.tables["table-break-even"]
    assert len(cells) == pairs.height > 0
    key = ("feature_tag", "billing_currency", "model_a", "model_b")
    for cell, row in zip(cells, pairs.iter_rows(named=True)):
        assert [cell[c][0] for c in key] == [row[c] for c in key]
        assert float(cell["tco_a"][0]) == row["tco_a"] and float(cell["tco_b"][0]) == row["tco_b"]
        assert Decimal(cell["labor_cost_per_failure"][0]) == row["labor_cost_per_failure"]
    money = read_table(built, "money_breakdown")
    assert len(page.tables["table-money"]) == money.height > 0
    assert sorted(Decimal(c["total_cost"][0]) for c in page.tables["table-money"]) == sorted(money["total_cost"].to_list())
    billed = read_table(built, "reconciliation").filter(pl.col("billing_currency").is_not_null())
    assert billed.height > 0
    per_month = billed.group_by("billing_period", "billing_currency").agg(pl.col("billed_total").sum()).sort("billing_period", "billing_currency")
    assert [(c["billing_period"][0], c["billing_currency"][0], Decimal(c["billed_total"][0])) for c in page.tables["table-reconciliation"]] == list(
        per_month.iter_rows()
    )
    shown = browser.new_page(viewport={"width": 1400, "height": 900})
    problems = []
    shown.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    shown.on("pageerror", lambda error: problems.append(str(error)))
    shown.goto(target.as_uri(), wait_until="load")
    drawn = shown.evaluate(
        """() => Array.from(document.querySelectorAll('.plotly-graph-div')).map(div => [
            div.id, div.querySelectorAll('svg.main-svg').length, div.querySelectorAll('g.trace').length])"""
    )
    assert problems == []
    assert [d[0] for d in drawn] == ["chart-trend", "chart-break-even", "chart-money", "chart-coverage", "chart-reconciliation"]
    assert all(svgs > 0 and traces > 0 for _, svgs, traces in drawn), drawn
    assert overlapping_charts(shown) == []
    for chart_id, *_ in drawn:
        assert png_colours(shown.locator(f"#{chart_id}").screenshot()) >= 2, f"{chart_id} is blank"
    shown.close()


def test_report_without_a_built_day_says_what_to_do(layout, capsys):
    layout.landing.mkdir(parents=True)
    assert run_cli(layout, "report") == 1
    assert "run `unitledger materialize` first" in capsys.readouterr().err
