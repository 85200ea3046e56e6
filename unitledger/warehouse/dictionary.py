"""The data dictionary, generated from the Pandera models the pipeline validates with."""

from __future__ import annotations

import pandera.polars as pa

import schemas
from schemas.allocation import (
    AllocatedCostsDaily,
    AllocatedCostsMonthly,
    AllocationPoolsDaily,
    AllocationPoolsMonthly,
    FullyLoadedCosts,
    UnmatchedModels,
    UnrecognizedUsageDaily,
)
from schemas.decisions import (
    BreakEven,
    CostBreakdown,
    CostPerSuccessTrend,
    MoneyBreakdown,
    TurnCosts,
    VersionRegressions,
    WeightedCostPerSuccess,
    WhatIf,
    WorkflowClassCosts,
)
from schemas.monthly import CostBreakdownMonthly, CostPerIntentMonthly, CostPerSuccessMonthly
from schemas.reconciliation import (
    GatewayGap,
    Reconciliation,
    ReconciliationDaily,
    RequestConflicts,
    TokenMismatches,
    TokenReconciliation,
)

# Published tables in the order a reader meets them, with their partition key.
TABLES: dict[str, tuple[type[pa.DataFrameModel], str]] = {
    "request_costs": (schemas.RequestCosts, "date"),
    "intent_costs": (schemas.IntentCosts, "date"),
    "cost_per_intent": (schemas.CostPerIntent, "date"),
    "cost_per_success": (schemas.CostPerSuccess, "date"),
    "allocation_pools": (AllocationPoolsDaily, "date"),
    "unrecognized_usage": (UnrecognizedUsageDaily, "date"),
    "unmatched_models": (UnmatchedModels, "date"),
    "allocated_costs": (AllocatedCostsDaily, "date"),
    "cost_breakdown": (CostBreakdown, "date"),
    "gateway_gap": (GatewayGap, "date"),
    "cost_per_intent_monthly": (CostPerIntentMonthly, "billing_period"),
    "cost_per_success_monthly": (CostPerSuccessMonthly, "billing_period"),
    "cost_breakdown_monthly": (CostBreakdownMonthly, "billing_period"),
    "allocation_pools_monthly": (AllocationPoolsMonthly, "billing_period"),
    "allocated_costs_monthly": (AllocatedCostsMonthly, "billing_period"),
    "fully_loaded_costs_monthly": (FullyLoadedCosts, "billing_period"),
    "reconciliation": (Reconciliation, "billing_period"),
    "reconciliation_daily": (ReconciliationDaily, "date"),
    "token_reconciliation": (TokenReconciliation, "billing_period"),
    "token_mismatches": (TokenMismatches, "billing_period"),
    "request_conflicts": (RequestConflicts, "billing_period"),
    # Decision tables: not partitioned, each the latest window's ([decisions] window_days up to the
    # latest built day), replaced as a whole by every run of the decision step.
    "break_even": (BreakEven, "none"),
    "what_if": (WhatIf, "none"),
    "money_breakdown": (MoneyBreakdown, "none"),
    "turn_costs": (TurnCosts, "none"),
    "workflow_class_costs": (WorkflowClassCosts, "none"),
    "weighted_cost_per_success": (WeightedCostPerSuccess, "none"),
    "cost_per_success_trends": (CostPerSuccessTrend, "none"),
    "version_regressions": (VersionRegressions, "none"),
    "quarantine": (schemas.Quarantine, "none"),
}


def _dtype(column) -> str:
    return str(column.dtype).replace("Decimal(precision=38, scale=18)", "Decimal(38,18)")


def columns(model: type[pa.DataFrameModel]) -> list[tuple[str, str, bool, str]]:
    """(name, type, nullable, description) for every column of `model`."""
    return [(name, _dtype(col), col.nullable, col.description or "") for name, col in model.to_schema().columns.items()]


def render_markdown() -> str:
    lines = [
        "# Data dictionary",
        "",
        "Generated from the Pandera models in `schemas/` (`unitledger tables --markdown`); the pipeline",
        "validates every table with the same models, so this page cannot drift from the data.",
        "",
        "Money columns are `Decimal(38,18)`: exact, in the row's `billing_currency`, never summed across",
        "currencies. Ratios are `Float64`, computed from the exact sums stored beside them: to",
        "re-aggregate, sum the numerators and denominators, never average the ratios.",
        "",
    ]
    for table, (model, key) in TABLES.items():
        lines += [f"## {table}", "", (model.__doc__ or "").strip(), "", f"Partitioned by: `{key}`.", ""]
        lines += ["| column | type | nullable | meaning |", "|---|---|---|---|"]
        lines += [f"| `{n}` | {t} | {'yes' if nullable else 'no'} | {d} |" for n, t, nullable, d in columns(model)]
        lines.append("")
    return "\n".join(lines)
