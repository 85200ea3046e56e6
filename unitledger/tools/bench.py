"""`unitledger bench`: the pipeline against a hand-written DuckDB SQL and a pandas implementation.

One synthetic day (unitledger.tools.generate) is written once; then each implementation computes
request_costs, intent_costs, cost_per_intent and cost_per_success for that day from the same
landing files, each in its own subprocess so that its peak RSS (the kernel's VmHWM high-water mark
of that process) is its own. The three results must agree: sums and counts exactly, ratios within float
tolerance. The two references implement the pipeline's definitions independently (no pipeline code):

- a row counts only if it passes the parse rules (mandatory fields present, money an exact decimal
  with at most 18 places, timestamps that parse, known categories, currency and event types,
  periods that run forward);
- per (BillingAccountId, BillingPeriodStart) only the newest FOCUS delivery (folder) counts;
- calls are deduplicated per request id (smallest event_id, file, line); a FOCUS row is its
  request's call's cost when their dates are at most pipeline.billing_delay_days apart, else late
  (left out) when a call of its request is within pipeline.detection_horizon_days, else
  billing-only, dated by its request's first row within the horizon before it (late when more
  than billing_delay_days after it); rows summed per request (a request billed to two accounts or
  currencies is left out of billing), both sides full-outer joined; a request is dated by its
  call, else its first row;
- an intent is a session's calls from a call date with no call of the session in the
  pipeline.session_days before it up to session_days after it, dated by that first date,
  described by its last call, labelled by the session's latest outcome (an intent billed in two
  currencies is left out); labor cost from the settings applies to billed failures; money is
  DECIMAL(38,18) throughout, ratios are doubles computed from the exact sums.

Stages reported: ingest (read, parse, type), validate (the pipeline's Pandera checks; the
references have none beyond their parse rules), join (request_costs), allocate (the invoice
allocation of rows without request id: the references bill per request only, so it counts in the
pipeline's total only), intents (intent_costs),
features (cost_per_intent, cost_per_success), breakdown (cost_breakdown, where the money goes: the
references do not build it, so it counts in the pipeline's total only), write (publishing Parquet).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path

import polars as pl

from schemas.types import TOKEN_TYPES
from unitledger.model.requests import ESTIMATED_COSTS

STAGES = ("ingest", "validate", "join", "allocate", "intents", "features", "breakdown", "write")
CORE = ("join", "intents", "features")  # the transforms all three implementations share
IMPLEMENTATIONS = ("pipeline", "duckdb", "pandas")
TABLES = ("request_costs", "intent_costs", "cost_per_intent", "cost_per_success")
GRAIN = ["date", "feature_tag", "model_version", "prompt_version", "billing_currency"]
KEYS = {"request_costs": ["request_id"], "intent_costs": ["session_id"], "cost_per_intent": GRAIN, "cost_per_success": GRAIN}
EVENTS_FORMAT = {"csv": "jsonl", "parquet": "parquet"}
FLOAT_TOLERANCE = 1e-9  # relative; ratios are doubles computed from the same exact sums
DEFAULT_DAY = date(2026, 3, 2)
SHARD_REQUESTS = 5_000_000


# --- running the implementations ------------------------------------------------------------------


@dataclass
class Run:
    implementation: str
    timings: dict[str, float]
    seconds: float
    peak_rss: int  # bytes
    repeat: int = 0  # which round of the interleaved runs: its runs form one pair per two implementations

    def stage_seconds(self, stage: str | None) -> float:
        """A stage's seconds (None: the whole run; CORE's name "core": join + intents + features)."""
        if stage is None:
            return self.seconds
        if stage == "core":
            return sum(self.timings.get(s, 0.0) for s in CORE)
        return self.timings.get(stage, 0.0)


@dataclass
class Spread:
    """A ratio over the interleaved pairs: median, lowest and highest, and how many pairs."""

    median: float
    low: float
    high: float
    pairs: int

    def __str__(self) -> str:
        if self.pairs == 1:
            return f"{self.median:.2f}"
        return f"{self.median:.2f} ({self.low:.2f}-{self.high:.2f})"


def run_order(implementations: tuple[str, ...], repeat: int) -> tuple[str, ...]:
    """The order of round `repeat`: as given, then reversed, alternately (A B, B A, A B, ...), so
    that neither side of a pair always runs first (warm page cache, the machine's drift)."""
    return implementations if repeat % 2 == 0 else tuple(reversed(implementations))


def paired_ratios(runs: list[Run], numerator: str, denominator: str, stage: str | None = None) -> Spread | None:
    """`numerator`'s seconds over `denominator`'s, one ratio per round in which both ran (each pair
    ran back to back, so a slow minute of the shared machine hits both sides): their median and
    spread. None when no round has both, or the denominator took no time."""
    by_round: dict[int, dict[str, Run]] = {}
    for run in runs:
        by_round.setdefault(run.repeat, {})[run.implementation] = run
    ratios = []
    for pair in by_round.values():
        if numerator in pair and denominator in pair:
            below = pair[denominator].stage_seconds(stage)
            if below > 0:
                ratios.append(pair[numerator].stage_seconds(stage) / below)
    if not ratios:
        return None
    return Spread(statistics.median(ratios), min(ratios), max(ratios), len(ratios))


@dataclass
class Report:
    requests: int
    fmt: str
    day: date
    input_rows: dict[str, int]
    generate_seconds: float
    runs: list[Run] = field(default_factory=list)
    disagreements: list[str] = field(default_factory=list)
    table_rows: dict[str, dict[str, int]] = field(default_factory=dict)  # implementation → table → rows

    commit: str = ""  # the code measured (git describe of the checkout; "+dirty" with uncommitted changes)
    load_before: tuple[float, ...] = ()  # the machine's 1/5/15-minute load averages before and after the runs
    load_after: tuple[float, ...] = ()

    def median(self, implementation: str, stage: str | None = None) -> float:
        """Median over repeats of a stage's seconds (None: the whole run; "core": join + intents + features)."""
        return statistics.median(r.stage_seconds(stage) for r in self.runs if r.implementation == implementation)

    def median_rss(self, implementation: str) -> float:
        return statistics.median(r.peak_rss for r in self.runs if r.implementation == implementation)

    def max_rss(self, implementation: str) -> int:
        return max(r.peak_rss for r in self.runs if r.implementation == implementation)

    @property
    def implementations(self) -> list[str]:
        return [i for i in IMPLEMENTATIONS if any(r.implementation == i for r in self.runs)]


def run_benchmark(
    requests: int,
    fmt: str = "parquet",
    repeat: int = 1,
    day: date = DEFAULT_DAY,
    work_dir: Path | None = None,
    implementations: tuple[str, ...] = IMPLEMENTATIONS,
    config: Path | None = None,
    log=print,
    shard_requests: int = SHARD_REQUESTS,
    done=None,
) -> Report:
    """Generate one day of `requests` requests, run each implementation `repeat` times on it,
    interleaved (one round runs every implementation back to back, in run_order), and compare their
    tables. The temporary data root is removed afterwards. `log(text)` gets what starts,
    `done(text)` each finished step (default: log): the generation, every run, the comparison
    (2 + repeat × implementations steps)."""
    done = done or log
    from unitledger.config import load_settings

    settings_path = load_settings(config).path
    root = Path(tempfile.mkdtemp(prefix="unitledger-bench-", dir=work_dir))
    try:
        data_dir = root / "data"
        log(f"generating {requests:,} requests for {day} ({fmt}) under {root} ...")
        began = time.perf_counter()
        # In a subprocess too: the generator's memory must not stay in this process during the runs.
        result_file = root / "generated.json"
        args = [sys.executable, "-m", "unitledger.tools.bench", "generate", str(data_dir), day.isoformat(), str(requests), fmt, str(shard_requests), str(result_file)]
        if subprocess.run(args).returncode != 0:
            raise RuntimeError("bench: generating the landing files failed")
        report = Report(
            requests=requests,
            fmt=fmt,
            day=day,
            input_rows=json.loads(result_file.read_text()),
            generate_seconds=time.perf_counter() - began,
            commit=git_commit(),
            load_before=os.getloadavg(),
        )
        done(f"generated {report.input_rows['focus']:,} FOCUS rows, {report.input_rows['events']:,} events in {report.generate_seconds:.1f} s")
        for k in range(repeat):
            for implementation in run_order(implementations, k):
                out_dir = root / "out" / implementation
                shutil.rmtree(out_dir, ignore_errors=True)
                if implementation == "pipeline":  # staging is incremental: start from an empty warehouse
                    shutil.rmtree(data_dir / "warehouse", ignore_errors=True)
                run = _run_in_subprocess(implementation, data_dir, day, out_dir, settings_path)
                run.repeat = k
                report.runs.append(run)
                done(f"run {k + 1}/{repeat} {implementation}: {run.seconds:.2f} s, peak RSS {run.peak_rss / 2**20:,.0f} MiB")
            if k == 0:
                results = {i: _load_tables(i, data_dir, root / "out" / i, day) for i in implementations}
                report.disagreements = compare_outputs(results)
                report.table_rows = {
                    i: {name: frame.select(pl.len()).collect().item() for name, frame in tables.items()}
                    for i, tables in results.items()
                }
                done(f"compared the tables: {'they agree' if not report.disagreements else 'THEY DISAGREE'}")
        report.load_after = os.getloadavg()
        return report
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _run_in_subprocess(implementation: str, data_dir: Path, day: date, out_dir: Path, config: Path) -> Run:
    result_file = out_dir.parent / f"{implementation}.json"
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "unitledger.tools.bench", implementation, str(data_dir), day.isoformat(), str(out_dir), str(config), str(result_file)]
    code = subprocess.run(args).returncode
    if code != 0:
        raise RuntimeError(f"bench: the {implementation} run failed (exit code {code})")
    result = json.loads(result_file.read_text())
    return Run(implementation, result["timings"], result["seconds"], result["peak_rss"])


