"""Dagster definitions: `dagster dev` (with the repo's dagster.yaml) and `unitledger` load these."""

import dagster as dg

from pipelines.assets import daily_tables, staged_billing, staged_events
from pipelines.partitions import daily_partitions
from pipelines.resources import Warehouse

ALL_ASSETS = [staged_billing, staged_events, daily_tables]

daily_job = dg.define_asset_job(
    "daily",
    selection=dg.AssetSelection.all(),
    partitions_def=daily_partitions,
    description="Stage new landing files, then build every daily table for the selected days.",
)

nightly_schedule = dg.build_schedule_from_partitioned_job(daily_job, hour_of_day=2, name="nightly")

defs = dg.Definitions(
    assets=ALL_ASSETS,
    jobs=[daily_job],
    schedules=[nightly_schedule],
    resources={"warehouse": Warehouse()},
)
