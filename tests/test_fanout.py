"""The month reconciliation fanned out as Dagster steps (reconciliation_parts: one step per hash
bucket of request ids and one for the rows without one; reconciliation_tables: the one writer)
publishes exactly the tables of the single-process build (steps.reconciliation.build_reconciliation
in one bucket), on the multiprocess executor; and the same steps without partitions (job
reconciliation_months, the months in its run config) on a local two-worker Dask cluster
(dagster-dask 0.29.27 cannot run partitioned jobs with dagster 1.13.27: docs/operations.md,
"Running on a cluster")."""

from datetime import date

import os

import dagster as dg
import pytest

from pipelines.automation import reconciliation_job
from pipelines.definitions import defs
from pipelines.reconciliation import reconciliation_months_job, reconciliation_parts, reconciliation_tables
from polars.testing import assert_frame_equal

from tests.compare import read_table, staged_copy
from tests.conftest import REPO, TODAY
from unitledger.config import load_settings
from unitledger.layout import Layout
from unitledger.steps.reconciliation import build_reconciliation, part_names, parts_folder, read_plan
from unitledger.tools.generate import generate

CONFIG = REPO / "unitledger.toml"
TABLES = ["reconciliation", "token_reconciliation", "token_mismatches", "request_conflicts"]
BUCKETS = 4


def reconciliation_on_processes() -> dg.JobDefinition:
    return defs.resolve_job_def(reconciliation_job.name)


def reconciliation_months_on_dask() -> dg.JobDefinition:
    from dagster_dask import dask_executor

    job = reconciliation_months_job(BUCKETS, name="reconciliation_months_on_dask")  # as docs/operations.md shows
    return dg.Definitions.merge(defs, dg.Definitions(jobs=[job.with_executor_def(dask_executor)])).resolve_job_def(job.name)


@pytest.fixture(scope="module")
def landed(tmp_path_factory) -> Layout:
    """Two generated billing periods (restated deliveries included), staged."""
    layout = Layout(tmp_path_factory.mktemp("landed") / "data")
    generate(layout.data_dir, start=date(2026, 2, 24), days=8, requests_per_day=150, seed=12, restated_delivery=True)
    return layout


@pytest.fixture(scope="module")
def single_process(landed, tmp_path_factory) -> Layout:
    layout = staged_copy(landed, tmp_path_factory.mktemp("single"), CONFIG)
    result = build_reconciliation(layout, load_settings(CONFIG), date(2026, 2, 1), date(2026, 3, 1), buckets=1)
    assert result.passed, result.failures()
    return layout


# February and March in one run: a range of the monthly partitions, or the months in the run config.
PARTITIONED = {
    "ops": {"reconciliation_parts": {"ops": {"plan_reconciliation": {"config": {"buckets": BUCKETS}}}}},
    "tags": {"dagster/asset_partition_range_start": "2026-02", "dagster/asset_partition_range_end": "2026-03"},
    "parts": {f"reconciliation_parts.reconcile_reconciliation_part[{m}_{p}]" for m in ("2026_02", "2026_03") for p in part_names(BUCKETS)},
    "last": "reconciliation_tables",
}
CONFIGURED = {
    "ops": {f"plan_reconciliation_{BUCKETS}_buckets": {"config": {"months": "2026-02..2026-03"}}},
    "tags": {},
    "parts": {f"reconcile_{p}" for p in part_names(BUCKETS)},  # a step per part, each for both months
    "last": "publish_reconciliation_months",
}


def _fanned_out(job, layout: Layout, tmp_path, executor: dict, run: dict = PARTITIONED) -> set[int]:
    """Run `job` on `executor` for February and March (one run); the pids of its steps."""
    run_config = {
        "resources": {"warehouse": {"config": {"data_dir": str(layout.data_dir), "config_path": str(CONFIG), "today": TODAY.isoformat()}}},
        "ops": run["ops"],
        "execution": {"config": executor},
    }
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        result = dg.execute_job(dg.reconstructable(job), instance=instance, run_config=run_config, tags=run["tags"])
        assert result.success, [e.message for e in result.all_events if e.is_failure]
        steps = {e.step_key for e in result.all_events if e.event_type_value == "STEP_SUCCESS"}
        processes = {e.pid for e in result.all_events if e.event_type_value == "STEP_START"}
    # Every part was a step of its own: 4 buckets and the rows without a request id.
    assert run["parts"] <= steps, sorted(steps)
    assert run["last"] in steps  # the one writer
    for key in ("2026-02", "2026-03"):
        assert read_plan(parts_folder(layout, key)).buckets == BUCKETS
        assert not (parts_folder(layout, key) / "split").exists()  # the buckets' files, removed once published
    return processes


def assert_same_reconciliation(layout: Layout, reference: Layout) -> None:
    """Same rows in every reconciliation table (exact: keys, counts and money; floats to 1e-12)."""
    assert read_table(reference, "reconciliation").height > 0
    for name in TABLES:
        assert_frame_equal(read_table(layout, name), read_table(reference, name), check_exact=False, rel_tol=1e-12, abs_tol=1e-12)


def test_fanned_out_on_processes_equals_the_single_process_build(landed, single_process, tmp_path):
    layout = staged_copy(landed, tmp_path, CONFIG)
    processes = _fanned_out(reconciliation_on_processes, layout, tmp_path, {"multiprocess": {"max_concurrent": 2}})
    assert len(processes) > 2  # a process per step (multiprocess executor)
    assert_same_reconciliation(layout, single_process)


def test_fanned_out_on_dask_equals_the_single_process_build(landed, single_process, tmp_path):
    pytest.importorskip("dagster_dask", reason="dagster-dask is not installed (pip install dagster-dask==0.29.27: not a dependency)")
    layout = staged_copy(landed, tmp_path, CONFIG)
    cluster = {"cluster": {"local": {"n_workers": 2, "threads_per_worker": 1, "processes": True}}}
    processes = _fanned_out(reconciliation_months_on_dask, layout, tmp_path, cluster, CONFIGURED)
    assert os.getpid() not in processes and len(processes) <= 2  # the steps ran in the two Dask workers
    assert_same_reconciliation(layout, single_process)
