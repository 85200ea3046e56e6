"""Thin Dagster assets: call the steps (unitledger.steps), report metadata and check results."""


from datetime import timedelta

import dagster as dg

from pipelines.partitions import daily_partitions
from pipelines.resources import Warehouse
from schemas.events import StagedLlmCall, StagedOutcome
from schemas.focus import StagedFocus
from unitledger.sources.files import InputFileError
from unitledger.steps import daily, staging
from unitledger.steps.result import StepResult
from unitledger.warehouse import dictionary
from unitledger.warehouse.views import refresh_views


def column_schema(models: dict[str, type]) -> dg.TableSchema:
    """The columns of Pandera models (data dictionary: type, nullable, meaning) as Dagster shows
    them on an asset's page; {"": model} for one table, {"prefix.": model, ...} for several."""
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                f"{prefix}{name}",
                type=dtype,
                description=description,
                constraints=dg.TableColumnConstraints(nullable=nullable, unique=bool(model.to_schema().columns[name].unique)),
            )
            for prefix, model in models.items()
            for name, dtype, nullable, description in dictionary.columns(model)
        ]
    )


def table_spec(name: str, **kwargs) -> dg.AssetSpec:
    """The asset of a published table: its meaning and columns from the data dictionary."""
    model = dictionary.TABLES[name][0]
    return dg.AssetSpec(name, description=model.__doc__, metadata={"dagster/column_schema": column_schema({"": model})}, **kwargs)


def report_step(result: StepResult, specs: dict[str, dg.AssetKey]):
    """Check results first, then materializations; a failed blocking check fails the step, a
    failed warning (result.warnings) is reported with severity WARN."""
    check_results: dict[str, list[dg.AssetCheckResult]] = {}
    for severity, outcomes_by_table in ((dg.AssetCheckSeverity.ERROR, result.checks), (dg.AssetCheckSeverity.WARN, result.warnings)):
        for table, outcomes in outcomes_by_table.items():
            check_results.setdefault(table, []).extend(
                dg.AssetCheckResult(
                    asset_key=specs[table],
                    check_name=c.name,
                    passed=c.passed,
                    severity=severity,
                    description=c.description,
                    metadata=c.metadata,
                )
                for c in outcomes
            )
    if not result.passed:
        for results in check_results.values():
            yield from results
        raise dg.Failure(description="Blocking checks failed; nothing was published:\n" + "\n".join(result.failures()))
    for table, meta in result.tables.items():
        timings = {f"seconds_{k}": round(v, 3) for k, v in result.timings.items()}
        yield dg.MaterializeResult(asset_key=specs[table], metadata={**meta, **timings}, check_results=check_results.get(table, []))


def input_failure(exc: InputFileError) -> dg.Failure:
    return dg.Failure(description=f"Unreadable landing file: {exc}")


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "staged_billing", group_name="staging", description="FOCUS landing files staged as typed Parquet; bad rows quarantined.",
            metadata={"dagster/column_schema": column_schema({"": StagedFocus})},
        )
    ],
    check_specs=[
        dg.AssetCheckSpec("schema", asset="staged_billing", blocking=True, description="Pandera: StagedFocus"),
        dg.AssetCheckSpec("billing_periods", asset="staged_billing", description="Warns when FOCUS rows bill a period outside pipeline.start_date..today (held in quarantine)."),
    ],
    # Unpartitioned, but selectable with the daily tables in `dagster asset materialize --partition-range`.
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool="warehouse",
)
def staged_billing(context: dg.AssetExecutionContext, warehouse: Warehouse):
    try:
        result = staging.stage_billing(warehouse.layout, warehouse.settings, warehouse.current_date())
    except InputFileError as exc:
        raise input_failure(exc) from exc
    yield from report_step(result, {"staged_billing": dg.AssetKey("staged_billing")})


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "staged_events", group_name="staging", description="Event landing files staged as typed llm_calls and outcomes; bad rows quarantined.",
            metadata={"dagster/column_schema": column_schema({"llm_calls.": StagedLlmCall, "outcomes.": StagedOutcome})},
        )
    ],
    check_specs=[
        dg.AssetCheckSpec("llm_call_schema", asset="staged_events", blocking=True, description="Pandera: StagedLlmCall"),
        dg.AssetCheckSpec("outcome_schema", asset="staged_events", blocking=True, description="Pandera: StagedOutcome"),
        dg.AssetCheckSpec("span_schema", asset="staged_events", blocking=True, description="Pandera: StagedSpan (GenAI structure spans)"),
        dg.AssetCheckSpec("telemetry_files", asset="staged_events", blocking=True, description="No telemetry file (OTLP, gateway log) is quarantined entirely: such a file fails the run, named with its first row's reason."),
    ],
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool="warehouse",
)
def staged_events(context: dg.AssetExecutionContext, warehouse: Warehouse):
    try:
        result = staging.stage_events(warehouse.layout, warehouse.settings.telemetry)
    except InputFileError as exc:
        raise input_failure(exc) from exc
    yield from report_step(result, {"staged_events": dg.AssetKey("staged_events")})


