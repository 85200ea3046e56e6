"""`unitledger bench --allocation`: the invoice allocation (unitledger.model.allocation) timed
against hand-written DuckDB SQL computing the same allocation on the same files.

One generated day billed provider-style (`generate --billing aggregated`: acct-us-001 per hour,
model and token type, acct-eu-002 per request) is staged by the pipeline; the day's current FOCUS
rows and its calls (deduplicated, the daily step's lookaround) are written to two Parquet files.
Both sides read those files and produce every request's shares of every origin row (BilledCost,
EffectiveCost, ListCost) and each origin row's unlogged residual:
- pipeline: `allocate_billing` (recognition, name normalization, pools, accounts, exact split);
- DuckDB: the rule for this data's shape only (FOCUS SkuMeter token rows, telemetry and bill
  naming the model alike, costs >= 0): exact rows' (request, token type) pairs and the calls of
  sessions billed to another account left out, pools per provider x account x model x type x
  charge period x currency, rate = cost / max(billed, logged), floor shares in 1e-18 units
  (HUGEINT), leftover units to the largest remainders.
The results are compared (per origin row exactly; per request within 1e-18 per share: the two
break equal remainders differently); times are medians of `repeat` runs in this process."""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import polars as pl

COSTS = ("billed_cost", "effective_cost", "list_cost")
FOCUS_COSTS = {"billed_cost": "BilledCost", "effective_cost": "EffectiveCost", "list_cost": "ListCost"}


@dataclass
class AllocationReport:
    requests: int
    day: date
    token_rows: int
    calls: int
    shares: int
    seconds: dict[str, list[float]] = field(default_factory=dict)
    disagreements: list[str] = field(default_factory=list)

    def median(self, side: str) -> float:
        return statistics.median(self.seconds[side])


_DUCK_ALLOCATION = """
SET TimeZone = 'UTC';
-- An exact DECIMAL(38, 18) as HUGEINT 1e-18 units: its text has exactly 18 decimals.
CREATE OR REPLACE MACRO units(v) AS CAST(replace(CAST(CAST(v AS DECIMAL(38, 18)) AS VARCHAR), '.', '') AS HUGEINT);
CREATE OR REPLACE TEMP TABLE typed AS
SELECT *, CASE SkuMeter WHEN 'Input Tokens' THEN 'input' WHEN 'Output Tokens' THEN 'output'
                        WHEN 'Cache Read Tokens' THEN 'cache_read' WHEN 'Cache Write Tokens' THEN 'cache_write' END AS token_type
FROM read_parquet($focus);
CREATE OR REPLACE TEMP TABLE exact AS
SELECT DISTINCT x_RequestId AS request_id, t.token_type
FROM typed, (VALUES ('input'), ('output'), ('cache_read'), ('cache_write')) t(token_type)
WHERE x_RequestId IS NOT NULL AND (typed.token_type IS NULL OR typed.token_type = t.token_type);
CREATE OR REPLACE TEMP TABLE rows AS
SELECT source_file, source_line, lower(ServiceProviderName) AS provider, BillingAccountId AS account, x_ModelVersion AS model,
       token_type, ChargePeriodStart AS period_start, ChargePeriodEnd AS period_end, BillingCurrency AS currency,
       CAST(ConsumedQuantity AS HUGEINT) AS billed, BilledCost, EffectiveCost, ListCost
FROM typed WHERE x_RequestId IS NULL AND ChargeCategory = 'Usage' AND token_type IS NOT NULL AND ConsumedUnit = 'Tokens'
  AND ChargePeriodEnd - ChargePeriodStart <= INTERVAL 1 DAY;
CREATE OR REPLACE TEMP TABLE session_account AS
SELECT c.session_id, min(f.BillingAccountId) AS account
FROM read_parquet($calls) c JOIN (SELECT DISTINCT x_RequestId, BillingAccountId FROM typed WHERE x_RequestId IS NOT NULL) f
  ON f.x_RequestId = c.request_id
GROUP BY c.session_id HAVING count(DISTINCT f.BillingAccountId) = 1;
CREATE OR REPLACE TEMP TABLE call_tokens AS
SELECT u.* FROM (
  SELECT c.request_id, c.timestamp AS called_at, lower(c.provider) AS provider, c.model_version AS model, s.account AS hint, t.token_type,
         CASE t.token_type WHEN 'input' THEN greatest(c.input_tokens - c.cache_read_input_tokens - c.cache_write_input_tokens, 0)
                           WHEN 'output' THEN c.output_tokens WHEN 'cache_read' THEN c.cache_read_input_tokens
                           ELSE c.cache_write_input_tokens END AS tokens
  FROM read_parquet($calls) c LEFT JOIN session_account s USING (session_id),
       (VALUES ('input'), ('output'), ('cache_read'), ('cache_write')) t(token_type)
) u ANTI JOIN exact USING (request_id, token_type)
WHERE u.tokens > 0;
CREATE OR REPLACE TEMP TABLE pools AS
SELECT provider, account, model, token_type, period_start, period_end, currency, sum(billed) AS billed
FROM rows GROUP BY ALL;
CREATE OR REPLACE TEMP TABLE members AS
SELECT p.provider, p.account, p.model, p.token_type, p.period_start, p.currency, c.request_id, CAST(c.tokens AS HUGEINT) AS tokens
FROM pools p JOIN call_tokens c
  ON c.provider = p.provider AND c.model = p.model AND c.token_type = p.token_type
 AND c.called_at >= p.period_start AND c.called_at < p.period_end AND (c.hint IS NULL OR c.hint = p.account);
CREATE OR REPLACE TEMP TABLE bases AS
SELECT p.*, coalesce(l.logged, 0) AS logged, greatest(p.billed, coalesce(l.logged, 0)) AS base
FROM pools p LEFT JOIN (SELECT provider, account, model, token_type, period_start, currency, sum(tokens) AS logged
                        FROM members GROUP BY ALL) l USING (provider, account, model, token_type, period_start, currency);
CREATE OR REPLACE TEMP TABLE parts AS
SELECT r.source_file, r.source_line, m.request_id, m.tokens AS weight, b.base,
       units(r.BilledCost) AS billed_units, units(r.EffectiveCost) AS effective_units,
       units(r.ListCost) AS list_units
FROM rows r JOIN bases b USING (provider, account, model, token_type, period_start, currency)
JOIN members m USING (provider, account, model, token_type, period_start, currency)
WHERE b.logged > 0
UNION ALL
SELECT r.source_file, r.source_line, NULL, b.base - b.logged, b.base,
       units(r.BilledCost), units(r.EffectiveCost), units(r.ListCost)
FROM rows r JOIN bases b USING (provider, account, model, token_type, period_start, currency)
WHERE b.logged > 0;
CREATE OR REPLACE TEMP TABLE shares AS
WITH floors AS (
  SELECT *, {floors} FROM parts
), ranked AS (
  SELECT *, {ranks} FROM floors
)
SELECT source_file, source_line, request_id, {amounts} FROM ranked;
"""


