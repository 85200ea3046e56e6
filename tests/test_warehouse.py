"""The analysts' DuckDB file: a view per documented table, always (empty with the table's columns
before it has rows), rebuilt beside and swapped in so an open session never blocks a run, readable
while the pipeline republishes, and partition pruning on date and billing_period filters."""

import json
import subprocess
import sys
import textwrap
from datetime import date
from unittest import mock

import duckdb
import polars as pl
import pytest

from tests.compare import build_warehouse
from tests.conftest import TODAY
from unitledger.layout import Layout
from unitledger.steps import staging
from unitledger.steps.monthly import build_monthly_tables
from unitledger.tools.generate import generate
from unitledger.warehouse import dictionary, views
from unitledger.warehouse.manifest import read_manifest, scan_table
from unitledger.warehouse.publish import Publication, Spill, polars_schema
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
        assert views == set(dictionary.TABLES)
        for name in [*DAILY, *MONTHLY]:
            rows = con.sql(f"SELECT count(*) FROM {name}").fetchall()[0][0]
            assert rows == scan_table(built, name).select(pl.len()).collect().item() > 0
        types = dict(con.sql("SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'cost_per_success_monthly'").fetchall())
        assert types["billing_period"] == "VARCHAR" and types["total_cost"] == "DECIMAL(38,18)"
        assert dict(con.sql("SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'cost_per_success'").fetchall())["date"] == "DATE"
        periods = con.sql("SELECT DISTINCT billing_period FROM cost_per_success_monthly ORDER BY 1").fetchall()
    assert periods == [("2026-02",), ("2026-03",)]


def test_current_views_are_checked_read_only_and_an_outdated_one_is_replaced_never_written_in_place(built):
    with mock.patch.object(views.duckdb, "connect", wraps=duckdb.connect) as connect:
        views.refresh_views(built)
    assert connect.call_args_list and all(c.kwargs.get("read_only") for c in connect.call_args_list)

    with duckdb.connect(str(built.duckdb_path)) as con:
        con.execute("CREATE OR REPLACE VIEW cost_per_success AS SELECT 1 AS stale")
    with mock.patch.object(views.duckdb, "connect", wraps=duckdb.connect) as connect:
        views.refresh_views(built)
    opened = [(c.args[0], c.kwargs.get("read_only", False)) for c in connect.call_args_list]
    assert opened[0] == (str(built.duckdb_path), True)  # the check
    assert [path for path, read_only in opened if not read_only and path == str(built.duckdb_path)] == []
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
    days = len(read_manifest(built).partitions("cost_per_success"))
    assert days == 10
    with _read_only(built) as con:
        assert _files_read(con, "SELECT count(*) FROM cost_per_success") == days
        assert _files_read(con, "SELECT count(*) FROM cost_per_success WHERE date = DATE '2026-03-02'") == 1
        assert _files_read(con, "SELECT count(*) FROM intent_costs WHERE date BETWEEN DATE '2026-03-01' AND DATE '2026-03-03'") == 3
        assert _files_read(con, "SELECT count(*) FROM cost_per_success_monthly") == 2
        assert _files_read(con, "SELECT count(*) FROM cost_per_success_monthly WHERE billing_period = '2026-03'") == 1


def _republish(layout: Layout, table: str, rows: pl.DataFrame, days: list[str]) -> None:
    """Partitions `days` of `table` become `rows` (a day without rows: an empty partition)."""
    publication, spill = Publication(layout), Spill(layout.tmp, table, "date")
    spill.sink(rows.lazy())
    publication.add(table, spill, days)
    publication.commit()
    spill.cleanup()


def test_monthly_partitions_are_republished_whole(built, settings):
    """A month rebuilt from fewer days replaces its partition: rows of dropped days disappear."""
    before = scan_table(built, "cost_per_intent_monthly", ["2026-02"]).collect()
    days = [d for d in read_manifest(built).partitions("cost_per_intent") if d.startswith("2026-02")]
    saved = scan_table(built, "cost_per_intent", days).collect()
    first_day = saved.filter(pl.col("date").cast(pl.String) == days[0])
    try:
        _republish(built, "cost_per_intent", first_day, days)  # every later day of February: no rows
        assert build_monthly_tables(built, date(2026, 2, 1), date(2026, 2, 1), settings).passed
        after = scan_table(built, "cost_per_intent_monthly", ["2026-02"]).collect()
        assert after["intents"].sum() == first_day["intents"].sum() < before["intents"].sum()
    finally:
        _republish(built, "cost_per_intent", saved, days)
        assert build_monthly_tables(built, date(2026, 2, 1), date(2026, 2, 1), settings).passed


