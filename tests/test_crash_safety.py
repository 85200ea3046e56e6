"""Crash safety: `unitledger materialize` killed with SIGKILL at several moments leaves every table
readable (Polars and DuckDB), and the next run repairs the warehouse to exactly what an
uninterrupted run builds."""

import os
import re
import shutil
import signal
import subprocess
import time
from datetime import date
from pathlib import Path

import duckdb
import polars as pl
import pytest

from tests.compare import assert_same_tables
from tests.conftest import REPO, leftovers
from unitledger.layout import Layout
from unitledger.tools.generate import generate
from unitledger.warehouse import publish
from unitledger.warehouse.manifest import read_manifest
from unitledger.warehouse.publish import Spill, clear_scratch, scratch_folder, write_parquet_atomic

START, END = date(2026, 3, 1), date(2026, 3, 4)
TABLES = [
    "request_costs", "intent_costs", "cost_per_intent", "cost_per_success", "cost_breakdown", "cost_per_intent_monthly",
    "cost_per_success_monthly", "cost_breakdown_monthly", "quarantine", "reconciliation", "reconciliation_daily",
    "token_reconciliation", "break_even", "money_breakdown", "cost_per_success_trends",
]
def materialize(layout: Layout, kill_after: str | None = None, delay: float = 0.0) -> tuple[int, dict[str, float]]:
    """Run `unitledger materialize`; with `kill_after`, SIGKILL it `delay` seconds after the
    progress line containing that text (after the start when it is ""). Returns the exit code and
    when each progress step ("1/", "2/"...) was reported, in seconds from the start."""
    command = [
        str(REPO / ".venv" / "bin" / "unitledger"), "materialize", "--data-dir", str(layout.data_dir),
        "--config", str(REPO / "unitledger.toml"), "--start", START.isoformat(), "--end", END.isoformat(),
    ]
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    began = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
    steps, output = {}, []
    if kill_after != "":
        for line in process.stderr:
            output.append(line)
            found = re.search(r"\] (\d+/)\d+ ", line)
            if found:
                steps[found.group(1)] = time.perf_counter() - began
            if kill_after is not None and kill_after in line:
                break
    if kill_after is not None:
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
    output.append(process.communicate()[1])
    assert process.returncode in (0, -signal.SIGKILL), "".join(output)[-2000:]
    return process.returncode, steps


def assert_readable(layout: Layout) -> None:
    """Every Parquet file in the warehouse opens, every table reads through the manifest, every
    DuckDB view answers."""
    for path in layout.warehouse.rglob("*.parquet"):
        pl.read_parquet(path)
    published = read_manifest(layout)
    for name in TABLES:
        published.scan(layout, name).collect()
    if layout.report_path.exists():  # replaced in one rename: whole or the previous one
        assert layout.report_path.read_text().endswith("</body></html>")
    if layout.duckdb_path.exists():
        with duckdb.connect(str(layout.duckdb_path), read_only=True) as con:
            for (view,) in con.sql("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall():
                con.sql(f"SELECT count(*) FROM {view}").fetchall()


@pytest.fixture(scope="module")
def landing(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("landing")
    generate(root, start=START, days=(END - START).days + 1, requests_per_day=800, seed=11)
    return root / "landing"


def test_killed_runs_leave_readable_tables_and_the_next_run_repairs_them(tmp_path, landing):
    reference, crashed = Layout(tmp_path / "reference"), Layout(tmp_path / "crashed")
    for layout in (reference, crashed):
        shutil.copytree(landing, layout.data_dir / "landing", copy_function=shutil.copy2)
    code, steps = materialize(reference)
    assert code == 0 and set(steps) == {"1/", "2/", "3/", "4/", "5/"}, steps

    # Progress of one month: 1/ staged, 2/ daily tables, 3/ monthly tables and reconciliation,
    # 4/ decision tables and report, 5/ views. Each run starts from what the killed one before it left.
    kills = [
        ("", steps["1/"] * 0.9),  # while staging the landing files (after the imports)
        ("] 1/", 0.3),  # while building the daily tables
        ("] 1/", 1.0),
        ("] 2/", 0.4),  # while building the monthly tables and the reconciliation
        ("] 3/", (steps["4/"] - steps["3/"]) * 0.5),  # while building the decision tables and the report
        ("] 4/", 0.0),  # while refreshing the DuckDB views
    ]
    killed = 0
    for after, delay in kills:
        killed += materialize(crashed, after, delay)[0] == -signal.SIGKILL
        assert_readable(crashed)
    assert killed >= len(kills) - 1, "the runs must really be killed for the test to mean anything"

    assert materialize(crashed)[0] == 0
    assert_readable(crashed)
    assert leftovers(crashed) == []
    assert_same_tables(reference, crashed, TABLES)


def test_what_a_killed_process_left_is_removed_and_a_live_ones_kept(layout):
    dead = subprocess.Popen(["true"])  # a process that has exited: its pid is no longer alive
    dead.wait()
    folder = layout.staged("focus")
    write_parquet_atomic(pl.DataFrame({"x": [1]}), folder / "data.parquet")
    stale = folder / f".data.parquet.{dead.pid}.0123abcd.tmp"
    live = folder / f".data.parquet.{os.getpid()}.4567cdef.tmp"
    for path in (stale, live):
        path.write_bytes(b"half a file")
    Spill(layout.tmp, "joined", "date").sink(pl.LazyFrame({"date": [START], "x": [1]}))
    killed_spill = layout.tmp / f"joined-{dead.pid}-0123abcd"
    killed_spill.mkdir()
    clear_scratch(layout.tmp, layout.warehouse)
    assert not stale.exists() and not killed_spill.exists()
    assert live.exists() and len(list(layout.tmp.iterdir())) == 1  # this process's own spill
    assert pl.read_parquet(folder / "data.parquet")["x"].to_list() == [1]


def test_a_scratch_folder_is_gone_even_when_a_file_appears_in_it_while_it_is_removed(layout, monkeypatch):
    """A failed Polars sink may create its file after the error reached us: the first removal
    then finds the folder not empty. The folder must still be gone on exit."""
    real_rmtree = shutil.rmtree
    removals = []

    def late_writer_wins_once(path, ignore_errors=False):
        removals.append(path)
        if len(removals) == 1:  # the writer's file lands between listing and rmdir
            real_rmtree(path, ignore_errors=True)
            path.mkdir()
            (path / "decoded.parquet").write_bytes(b"late")
            return
        real_rmtree(path, ignore_errors=ignore_errors)

    monkeypatch.setattr(publish.shutil, "rmtree", late_writer_wins_once)
    with scratch_folder(layout.tmp, "staging") as folder:
        (folder / "decoded.parquet").write_bytes(b"data")
    assert len(removals) == 2 and not folder.exists() and list(layout.tmp.iterdir()) == []