def _duck_sql() -> str:
    floors = ", ".join(
        f"{c}_units * weight // base AS {c}_floor, ({c}_units * weight) % base AS {c}_rem" for c in ("billed", "effective", "list")
    )
    ranks = ", ".join(
        f"{c}_units - sum({c}_floor) OVER origin AS {c}_left, "
        f"row_number() OVER (PARTITION BY source_file, source_line ORDER BY {c}_rem DESC, request_id IS NULL, request_id) AS {c}_rank"
        for c in ("billed", "effective", "list")
    )
    amounts = ", ".join(
        f"CAST({c}_floor + CASE WHEN {c}_rank <= {c}_left THEN 1 ELSE 0 END AS VARCHAR) AS {name}"
        for c, name in (("billed", "billed_cost"), ("effective", "effective_cost"), ("list", "list_cost"))
    )
    sql = _DUCK_ALLOCATION.format(floors=floors, ranks=ranks, amounts=amounts)
    return sql.replace("FROM floors\n)", "FROM floors WINDOW origin AS (PARTITION BY source_file, source_line)\n)")


def _duck_allocation(focus: Path, calls: Path) -> pl.DataFrame:
    import duckdb
    from unitledger.warehouse.views import duckdb_literal_path

    con = duckdb.connect()
    try:
        for statement in [s for s in _duck_sql().split(";\n") if s.strip()]:
            con.execute(statement, {k: v for k, v in {"focus": duckdb_literal_path(focus), "calls": duckdb_literal_path(calls)}.items() if f"${k}" in statement})
        rows = con.execute(
            "SELECT source_file, source_line, request_id, billed_cost, effective_cost, list_cost FROM shares"
        ).fetchall()
    finally:
        con.close()
    frame = pl.DataFrame(rows, schema=["source_file", "source_line", "request_id", *COSTS], orient="row")
    from unitledger.model.allocation import from_units

    return frame.with_columns(from_units(pl.col(c).cast(pl.Int128)).alias(c) for c in COSTS)


def _pipeline_allocation(focus: Path, calls: Path, settings) -> pl.DataFrame:
    """As the daily step allocates (steps.daily.allocate_days): in buckets of requests, its
    intermediate frames written beside the calls and read back."""
    from unitledger.model.allocation import allocate_billing, allocation_buckets, optimizations
    from unitledger.warehouse.publish import Spill

    logged = pl.scan_parquet(calls, glob=False)
    scratch = Spill(calls.parent, "allocation", "date")
    try:
        buckets = allocation_buckets(logged.select(pl.len()).collect().item())
        run = allocate_billing(pl.scan_parquet(focus, glob=False), logged, settings.allocation, buckets=buckets, spill=scratch.stash)
        requests, pools = pl.collect_all(
            [run.tables.requests.select("source_file", "source_line", "request_id", *COSTS), run.tables.pools], optimizations=optimizations()
        )
    finally:
        scratch.cleanup()
    residual = pools.filter(pl.col("allocated_billed_cost").is_not_null() & (pl.col("unmatched_billed_cost") == 0)).select(
        "source_file", "source_line", pl.lit(None, pl.String).alias("request_id"), *[pl.col(f"unlogged_{c}").alias(c) for c in COSTS]
    )
    return pl.concat([requests, residual])


