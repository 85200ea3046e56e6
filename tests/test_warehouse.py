"""The analysts' DuckDB file: a view per table, refreshed without taking the write lock when the
views are current, readable while the pipeline republishes, and partition pruning on date and
billing_period filters."""

import subprocess
import sys
import textwrap
from datetime import date
from unittest import mock

import duckdb
import polars as pl
import pytest

from tests.compare import build_warehouse
from unitledger.layout import Layout
from unitledger.steps.monthly import build_monthly_tables
from unitledger.tools.generate import generate
from unitledger.warehouse import views
from unitledger.warehouse.query import run_query

DAILY = ["request_costs", "intent_costs", "cost_per_intent", "cost_per_success"]
MONTHLY = ["cost_per_intent_monthly", "cost_per_success_monthly"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from tests.conftest import REPO
    from unitledger.config import load_settings

    layout = Layout(tmp_path_factory.mktemp("warehouse") / "data")
    generate(layout.data_dir, start=date(2026, 2, 24), days=10, requests_per_day=30, seed=4)
    build_warehouse(layout, load_settings(REPO / "unitledger.toml"), date(2026, 2, 24), date(2026, 3, 5))
    return layout


def _read_only(layout: Layout):
    return duckdb.connect(str(layout.duckdb_path), read_only=True)


def test_a_view_per_daily_and_monthly_table_with_every_row(built):
    with _read_only(built) as con:
        views = {name for (name,) in con.sql("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
        assert {*DAILY, *MONTHLY, "quarantine"} <= views
        for name in [*DAILY, *MONTHLY]:
            rows = con.sql(f"SELECT count(*) FROM {name}").fetchall()[0][0]
            assert rows == pl.scan_parquet(built.table(name) / "*" / "*.parquet").select(pl.len()).collect().item() > 0
        types = dict(con.sql("SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'cost_per_success_monthly'").fetchall())
        assert types["billing_period"] == "VARCHAR" and types["total_cost"] == "DECIMAL(38,18)"
        assert dict(con.sql("SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'cost_per_success'").fetchall())["date"] == "DATE"
        periods = con.sql("SELECT DISTINCT billing_period FROM cost_per_success_monthly ORDER BY 1").fetchall()
    assert periods == [("2026-02",), ("2026-03",)]


def test_current_views_are_checked_read_only_and_an_outdated_one_is_replaced(built):
    with mock.patch.object(views.duckdb, "connect", wraps=duckdb.connect) as connect:
        views.refresh_views(built)
    assert connect.call_args_list and all(c.kwargs.get("read_only") for c in connect.call_args_list)

    with duckdb.connect(str(built.duckdb_path)) as con:
        con.execute("CREATE OR REPLACE VIEW cost_per_success AS SELECT 1 AS stale")
    with mock.patch.object(views.duckdb, "connect", wraps=duckdb.connect) as connect:
        views.refresh_views(built)
    assert [c.kwargs.get("read_only", False) for c in connect.call_args_list] == [True, False]
    with _read_only(built) as con:
        assert "stale" not in con.sql("SELECT * FROM cost_per_success LIMIT 1").columns


def test_readable_while_a_run_republishes_and_no_lock_kept_between_runs(built, settings):
    queries = [f"SELECT count(*), sum(intents) FROM {t}" for t in ("cost_per_success", "cost_per_success_monthly")]
    reader = textwrap.dedent(
        f"""
        import select, sys, duckdb
        from pathlib import Path
        from unitledger.layout import Layout
        from unitledger.warehouse.query import run_query

        layout = Layout(Path({str(built.data_dir)!r}))
        session = duckdb.connect(str(layout.duckdb_path), read_only=True)  # an analyst's open session
        print("ready", flush=True)
        seen = set()
        while not select.select([sys.stdin], [], [], 0)[0]:  # until the test closes stdin
            for sql in {queries!r}:
                seen.add(run_query(layout, sql).rows()[0])
        print(sorted(seen), flush=True)
        """
    )
    expected = sorted(run_query(built, sql).rows()[0] for sql in queries)
    process = subprocess.Popen([sys.executable, "-c", reader], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "ready"
        # The same data republished under the open session: every partition file replaced.
        build_warehouse(built, settings, date(2026, 2, 24), date(2026, 3, 5))
    finally:
        out, _ = process.communicate(input="", timeout=120)
    assert process.returncode == 0
    assert out.strip() == str(expected)  # every query answered, never a mix of old and new
    # Between runs the pipeline holds no lock: another process can open the file for writing.
    writer = subprocess.run([sys.executable, "-c", f"import duckdb; duckdb.connect({str(built.duckdb_path)!r}).close()"])
    assert writer.returncode == 0


def _files_read(con, query: str) -> int:
    plan = "\n".join(row[1] for row in con.sql("EXPLAIN ANALYZE " + query).fetchall())
    return int(plan.split("Total Files Read:")[1].split()[0])


def test_date_and_billing_period_filters_read_only_the_matching_partitions(built):
    days = len(list(built.table("cost_per_success").glob("date=*")))
    assert days == 10
    with _read_only(built) as con:
        assert _files_read(con, "SELECT count(*) FROM cost_per_success") == days
        assert _files_read(con, "SELECT count(*) FROM cost_per_success WHERE date = DATE '2026-03-02'") == 1
        assert _files_read(con, "SELECT count(*) FROM intent_costs WHERE date BETWEEN DATE '2026-03-01' AND DATE '2026-03-03'") == 3
        assert _files_read(con, "SELECT count(*) FROM cost_per_success_monthly") == 2
        assert _files_read(con, "SELECT count(*) FROM cost_per_success_monthly WHERE billing_period = '2026-03'") == 1


def test_monthly_partitions_are_republished_whole(built):
    """A month rebuilt from fewer days replaces its partition: rows of dropped days disappear."""
    before = pl.read_parquet(built.table("cost_per_intent_monthly") / "billing_period=2026-02" / "data.parquet")
    days = sorted(built.table("cost_per_intent").glob("date=2026-02-*"))
    saved = {p: (p / "data.parquet").read_bytes() for p in days}
    try:
        for p in days[1:]:
            (p / "data.parquet").unlink()
        assert build_monthly_tables(built, date(2026, 2, 1), date(2026, 2, 1)).passed
        after = pl.read_parquet(built.table("cost_per_intent_monthly") / "billing_period=2026-02" / "data.parquet")
        first_day = pl.read_parquet(days[0] / "data.parquet")
        assert after["intents"].sum() == first_day["intents"].sum() < before["intents"].sum()
    finally:
        for p, content in saved.items():
            (p / "data.parquet").write_bytes(content)
        assert build_monthly_tables(built, date(2026, 2, 1), date(2026, 2, 1)).passed
