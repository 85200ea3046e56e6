"""Dagster definitions: `dagster dev` (with the repo's dagster.yaml) and `unitledger` load these."""

import dagster as dg

from pipelines.assets import daily_tables, staged_billing, staged_events
from pipelines.daily import daily_fanout
from pipelines.decisions import DECISION_ASSETS
from pipelines.automation import FRESHNESS_CHECKS, daily_job, landing_changes, monthly_after_daily, monthly_job, nightly, reconciliation_job
from pipelines.monthly import monthly_tables
from pipelines.reconciliation import RECONCILIATION_ASSETS, reconciliation_months
from pipelines.resources import Warehouse

ALL_ASSETS = [staged_billing, staged_events, daily_tables, monthly_tables, *RECONCILIATION_ASSETS, *DECISION_ASSETS]

defs = dg.Definitions(
    assets=ALL_ASSETS,
    asset_checks=FRESHNESS_CHECKS,
    jobs=[daily_job, daily_fanout, monthly_job, reconciliation_job, reconciliation_months],
    schedules=[nightly],
    sensors=[landing_changes, monthly_after_daily],
    resources={"warehouse": Warehouse()},
)
