"""`unitledger query` and `unitledger tables`, the generated data dictionary, and the example
queries of docs/queries.md run against a generated warehouse."""

import dataclasses
import json
import re
from datetime import date
from decimal import Decimal

import duckdb
import polars as pl
import pytest

from tests.compare import build_warehouse, read_table
from tests.conftest import REPO
from unitledger.cli import main
from unitledger.config import load_settings
from unitledger.layout import Layout
from unitledger.model.features import reaggregate_cost_per_success
from unitledger.tools.generate import generate
from unitledger.warehouse import dictionary
from unitledger.warehouse.query import QueryError, describe_tables, run_query

QUERIES = re.findall(r"```sql\n(.*?)```", (REPO / "docs" / "queries.md").read_text(), re.S)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """February 18 to March 9: two billing periods."""
    layout = Layout(tmp_path_factory.mktemp("query") / "data")
    generate(layout.data_dir, start=date(2026, 2, 18), days=20, requests_per_day=40, seed=9)
    # without list prices: unbilled calls keep null money (no list_estimate), which the output formats must write
    settings = load_settings(REPO / "unitledger.toml")
    settings = dataclasses.replace(settings, telemetry=dataclasses.replace(settings.telemetry, list_prices=()))
    build_warehouse(layout, settings, date(2026, 2, 18), date(2026, 3, 9))
    return layout


def _query(built, *args):
    return main(["query", "--data-dir", str(built.data_dir), *args])


def test_query_prints_a_table(built, capsys):
    assert _query(built, "SELECT billing_period, sum(intents) AS intents FROM cost_per_intent_monthly GROUP BY 1 ORDER BY 1") == 0
    out = capsys.readouterr().out
    daily = read_table(built, "intent_costs")
    for period in ["2026-02", "2026-03"]:
        intents = daily.filter(pl.col("date").dt.strftime("%Y-%m") == period).height
        assert re.search(rf"{period}\s*┆\s*{intents}\b", out), out
    assert "(2 rows)" in out


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_query_writes_csv_json_or_parquet_with_exact_money(built, tmp_path, fmt):
    target = tmp_path / f"answer.{fmt}"
    sql = "SELECT feature_tag, billing_currency, sum(total_cost) AS total_cost FROM cost_per_intent GROUP BY ALL ORDER BY ALL"
    assert _query(built, sql, "--format", fmt, "--output", str(target)) == 0
    expected = (
        read_table(built, "cost_per_intent")
        .group_by("feature_tag", "billing_currency")
        # SQL's sum: null when every value is null (an unbilled group's cost is unknown).
        .agg(pl.when(pl.col("total_cost").is_not_null().any()).then(pl.col("total_cost").sum()))
        .sort("feature_tag", "billing_currency", nulls_last=True)
    )
    if fmt == "csv":
        written = pl.read_csv(target, schema_overrides={"total_cost": pl.String})
        money = written["total_cost"].to_list()
    elif fmt == "json":
        written = pl.DataFrame(json.loads(target.read_text()))
        money = written["total_cost"].to_list()
    else:
        written = pl.read_parquet(target)
        assert written.schema["total_cost"] == pl.Decimal(38, 18)
        money = written["total_cost"].to_list()
    assert written["feature_tag"].to_list() == expected["feature_tag"].to_list()
    assert [None if v is None else Decimal(v) for v in money] == expected["total_cost"].to_list()
    assert any(v is None for v in money) and any(v is not None and Decimal(v) % 1 for v in money)


def test_query_is_read_only_and_says_why(built, capsys):
    assert _query(built, "CREATE TABLE notes AS SELECT 1") == 1
    assert "read-only" in capsys.readouterr().err
    with duckdb.connect(str(built.duckdb_path), read_only=True) as con:
        assert "notes" not in {name for (name,) in con.sql("SHOW TABLES").fetchall()}
    assert _query(built, "SELECT * FROM no_such_table") == 1
    assert "no_such_table" in capsys.readouterr().err


def test_query_without_a_warehouse_says_what_to_do(tmp_path, capsys):
    (tmp_path / "landing").mkdir()  # a data root, nothing materialized yet
    assert main(["query", "--data-dir", str(tmp_path), "SELECT 1"]) == 1
    assert "run `unitledger materialize` first" in capsys.readouterr().err
    with pytest.raises(QueryError):
        run_query(Layout(tmp_path), "SELECT 1")


def test_tables_lists_every_table_and_column_with_its_meaning(capsys):
    assert main(["tables"]) == 0
    out = capsys.readouterr().out
    for table, (model, _) in dictionary.TABLES.items():
        assert re.search(rf"^{table}  \(", out, re.M), table
        for name, dtype, _, description in dictionary.columns(model):
            assert re.search(rf"^  {re.escape(name)}\s+{re.escape(dtype)}\s+(null)?\s*{re.escape(description)}$", out, re.M), (table, name)
    assert main(["tables", "cost_per_success_monthly"]) == 0
    one = capsys.readouterr().out
    assert one.startswith("cost_per_success_monthly  (partitioned by billing_period)") and "\nrequest_costs" not in one
    assert main(["tables", "nope"]) == 1


def test_data_dictionary_doc_is_the_generated_one(capsys):
    assert main(["tables", "--markdown"]) == 0
    generated = capsys.readouterr().out
    assert generated == dictionary.render_markdown()
    committed = (REPO / "docs" / "data-dictionary.md").read_text()
    assert committed == generated, "docs/data-dictionary.md is stale: run `unitledger tables --markdown > docs/data-dictionary.md`"
    for table in ["cost_per_intent_monthly", "cost_per_success_monthly"]:
        assert f"## {table}" in committed


def test_describe_tables_rejects_unknown_names():
    with pytest.raises(QueryError, match="no table nope"):
        describe_tables(["nope"])


@pytest.mark.parametrize("number", range(len(QUERIES)))
def test_every_example_query_runs(built, number):
    assert len(QUERIES) == 5
    answer = run_query(built, QUERIES[number])
    assert answer.height > 0 and answer.width >= 4


def test_models_compared_query_matches_the_pipelines_reaggregation(built):
    """The doc's SQL interval (from the stored moments) equals model.features.reaggregate_cost_per_success."""
    (sql,) = [q for q in QUERIES if "ci95_low" in q]
    answer = run_query(built, sql)
    month = read_table(built, "cost_per_success_monthly").filter(pl.col("billing_period") == "2026-03")
    grain = ["feature_tag", "model_version", "billing_currency"]
    expected = reaggregate_cost_per_success(month.lazy(), grain).filter(pl.col("billing_currency").is_not_null()).collect()
    joined = answer.join(expected, left_on=["feature_tag", "model_version", "currency"], right_on=grain, how="full", nulls_equal=True)
    assert joined.height == answer.height == expected.height > 5
    for ours, theirs, digits in [("success_rate", "success_rate_right", 3), ("cost_per_success", "cost_per_success_right", 4), ("ci95_low", "ci95_low_right", 4), ("ci95_high", "ci95_high_right", 4)]:
        rounded = joined[theirs].round(digits)
        assert (joined[ours].fill_null(-1) - rounded.fill_null(-1)).abs().max() < 10 ** -digits, ours
    assert joined.filter(pl.col("ci95_low").is_not_null()).height > 3