def generate_day(data_dir: Path, day: date, requests: int, fmt: str, shard_requests: int = SHARD_REQUESTS) -> dict[str, int]:
    """One day of `requests` requests under data_dir/landing; returns the FOCUS row and event counts.

    The generator holds a day in memory, so a larger day is generated in shards of at most
    `shard_requests` (seeds 7, 8, ...) whose files join one landing folder: the same deliveries,
    more files per delivery, distinct request and session ids."""
    from unitledger.tools.generate import generate

    shards = -(-requests // shard_requests)
    counts = {"focus": 0, "events": 0}
    for k in range(shards):
        target = data_dir if shards == 1 else data_dir.parent / f"shard-{k}"
        summary = generate(
            target, start=day, days=1, requests_per_day=requests // shards + (k < requests % shards), seed=7 + k,
            focus_format=fmt, events_format=EVENTS_FORMAT[fmt],
        )  # fmt: skip
        counts["focus"] += summary.focus_rows
        counts["events"] += summary.events
        if shards > 1:
            for f in summary.focus_files + summary.event_files:
                stem, suffix = f.name.split(".", 1)
                moved = data_dir / f.parent.relative_to(target) / f"{stem}-shard{k}.{suffix}"
                moved.parent.mkdir(parents=True, exist_ok=True)
                os.replace(f, moved)  # keeps the mtime, which ranks deliveries
            shutil.rmtree(target)
    return counts


def _worker(argv: list[str]) -> None:
    """Subprocess entry: generate the day, or run one implementation; the result goes to a JSON file."""
    from unitledger.config import load_settings

    if argv[0] == "generate":
        data_dir, day_text, requests, fmt, shard_requests, result_file = argv[1:]
        counts = generate_day(Path(data_dir), date.fromisoformat(day_text), int(requests), fmt, int(shard_requests))
        Path(result_file).write_text(json.dumps(counts))
        return
    implementation, data_dir, day_text, out_dir, config, result_file = argv
    settings = load_settings(Path(config))
    day = date.fromisoformat(day_text)
    runner = {"pipeline": run_pipeline, "duckdb": run_duckdb, "pandas": run_pandas}[implementation]
    began = time.perf_counter()
    timings = runner(Path(data_dir), settings, day, Path(out_dir))
    seconds = time.perf_counter() - began
    Path(result_file).write_text(json.dumps({"timings": timings, "seconds": seconds, "peak_rss": peak_rss()}))


def peak_rss() -> int:
    """This process's peak resident set size in bytes (VmHWM).

    Not getrusage's ru_maxrss: on Linux a child's ru_maxrss starts at its parent's RSS at fork
    (kept across exec), which would charge the generator's memory to every implementation."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


class _Stopwatch:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        began = time.perf_counter()
        yield
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - began


# --- 1. the pipeline ------------------------------------------------------------------------------


def run_pipeline(data_dir: Path, settings, day: date, out_dir: Path) -> dict[str, float]:
    """The functions the Dagster assets call, in the order the assets run. Without list prices:
    the references build the invoice path only, so unbilled calls stay unestimated on every side
    (the estimate touches the unbilled calls only, a few percent of a day)."""
    import dataclasses

    from unitledger.layout import Layout
    from unitledger.steps import daily, staging

    settings = dataclasses.replace(settings, telemetry=dataclasses.replace(settings.telemetry, list_prices=()))
    layout = Layout(data_dir)
    timings: dict[str, float] = {}
    for step in (
        lambda: staging.stage_billing(layout, settings, day + timedelta(days=1)),  # built the day after
        lambda: staging.stage_events(layout),
        lambda: daily.build_daily_tables(layout, settings, day, day),
    ):
        result = step()
        if not result.passed:
            raise RuntimeError(f"pipeline checks failed: {result.failures()}")
        for stage, seconds in result.timings.items():
            timings[stage] = timings.get(stage, 0.0) + seconds
    return timings


# --- landing files as the references see them -----------------------------------------------------


def _landing_files(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".") and p.name.endswith(suffixes))


def _delivery_ranks(focus_root: Path, files: list[Path]) -> dict[str, int]:
    """File → rank of its delivery (folder): newest file mtime, then folder name; higher is newer."""
    newest: dict[Path, int] = {}
    for f in files:
        newest[f.parent] = max(newest.get(f.parent, 0), f.stat().st_mtime_ns)
    order = sorted(newest, key=lambda d: (newest[d], d.relative_to(focus_root).as_posix()))
    rank = {d: i for i, d in enumerate(order, start=1)}
    return {str(f): rank[f.parent] for f in files}


def _labor_rows(settings) -> list[tuple[str | None, str, Decimal]]:
    return [(c.feature_tag, c.currency, c.amount) for c in settings.labor]


# --- 2. DuckDB ------------------------------------------------------------------------------------

_DUCK_FOCUS_TEXT = [
    "BillingAccountId", "BillingCurrency", "BillingPeriodStart", "BillingPeriodEnd", "ChargeCategory", "ChargeClass",
    "ChargePeriodStart", "ChargePeriodEnd", "ServiceProviderName", "BilledCost", "EffectiveCost", "ListCost",
    "ContractedCost", "ConsumedQuantity", "x_RequestId", "x_ModelVersion", "x_PromptVersion", "x_FeatureTag", "SkuMeter",
]  # fmt: skip
# The token type of a per-request row, as the references read it: the FOCUS-convention meter names
# (the generator's), a subset of what the pipeline recognizes (unitledger.sources.ai_usage).
REFERENCE_METERS = {
    "input tokens": "input", "output tokens": "output", "cache read tokens": "cache_read",
    "cached input tokens": "cache_read", "cache write tokens": "cache_write", "cache write input tokens": "cache_write",
}  # fmt: skip
_DUCK_METER_TYPE = (
    "CASE lower(trim(SkuMeter)) " + " ".join(f"WHEN '{m}' THEN '{t}'" for m, t in REFERENCE_METERS.items()) + " END"
)
_DUCK_TYPED = ",\n       ".join(
    f"CASE WHEN bool_or(token_type IS NULL AND EffectiveCost <> 0) THEN NULL "
    f"ELSE CAST(coalesce(sum(EffectiveCost) FILTER (WHERE token_type = '{t}'), 0) AS DECIMAL(38, 18)) END AS {t}_cost"
    for t in TOKEN_TYPES
)
_EVENT_TEXT = [
    "event_type", "event_id", "timestamp", "request_id", "session_id", "feature_tag", "provider", "model",
    "model_version", "prompt_version", "input_tokens", "output_tokens", "cache_read_input_tokens",
    "cache_write_input_tokens", "attempt", "status", "success", "escalated", "signal",
]  # fmt: skip

_DUCK_MACROS = """
SET TimeZone = 'UTC';
-- Each cast is computed once, in the `typed` CTEs: these say whether a text cell is acceptable.
-- Money: same rule as the pipeline: a value that would lose digits at scale 18 is rejected, not rounded.
CREATE MACRO money_ok(t, v, finer) AS t IS NULL OR (v IS NOT NULL AND coalesce(finer = v, true));
CREATE MACRO parsed_ok(t, v) AS t IS NULL OR v IS NOT NULL;
CREATE MACRO int_ok(t, v, lo) AS t IS NULL OR (regexp_full_match(t, '\\s*[+-]?[0-9]+\\s*') AND v >= lo);
"""

_DUCK_FOCUS = """
CREATE TABLE focus AS
WITH typed AS (
  SELECT *,
         TRY_CAST(BilledCost AS DECIMAL(38, 18)) AS billed, TRY_CAST(BilledCost AS DECIMAL(38, 24)) AS billed_finer,
         TRY_CAST(EffectiveCost AS DECIMAL(38, 18)) AS effective, TRY_CAST(EffectiveCost AS DECIMAL(38, 24)) AS effective_finer,
         TRY_CAST(ListCost AS DECIMAL(38, 18)) AS list_value, TRY_CAST(ListCost AS DECIMAL(38, 24)) AS list_finer,
         TRY_CAST(ContractedCost AS DECIMAL(38, 18)) AS contracted, TRY_CAST(ContractedCost AS DECIMAL(38, 24)) AS contracted_finer,
         TRY_CAST(ConsumedQuantity AS DECIMAL(38, 18)) AS quantity, TRY_CAST(ConsumedQuantity AS DECIMAL(38, 24)) AS quantity_finer,
         TRY_CAST(BillingPeriodStart AS TIMESTAMPTZ) AS billing_start, TRY_CAST(BillingPeriodEnd AS TIMESTAMPTZ) AS billing_end,
         TRY_CAST(ChargePeriodStart AS TIMESTAMPTZ) AS charge_start, TRY_CAST(ChargePeriodEnd AS TIMESTAMPTZ) AS charge_end
  FROM ({source})
)
SELECT BillingAccountId, BillingCurrency, billing_start AS BillingPeriodStart, CAST(charge_start AS DATE) AS charge_date,
       ServiceProviderName, billed AS BilledCost, effective AS EffectiveCost, list_value AS ListCost,
       x_RequestId, x_ModelVersion, x_PromptVersion, x_FeatureTag, {meter_type} AS token_type, r.delivery_rank
FROM typed JOIN focus_files r USING (filename)
WHERE BilledCost IS NOT NULL AND EffectiveCost IS NOT NULL AND ListCost IS NOT NULL
  AND BillingAccountId IS NOT NULL AND BillingCurrency IS NOT NULL AND BillingPeriodStart IS NOT NULL
  AND BillingPeriodEnd IS NOT NULL AND ChargeCategory IS NOT NULL AND ChargePeriodStart IS NOT NULL
  AND ChargePeriodEnd IS NOT NULL AND ServiceProviderName IS NOT NULL
  AND money_ok(BilledCost, billed, billed_finer) AND money_ok(EffectiveCost, effective, effective_finer)
  AND money_ok(ListCost, list_value, list_finer) AND money_ok(ContractedCost, contracted, contracted_finer)
  AND money_ok(ConsumedQuantity, quantity, quantity_finer)
  AND parsed_ok(BillingPeriodStart, billing_start) AND parsed_ok(BillingPeriodEnd, billing_end)
  AND parsed_ok(ChargePeriodStart, charge_start) AND parsed_ok(ChargePeriodEnd, charge_end)
  AND list_contains($categories, ChargeCategory)
  AND (ChargeClass IS NULL OR list_contains($classes, ChargeClass))
  AND list_contains($currencies, BillingCurrency)
  AND coalesce(charge_start < charge_end, true) AND coalesce(billing_start < billing_end, true)
"""

_DUCK_EVENTS = """
CREATE TABLE events AS
WITH typed AS (
  SELECT *, TRY_CAST(timestamp AS TIMESTAMPTZ) AS event_at,
         TRY_CAST(input_tokens AS BIGINT) AS input, TRY_CAST(output_tokens AS BIGINT) AS output,
         TRY_CAST(cache_read_input_tokens AS BIGINT) AS cache_read, TRY_CAST(cache_write_input_tokens AS BIGINT) AS cache_write,
         TRY_CAST(attempt AS BIGINT) AS attempt_number
  FROM ({source})
)
SELECT * FROM typed
WHERE event_type IN ('llm_call', 'outcome') AND event_id IS NOT NULL AND session_id IS NOT NULL
  AND timestamp IS NOT NULL AND event_at IS NOT NULL
  AND (event_type <> 'llm_call' OR (request_id IS NOT NULL AND feature_tag IS NOT NULL
       AND input_tokens IS NOT NULL AND output_tokens IS NOT NULL AND attempt IS NOT NULL AND status IS NOT NULL
       AND int_ok(input_tokens, input, 0) AND int_ok(output_tokens, output, 0)
       AND int_ok(cache_read_input_tokens, cache_read, 0) AND int_ok(cache_write_input_tokens, cache_write, 0)
       AND int_ok(attempt, attempt_number, 1) AND status IN ('ok', 'error')))
  AND (event_type <> 'outcome' OR (success IN ('true', 'false') AND escalated IN ('true', 'false')
       AND signal IN ('explicit', 'implicit')));
CREATE TABLE calls AS
SELECT event_id, filename AS source_file, source_line, event_at AS called_at, CAST(event_at AS DATE) AS call_date, request_id,
       session_id, feature_tag, provider, model, model_version, prompt_version, input AS input_tokens,
       output AS output_tokens, coalesce(cache_read, 0) AS cache_read_input_tokens,
       coalesce(cache_write, 0) AS cache_write_input_tokens, attempt_number AS attempt, status
FROM events WHERE event_type = 'llm_call';
CREATE TABLE outcomes AS
SELECT event_id, filename AS source_file, source_line, event_at AS observed_at, session_id,
       success = 'true' AS success, escalated = 'true' AS escalated
FROM events WHERE event_type = 'outcome';
DROP TABLE events;
"""

_DUCK_JOIN = """
CREATE TABLE current_focus AS
SELECT row_number() OVER () AS row_id, f.* FROM focus f
JOIN (SELECT BillingAccountId, BillingPeriodStart, max(delivery_rank) AS delivery_rank FROM focus GROUP BY ALL) newest
  USING (BillingAccountId, BillingPeriodStart, delivery_rank)
WHERE f.x_RequestId IS NOT NULL;
CREATE TABLE deduped_calls AS
SELECT * FROM calls
QUALIFY row_number() OVER (PARTITION BY request_id ORDER BY event_id, source_file, source_line) = 1;
-- Each row's place: its request's call within $B days, else late when a call of its request is
-- within $H days, else billing-only, dated by its request's first row within $H days before it
-- (late when more than $B days after that row).
CREATE TABLE placed_focus AS
WITH own_call AS (
  SELECT f.row_id, c.call_date FROM current_focus f JOIN deduped_calls c ON c.request_id = f.x_RequestId
  WHERE abs(date_diff('day', c.call_date, f.charge_date)) <= $B
), any_call AS (
  SELECT DISTINCT f.row_id FROM current_focus f JOIN calls c ON c.request_id = f.x_RequestId
  WHERE abs(date_diff('day', c.call_date, f.charge_date)) <= $H
), first_row AS (
  SELECT f.row_id, min(o.charge_date) AS first_charge FROM current_focus f JOIN current_focus o
    ON o.x_RequestId = f.x_RequestId AND o.charge_date BETWEEN f.charge_date - $H AND f.charge_date
  GROUP BY f.row_id
)
SELECT f.*, CASE WHEN own_call.row_id IS NOT NULL THEN own_call.call_date
                 WHEN any_call.row_id IS NULL AND date_diff('day', first_charge, f.charge_date) <= $B THEN first_charge
            END AS request_date
FROM current_focus f LEFT JOIN own_call USING (row_id) LEFT JOIN any_call USING (row_id) LEFT JOIN first_row USING (row_id);
CREATE TABLE billed AS
SELECT x_RequestId AS request_id, sum(BilledCost) AS billed_cost, sum(EffectiveCost) AS effective_cost,
       sum(ListCost) AS list_cost, count(*) AS billing_rows, min(request_date) AS charge_date,
       min(BillingAccountId) AS billing_account_id, min(BillingCurrency) AS billing_currency,
       min(x_FeatureTag) AS feature_tag, min(x_ModelVersion) AS model_version,
       min(x_PromptVersion) AS prompt_version, min(ServiceProviderName) AS provider,
       {typed}
FROM placed_focus WHERE request_date IS NOT NULL GROUP BY x_RequestId
-- A request billed to two accounts or currencies has no one cost: it is left out of billing.
HAVING min(BillingAccountId) = max(BillingAccountId) AND min(BillingCurrency) = max(BillingCurrency);
CREATE TABLE joined AS
SELECT coalesce(c.request_id, b.request_id) AS request_id, coalesce(c.call_date, b.charge_date) AS date,
       c.session_id, c.called_at, coalesce(c.feature_tag, b.feature_tag) AS feature_tag,
       coalesce(c.provider, b.provider) AS provider, c.model,
       coalesce(c.model_version, b.model_version) AS model_version,
       coalesce(c.prompt_version, b.prompt_version) AS prompt_version,
       b.billing_account_id, b.billing_currency, b.billed_cost, b.effective_cost, b.list_cost,
       coalesce(b.billing_rows, 0) AS billing_rows,
       -- Per-request billing only (no aggregated rows in this day): every billed request's own rows.
       CASE WHEN b.billing_rows > 0 THEN 'invoice_request' END AS cost_source,
       CASE WHEN b.billing_rows > 0 THEN CAST(0 AS DECIMAL(38, 18)) END AS allocated_billed_cost,
       CASE WHEN b.billing_rows > 0 THEN CAST(0 AS DECIMAL(38, 18)) END AS allocated_effective_cost,
       CASE WHEN b.billing_rows > 0 THEN CAST(0 AS DECIMAL(38, 18)) END AS allocated_list_cost,
       b.input_cost, b.output_cost, b.cache_read_cost, b.cache_write_cost,
       c.input_tokens, c.output_tokens,
       c.cache_read_input_tokens, c.cache_write_input_tokens, c.attempt, c.status,
       CASE WHEN c.session_id IS NOT NULL AND coalesce(b.billing_rows, 0) > 0 THEN 'matched'
            WHEN c.session_id IS NOT NULL THEN 'telemetry_only' ELSE 'billing_only' END AS match_status,
       -- Flat events: no gateway cost, no trace structure (the bench runs without list prices).
       CAST(NULL AS DECIMAL(38, 18)) AS gateway_reported_cost, CAST(NULL AS VARCHAR) AS gateway_reported_currency,
       CAST(NULL AS BOOLEAN) AS after_tool_call
FROM deduped_calls c FULL OUTER JOIN billed b ON c.request_id = b.request_id;
CREATE TABLE request_costs AS SELECT * FROM joined WHERE date = $day;
"""

_DUCK_INTENTS = """
-- A session's intents: a call date with no call of the session in the $S days before starts one,
-- a call belongs to the latest start at most $S days before it, else to none.
CREATE TABLE intent_days AS
WITH pairs AS (SELECT DISTINCT session_id, call_date FROM calls), starts AS (
  SELECT *, CASE WHEN coalesce(date_diff('day', lag(call_date) OVER w, call_date), $S + 1) > $S THEN call_date END AS start
  FROM pairs WINDOW w AS (PARTITION BY session_id ORDER BY call_date)
), latest AS (
  SELECT *, max(start) OVER (PARTITION BY session_id ORDER BY call_date ROWS UNBOUNDED PRECEDING) AS last_start FROM starts
)
SELECT session_id, call_date, CASE WHEN date_diff('day', last_start, call_date) <= $S THEN last_start END AS intent_date FROM latest;
CREATE TABLE sessions AS
SELECT j.session_id, d.intent_date AS date,
       arg_max(struct_pack(feature_tag, model, model_version, prompt_version), called_at) AS last_call,
       min(billing_currency) AS billing_currency, count(*) AS requests,
       count(*) FILTER (WHERE attempt = 1) AS turns, count(*) FILTER (WHERE attempt > 1) AS retries,
       count(*) FILTER (WHERE billing_rows = 0) AS unbilled_requests, sum(effective_cost) AS token_cost,
       sum(allocated_effective_cost) AS allocated_token_cost,
       coalesce(sum(effective_cost) FILTER (WHERE cost_source = 'gateway_reported'), 0) AS gateway_reported_token_cost,
       coalesce(sum(effective_cost) FILTER (WHERE cost_source = 'list_estimate'), 0) AS list_estimate_token_cost
FROM joined j JOIN intent_days d ON d.session_id = j.session_id AND d.call_date = j.date
WHERE d.intent_date = $day GROUP BY j.session_id, d.intent_date
-- an intent billed in two currencies is quarantined, not summed
HAVING count(DISTINCT billing_currency) <= 1;
CREATE TABLE latest_outcomes AS
SELECT session_id, arg_max(struct_pack(success, escalated), (observed_at, event_id, source_file, source_line)) AS label
FROM outcomes WHERE session_id IN (SELECT session_id FROM sessions) GROUP BY session_id;
CREATE TABLE intent_costs AS
WITH labelled AS (
  SELECT s.*, CASE WHEN o.label.success IS NULL THEN 'unlabeled' WHEN o.label.success THEN 'success' ELSE 'failure' END AS outcome,
         o.label.escalated AS escalated, coalesce(specific.amount, fallback.amount) AS labor_per_failure
  FROM sessions s
  LEFT JOIN latest_outcomes o USING (session_id)
  LEFT JOIN labor specific ON specific.feature_tag = s.last_call.feature_tag AND specific.billing_currency = s.billing_currency
  LEFT JOIN labor fallback ON fallback.feature_tag IS NULL AND fallback.billing_currency = s.billing_currency
)
SELECT session_id, date, last_call.feature_tag AS feature_tag, last_call.model AS model,
       last_call.model_version AS model_version, last_call.prompt_version AS prompt_version, billing_currency,
       requests, turns, retries, unbilled_requests, token_cost, allocated_token_cost, gateway_reported_token_cost,
       list_estimate_token_cost, outcome, escalated, labor_cost,
       CAST(token_cost + labor_cost AS DECIMAL(38, 18)) AS total_cost
FROM (SELECT * REPLACE (CASE WHEN billing_currency IS NOT NULL THEN token_cost END AS token_cost,
                        CASE WHEN billing_currency IS NOT NULL THEN allocated_token_cost END AS allocated_token_cost,
                        CASE WHEN billing_currency IS NOT NULL THEN gateway_reported_token_cost END AS gateway_reported_token_cost,
                        CASE WHEN billing_currency IS NOT NULL THEN list_estimate_token_cost END AS list_estimate_token_cost),
             CASE WHEN billing_currency IS NOT NULL THEN
               CASE WHEN outcome = 'failure' THEN labor_per_failure ELSE CAST(0 AS DECIMAL(38, 18)) END END AS labor_cost
      FROM labelled);
"""

_DUCK_FEATURES = """
CREATE TABLE cost_per_intent AS
SELECT date, feature_tag, model_version, prompt_version, billing_currency, count(*) AS intents,
       CAST(sum(requests) AS BIGINT) AS requests, sum(token_cost) AS token_cost,
       sum(allocated_token_cost) AS allocated_token_cost, sum(gateway_reported_token_cost) AS gateway_reported_token_cost,
       sum(list_estimate_token_cost) AS list_estimate_token_cost, sum(labor_cost) AS labor_cost,
       sum(total_cost) AS total_cost,
       CAST(sum(token_cost) AS DOUBLE) / count(*) AS token_cost_per_intent,
       CAST(sum(total_cost) AS DOUBLE) / count(*) AS cost_per_intent
FROM intent_costs GROUP BY date, feature_tag, model_version, prompt_version, billing_currency;
CREATE TABLE cost_per_success AS
WITH sums AS (
  SELECT date, feature_tag, model_version, prompt_version, billing_currency, count(*) AS intents,
         count(*) FILTER (WHERE outcome <> 'unlabeled') AS labeled_intents,
         count(*) FILTER (WHERE outcome = 'success') AS successes,
         count(*) FILTER (WHERE outcome = 'failure') AS failures,
         count(*) FILTER (WHERE outcome <> 'unlabeled' AND escalated) AS escalations,
         -- An empty sum is 0 (the group has a currency but no labeled intent), NULL without a currency.
         CASE WHEN billing_currency IS NOT NULL THEN coalesce(sum(token_cost) FILTER (WHERE outcome <> 'unlabeled'), 0) END AS token_cost,
         CASE WHEN billing_currency IS NOT NULL THEN coalesce(sum(allocated_token_cost) FILTER (WHERE outcome <> 'unlabeled'), 0) END AS allocated_token_cost,
         CASE WHEN billing_currency IS NOT NULL THEN coalesce(sum(gateway_reported_token_cost) FILTER (WHERE outcome <> 'unlabeled'), 0) END AS gateway_reported_token_cost,
         CASE WHEN billing_currency IS NOT NULL THEN coalesce(sum(list_estimate_token_cost) FILTER (WHERE outcome <> 'unlabeled'), 0) END AS list_estimate_token_cost,
         CASE WHEN billing_currency IS NOT NULL THEN coalesce(sum(labor_cost) FILTER (WHERE outcome <> 'unlabeled'), 0) END AS labor_cost,
         CASE WHEN billing_currency IS NOT NULL THEN coalesce(sum(total_cost) FILTER (WHERE outcome <> 'unlabeled'), 0) END AS total_cost,
         CASE WHEN billing_currency IS NOT NULL THEN coalesce(sum(total_cost) FILTER (WHERE outcome = 'success'), 0) END AS success_total_cost,
         CASE WHEN billing_currency IS NOT NULL THEN coalesce(sum(CAST(total_cost AS DOUBLE) ^ 2) FILTER (WHERE outcome <> 'unlabeled'), 0) END AS total_cost_sq
  FROM intent_costs GROUP BY date, feature_tag, model_version, prompt_version, billing_currency
), ratios AS (
  SELECT *, CASE WHEN successes > 0 THEN CAST(total_cost AS DOUBLE) / successes END AS cost_per_success FROM sums
), spread AS (
  SELECT *, total_cost_sq - 2 * cost_per_success * CAST(success_total_cost AS DOUBLE) + cost_per_success ^ 2 * successes AS residual_ss
  FROM ratios
), interval AS (
  SELECT *, CASE WHEN labeled_intents > 1 THEN 1.959963984540054 * sqrt(
           CAST(labeled_intents AS DOUBLE) * CASE WHEN residual_ss < 0 THEN 0 ELSE residual_ss END
           / ((labeled_intents - 1) * CAST(successes AS DOUBLE) ^ 2)) END AS half_width
  FROM spread
)
SELECT date, feature_tag, model_version, prompt_version, billing_currency, intents, labeled_intents, successes,
       failures, escalations,
       CASE WHEN labeled_intents > 0 THEN CAST(successes AS DOUBLE) / labeled_intents END AS success_rate,
       CAST(labeled_intents AS DOUBLE) / intents AS label_coverage, token_cost, allocated_token_cost,
       gateway_reported_token_cost, list_estimate_token_cost, labor_cost, total_cost,
       success_total_cost, total_cost_sq,
       CASE WHEN successes > 0 THEN CAST(token_cost AS DOUBLE) / successes END AS token_cost_per_success,
       cost_per_success, cost_per_success - half_width AS ci95_low, cost_per_success + half_width AS ci95_high,
       labeled_intents >= 100 AS sample_ok
FROM interval;
"""


def run_duckdb(data_dir: Path, settings, day: date, out_dir: Path) -> dict[str, float]:
    """Hand-written DuckDB SQL over the landing files: in-memory tables, Parquet outputs."""
    import duckdb
    from unitledger.warehouse.views import duckdb_literal_path

    from schemas.types import CHARGE_CATEGORIES, CHARGE_CLASSES, ISO_4217

    watch = _Stopwatch()
    focus_root, events_root = data_dir / "landing" / "focus", data_dir / "landing" / "events"
    focus_files = _landing_files(focus_root, (".csv", ".parquet"))
    event_files = _landing_files(events_root, (".jsonl", ".parquet"))
    bounds = settings.bounds
    scratch = out_dir / "duckdb-tmp"
    con = duckdb.connect(config={"temp_directory": str(scratch)})
    try:
        with watch.stage("ingest"):
            _duck_run(con, _DUCK_MACROS)
            con.execute("CREATE TABLE focus_files (filename VARCHAR, delivery_rank BIGINT)")
            con.executemany("INSERT INTO focus_files VALUES (?, ?)", list(_delivery_ranks(focus_root, focus_files).items()))
            _duck_run(
                con,
                _DUCK_FOCUS.format(source=_duck_source(focus_files, _DUCK_FOCUS_TEXT, with_line=False), meter_type=_DUCK_METER_TYPE),
                {
                    "files": [duckdb_literal_path(f) for f in focus_files],
                    "categories": list(CHARGE_CATEGORIES),
                    "classes": list(CHARGE_CLASSES),
                    "currencies": sorted(ISO_4217),
                },
            )
            _duck_run(con, _DUCK_EVENTS.format(source=_duck_source(event_files, _EVENT_TEXT, with_line=True)), {"files": [duckdb_literal_path(f) for f in event_files]})
        with watch.stage("join"):
            _duck_run(con, _DUCK_JOIN.format(typed=_DUCK_TYPED), {"B": bounds.billing_delay_days, "H": bounds.detection_horizon_days, "day": day})
        with watch.stage("intents"):
            con.execute("CREATE TABLE labor (feature_tag VARCHAR, billing_currency VARCHAR, amount DECIMAL(38, 18))")
            con.executemany("INSERT INTO labor VALUES (?, ?, ?)", _labor_rows(settings))
            _duck_run(con, _DUCK_INTENTS, {"S": bounds.session_days, "day": day})
        with watch.stage("features"):
            _duck_run(con, _DUCK_FEATURES)
        with watch.stage("write"):
            for table in TABLES:
                con.execute(f"COPY {table} TO $path (FORMAT parquet)", {"path": str(out_dir / f"{table}.parquet")})
    finally:
        con.close()
        shutil.rmtree(scratch, ignore_errors=True)
    return watch.timings


def _duck_run(con, script: str, params: dict | None = None) -> None:
    """Run each statement of `script` with the parameters it names (DuckDB binds them per statement)."""
    for statement in filter(str.strip, script.split(";")):
        used = {k: v for k, v in (params or {}).items() if f"${k}" in statement}
        con.execute(statement, used or None)


def _duck_source(files: list[Path], columns: list[str], *, with_line: bool) -> str:
    """A SELECT over `files` ($files) giving every column as text, plus filename (and source_line)."""
    text = ", ".join(f'CAST("{c}" AS VARCHAR) AS "{c}"' for c in columns)
    if files and files[0].suffix == ".parquet":
        line = ", file_row_number + 1 AS source_line" if with_line else ""
        return f"SELECT {text}, filename{line} FROM read_parquet($files, filename = true, file_row_number = true, union_by_name = true)"
    if files and files[0].suffix == ".jsonl":
        # read_json gives no line numbers: ties of (event_id, file) are duplicates of one event.
        types = "{" + ", ".join(f"'{c}': 'VARCHAR'" for c in columns) + "}"
        return f"SELECT {text}, filename, 0 AS source_line FROM read_ndjson($files, columns = {types}, filename = true)"
    return (
        f"SELECT {text}, filename FROM read_csv($files, all_varchar = true, header = true, "
        "nullstr = ['', 'NULL'], filename = true, union_by_name = true)"
    )


# --- 3. pandas ------------------------------------------------------------------------------------


def run_pandas(data_dir: Path, settings, day: date, out_dir: Path) -> dict[str, float]:
    """A straightforward pandas implementation (pyarrow-backed columns, exact decimal128 money)."""
    watch = _Stopwatch()
    focus_root, events_root = data_dir / "landing" / "focus", data_dir / "landing" / "events"
    with watch.stage("ingest"):
        focus = _pd_focus(focus_root)
        calls, outcomes = _pd_events(events_root)
    with watch.stage("join"):
        request_costs, joined = _pd_join(focus, calls, settings.bounds, day)
        del focus
    with watch.stage("intents"):
        intent_costs = _pd_intents(joined, calls, outcomes, settings, day)
        del joined, calls, outcomes
    with watch.stage("features"):
        per_intent = _pd_cost_per_intent(intent_costs)
        per_success = _pd_cost_per_success(intent_costs)
    with watch.stage("write"):
        for name, frame in zip(TABLES, (request_costs, intent_costs, per_intent, per_success)):
            frame.to_parquet(out_dir / f"{name}.parquet", index=False)
    return watch.timings


def _pd_types():
    import pandas as pd
    import pyarrow as pa

    return pd.ArrowDtype(pa.decimal128(38, 18)), pd.ArrowDtype(pa.string())


def _pd_text(column):
    """A column as text the way a CSV holds it (JSON/Parquet may give numbers and booleans)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    arrow = pa.chunked_array(pa.array(column)) if not isinstance(column.dtype, pd.ArrowDtype) else column.array._pa_array
    if pa.types.is_string(arrow.type) or pa.types.is_large_string(arrow.type):
        return column.astype(_pd_types()[1])
    if pa.types.is_timestamp(arrow.type):
        raise ValueError("timestamps are expected as text")
    return pd.Series(pc.cast(arrow, pa.string()), index=column.index, dtype=_pd_types()[1])


def _pd_decimal(text):
    """(exact value, ok): whole-column cast; on any bad cell, a per-value pass finds the bad ones."""
    import pandas as pd
    import pyarrow as pa

    money = _pd_types()[0]
    try:
        value = text.astype(money)
    except (pa.ArrowInvalid, ValueError, TypeError):
        value = pd.Series(pa.array([_exact_decimal(v) for v in text], type=pa.decimal128(38, 18)), index=text.index, dtype=money)
    return value, text.isna() | value.notna()


def _exact_decimal(text) -> Decimal | None:
    if not isinstance(text, str):
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    if not value.is_finite() or value != value.quantize(Decimal(1).scaleb(-18)) or abs(value) >= Decimal(10) ** 20:
        return None
    return value


def _pd_timestamp(text):
    import pandas as pd

    return pd.to_datetime(text.str.strip(), utc=True, format="ISO8601", errors="coerce")


def _pd_date(timestamps):
    """UTC calendar date of tz-aware timestamps."""
    import pandas as pd
    import pyarrow as pa

    return timestamps.dt.normalize().astype(pd.ArrowDtype(pa.date32()))


def _pd_focus(focus_root: Path):
    import pandas as pd

    from schemas.types import CHARGE_CATEGORIES, CHARGE_CLASSES, ISO_4217

    files = _landing_files(focus_root, (".csv", ".parquet"))
    ranks = _delivery_ranks(focus_root, files)
    parts = []
    for f in files:
        if f.suffix == ".parquet":
            frame = pd.read_parquet(f, columns=_DUCK_FOCUS_TEXT, dtype_backend="pyarrow")
        else:
            frame = pd.read_csv(
                f, usecols=_DUCK_FOCUS_TEXT, dtype=str, keep_default_na=False, na_values=["", "NULL"],
                engine="pyarrow", dtype_backend="pyarrow",
            )  # fmt: skip
        frame = frame.apply(_pd_text)
        frame["delivery_rank"] = ranks[str(f)]
        parts.append(frame)
    raw = pd.concat(parts, ignore_index=True)
    del parts
    mandatory = ["BilledCost", "EffectiveCost", "ListCost", "BillingAccountId", "BillingCurrency", "BillingPeriodStart",
                 "BillingPeriodEnd", "ChargeCategory", "ChargePeriodStart", "ChargePeriodEnd", "ServiceProviderName"]  # fmt: skip
    ok = raw[mandatory].notna().all(axis=1)
    typed = pd.DataFrame(index=raw.index)
    for name in ("BilledCost", "EffectiveCost", "ListCost", "ContractedCost", "ConsumedQuantity"):
        value, parsed = _pd_decimal(raw[name])
        typed[name] = value
        ok &= parsed
    for name in ("BillingPeriodStart", "BillingPeriodEnd", "ChargePeriodStart", "ChargePeriodEnd"):
        typed[name] = _pd_timestamp(raw[name])
        ok &= raw[name].isna() | typed[name].notna()
    ok &= raw["ChargeCategory"].isin(CHARGE_CATEGORIES)
    ok &= raw["ChargeClass"].isna() | raw["ChargeClass"].isin(CHARGE_CLASSES)
    ok &= raw["BillingCurrency"].isin(sorted(ISO_4217))
    ok &= (typed["ChargePeriodStart"] < typed["ChargePeriodEnd"]).fillna(True)
    ok &= (typed["BillingPeriodStart"] < typed["BillingPeriodEnd"]).fillna(True)
    keep = ["BillingAccountId", "BillingCurrency", "ServiceProviderName", "x_RequestId", "x_ModelVersion",
            "x_PromptVersion", "x_FeatureTag", "delivery_rank"]  # fmt: skip
    focus = raw.loc[ok, keep].copy()
    focus["token_type"] = raw.loc[ok, "SkuMeter"].str.strip().str.lower().map(REFERENCE_METERS)
    for name in ("BilledCost", "EffectiveCost", "ListCost", "BillingPeriodStart"):
        focus[name] = typed.loc[ok, name]
    focus["charge_date"] = _pd_date(typed.loc[ok, "ChargePeriodStart"])
    return focus


def _pd_events(events_root: Path):
    import pandas as pd

    frames = []
    for f in _landing_files(events_root, (".jsonl", ".parquet")):
        if f.suffix == ".parquet":
            frame = pd.read_parquet(f, dtype_backend="pyarrow")
        else:
            frame = pd.read_json(f, lines=True, engine="pyarrow", dtype_backend="pyarrow")
        frame = frame.reindex(columns=_EVENT_TEXT).apply(_pd_text)
        frame["source_file"] = str(f)
        frame["source_line"] = range(1, len(frame) + 1)  # the generator writes no blank lines
        frames.append(frame)
    raw = pd.concat(frames, ignore_index=True)
    del frames
    ts = _pd_timestamp(raw["timestamp"])
    is_call, is_outcome = raw["event_type"] == "llm_call", raw["event_type"] == "outcome"
    ok = (is_call | is_outcome) & raw[["event_id", "session_id", "timestamp"]].notna().all(axis=1) & ts.notna()
    ints = {}
    for name, lowest in (("input_tokens", 0), ("output_tokens", 0), ("cache_read_input_tokens", 0), ("cache_write_input_tokens", 0), ("attempt", 1)):
        text = raw[name].str.strip()
        valid = text.str.fullmatch(r"[+-]?[0-9]+")
        ints[name] = pd.to_numeric(text.where(valid.fillna(False)), errors="coerce").astype("Int64")
        ok &= ~is_call | text.isna() | (valid.fillna(False) & (ints[name] >= lowest)).fillna(False)
    required = ["request_id", "feature_tag", "input_tokens", "output_tokens", "attempt", "status"]
    ok &= ~is_call | (raw[required].notna().all(axis=1) & raw["status"].isin(["ok", "error"]))
    ok &= ~is_outcome | (
        raw["success"].isin(["true", "false"]) & raw["escalated"].isin(["true", "false"]) & raw["signal"].isin(["explicit", "implicit"])
    )
    call_rows, outcome_rows = ok & is_call, ok & is_outcome
    calls = raw.loc[call_rows, ["event_id", "source_file", "source_line", "request_id", "session_id", "feature_tag",
                                "provider", "model", "model_version", "prompt_version", "status"]].copy()  # fmt: skip
    calls["called_at"] = ts[call_rows]
    calls["call_date"] = _pd_date(calls["called_at"])
    for name, values in ints.items():
        calls[name] = values[call_rows]
    calls["cache_read_input_tokens"] = calls["cache_read_input_tokens"].fillna(0)
    calls["cache_write_input_tokens"] = calls["cache_write_input_tokens"].fillna(0)
    outcomes = raw.loc[outcome_rows, ["event_id", "source_file", "source_line", "session_id"]].copy()
    outcomes["observed_at"] = ts[outcome_rows]
    outcomes["success"] = raw.loc[outcome_rows, "success"] == "true"
    outcomes["escalated"] = raw.loc[outcome_rows, "escalated"] == "true"
    return calls, outcomes


def _pd_day_number(dates):
    """Days since 1970-01-01 of an Arrow date column (nullable integers)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    return pd.Series(pc.cast(pa.array(dates.array), pa.int32()), index=dates.index, dtype="Int64")


def _pd_from_day_number(numbers):
    """Arrow dates from days since 1970-01-01 (nullable integers)."""
    import pandas as pd
    import pyarrow as pa

    dates = pa.array(numbers.astype("Int64").array.to_numpy(dtype="float64", na_value=float("nan")), from_pandas=True)
    return pd.Series(dates.cast(pa.int32()).cast(pa.date32()), index=numbers.index, dtype=pd.ArrowDtype(pa.date32()))


def _pd_join(focus, calls, bounds, day: date):
    import pandas as pd

    newest = focus.groupby(["BillingAccountId", "BillingPeriodStart"])["delivery_rank"].transform("max")
    billing = focus[(focus["delivery_rank"] == newest) & focus["x_RequestId"].notna()].reset_index(drop=True)
    billing["row_id"] = range(len(billing))
    billing["charge_day"] = _pd_day_number(billing["charge_date"])
    deduped = calls.sort_values(["request_id", "event_id", "source_file", "source_line"]).drop_duplicates("request_id")
    # Each row's place: its request's call within B days; else late when a call of its request is
    # within H days; else billing-only, dated by its request's first row within H days before it
    # (late when more than B days after that row).
    rows = billing[["row_id", "x_RequestId", "charge_day"]]
    own = rows.merge(
        deduped[["request_id", "call_date"]].assign(call_day=_pd_day_number(deduped["call_date"])),
        left_on="x_RequestId", right_on="request_id",
    )  # fmt: skip
    own = own[(own["call_day"] - own["charge_day"]).abs() <= bounds.billing_delay_days].set_index("row_id")["call_day"]
    near = rows.merge(calls[["request_id"]].assign(call_day=_pd_day_number(calls["call_date"])), left_on="x_RequestId", right_on="request_id")
    near = set(near.loc[(near["call_day"] - near["charge_day"]).abs() <= bounds.detection_horizon_days, "row_id"])
    pairs = rows.merge(rows, on="x_RequestId", suffixes=("", "_other"))
    pairs = pairs[(pairs["charge_day_other"] <= pairs["charge_day"]) & (pairs["charge_day_other"] >= pairs["charge_day"] - bounds.detection_horizon_days)]
    first = pairs.groupby("row_id")["charge_day_other"].min()
    request_day = pd.Series(pd.NA, index=billing.index, dtype="Int64")
    request_day[own.index] = own
    alone = ~billing["row_id"].isin(own.index) & ~billing["row_id"].isin(near)
    first_day = billing["row_id"].map(first).astype("Int64")
    billing_only = alone & (billing["charge_day"] - first_day <= bounds.billing_delay_days)
    request_day[billing_only] = first_day[billing_only]
    billing["request_day"] = request_day
    placed = billing[billing["request_day"].notna()].copy()
    for t in TOKEN_TYPES:
        placed[f"{t}_cost"] = placed["EffectiveCost"].where(placed["token_type"] == t, _pd_zero_money(placed.index))
    placed["untyped"] = placed["token_type"].isna() & (placed["EffectiveCost"] != 0)
    billed = (
        placed.groupby("x_RequestId")
        .agg(
            billed_cost=("BilledCost", "sum"),
            effective_cost=("EffectiveCost", "sum"),
            list_cost=("ListCost", "sum"),
            billing_rows=("BilledCost", "size"),
            request_day=("request_day", "min"),
            billing_account_id=("BillingAccountId", "min"),
            billing_currency=("BillingCurrency", "min"),
            billed_feature_tag=("x_FeatureTag", "min"),
            billed_model_version=("x_ModelVersion", "min"),
            billed_prompt_version=("x_PromptVersion", "min"),
            billed_provider=("ServiceProviderName", "min"),
            last_account=("BillingAccountId", "max"),
            last_currency=("BillingCurrency", "max"),
            untyped=("untyped", "any"),
            **{f"{t}_cost": (f"{t}_cost", "sum") for t in TOKEN_TYPES},
        )
        .rename_axis("request_id")
        .reset_index()
    )
    for t in TOKEN_TYPES:  # a row of no token type with a cost: the request's split is unknown
        billed[f"{t}_cost"] = billed[f"{t}_cost"].mask(billed["untyped"].astype(bool))
    billed = billed.drop(columns="untyped")
    # A request billed to two accounts or currencies has no one cost: it is left out of billing.
    one_owner = (billed["billing_account_id"] == billed["last_account"]) & (billed["billing_currency"] == billed["last_currency"])
    billed = billed[one_owner].drop(columns=["last_account", "last_currency"])
    joined = deduped.drop(columns=["event_id", "source_file", "source_line"]).merge(billed, on="request_id", how="outer")
    joined["date"] = joined["call_date"].fillna(_pd_from_day_number(joined["request_day"]))
    for name in ("feature_tag", "provider", "model_version", "prompt_version"):
        joined[name] = joined[name].fillna(joined[f"billed_{name}"])
    joined["billing_rows"] = joined["billing_rows"].fillna(0).astype("int64")
    seen = joined["session_id"].notna()
    joined["match_status"] = "billing_only"
    joined.loc[seen, "match_status"] = "telemetry_only"
    joined.loc[seen & (joined["billing_rows"] > 0), "match_status"] = "matched"
    # Per-request billing only (no aggregated rows in this day): every billed request's own rows.
    billed_rows = joined["billing_rows"] > 0
    joined["cost_source"] = pd.Series("invoice_request", index=joined.index).where(billed_rows)
    for name in ("allocated_billed_cost", "allocated_effective_cost", "allocated_list_cost"):
        joined[name] = _pd_zero_money(joined.index).where(billed_rows)
    # Flat events: no gateway cost, no trace structure (the bench runs without list prices).
    joined["gateway_reported_cost"] = _pd_zero_money(joined.index).where(pd.Series(False, index=joined.index))
    joined["gateway_reported_currency"] = pd.Series(None, index=joined.index, dtype="string[pyarrow]")
    joined["after_tool_call"] = pd.Series(None, index=joined.index, dtype="boolean[pyarrow]")
    columns = ["request_id", "date", "session_id", "called_at", "feature_tag", "provider", "model", "model_version",
               "prompt_version", "billing_account_id", "billing_currency", "billed_cost", "effective_cost", "list_cost",
               "billing_rows", "cost_source", "allocated_billed_cost", "allocated_effective_cost", "allocated_list_cost",
               "input_cost", "output_cost", "cache_read_cost", "cache_write_cost",
               "input_tokens", "output_tokens", "cache_read_input_tokens", "cache_write_input_tokens",
               "attempt", "status", "match_status", "gateway_reported_cost", "gateway_reported_currency",
               "after_tool_call"]  # fmt: skip
    request_costs = joined.loc[joined["date"] == day, columns].reset_index(drop=True)
    return request_costs, joined[columns]


def _pd_intent_days(calls, session_days: int):
    """(session_id, call_date) → the date of the intent its calls belong to (None: beyond the bound)."""
    pairs = calls[["session_id", "call_date"]].drop_duplicates().sort_values(["session_id", "call_date"])
    day = _pd_day_number(pairs["call_date"])
    gap = day - day.groupby(pairs["session_id"]).shift(1)
    start = day.where(gap.isna() | (gap > session_days))
    last_start = start.groupby(pairs["session_id"]).ffill()
    pairs["intent_day"] = last_start.where(day - last_start <= session_days)
    return pairs


def _pd_intents(joined, calls, outcomes, settings, day: date):
    import pandas as pd
    import pyarrow as pa

    money = _pd_types()[0]
    days = _pd_intent_days(calls, settings.bounds.session_days)
    ours = days[days["intent_day"] == _pd_day_number(pd.Series([day], dtype=pd.ArrowDtype(pa.date32())))[0]]
    calls = joined[joined["session_id"].notna()].merge(
        ours[["session_id", "call_date"]], left_on=["session_id", "date"], right_on=["session_id", "call_date"], suffixes=("", "_intent")
    )
    # An intent billed in two currencies is quarantined, not summed.
    calls = calls[calls.groupby("session_id")["billing_currency"].transform("nunique") <= 1]
    last = calls.sort_values(["session_id", "called_at"]).drop_duplicates("session_id", keep="last")
    last = last.set_index("session_id")[["feature_tag", "model", "model_version", "prompt_version"]]
    flags = calls.assign(
        turn=calls["attempt"] == 1, retry=calls["attempt"] > 1, unbilled=calls["billing_rows"] == 0,
        **{column: calls["effective_cost"].where(calls["cost_source"] == source, _pd_zero_money(calls.index)).astype(money)
           for source, column in ESTIMATED_COSTS.items()},
    )
    sessions = flags.groupby("session_id").agg(
        billing_currency=("billing_currency", "min"),
        requests=("request_id", "size"),
        turns=("turn", "sum"),
        retries=("retry", "sum"),
        unbilled_requests=("unbilled", "sum"),
        token_cost=("effective_cost", "sum"),
        allocated_token_cost=("allocated_effective_cost", "sum"),
        **{column: (column, "sum") for column in ESTIMATED_COSTS.values()},
    )
    sessions["date"] = pd.Series([day] * len(sessions), index=sessions.index, dtype=pd.ArrowDtype(pa.date32()))
    sessions = sessions.join(last)
    ordered = outcomes[outcomes["session_id"].isin(sessions.index)].sort_values(
        ["session_id", "observed_at", "event_id", "source_file", "source_line"]
    )
    latest = ordered.drop_duplicates("session_id", keep="last").set_index("session_id")[["success", "escalated"]]
    intents = sessions.join(latest).reset_index()
    intents["outcome"] = "unlabeled"
    intents.loc[intents["success"] == True, "outcome"] = "success"  # noqa: E712 (nullable booleans)
    intents.loc[intents["success"] == False, "outcome"] = "failure"  # noqa: E712
    labor = pd.DataFrame(_labor_rows(settings), columns=["feature_tag", "billing_currency", "amount"])
    labor["amount"] = labor["amount"].astype(money)
    specific = labor[labor["feature_tag"].notna()].rename(columns={"amount": "specific"})
    fallback = labor[labor["feature_tag"].isna()].drop(columns="feature_tag").rename(columns={"amount": "fallback"})
    intents = intents.merge(specific, on=["feature_tag", "billing_currency"], how="left").merge(fallback, on="billing_currency", how="left")
    billed = intents["billing_currency"].notna()
    intents["token_cost"] = intents["token_cost"].where(billed).astype(money)
    for name in ("allocated_token_cost", *ESTIMATED_COSTS.values()):
        intents[name] = intents[name].where(billed).astype(money)
    per_failure = intents["specific"].fillna(intents["fallback"])
    zero = _pd_zero_money(intents.index)
    intents["labor_cost"] = per_failure.where(intents["outcome"] == "failure", zero).where(billed).astype(money)
    # decimal128(38) + decimal128(38) needs precision 39 in Arrow: add at 256 bits, then narrow.
    wide = pd.ArrowDtype(pa.decimal256(38, 18))
    intents["total_cost"] = (intents["token_cost"].astype(wide) + intents["labor_cost"].astype(wide)).astype(money)
    columns = ["session_id", "date", "feature_tag", "model", "model_version", "prompt_version", "billing_currency",
               "requests", "turns", "retries", "unbilled_requests", "token_cost", "allocated_token_cost",
               *ESTIMATED_COSTS.values(), "outcome",
               "escalated", "labor_cost", "total_cost"]  # fmt: skip
    return intents[columns].astype({"requests": "int64", "turns": "int64", "retries": "int64", "unbilled_requests": "int64"})


def _pd_zero_money(index):
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    zeros = pa.array(np.zeros(len(index), dtype=np.int64)).cast(pa.decimal128(38, 18))
    return pd.Series(zeros, index=index, dtype=_pd_types()[0])


def _pd_cost_per_intent(intents):
    groups = intents.groupby(GRAIN, dropna=False)
    sums = groups.agg(
        intents=("session_id", "size"),
        requests=("requests", "sum"),
        token_cost=("token_cost", "sum"),
        allocated_token_cost=("allocated_token_cost", "sum"),
        **{column: (column, "sum") for column in ESTIMATED_COSTS.values()},
        labor_cost=("labor_cost", "sum"),
        total_cost=("total_cost", "sum"),
    ).reset_index()
    sums = _pd_only_when_billed(sums, ["token_cost", "allocated_token_cost", *ESTIMATED_COSTS.values(), "labor_cost", "total_cost"])
    sums["token_cost_per_intent"] = sums["token_cost"].astype("float64") / sums["intents"]
    sums["cost_per_intent"] = sums["total_cost"].astype("float64") / sums["intents"]
    return sums


def _pd_only_when_billed(frame, columns):
    billed = frame["billing_currency"].notna()
    for name in columns:
        frame[name] = frame[name].where(billed)
    return frame


def _pd_cost_per_success(intents):
    import numpy as np

    labeled = intents["outcome"] != "unlabeled"
    success = intents["outcome"] == "success"
    money = _pd_types()[0]
    zero = _pd_zero_money(intents.index)
    cost = intents["total_cost"].astype("float64")
    frame = intents.assign(
        labeled=labeled,
        success=success,
        failure=intents["outcome"] == "failure",
        escalation=labeled & intents["escalated"].fillna(False).astype(bool),
        labeled_token=intents["token_cost"].where(labeled, zero).astype(money),
        labeled_allocated=intents["allocated_token_cost"].where(labeled, zero).astype(money),
        **{f"labeled_{column}": intents[column].where(labeled, zero).astype(money) for column in ESTIMATED_COSTS.values()},
        labeled_labor=intents["labor_cost"].where(labeled, zero).astype(money),
        labeled_total=intents["total_cost"].where(labeled, zero).astype(money),
        success_total=intents["total_cost"].where(success, zero).astype(money),
        labeled_sq=(cost**2).where(labeled, 0.0),
    )
    sums = (
        frame.groupby(GRAIN, dropna=False)
        .agg(
            intents=("session_id", "size"),
            labeled_intents=("labeled", "sum"),
            successes=("success", "sum"),
            failures=("failure", "sum"),
            escalations=("escalation", "sum"),
            token_cost=("labeled_token", "sum"),
            allocated_token_cost=("labeled_allocated", "sum"),
            **{column: (f"labeled_{column}", "sum") for column in ESTIMATED_COSTS.values()},
            labor_cost=("labeled_labor", "sum"),
            total_cost=("labeled_total", "sum"),
            success_total_cost=("success_total", "sum"),
            total_cost_sq=("labeled_sq", "sum"),
        )
        .reset_index()
    )
    sums = _pd_only_when_billed(
        sums, ["token_cost", "allocated_token_cost", *ESTIMATED_COSTS.values(), "labor_cost", "total_cost", "success_total_cost", "total_cost_sq"]
    )
    n = sums["labeled_intents"].astype("float64")
    sy = sums["successes"].astype("float64")
    ratio = (sums["total_cost"].astype("float64") / sy).where(sums["successes"] > 0)
    residual = (sums["total_cost_sq"] - 2 * ratio * sums["success_total_cost"].astype("float64") + ratio**2 * sy).clip(lower=0.0)
    half = (1.959963984540054 * np.sqrt(n * residual / ((n - 1) * sy**2))).where(sums["labeled_intents"] > 1)
    sums["success_rate"] = (sy / n).where(sums["labeled_intents"] > 0)
    sums["label_coverage"] = n / sums["intents"]
    sums["token_cost_per_success"] = (sums["token_cost"].astype("float64") / sy).where(sums["successes"] > 0)
    sums["cost_per_success"] = ratio
    sums["ci95_low"] = ratio - half
    sums["ci95_high"] = ratio + half
    sums["sample_ok"] = sums["labeled_intents"] >= 100
    return sums


# --- comparing the results --------------------------------------------------------------------------


def _load_tables(implementation: str, data_dir: Path, out_dir: Path, day: date) -> dict[str, pl.LazyFrame]:
    """Each table of one implementation, typed as the pipeline's output schema."""
    from unitledger.layout import Layout
    from unitledger.steps.daily import DAILY_TABLES
    from unitledger.warehouse.manifest import scan_table
    from unitledger.warehouse.publish import polars_schema

    tables = {}
    for name in TABLES:
        schema = polars_schema(DAILY_TABLES[name])
        if implementation == "pipeline":
            frame = scan_table(Layout(data_dir), name, [day.isoformat()])
        else:
            frame = pl.scan_parquet(out_dir / f"{name}.parquet", glob=False)
        tables[name] = frame.select([pl.col(c).cast(t) for c, t in schema.items()])
    return tables


def compare_outputs(results: dict[str, dict[str, pl.LazyFrame]]) -> list[str]:
    """Differences of every implementation from the pipeline: row counts, exact columns (anti-joins
    on the key and every exact column) and float columns (relative tolerance)."""
    problems = []
    reference = results.get("pipeline") or next(iter(results.values()))
    for implementation, tables in results.items():
        if tables is reference:
            continue
        for name in TABLES:
            problems += [f"{implementation} {name}: {p}" for p in _table_differences(reference[name], tables[name], KEYS[name])]
    return problems


def _table_differences(ours: pl.LazyFrame, theirs: pl.LazyFrame, key: list[str]) -> list[str]:
    schema = ours.collect_schema()
    floats = [c for c, t in schema.items() if t == pl.Float64]
    exact = [c for c in schema.names() if c not in floats]
    heights = pl.collect_all([ours.select(pl.len()), theirs.select(pl.len())])
    problems = []
    if heights[0].item() != heights[1].item():
        problems.append(f"{heights[0].item():,} rows vs {heights[1].item():,}")
    missing, extra = pl.collect_all(
        [
            ours.join(theirs, on=exact, how="anti", nulls_equal=True).head(3),
            theirs.join(ours, on=exact, how="anti", nulls_equal=True).head(3),
        ]
    )
    if missing.height or extra.height:
        first = (missing if missing.height else extra).row(0, named=True)
        problems.append(f"exact columns differ, e.g. {'pipeline' if missing.height else 'reference'} row {first}")
    if floats:
        both = ours.select(*key, *floats).join(theirs.select(*key, *floats), on=key, how="inner", nulls_equal=True, suffix="_ref")
        off = [
            (pl.col(c) - pl.col(f"{c}_ref")).abs() > FLOAT_TOLERANCE * pl.max_horizontal(pl.col(c).abs(), pl.lit(1.0))
            for c in floats
        ]
        nulls = [pl.col(c).is_null() != pl.col(f"{c}_ref").is_null() for c in floats]
        bad = both.filter(pl.any_horizontal([*[o.fill_null(False) for o in off], *nulls])).head(3).collect()
        if bad.height:
            problems.append(f"float columns differ beyond {FLOAT_TOLERANCE:g}, e.g. {bad.row(0, named=True)}")
    return problems


# --- command line ------------------------------------------------------------------------------------


@dataclass
class ReportBenchmark:
    days: int
    requests_per_day: int
    per_day_rows: dict[str, int]  # rows of the per-day tables the decisions read, over the window
    build_seconds: float  # staging and the daily tables (not timed against anything: the setup)
    decision_seconds: list[float] = field(default_factory=list)
    report_seconds: list[float] = field(default_factory=list)
    report_bytes: int = 0


def run_report_benchmark(
    days: int, requests_per_day: int, repeat: int = 1, work_dir: Path | None = None, config: Path | None = None, log=print, done=None
) -> ReportBenchmark:
    """Generate `days` days of `requests_per_day`, build the daily tables, then time the decision
    tables and the report over that window `repeat` times. They read the per-day tables' stored
    sums, never requests: their time follows the per-day rows (features × models × prompts ×
    currencies × days), which the report shows beside the timings."""
    from unitledger.config import load_settings
    from unitledger.layout import Layout
    from unitledger.steps import daily, staging
    from unitledger.steps.decisions import build_decision_tables
    from unitledger.steps.report import build_report
    from unitledger.tools.generate import generate
    from unitledger.warehouse.manifest import read_manifest

    done = done or log
    settings = load_settings(config)
    root = Path(tempfile.mkdtemp(prefix="unitledger-bench-report-", dir=work_dir))
    try:
        layout = Layout(root / "data")
        first = DEFAULT_DAY
        last = first + timedelta(days=days - 1)
        log(f"generating {days} days of {requests_per_day:,} requests under {root} ...")
        generate(layout.data_dir, start=first, days=days, requests_per_day=requests_per_day, seed=1, focus_format="parquet", events_format="parquet")
        done(f"generated {days * requests_per_day:,} requests")
        log("building the daily tables ...")
        began = time.perf_counter()
        staging.stage_billing(layout, settings, last + timedelta(days=1))  # built the day after
        staging.stage_events(layout)
        if not daily.build_daily_tables(layout, settings, first, last).passed:
            raise RuntimeError("bench: a check of the daily tables failed")
        build_seconds = time.perf_counter() - began
        published = read_manifest(layout)
        keys = [(first + timedelta(days=k)).isoformat() for k in range(days)]
        rows = {t: published.scan(layout, t, keys).select(pl.len()).collect().item() for t in ("cost_per_success", "cost_breakdown")}
        done(f"built the daily tables in {build_seconds:.1f} s")
        result = ReportBenchmark(days, requests_per_day, rows, build_seconds)
        for k in range(repeat):
            began = time.perf_counter()
            if not build_decision_tables(layout, settings, days).passed:
                raise RuntimeError("bench: a check of the decision tables failed")
            result.decision_seconds.append(time.perf_counter() - began)
            began = time.perf_counter()
            written = build_report(layout, settings, days)
            result.report_seconds.append(time.perf_counter() - began)
            result.report_bytes = written.size
            done(f"run {k + 1}/{repeat}: decision tables {result.decision_seconds[-1]:.2f} s, report {result.report_seconds[-1]:.2f} s")
        return result
    finally:
        shutil.rmtree(root, ignore_errors=True)


def format_report_benchmark(result: ReportBenchmark) -> str:
    rows = ", ".join(f"{table} {n:,}" for table, n in result.per_day_rows.items())
    return "\n".join([
        f"Decision tables and report over {result.days} days of {result.requests_per_day:,} requests/day ({machine()})",
        f"  per-day rows read: {rows} (they grow with features x models x prompts x currencies x days, not with requests)",
        f"  decision tables:   {statistics.median(result.decision_seconds):.2f} s (median of {len(result.decision_seconds)})",
        f"  report:            {statistics.median(result.report_seconds):.2f} s (median of {len(result.report_seconds)}), "
        f"{result.report_bytes / 2**20:.1f} MiB self-contained HTML",
        f"  (setup, not measured against anything: staging and daily tables {result.build_seconds:.1f} s)",
    ])


def add_command(sub) -> None:
    """Register `unitledger bench` on the CLI's subparsers."""
    p = sub.add_parser("bench", help="time the pipeline against DuckDB SQL and pandas on one generated day")
    p.add_argument("--requests", type=int, required=True, help="requests in the generated day (about 2.5 FOCUS rows each)")
    p.add_argument("--format", choices=sorted(EVENTS_FORMAT), default="parquet", help="landing files: FOCUS csv + events jsonl, or both parquet")
    p.add_argument("--repeat", type=int, default=1,
                   help="rounds: each runs every implementation back to back (order alternating); the table shows "
                   "medians and per-round ratios pipeline/reference, median (min-max)")
    p.add_argument("--day", type=date.fromisoformat, default=DEFAULT_DAY, help=f"the generated day (default {DEFAULT_DAY})")
    p.add_argument("--implementations", default=",".join(IMPLEMENTATIONS), help="comma-separated subset of pipeline,duckdb,pandas")
    p.add_argument("--work-dir", type=Path, help="where the temporary data root goes (default: the system temp folder)")
    p.add_argument("--config", type=Path, help="settings file for the labor costs (default as for materialize)")
    p.add_argument("--allocation", action="store_true",
                   help="time the invoice allocation of a provider-billed day against DuckDB SQL instead (unitledger/tools/alloc_bench.py)")
    p.add_argument("--report-days", type=int, metavar="DAYS",
                   help="instead: time the decision tables and the report over DAYS generated days of --requests each")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args) -> int:
    chosen = tuple(i.strip() for i in args.implementations.split(",") if i.strip())
    unknown = [i for i in chosen if i not in IMPLEMENTATIONS]
    if unknown or not chosen or args.requests < 1 or args.repeat < 1:
        raise SystemExit(f"bench: --implementations must name some of {', '.join(IMPLEMENTATIONS)}; --requests and --repeat >= 1")
    from unitledger.progress import Progress

    if args.allocation:
        from unitledger.tools.alloc_bench import format_allocation_report, run_allocation_benchmark

        allocation = run_allocation_benchmark(args.requests, args.repeat, args.day, args.work_dir, args.config)
        print()
        print(format_allocation_report(allocation))
        return 1 if allocation.disagreements else 0

    if args.report_days is not None:
        if args.report_days < 1:
            raise SystemExit("bench: --report-days must be 1 or more")
        with Progress(2 + args.repeat, "bench report") as progress:
            result = run_report_benchmark(
                args.report_days, args.requests, args.repeat, args.work_dir, args.config, log=progress.note, done=progress.step
            )
        print()
        print(format_report_benchmark(result))
        return 0
    with Progress(2 + args.repeat * len(chosen), "bench") as progress:

        def started(text: str) -> None:
            progress.note(text)
            progress.doing(text.rstrip(". "))

        report = run_benchmark(
            args.requests, args.format, args.repeat, args.day, args.work_dir, chosen, args.config, log=started, done=progress.step
        )
    print()
    print(format_report(report))
    return 1 if report.disagreements else 0


