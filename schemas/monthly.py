"""Monthly rollups: the daily per-feature tables with `billing_period` (YYYY-MM) in place of `date`.

Each monthly model is derived from its daily model (schemas/outputs.py): same columns, types,
descriptions and checks, so the two cannot drift. Only the partition column differs.
"""

import functools

import pandera.polars as pa
import polars as pl
from pandera.api.polars.container import DataFrameSchema

from schemas.decisions import CostBreakdown
from schemas.outputs import CostPerIntent, CostPerSuccess

BILLING_PERIOD = "billing_period"
# Months 01-12 of a four-digit year, as Dagster's monthly partition keys are written.
BILLING_PERIOD_PATTERN = r"^\d{4}-(0[1-9]|1[0-2])$"


@functools.cache
def _by_month(daily: type[pa.DataFrameModel], name: str, doc: str) -> DataFrameSchema:
    schema = daily.to_schema().rename_columns({"date": BILLING_PERIOD})
    schema = schema.update_column(
        BILLING_PERIOD,
        dtype=pl.String,
        checks=[pa.Check.str_matches(BILLING_PERIOD_PATTERN)],
        description="Partition: the UTC calendar month (YYYY-MM) of the intents' dates.",
    )
    schema.unique = [BILLING_PERIOD if c == "date" else c for c in daily.to_schema().unique]
    schema.name = name
    schema.description = doc
    return schema


class _Monthly:
    """Mixin: `to_schema` is the daily model's schema with billing_period in place of date."""

    @classmethod
    def to_schema(cls) -> DataFrameSchema:
        daily = next(base for base in cls.__mro__[1:] if issubclass(base, pa.DataFrameModel))
        return _by_month(daily, cls.__name__, cls.__doc__)


class CostPerIntentMonthly(_Monthly, CostPerIntent):
    """Cost per intent per billing month: the month's daily sums added up, plus the shares of AI
    token rows billed for a whole month (allocation_pools_monthly) in the intents of their calls
    (in token_cost and allocated_token_cost: invoice_allocated; an intent no daily row billed takes
    the shares' currency); ratios recomputed from the sums."""


class CostPerSuccessMonthly(_Monthly, CostPerSuccess):
    """Cost per successful intent per billing month: the month's daily sums and moments added up,
    plus the shares of AI token rows billed for a whole month in the intents of their calls, as in
    cost_per_intent_monthly (labeled intents only); ratios and the 95% interval recomputed from
    the sums (over the month's intents), never averaged."""


class CostBreakdownMonthly(_Monthly, CostBreakdown):
    """Where the money goes per billing month: the month's daily cost_breakdown sums added up, per
    feature × model version × prompt version × currency × turns bucket. The components still add
    up to token_cost and total_cost exactly."""
