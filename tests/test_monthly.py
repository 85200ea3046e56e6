"""Monthly rollups: equal to the sums of the daily tables, interval recomputed from the month's
intents, same columns as the daily tables with billing_period in place of date."""

import math
from datetime import date, datetime, timedelta, timezone

import dagster as dg
import duckdb
import polars as pl
import pytest

from pipelines.automation import FRESHNESS_CHECKS, range_tags
from pipelines.definitions import ALL_ASSETS
from pipelines.monthly import DAYS_OF_MONTH, monthly_tables
from pipelines.partitions import daily_partitions, monthly_partitions
from pipelines.resources import Warehouse
from schemas import CostPerIntent, CostPerSuccess
from schemas.monthly import CostPerIntentMonthly, CostPerSuccessMonthly
from tests.builders import llm_call, outcome, write_events
from tests.compare import build_warehouse, read_table
from tests.conftest import REPO
from unitledger.checks.validation import validate
from unitledger.config import load_settings
from unitledger.layout import Layout
from unitledger.tools.generate import generate
from unitledger.warehouse.manifest import read_manifest
from unitledger.warehouse.publish import Publication, Spill, polars_schema

GRAIN = ["feature_tag", "model_version", "prompt_version", "billing_currency"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Jan 22 .. Feb 8: two months, small, plus one session none of whose calls was billed;
    daily and monthly tables built by the pipeline steps."""
    layout = Layout(tmp_path_factory.mktemp("monthly") / "data")
    generate(layout.data_dir, start=date(2026, 1, 22), days=18, requests_per_day=40, seed=11)
    unbilled = [llm_call("r-unbilled", "s-unbilled", "2026-02-03T12:00:00Z"), outcome("s-unbilled", False, "2026-02-03T13:00:00Z")]
    write_events(layout.landing_events / "unbilled.jsonl", unbilled)
    build_warehouse(layout, load_settings(REPO / "unitledger.toml"), date(2026, 1, 22), date(2026, 2, 8))
    return layout


def _sql(query: str) -> pl.DataFrame:
    with duckdb.connect() as con:
        return con.sql(query).pl()


def _table(layout: Layout, name: str) -> str:
    files = ", ".join(f"'{layout.warehouse / f}'" for f in read_manifest(layout).files(name))
    return f"read_parquet([{files}], hive_partitioning = true)"


def test_cost_per_intent_monthly_equals_the_sums_of_the_daily_rows(built):
    # Independent route: DuckDB SQL over the daily Parquet files.
    expected = _sql(
        f"""
        SELECT strftime(date, '%Y-%m') AS billing_period, feature_tag, model_version, prompt_version, billing_currency,
               sum(intents)::BIGINT AS intents, sum(requests)::BIGINT AS requests,
               sum(token_cost) AS token_cost, sum(labor_cost) AS labor_cost, sum(total_cost) AS total_cost,
               sum(total_cost)::DOUBLE / sum(intents) AS cost_per_intent
        FROM {_table(built, 'cost_per_intent')} GROUP BY ALL
        """,
    )
    monthly = read_table(built, "cost_per_intent_monthly")
    keys = ["billing_period", *GRAIN]
    joined = expected.join(monthly, on=keys, how="full", nulls_equal=True, suffix="_m")
    assert joined.height == expected.height == monthly.height > 10
    assert set(expected["billing_period"]) == {"2026-01", "2026-02"}
    for column in ["intents", "requests", "token_cost", "labor_cost", "total_cost"]:
        mismatched = joined.filter(pl.col(column).ne_missing(pl.col(f"{column}_m")))
        assert mismatched.is_empty(), (column, mismatched)
    ratio = joined.filter(pl.col("cost_per_intent").is_not_null())
    assert ratio.height > 0
    assert all(math.isclose(a, b, rel_tol=1e-12) for a, b in zip(ratio["cost_per_intent"], ratio["cost_per_intent_m"]))


def test_cost_per_success_monthly_sums_and_interval_from_the_months_intents(built):
    intents = read_table(built, "intent_costs").filter(
        pl.col("outcome") != "unlabeled", pl.col("billing_currency").is_not_null()
    )
    monthly = read_table(built, "cost_per_success_monthly")
    checked = 0
    for (period, *grain), group in intents.group_by(pl.col("date").dt.strftime("%Y-%m"), *GRAIN):
        row = monthly.filter(pl.col("billing_period") == period, *[pl.col(c).eq_missing(v) for c, v in zip(GRAIN, grain)])
        assert row.height == 1
        row = row.row(0, named=True)
        costs = [float(x) for x in group["total_cost"]]
        won = [o == "success" for o in group["outcome"]]
        assert row["labeled_intents"] == len(costs)
        assert row["successes"] == sum(won)
        assert row["total_cost"] == sum(group["total_cost"])  # exact decimals
        if sum(won) == 0 or len(costs) < 2:
            continue
        # Delta-method interval straight from the residuals X_i - R·Y_i of the month's intents.
        ratio = sum(costs) / sum(won)
        residuals = sum((x - ratio * y) ** 2 for x, y in zip(costs, won))
        half = 1.959963984540054 * math.sqrt(len(costs) * residuals / ((len(costs) - 1) * sum(won) ** 2))
        assert math.isclose(row["cost_per_success"], ratio, rel_tol=1e-12)
        assert math.isclose(row["ci95_low"], ratio - half, rel_tol=1e-9, abs_tol=1e-9)
        assert math.isclose(row["ci95_high"], ratio + half, rel_tol=1e-9, abs_tol=1e-9)
        checked += 1
    assert checked > 10


def test_unbilled_intents_keep_null_money_in_the_month(built):
    daily = read_table(built, "cost_per_intent")
    monthly = read_table(built, "cost_per_intent_monthly")
    assert daily.filter(pl.col("billing_currency").is_null()).height > 0
    unbilled = monthly.filter(pl.col("billing_currency").is_null())
    assert unbilled.height > 0
    assert unbilled["total_cost"].is_null().all() and unbilled["cost_per_intent"].is_null().all()
    assert monthly.filter(pl.col("billing_currency").is_not_null())["total_cost"].is_not_null().all()


def test_monthly_models_are_the_daily_ones_with_billing_period_in_place_of_date():
    for daily, monthly in [(CostPerIntent, CostPerIntentMonthly), (CostPerSuccess, CostPerSuccessMonthly)]:
        d, m = daily.to_schema(), monthly.to_schema()
        assert list(m.columns) == ["billing_period", *[c for c in d.columns if c != "date"]]
        for name, column in d.columns.items():
            if name != "date":
                assert m.columns[name].dtype == column.dtype and m.columns[name].description == column.description
        assert m.unique == ["billing_period", *GRAIN]
        assert [c.name for c in m.checks] == [c.name for c in d.checks]
        assert m.name == monthly.__name__


def test_monthly_validation_rejects_a_bad_period_and_a_duplicate_grain(built):
    rows = read_table(built, "cost_per_success_monthly").select(
        list(polars_schema(CostPerSuccessMonthly))
    )
    assert validate(CostPerSuccessMonthly, rows.lazy()).passed
    bad_period = rows.with_columns(billing_period=pl.lit("2026-13"))
    assert not validate(CostPerSuccessMonthly, bad_period.lazy()).passed
    duplicated = pl.concat([rows, rows.head(1)])
    assert not validate(CostPerSuccessMonthly, duplicated.lazy()).passed


@pytest.mark.parametrize(
    "now, days_so_far",
    [
        (datetime(2026, 4, 17, 2, 0, tzinfo=timezone.utc), [f"2026-04-{d:02d}" for d in range(1, 17)]),
        # The 1st: the current month is a partition, but none of its days has ended yet.
        (datetime(2026, 5, 1, 0, 30, tzinfo=timezone.utc), []),
    ],
)
def test_a_month_maps_to_its_days_and_the_current_month_to_the_days_so_far(now, days_so_far):
    def days_of(month: str) -> list[str]:
        return list(
            DAYS_OF_MONTH.get_upstream_mapped_partitions_result_for_partitions(
                monthly_partitions.subset_with_partition_keys([month]), monthly_partitions, daily_partitions, current_time=now
            ).partitions_subset.get_partition_keys()
        )

    assert days_of("2026-02") == [f"2026-02-{d:02d}" for d in range(1, 29)]
    current = monthly_partitions.get_partition_keys(current_time=now)[-1]
    assert current == now.strftime("%Y-%m")  # the month that runs is a partition already
    assert days_of(current) == days_so_far
    assert daily_partitions.get_partition_keys(current_time=now)[-1] == (now.date() - timedelta(days=1)).isoformat()


def test_monthly_asset_warns_about_a_missing_day_without_failing(built, tmp_path):
    layout = Layout(tmp_path / "data")
    layout.landing.mkdir(parents=True)  # a data root (its landing files do not matter here)
    days = ["2026-01-30", "2026-01-31"]  # the built days of January, published in another warehouse
    daily_tables = ["cost_per_intent", "cost_per_success", "cost_breakdown"]
    publication, spills = Publication(layout), [Spill(layout.tmp, t, "date") for t in daily_tables]
    for spill, table in zip(spills, daily_tables):
        spill.sink(read_table(built, table).lazy().filter(pl.col("date").cast(pl.String).is_in(days)))
        publication.add(table, spill, days)
    publication.commit()
    for spill in spills:
        spill.cleanup()
    result = dg.materialize(
        [*ALL_ASSETS, *FRESHNESS_CHECKS],
        selection=[monthly_tables],
        instance=dg.DagsterInstance.ephemeral(),
        resources={
            "warehouse": Warehouse(data_dir=str(layout.data_dir), config_path=str(REPO / "unitledger.toml"), today="2026-02-10")
        },
        tags=range_tags("2026-01", "2026-01"),
    )
    assert result.success
    coverage = [c for c in result.get_asset_check_evaluations() if c.check_name == "daily_coverage"]
    assert len(coverage) == 3 and not any(c.passed for c in coverage)
    assert all(c.severity == dg.AssetCheckSeverity.WARN for c in coverage)
    assert "2026-01-01..2026-01-29" in coverage[0].description
    rolled = read_table(layout, "cost_per_intent_monthly")
    assert set(rolled["billing_period"]) == {"2026-01"}
    daily = read_table(layout, "cost_per_intent")
    assert rolled["intents"].sum() == daily["intents"].sum() > 0