# --- the report ------------------------------------------------------------------------------------------


def machine() -> str:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    cpu = platform.processor() or platform.machine()
    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return f"CPU {cpu}, {os.cpu_count()} cores, {memory / 2**30:.1f} GiB RAM, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def git_commit() -> str:
    """The checkout's commit (short hash, "+dirty" with uncommitted changes to tracked files), or
    "unknown" outside a git checkout: every figure names the code that produced it."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty.strip() else "")


def format_report(report: Report) -> str:
    """Medians per implementation and stage, then per-pair ratios (pipeline over each reference,
    one per round: median and min-max over the rounds), peak memory, the machine and its load."""
    impls = report.implementations
    rows_in = report.input_rows["focus"] + report.input_rows["events"]
    repeats = len([r for r in report.runs if r.implementation == impls[0]]) if impls else 0
    references = [i for i in impls if i != "pipeline"] if "pipeline" in impls else []
    header = ["stage (s)", *impls, *[f"pipeline/{i}" for i in references]]
    table: list[list[str]] = []
    labels = [*STAGES, "core", None]
    names = {"core": "join+intents+features", None: "total"}
    for stage in labels:
        cells = [f"{report.median(i, stage):.2f}" for i in impls]
        cells += [str(paired_ratios(report.runs, "pipeline", i, stage) or "-") for i in references]
        table.append([names.get(stage, stage), *cells])
    table.append(["rows/s", *[f"{rows_in / report.median(i):,.0f}" for i in impls], *["" for _ in references]])
    table.append(["peak RSS (MiB)", *[f"{report.median_rss(i) / 2**20:,.0f}" for i in impls], *["" for _ in references]])
    table.append(["peak RSS max (MiB)", *[f"{report.max_rss(i) / 2**20:,.0f}" for i in impls], *["" for _ in references]])
    widths = [max(len(r[c]) for r in [header, *table]) for c in range(len(header))]

    def load(values: tuple[float, ...]) -> str:
        return "/".join(f"{v:.2f}" for v in values) if values else "?"

    lines = [
        f"unitledger bench --requests {report.requests} --format {report.fmt} --repeat {repeats} "
        f"--implementations {','.join(impls)}   (commit {report.commit or 'unknown'})",
        f"machine: {machine()}; load average (1/5/15 min) {load(report.load_before)} before, {load(report.load_after)} after",
        f"input: {report.input_rows['focus']:,} FOCUS rows + {report.input_rows['events']:,} events "
        f"({report.fmt}, day {report.day}); generated in {report.generate_seconds:.1f} s",
        f"seconds: medians of {repeats} run(s) each; ratios: one per round of back-to-back runs (order alternating), "
        "median (min-max) over the rounds",
        "",
        "  ".join(h.ljust(w) if c == 0 else h.rjust(w) for c, (h, w) in enumerate(zip(header, widths))),
    ]
    lines += ["  ".join(v.ljust(w) if c == 0 else v.rjust(w) for c, (v, w) in enumerate(zip(row, widths))) for row in table]
    if "pipeline" in impls:
        validate, total = report.median("pipeline", "validate"), report.median("pipeline")
        lines.append(f"validation: {100 * validate / total:.1f} % of the pipeline's day (medians)")
    lines.append("")
    if report.disagreements:
        lines.append("RESULTS DISAGREE:")
        lines += [f"  {d}" for d in report.disagreements]
    else:
        rows = report.table_rows[impls[0]]
        lines.append(
            f"results agree: {', '.join(f'{name} ({n:,} rows)' for name, n in rows.items())}: "
            f"sums and counts exactly, ratios within {FLOAT_TOLERANCE:g}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    _worker(sys.argv[1:])