_DAILY_SPECS = [
    # Invoice allocation (issue 16): AI bill rows without a request id split over the day's calls.
    table_spec("allocation_pools", deps=["staged_billing", "staged_events"], group_name="daily"),
    table_spec("unrecognized_usage", deps=["staged_billing"], group_name="daily"),
    table_spec("unmatched_models", deps=["staged_billing", "staged_events"], group_name="daily"),
    table_spec("allocated_costs", deps=["staged_billing", "staged_events"], group_name="daily"),
    table_spec("request_costs", deps=["staged_billing", "staged_events", "allocation_pools"], group_name="daily"),
    table_spec("intent_costs", deps=["request_costs", "staged_events"], group_name="daily"),
    table_spec("cost_per_intent", deps=["intent_costs"], group_name="daily"),
    table_spec("cost_per_success", deps=["intent_costs"], group_name="daily"),
    table_spec("cost_breakdown", deps=["request_costs", "intent_costs"], group_name="daily"),
    table_spec("gateway_gap", deps=["request_costs"], group_name="daily"),
]
_DAILY_CHECKS = [
    dg.AssetCheckSpec("schema", asset=spec.key, blocking=True, description=f"Pandera: {daily.DAILY_TABLES[spec.key.path[-1]].__name__}")
    for spec in _DAILY_SPECS
] + [
    dg.AssetCheckSpec("conservation", asset="request_costs", blocking=True, description="Per day and currency, cost equals the FOCUS rows with a request id assigned to that day plus the shares allocated to that day's calls, exactly."),
    dg.AssetCheckSpec("allocation_conservation", asset="allocation_pools", blocking=True, description="Per currency, the cost the pools allocated equals the shares the requests received, exactly."),
    dg.AssetCheckSpec("allocated_costs_sum_back", asset="allocated_costs", blocking=True, description="Every allocated origin row's split rows sum back to it for BilledCost, EffectiveCost and ListCost, exactly."),
    dg.AssetCheckSpec("quarantine_schema", asset="request_costs", blocking=True, description="Pandera: Quarantine, the rows the run holds back (late billing, intents billed in two currencies)."),
    dg.AssetCheckSpec("single_currency", asset="intent_costs", blocking=True, description="No intent is billed in two currencies (such intents are quarantined first)."),
    dg.AssetCheckSpec("late_billing", asset="request_costs", description="Warns when FOCUS rows are billed further than pipeline.billing_delay_days from their request (quarantined)."),
    dg.AssetCheckSpec("session_bound", asset="intent_costs", description="Warns when calls are more than pipeline.session_days after their session's first call (in no intent)."),
    dg.AssetCheckSpec("gateway_gap", asset="gateway_gap", description="Warns when a gateway's reported cost of billed requests differs from the invoice by more than reconciliation.gateway_gap_warn, per provider and model."),
]


@dg.multi_asset(
    specs=_DAILY_SPECS,
    check_specs=_DAILY_CHECKS,
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool="warehouse",
)
def daily_tables(context: dg.AssetExecutionContext, warehouse: Warehouse):
    """Every daily table in one pass over the joined data (one run may cover a range of days)."""
    window = context.partition_time_window
    start, end_inclusive = window.start.date(), window.end.date() - timedelta(days=1)
    context.log.info(f"Building daily tables for {start}..{end_inclusive}")
    result = daily.build_daily_tables(warehouse.layout, warehouse.settings, start, end_inclusive)
    yield from report_step(result, {spec.key.path[-1]: spec.key for spec in _DAILY_SPECS})
    views = refresh_views(warehouse.layout)
    context.log.info(f"DuckDB views: {', '.join(views)}")