def compare(ours: pl.DataFrame, theirs: pl.DataFrame) -> list[str]:
    """Per origin row exactly; per (origin row, request) within 1e-18 (equal remainders)."""
    problems = []
    origin = ["source_file", "source_line"]
    sums = [f.group_by(origin).agg(pl.col(COSTS).sum()).sort(origin) for f in (ours, theirs)]
    if not sums[0].equals(sums[1]):
        problems.append(f"origin rows differ: {sums[0].height} vs {sums[1].height} rows or their sums")
    key = [*origin, "request_id"]
    both = ours.join(theirs, on=key, how="full", coalesce=True, nulls_equal=True, suffix="_sql")
    tiny = pl.lit(1, pl.Decimal(38, 18)) / 10**18
    off = both.filter(pl.any_horizontal([((pl.col(c) - pl.col(f"{c}_sql")).abs() > tiny).fill_null(True) for c in COSTS]))
    if off.height:
        problems.append(f"{off.height} shares differ, e.g. {off.row(0, named=True)}")
    return problems


def run_allocation_benchmark(requests: int, repeat: int = 1, day: date = date(2026, 3, 2), work_dir: Path | None = None,
                             config: Path | None = None, log=print) -> AllocationReport:  # fmt: skip
    """Generate and stage one provider-billed day, then time both allocations `repeat` times."""
    from unitledger.config import load_settings
    from unitledger.layout import Layout
    from unitledger.model.requests import dedupe_calls, in_dates, with_lookaround
    from unitledger.sources.events import scan_staged_calls
    from unitledger.sources.focus import scan_staged_focus
    from unitledger.steps.staging import stage_billing, stage_events
    from unitledger.tools.generate import generate

    settings = load_settings(config)
    root = Path(tempfile.mkdtemp(prefix="unitledger-alloc-bench-", dir=work_dir))
    try:
        layout = Layout(root / "data")
        log(f"generating and staging {requests:,} requests for {day}, billed provider-style ...")
        generate(layout.data_dir, start=day, days=1, requests_per_day=requests, billing="aggregated", focus_format="parquet", events_format="parquet")
        stage_billing(layout, settings, day + timedelta(days=1))  # built the day after, as bench.py
        stage_events(layout)
        lo, hi = with_lookaround(day, day + timedelta(days=1))
        focus, calls = root / "focus.parquet", root / "calls.parquet"
        scan_staged_focus(layout).filter(in_dates("charge_date", lo, hi)).sink_parquet(focus)
        dedupe_calls(scan_staged_calls(layout).filter(in_dates("call_date", lo, hi))).sink_parquet(calls)
        token_rows = pl.scan_parquet(focus, glob=False).filter(pl.col("x_RequestId").is_null()).select(pl.len()).collect().item()
        report = AllocationReport(requests, day, token_rows, pl.scan_parquet(calls, glob=False).select(pl.len()).collect().item(), 0)
        report.seconds = {"pipeline": [], "duckdb": []}
        for k in range(repeat):
            began = time.perf_counter()
            ours = _pipeline_allocation(focus, calls, settings)
            report.seconds["pipeline"].append(time.perf_counter() - began)
            began = time.perf_counter()
            theirs = _duck_allocation(focus, calls)
            report.seconds["duckdb"].append(time.perf_counter() - began)
            log(f"  run {k + 1}/{repeat}: pipeline {report.seconds['pipeline'][-1]:.2f} s, duckdb {report.seconds['duckdb'][-1]:.2f} s")
            if k == 0:
                report.shares = ours.height
                report.disagreements = compare(ours, theirs)
        return report
    finally:
        shutil.rmtree(root, ignore_errors=True)


def format_allocation_report(report: AllocationReport) -> str:
    from unitledger.tools.bench import machine

    p, d = report.median("pipeline"), report.median("duckdb")
    lines = [
        f"unitledger bench --allocation --requests {report.requests} --repeat {len(report.seconds['pipeline'])}",
        f"machine: {machine()}",
        f"input: {report.token_rows:,} FOCUS rows without request id + {report.calls:,} calls (day {report.day}); "
        f"{report.shares:,} shares and residuals",
        f"allocation (s, median): pipeline {p:.2f}, duckdb {d:.2f}, pipeline/duckdb {p / d:.2f}",
    ]
    lines.append("RESULTS DISAGREE: " + "; ".join(report.disagreements) if report.disagreements else
                 "results agree: every origin row's split exactly, every share within 1e-18")  # fmt: skip
    return "\n".join(lines)
