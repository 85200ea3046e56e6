"""The daily step's cost_breakdown (where the money goes), from the spills intent_costs is built
from: the intent calls (model.intents.intent_calls) and the intent_costs parts."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from schemas.decisions import CostBreakdown
from schemas.outputs import IntentCosts
from unitledger.model import requests
from unitledger.model.decisions import BREAKDOWN_GRAIN, cost_breakdown, reaggregate_cost_breakdown
from unitledger.model.features import GRAIN
from unitledger.warehouse.publish import Spill, polars_schema


def spill_cost_breakdown(joined: pl.LazyFrame, intents: Spill, target: Spill, buckets: int, scratch: Path) -> None:
    """Sink the cost_breakdown of the intents spilled in `intents` into `target`.

    `joined`: the calls of the run's intents with their intent_date (model.intents.intent_calls).
    In a bucketed run (intents spilled one hash bucket of sessions per part) each bucket's calls and
    intents make a part, as intent_costs was made; the parts of a grain are then added up once, so
    memory follows a bucket and the table is the same whatever the number of buckets."""
    intent_schema = polars_schema(IntentCosts)
    if buckets == 1:
        target.sink(cost_breakdown(joined, intents.scan(intent_schema)))
        return
    parts = Spill(scratch, "cost_breakdown_parts", "date")
    try:
        for bucket in range(buckets):
            ours = joined.filter(requests.in_bucket("session_id", bucket, buckets))
            parts.sink(cost_breakdown(ours, intents.scan(intent_schema, part=bucket)), part=bucket)
        # A grain's intents fall in several buckets of sessions: each part holds a partial sum.
        day_grain = [c for c in BREAKDOWN_GRAIN if c != "turns_bucket"]
        summed = reaggregate_cost_breakdown(parts.scan(polars_schema(CostBreakdown)), day_grain)
        target.sink(summed.select(list(polars_schema(CostBreakdown))))
    finally:
        parts.cleanup()
