"""A data root without a landing folder (a mistyped --data-dir) is an error naming it: the command
exits non-zero and creates nothing, where it used to build an empty warehouse and report success."""

import shutil

import dagster as dg
import polars as pl
import pytest

from pipelines.assets import staged_billing
from pipelines.resources import Warehouse
from tests.builders import focus_row, write_focus_csv
from tests.conftest import REPO
from unitledger.cli import main
from unitledger.layout import Layout
from unitledger.warehouse.views import connect_read_only

COMMANDS = {
    "materialize": ["materialize", "--start", "2026-03-02", "--end", "2026-03-02"],
    "query": ["query", "select 1"],
    "reconcile": ["reconcile", "--month", "2026-03"],
}


def _contents(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) if root.exists() else None


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("exists", [False, True], ids=["missing folder", "folder without landing"])
def test_a_data_root_without_landing_is_refused_and_left_untouched(tmp_path, capsys, command, exists):
    root = tmp_path / "dta"  # a typo of data/
    if exists:
        root.mkdir()
        (root / "notes.txt").write_text("not a data root")
    before = _contents(root)
    code = main([*COMMANDS[command], "--data-dir", str(root)])
    err = capsys.readouterr().err
    assert code == 2
    assert f"data root error: {root} is not a data root: it has no landing folder ({root / 'landing'})" in err
    assert _contents(root) == before  # nothing created: no warehouse, no DuckDB file, no scratch


def test_a_data_root_with_landing_runs(tmp_path, capsys):
    layout = Layout(tmp_path / "data")
    write_focus_csv(layout.landing_focus / "acct" / "d1" / "export.csv", [focus_row("r1")])
    assert main([*COMMANDS["materialize"], "--data-dir", str(layout.data_dir)]) == 0
    assert layout.table("request_costs").is_dir()


def test_the_dagster_resource_refuses_a_data_root_without_landing(tmp_path):
    root = tmp_path / "dta"
    result = dg.materialize(
        [staged_billing],
        instance=dg.DagsterInstance.ephemeral(),
        resources={"warehouse": Warehouse(data_dir=str(root), config_path=str(REPO / "unitledger.toml"))},
        raise_on_error=False,
    )
    assert not result.success
    [failure] = result.get_step_failure_events()
    assert f"{root} is not a data root: it has no landing folder" in failure.step_failure_data.user_failure_data.description
    assert not root.exists()


def test_a_data_root_named_like_a_glob_pattern_is_read_literally(tmp_path):
    # DuckDB expands the paths of its file readers as patterns: the views of a root `a[1]` must
    # read its own files, not those of the same names under a neighbour `a1` (here a copy whose
    # request_costs file says another request).
    root = tmp_path / "a[1]"
    layout = Layout(root)
    write_focus_csv(layout.landing_focus / "acct" / "d1" / "export.csv", [focus_row("own-request")])
    assert main([*COMMANDS["materialize"], "--data-dir", str(root)]) == 0
    shutil.copytree(root, tmp_path / "a1")
    [neighbours] = (tmp_path / "a1" / "warehouse" / "request_costs").rglob("*.parquet")
    pl.read_parquet(neighbours).with_columns(request_id=pl.lit("neighbours-request")).write_parquet(neighbours)
    with connect_read_only(layout) as con:
        assert con.sql("SELECT request_id FROM request_costs").fetchall() == [("own-request",)]