SESSION = textwrap.dedent(
    """
    import json, sys, duckdb

    con = duckdb.connect(sys.argv[1], read_only=True)  # an analyst's session, open throughout
    print("ready", flush=True)
    for sql in sys.stdin:
        try:
            print(json.dumps(con.sql(sql).fetchall(), default=str), flush=True)
        except duckdb.Error as exc:
            print(json.dumps(f"error: {exc}"), flush=True)
    """
)


class Session:
    """A read-only DuckDB session in another process (one process shares one open database)."""

    def __init__(self, layout: Layout):
        self.process = subprocess.Popen([sys.executable, "-c", SESSION, str(layout.duckdb_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout.readline().strip() == "ready"

    def ask(self, sql: str):
        self.process.stdin.write(sql + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def close(self) -> None:
        self.process.communicate(timeout=60)


def test_an_open_read_only_session_never_blocks_a_run_that_changes_the_views(tmp_path, settings):
    from tests.compare import build_with_reconciliation

    first = Layout(tmp_path / "first")
    generate(first.data_dir, start=date(2026, 3, 1), days=4, requests_per_day=20, seed=5)
    staging.stage_billing(first, settings, TODAY)
    staging.stage_events(first)
    session = Session(first)
    try:
        before = session.ask("SELECT count(*) FROM reconciliation")
        # A run publishes tables the session's catalog shows empty: it must re-create their views
        # under the open session (before: `Could not set lock on file …warehouse.duckdb`).
        build_with_reconciliation(first, settings, date(2026, 3, 1), date(2026, 3, 4))
        assert session.ask("SELECT count(*) FROM reconciliation") == before == [[0]]  # the session's own version, whole
        with _read_only(first) as con:  # a new connection: the new views
            assert con.sql("SELECT count(*) FROM reconciliation").fetchall()[0][0] > 0
    finally:
        session.close()

    moved = Layout(tmp_path / "moved")
    first.data_dir.rename(moved.data_dir)  # the views name the old root's files
    session = Session(moved)
    try:
        assert str(session.ask("SELECT count(*) FROM request_costs")).startswith("error")
        views.refresh_views(moved)  # as every run does
        with _read_only(moved) as con:
            rows = con.sql("SELECT count(*) FROM request_costs").fetchall()[0][0]
        assert rows == scan_table(moved, "request_costs").select(pl.len()).collect().item() > 0
    finally:
        session.close()


def _parquet_types(layout: Layout, name: str) -> list[tuple[str, str]]:
    """Independent route: the columns and types DuckDB reads from a Parquet file written from the
    table's Pandera model, the partition key (from the folder name, hive style) last."""
    model, key = dictionary.TABLES[name]
    schema = {c: t for c, t in polars_schema(model).items() if c != key}
    folder = layout.data_dir.parent / "types" / name / (f"{key}=2026-03-02" if key == "date" else f"{key}=2026-03")
    folder.mkdir(parents=True)
    pl.DataFrame(schema=schema).write_parquet(folder / "x.parquet")
    hive = "false" if key == "none" else f"true, hive_types = {{'{key}': {'DATE' if key == 'date' else 'VARCHAR'}}}"
    with duckdb.connect() as con:
        return con.sql(f"DESCRIBE SELECT * FROM read_parquet('{folder / 'x.parquet'}', hive_partitioning = {hive})").fetchall()


def test_every_documented_view_exists_with_its_columns_before_its_table_has_rows(tmp_path, settings):
    from tests.builders import focus_row, llm_call, write_events, write_focus_csv

    layout = Layout(tmp_path / "data")
    write_focus_csv(layout.landing_focus / "acct" / "d1" / "export.csv", [focus_row("r1")])
    write_events(layout.landing_events / "calls.jsonl", [llm_call("r1")])
    assert staging.stage_billing(layout, settings, TODAY).passed and staging.stage_events(layout).passed  # nothing quarantined
    with _read_only(layout) as con:
        found = {v for (v,) in con.sql("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
        assert found == set(dictionary.TABLES)
        for name in dictionary.TABLES:
            described = [(c, t) for c, t, *_ in con.sql(f"DESCRIBE SELECT * FROM {name}").fetchall()]
            assert described == [(c, t) for c, t, *_ in _parquet_types(layout, name)], name
    quarantine = run_query(layout, "select * from quarantine")
    assert quarantine.height == 0 and quarantine.columns == list(dictionary.TABLES["quarantine"][0].to_schema().columns)
    assert run_query(layout, "select count(*) AS n from reconciliation")["n"].to_list() == [0]
