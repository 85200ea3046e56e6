"""The daily tables fanned out as Dagster steps: job `daily_fanout`, thin ops around the phases of
unitledger.steps.daily ("the days in phases"), which build_daily_tables runs one after the other.

plan → one join step per hash bucket of requests → settle → one intents step per hash bucket of
sessions → publish (the one writer). The executor runs each step where it runs steps (the
multiprocess executor's processes, or Kubernetes jobs with k8s_job_executor: docs/operations.md,
"Running on a cluster"); the steps hand their work on through the run folder under
<data root>/.parts/daily/ (steps.daily.daily_parts_folder), which a cluster's steps must share.

A job of ops, not a second asset of the daily tables: the `daily_tables` asset (the nightly
schedule, the landing sensor, `unitledger materialize`) keeps building them in one step with
build_daily_tables, the same phases; this job publishes the same tables and reports them as
materializations of those assets' partitions (so monthly_after_daily follows it too). It does not
stage: stage the landing files first (the `daily` job, or the staged_billing and staged_events
assets). One run per day or range of days (partition range tags), like the `daily` job: a range's
plan buckets the range's calls, and the days are not split into runs of their own (no
BackfillPolicy.multi_run: `dagster asset materialize --partition-range` needs single-run policies,
and each run would trigger its own monthly rebuild)."""

from datetime import timedelta
from pathlib import Path

import dagster as dg

from pipelines.assets import input_failure
from pipelines.partitions import daily_partitions
from pipelines.resources import Warehouse
from unitledger import months
from unitledger.sources.files import InputFileError
from unitledger.steps import daily as step
from unitledger.steps.result import StepResult
from unitledger.warehouse.publish import remove_folder
from unitledger.warehouse.views import refresh_views


def _days(context) -> tuple:
    """The first and last day of the run's partitions (one run may cover several)."""
    window = context.partition_time_window
    return window.start.date(), window.end.date() - timedelta(days=1)


def _phase(context, phase, warehouse: Warehouse, *args):
    """Run one phase of steps.daily on the run folder, its seconds per stage logged."""
    result = StepResult()
    try:
        done = phase(warehouse.layout, warehouse.settings, *args, result=result)
    except InputFileError as exc:
        raise input_failure(exc) from exc
    context.log.info(", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in result.timings.items()))
    return done


def _buckets(folder: str, buckets: int):
    """One (run folder, bucket) per bucket: each becomes a step of the op mapped over them."""
    for bucket in range(buckets):
        yield dg.DynamicOutput((folder, bucket), mapping_key=f"bucket_{bucket:04}")


@dg.op(
    out=dg.DynamicOut(tuple),
    config_schema={"buckets": dg.Field(int, default_value=0, description="Hash buckets of requests and sessions; 0: as many as the days' calls need (steps.daily.BUCKET_CALLS).")},
)
def plan_daily(context: dg.OpExecutionContext, warehouse: Warehouse):
    """Plan the run's days in their run folder (steps.daily.plan_daily: bucket count, intent days,
    the allocation) and yield one (folder, bucket) per bucket: each join becomes a step."""
    start, end_inclusive = _days(context)
    folder = step.daily_parts_folder(warehouse.layout, start, end_inclusive)
    plan = _phase(context, step.plan_daily, warehouse, start, end_inclusive, folder, context.op_config["buckets"] or None)
    context.log.info(f"{start}..{end_inclusive}: {plan.buckets} bucket(s) of requests")
    yield from _buckets(str(folder), plan.buckets)


@dg.op
def join_daily_bucket(context: dg.OpExecutionContext, warehouse: Warehouse, part: tuple) -> str:
    """The join of one bucket of requests (steps.daily.join_daily_bucket)."""
    folder, bucket = part
    _phase(context, step.join_daily_bucket, warehouse, Path(folder), bucket)
    return folder


@dg.op(out=dg.DynamicOut(tuple))
def settle_daily(context: dg.OpExecutionContext, warehouse: Warehouse, folders: list):
    """Once every join is written: the requests no bucket placed alone (steps.daily.settle_daily);
    then one (folder, bucket) per bucket of sessions: each intents pass becomes a step."""
    folder = folders[0]
    _phase(context, step.settle_daily, warehouse, Path(folder))
    yield from _buckets(folder, step.read_daily_plan(Path(folder)).buckets)


@dg.op
def intents_daily_bucket(context: dg.OpExecutionContext, warehouse: Warehouse, part: tuple) -> str:
    """The intents of one bucket of sessions (steps.daily.intents_daily_bucket)."""
    folder, bucket = part
    _phase(context, step.intents_daily_bucket, warehouse, Path(folder), bucket)
    return folder


@dg.op(out=dg.Out(dg.Nothing), pool="warehouse")
def publish_daily(context: dg.OpExecutionContext, warehouse: Warehouse, folders: list):
    """The one writer: features, breakdown, checks and publication (steps.daily.finish_daily),
    reported as materializations of the daily tables' partitions. A failed blocking check fails
    the step and nothing is published; once published, the run folder is removed."""
    folder = Path(folders[0])
    try:
        result = step.finish_daily(warehouse.layout, warehouse.settings, folder)
    except InputFileError as exc:
        raise input_failure(exc) from exc
    if not result.passed:
        raise dg.Failure(description="Blocking checks failed; nothing was published:\n" + "\n".join(result.failures()))
    remove_folder(folder)
    for table, outcomes in result.warnings.items():
        for c in outcomes:
            (context.log.info if c.passed else context.log.warning)(f"{table} {c.name}: {c.description}")
    start, end_inclusive = _days(context)
    for table, meta in result.tables.items():
        for day in months.days(start, end_inclusive):
            yield dg.AssetMaterialization(table, partition=day.isoformat(), metadata={"dates": meta["dates"]})
    context.log.info(f"DuckDB views: {', '.join(refresh_views(warehouse.layout))}")


@dg.job(
    partitions_def=daily_partitions,
    description="Build the daily tables of the selected days fanned out: a step per hash bucket of requests (join) and "
    "of sessions (intents), one writer; the same phases as the `daily` job's daily_tables step. Stage first "
    "(docs/operations.md, \"Running on a cluster\").",
)
def daily_fanout():
    joined = plan_daily().map(join_daily_bucket).collect()
    publish_daily(settle_daily(joined).map(intents_daily_bucket).collect())
