"""Deterministic, realistic synthetic landing data: FOCUS 1.3 billing exports + LLM-call telemetry.

`generate(data_dir, ...)` writes only below `<data_dir>/landing/focus/` and
`<data_dir>/landing/events/` (it creates them; it overwrites the files it writes and touches
nothing else). Same arguments => byte-identical files with identical mtimes. It is vectorized
(numpy + polars, no per-row Python loops) and works one generated day at a time, so 5M
requests/day stays within a few GB.

Every day is drawn from its own random stream, seeded by (seed, calendar date): a day's sessions
do not depend on `start` or `days` (only on seed, date and requests_per_day).

Layout
------
landing/events/events-<YYYY-MM-DD>.<jsonl|jsonl.gz|parquet>   one file per generated day, mtime =
    midnight UTC after that day. An event goes to the file of the UTC day of its timestamp; events
    whose timestamp is after the last generated day (late labels) go to the LAST file. Lines are
    sorted by timestamp plus ~1.5 s of jitter (roughly, not strictly, in time order); a .gz file
    holds one gzip member per million lines (readers must accept multi-member gzip: Python's gzip
    and Polars do).
landing/focus/<account>/<YYYY-MM>/delivery-<YYYYMMDD>/part-0.<csv|csv.gz|parquet>
    one delivery per (billing account, month) = a FULL month-to-date snapshot covering every
    generated day of that month; folder date and file/folder mtime = midnight UTC after the
    delivery's last covered day. With `restated_delivery=True` each (account, month) also gets an
    EARLIER delivery (first half of the generated days of the month, older date and older mtime)
    that differs from the final one: ~2% of usage rows missing, ~3% of usage rows with a smaller
    quantity (and costs), no Credit and no Correction row, its own Tax. The later one supersedes it.
    (If a month has a single generated day, its earlier delivery is dated that day itself.) All
    files and temporaries are written as hidden `.<name>.tmp` files and renamed into place.

Telemetry (events)
------------------
JSONL: one object per line, only the fields of its type (JSON numbers for tokens/attempt, JSON
booleans for success/escalated). Parquet: one table, union of the columns (nulls where not
applicable); token/attempt columns int64, success/escalated bool, everything else string
(timestamp too: RFC 3339 `2026-03-01T13:45:12.345678Z`, microseconds, always UTC "Z").
- llm_call: event_type, event_id ("evt_"+16 hex), timestamp, request_id ("req_"+16 hex),
  session_id ("ses_"+16 hex), feature_tag, provider ("anthropic"|"openai"), model, model_version,
  prompt_version, input_tokens, output_tokens, cache_read_input_tokens, cache_write_input_tokens,
  attempt (1-based), status ("ok"|"error").
  TOKEN CONVENTION: input_tokens INCLUDES cache_read_input_tokens and cache_write_input_tokens
  (OpenTelemetry). The FOCUS "Input Tokens" row bills input - cache_read - cache_write.
- outcome: event_type, event_id, timestamp, session_id, feature_tag, success, escalated, signal
  ("explicit"|"implicit"). A session's latest outcome (by timestamp) is its label.

Billing (FOCUS 1.3 Cost and Usage)
----------------------------------
All 65 FOCUS 1.3 columns (alphabetical) + x_RequestId, x_ModelVersion, x_PromptVersion,
x_FeatureTag. EVERY column is text: in CSV naturally, and in Parquet too (every column is a
string column) so both formats are read the same way. Money and quantities (BilledCost,
EffectiveCost, ListCost, ContractedCost, ListUnitPrice, ContractedUnitPrice, ConsumedQuantity,
PricingQuantity) are exact decimal strings with at most 12 decimal places, computed with integer
arithmetic in units of 1e-12 of the billing currency (never via float). Usage-row costs have a
fixed 12 decimals ("0.004567500000"), unit prices and the rows without x_RequestId have minimal
decimals ("0.0000045", "250", "-17.87"), quantities are integers ("1258"); ~0.5% of usage rows
have their four cost columns in E-notation ("3.52E-7"; only usage rows, only non-zero values).
Timestamps are `YYYY-MM-DDTHH:MM:SSZ`. Null cells are empty in CSV, except ~2% of usage rows
whose null cells hold the literal string `NULL`; Parquet has real nulls.
Parquet specifics: written without the Arrow schema (`store_schema=False`), so readers see plain
UTF-8 string columns; low-cardinality columns are dictionary-encoded; columns FOCUS says MUST NOT
be null are REQUIRED fields; snappy; one row group per 500k rows.

Usage rows (ChargeCategory "Usage", ChargeFrequency "Usage-Based", ChargeClass null): one row per
billed request and token type with a non-zero count: SkuMeter "Input Tokens" (input excluding
cache), "Output Tokens", "Cache Read Tokens", "Cache Write Tokens"; ConsumedUnit = PricingUnit =
"Tokens"; ConsumedQuantity = PricingQuantity = token count; ListCost = PricingQuantity ×
ListUnitPrice and ContractedCost = PricingQuantity × ContractedUnitPrice exactly; ChargePeriod =
the UTC hour of the call; x_RequestId / x_ModelVersion / x_PromptVersion / x_FeatureTag from the
call. Failed calls are billed too (the retry tax). ≈2.5 usage rows per request.
Commitment: per (account, month) ~50% of one model's requests (claude-opus on acct-us-001,
claude-haiku on acct-eu-002) are covered: PricingCategory "Committed", CommitmentDiscountStatus
"Used", CommitmentDiscountId "cd-<account>-<YYYY-MM>", BilledCost 0, EffectiveCost = quantity ×
70% of the list unit price (> 0). Uncovered rows: BilledCost = EffectiveCost = ContractedCost.
Rows without x_RequestId: per (account, charge day) one "Usage" gateway routing fee (unit
"Requests"); per (account, month) a platform fee (Purchase, Recurring), the commitment Purchase
(One-Time, BilledCost = whole-unit amount ≥ the covered EffectiveCost, EffectiveCost 0, same
CommitmentDiscountId), a Tax row (8% US / 19% EU of the month's billed charges), a Credit
(negative BilledCost and EffectiveCost) and, on acct-us-001 every month and acct-eu-002 some
months, a Correction (ChargeClass "Correction", ChargeCategory "Adjustment", ChargePeriod = the
previous month, positive or negative, no quantities or SKU).
Accounts: "acct-us-001" (USD, most traffic) and "acct-eu-002" (EUR: all email_draft and ~40% of
doc_summarize sessions). InvoiceId "INV-<YYYY-MM>-<account>". InvoiceIssuerName "Unitgate" (the
gateway); ProviderName = ServiceProviderName = HostProviderName = PublisherName = "Anthropic" /
"OpenAI" on usage (and on the commitment purchase), "Unitgate" on gateway fees, tax, credit and
corrections. Usage of calls made after the last generated day (sessions crossing the final
midnight) is not billed yet: those requests are telemetry-only.

Mess (defaults)
---------------
6 features with their own turn counts, token sizes and think times; budget and frontier models
with different prices and success rates (support_chat: haiku ~4.4 turns 70% success, opus
~1.5 turns 95%); support_chat prompt v3 -> v4 for sessions starting on/after the 16th of a month;
retries (~5% of calls: a failed call then attempt 2 (3) with a new request_id); escalations
(mostly on failures); ~87% of sessions get an outcome 1h-72h after the last call, ~5% of those
get a later correcting outcome with flipped success; ~1% of events duplicated (same event_id and
content; half in the same file, half in the next day's file); ~0.5% billing-only and ~0.5%
telemetry-only requests; ≥3 sessions per day start just before midnight UTC and cross it.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from schemas.types import MONEY

__all__ = ["GenerateSummary", "generate", "FOCUS_COLUMNS", "FOCUS_DECIMAL_COLUMNS", "EVENT_COLUMNS"]


@dataclass(frozen=True)
class GenerateSummary:
    focus_files: list[Path]
    event_files: list[Path]
    focus_rows: int  # rows written over all FOCUS files (earlier deliveries included)
    events: int  # event lines/rows written over all event files (duplicates included)
    requests: int  # requests generated (= llm calls, billing-only and telemetry-only included)
    sessions: int  # sessions generated


# --------------------------------------------------------------------------------------------
# Static world
# --------------------------------------------------------------------------------------------

UNIT = 10**12  # money is integer units of 1e-12 of the billing currency
_CENT = UNIT // 100
_DAY_US = 86_400_000_000
_HOUR_US = 3_600_000_000
_EPOCH_ORD = date(1970, 1, 1).toordinal()
_MASK64 = (1 << 64) - 1

# Models: name, provider (telemetry), provider (FOCUS), version, tier (0 budget, 1 frontier),
# list prices per token in 1e-12 USD for (input, output, cache read, cache write).
_MODELS = (
    ("claude-haiku", "anthropic", "Anthropic", "claude-haiku-2026-01", 0, (1_000_000, 5_000_000, 100_000, 1_250_000)),
    ("claude-opus", "anthropic", "Anthropic", "claude-opus-2026-02", 1, (5_000_000, 25_000_000, 500_000, 6_250_000)),
    ("gpt-5-mini", "openai", "OpenAI", "gpt-5-mini-2026-01", 0, (250_000, 2_000_000, 25_000, 0)),
    ("gpt-5", "openai", "OpenAI", "gpt-5-2026-02", 1, (1_250_000, 10_000_000, 125_000, 0)),
)
_M_TIER = np.array([m[4] for m in _MODELS], dtype=np.int64)
_M_ANTHROPIC = np.array([m[1] == "anthropic" for m in _MODELS])
_SKU_METERS = ("Input Tokens", "Output Tokens", "Cache Read Tokens", "Cache Write Tokens")
_SKU_CODES = ("IN", "OUT", "CR", "CW")

# Features: name, weight, ((model, share), ...), turns (extra-turn n, p) per tier, success per
# tier, input median, output median, mean think time [s], (prompt before, from the 16th),
# share of sessions routed through the EUR account, sub account.
_FEATURES = (
    ("support_chat", 0.30, ((0, 0.65), (1, 0.35)), ((4, 0.85), (1, 0.45)), (0.70, 0.95), 1500, 220, 45, ("v3", "v4"), 0.0, "proj-support"),
    ("code_review", 0.14, ((1, 0.5), (3, 0.5)), ((2, 0.5), (2, 0.5)), (0.80, 0.90), 6000, 700, 150, ("v7", "v7"), 0.0, "proj-dev"),
    ("doc_summarize", 0.14, ((0, 0.5), (2, 0.5)), ((1, 0.25), (1, 0.25)), (0.88, 0.93), 9000, 450, 60, ("v2", "v2"), 0.4, "proj-docs"),
    ("sql_assistant", 0.14, ((2, 0.6), (3, 0.4)), ((3, 0.55), (2, 0.4)), (0.62, 0.88), 2500, 280, 40, ("v5", "v5"), 0.0, "proj-data"),
    ("email_draft", 0.12, ((0, 1.0),), ((2, 0.3), (2, 0.3)), (0.82, 0.82), 800, 380, 30, ("v1", "v1"), 1.0, "proj-comms"),
    ("search_answer", 0.16, ((2, 0.7), (1, 0.3)), ((1, 0.3), (1, 0.2)), (0.74, 0.93), 3200, 180, 20, ("v3", "v3"), 0.0, "proj-search"),
)
_F_NAMES = tuple(f[0] for f in _FEATURES)
_F_W = np.array([f[1] for f in _FEATURES]) / sum(f[1] for f in _FEATURES)
_F_TURN_N = np.array([[f[3][t][0] for t in (0, 1)] for f in _FEATURES], dtype=np.int64)
_F_TURN_P = np.array([[f[3][t][1] for t in (0, 1)] for f in _FEATURES])
_F_SUCC = np.array([list(f[4]) for f in _FEATURES])
_F_IN = np.array([f[5] for f in _FEATURES], dtype=np.float64)
_F_OUT = np.array([f[6] for f in _FEATURES], dtype=np.float64)
_F_GAP = np.array([f[7] for f in _FEATURES], dtype=np.float64)
_F_EU = np.array([f[9] for f in _FEATURES])
_PV_NAMES = tuple(sorted({v for f in _FEATURES for v in f[8]}))
_F_PV = np.array([[_PV_NAMES.index(v) for v in f[8]] for f in _FEATURES], dtype=np.int64)
_PROMPT_SWITCH_DAY = 16  # support_chat: v3 before the 16th of a month, v4 from it

# Accounts: id, name, currency, (region id, name), price factor %, contracted %, commitment
# model, tax rate %, platform fee, routing fee per request (1e-12), tags.
_ACCOUNTS = (
    ("acct-us-001", "Unitledger US Production", "USD", ("us-east-1", "US East (N. Virginia)"), 100, 90, 1, 8, 250, 2_000_000,
     '{"env":"prod","cost_center":"cc-1001"}'),
    ("acct-eu-002", "Unitledger EU", "EUR", ("eu-central-1", "Europe (Frankfurt)"), 92, 95, 0, 19, 230, 1_840_000,
     '{"env":"prod","cost_center":"cc-2002","data_residency":"eu"}'),
)
_COMMIT_PCT = 70  # committed (amortized) unit price = 70% of list
_COMMIT_MODEL = np.array([a[6] for a in _ACCOUNTS], dtype=np.int64)
_GATEWAY = "Unitgate"

# Mess knobs
_P_ERROR = (0.055, 0.035)  # first-attempt failure rate by tier
_P_ERROR_AGAIN = 0.25  # a retry fails again
_P_ERROR_FINAL = 0.30  # the third attempt fails too
_P_TELEMETRY_ONLY = 0.005
_P_BILLING_ONLY = 0.005
_P_COVERED = 0.5
_P_OUTCOME = 0.87
_P_EXPLICIT = 0.35
_P_CORRECTED = 0.05
_P_DUPLICATE = 0.01
_P_ESC_FAIL, _P_ESC_OK = 0.5, 0.04
_CACHE_READ_P = (0.12, 0.55)  # first turn, later turns
_CACHE_WRITE_P = (0.28, 0.14)  # anthropic only
_FORCED_MIDNIGHT = 3  # sessions per day guaranteed to cross midnight UTC
_E_NOTATION_PER_MILLE = 5
_NULL_LITERAL_PCT = 2
_EARLY_DROP_PCT, _EARLY_SHRINK_PCT = 2, 3
_HOUR_W = np.array([2, 1.5, 1, 1, 1, 1.5, 2.5, 4, 6, 8, 9, 9, 8.5, 9, 9.5, 9.5, 9, 8, 6.5, 5, 4, 3.5, 3, 2.5])
_HOUR_W = _HOUR_W / _HOUR_W.sum()
_CHUNK_ROWS = 500_000  # FOCUS rows per write (one Parquet row group, one gzip member)
_EVENT_CHUNK_ROWS = 1_000_000
_GZIP_LEVEL = 1

FOCUS_COLUMNS = (
    "AllocatedMethodDetails", "AllocatedMethodId", "AllocatedResourceId", "AllocatedResourceName", "AllocatedTags",
    "AvailabilityZone", "BilledCost", "BillingAccountId", "BillingAccountName", "BillingAccountType",
    "BillingCurrency", "BillingPeriodEnd", "BillingPeriodStart", "CapacityReservationId",
    "CapacityReservationStatus", "ChargeCategory", "ChargeClass", "ChargeDescription", "ChargeFrequency",
    "ChargePeriodEnd", "ChargePeriodStart", "CommitmentDiscountCategory", "CommitmentDiscountId",
    "CommitmentDiscountName", "CommitmentDiscountQuantity", "CommitmentDiscountStatus", "CommitmentDiscountType",
    "CommitmentDiscountUnit", "ConsumedQuantity", "ConsumedUnit", "ContractApplied", "ContractedCost",
    "ContractedUnitPrice", "EffectiveCost", "HostProviderName", "InvoiceId", "InvoiceIssuerName", "ListCost",
    "ListUnitPrice", "PricingCategory", "PricingCurrency", "PricingCurrencyContractedUnitPrice",
    "PricingCurrencyEffectiveCost", "PricingCurrencyListUnitPrice", "PricingQuantity", "PricingUnit",
    "ProviderName", "PublisherName", "RegionId", "RegionName", "ResourceId", "ResourceName", "ResourceType",
    "ServiceCategory", "ServiceName", "ServiceProviderName", "ServiceSubcategory", "SkuId", "SkuMeter",
    "SkuPriceDetails", "SkuPriceId", "SubAccountId", "SubAccountName", "SubAccountType", "Tags",
    "x_RequestId", "x_ModelVersion", "x_PromptVersion", "x_FeatureTag",
)
FOCUS_DECIMAL_COLUMNS = (
    "BilledCost", "EffectiveCost", "ListCost", "ContractedCost", "ListUnitPrice", "ContractedUnitPrice",
    "ConsumedQuantity", "PricingQuantity",
)

EVENT_COLUMNS = (
    ("event_type", pa.string()), ("event_id", pa.string()), ("timestamp", pa.string()),
    ("request_id", pa.string()), ("session_id", pa.string()), ("feature_tag", pa.string()),
    ("provider", pa.string()), ("model", pa.string()), ("model_version", pa.string()),
    ("prompt_version", pa.string()), ("input_tokens", pa.int64()), ("output_tokens", pa.int64()),
    ("cache_read_input_tokens", pa.int64()), ("cache_write_input_tokens", pa.int64()),
    ("attempt", pa.int64()), ("status", pa.string()), ("success", pa.bool_()), ("escalated", pa.bool_()),
    ("signal", pa.string()),
)
_EVENT_SCHEMA = pa.schema([(n, pa.string_view() if t == pa.string() else t) for n, t in EVENT_COLUMNS])

# Billing styles: per request (x_RequestId on every usage row), or provider-style aggregated rows
# for the accounts of AGGREGATED_ACCOUNTS (acct-us-001) while the others stay per request, so one
# day mixes both and the pipeline allocates the aggregated rows to the logged calls.
BILLING_STYLES = ("request", "aggregated")
AGGREGATED_ACCOUNTS = (0,)
_FOCUS_EXT = {"csv": "csv", "csv.gz": "csv.gz", "parquet": "parquet"}
_EVENT_EXT = {"jsonl": "jsonl", "jsonl.gz": "jsonl.gz", "parquet": "parquet"}


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer: a bijection on uint64 (unique keys give unique ids)."""
    x = np.asarray(x, dtype=np.uint64).copy()
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def _salt(seed: int, kind: int) -> np.uint64:
    return _mix64(np.array([(seed * 0x9E3779B97F4A7C15 + kind * 0xD1B54A32D192ED03) & _MASK64], dtype=np.uint64))[0]


# two hex digits per byte value, as one little-endian uint16
_HEX2 = np.array([ord("0123456789abcdef"[i >> 4]) | (ord("0123456789abcdef"[i & 15]) << 8) for i in range(256)], dtype="<u2")


def _hex_ids(prefix: str, keys: np.ndarray, salt: np.uint64) -> pl.Series:
    """prefix (even length) + 16 lowercase hex digits of a keyed bijection of `keys` (vectorized)."""
    v = _mix64(np.asarray(keys, dtype=np.uint64) ^ salt)
    b = v.astype(">u8").view(np.uint8).reshape(-1, 8)
    n, p = len(v), len(prefix)
    out = np.empty((n, (p + 16) // 2), dtype="<u2")
    out[:, : p // 2] = np.frombuffer(prefix.encode(), dtype="<u2")
    out[:, p // 2 :] = _HEX2[b]
    offsets = np.arange(0, (n + 1) * (p + 16), p + 16, dtype=np.int64)
    return pl.Series(pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(out)))


def _dec(units: int) -> str:
    """Exact decimal text of an integer amount of 1e-12 units (scalar)."""
    sign = "-" if units < 0 else ""
    ip, fp = divmod(abs(units), UNIT)
    frac = f"{fp:012d}".rstrip("0")
    return f"{sign}{ip}.{frac}" if frac else f"{sign}{ip}"


def _enote_expr(v: pl.Expr) -> pl.Expr:
    """E-notation with one integer digit, e.g. 352000 units -> "3.52E-7"."""
    digits = v.abs().cast(pl.String)
    m = digits.str.strip_chars_end("0")
    exp = digits.str.len_chars().cast(pl.Int64) - 13
    mant = pl.when(m.str.len_chars() > 1).then(pl.concat_str([m.str.slice(0, 1), pl.lit("."), m.str.slice(1)])).otherwise(m)
    s = pl.concat_str([mant, pl.lit("E"), exp.cast(pl.String)])
    return pl.when(v < 0).then(pl.lit("-") + s).otherwise(s)


def _ts(d: date | datetime) -> str:
    if not isinstance(d, datetime):
        d = datetime(d.year, d.month, d.day)
    return d.strftime("%Y-%m-%dT%H:%M:%SZ")


def _month_start(d: date) -> date:
    return date(d.year, d.month, 1)


def _next_month(d: date) -> date:
    return date(d.year + (d.month == 12), d.month % 12 + 1, 1)


def _midnight_epoch(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=timezone.utc).timestamp())


def _round_cents(units: int) -> int:
    """Round half away from zero to a whole cent."""
    sign = -1 if units < 0 else 1
    return sign * ((abs(units) + _CENT // 2) // _CENT) * _CENT


def _set_mtime(path: Path, epoch_s: int) -> None:
    os.utime(path, (epoch_s, epoch_s))


# --------------------------------------------------------------------------------------------
# One day of traffic
# --------------------------------------------------------------------------------------------


@dataclass
class _Day:
    ordinal: int
    n_sessions: int
    calls: dict[str, np.ndarray]  # in session order
    outcomes: dict[str, np.ndarray]


def _draw_sessions(rng: np.random.Generator, n: int, day_start_us: int, day: date, forced: int) -> dict[str, np.ndarray]:
    feat = rng.choice(len(_FEATURES), size=n, p=_F_W)
    u = rng.random(n)
    model = np.zeros(n, dtype=np.int64)
    for f, spec in enumerate(_FEATURES):  # loop over the 6 features, not rows
        sel = feat == f
        cum = 0.0
        chosen = np.zeros(n, dtype=bool)
        for m, share in spec[2]:
            cum += share
            take = sel & ~chosen & (u < cum + 1e-12)
            model[take] = m
            chosen |= take
    acct = (rng.random(n) < _F_EU[feat]).astype(np.int64)
    hour = rng.choice(24, size=n, p=_HOUR_W)
    start = day_start_us + hour * _HOUR_US + (rng.random(n) * _HOUR_US).astype(np.int64)
    tier = _M_TIER[model]
    turns = 1 + rng.binomial(_F_TURN_N[feat, tier], _F_TURN_P[feat, tier])
    if forced:
        feat[:forced], model[:forced], acct[:forced], turns[:forced] = 0, 0, 0, 4
        tier = _M_TIER[model]
        start[:forced] = day_start_us + _DAY_US - rng.integers(20_000_000, 150_000_000, size=forced)
    switched = int(day.day >= _PROMPT_SWITCH_DAY)
    pv = _F_PV[feat, switched]
    return {"feat": feat, "model": model, "tier": tier, "acct": acct, "start": start, "turns": turns, "pv": pv}


def _simulate_day(seed: int, day: date, n_requests: int) -> _Day:
    rng = np.random.default_rng(np.random.SeedSequence([seed & _MASK64, day.toordinal(), 0xC0FFEE]))
    day_start_us = (day.toordinal() - _EPOCH_ORD) * _DAY_US
    forced = _FORCED_MIDNIGHT if n_requests >= 40 else 0
    n_sess = n_requests // 2 + 64
    while True:
        s = _draw_sessions(rng, n_sess, day_start_us, day, forced)
        # turns
        turns = s["turns"]
        n_turns = int(turns.sum())
        tsess = np.repeat(np.arange(n_sess), turns)
        tfirst = np.cumsum(turns) - turns
        tidx = np.arange(n_turns) - tfirst[tsess]
        ttier = s["tier"][tsess]
        ue = rng.random((3, n_turns))
        f1 = ue[0] < np.where(ttier == 0, _P_ERROR[0], _P_ERROR[1])
        f1[tsess < forced] = False
        f2 = f1 & (ue[1] < _P_ERROR_AGAIN)
        f3 = f2 & (ue[2] < _P_ERROR_FINAL)
        attempts = 1 + f1.astype(np.int64) + f2
        if int(attempts.sum()) >= n_requests:
            break
        n_sess = int(n_sess * 1.6) + 64  # not enough calls: draw a bigger day (deterministic)

    tfeat = s["feat"][tsess]
    in_turn = np.maximum(16, (np.exp(np.log(_F_IN[tfeat]) + 0.6 * rng.standard_normal(n_turns)) * (1 + 0.5 * tidx))).astype(np.int64)
    out_turn = np.maximum(1, np.exp(np.log(_F_OUT[tfeat]) + 0.7 * rng.standard_normal(n_turns))).astype(np.int64)
    think = _F_GAP[tfeat] * rng.exponential(size=n_turns) + 2.0 + out_turn / 60.0
    forced_t = tsess < forced
    think[forced_t] = rng.uniform(60.0, 120.0, size=int(forced_t.sum()))

    # calls (session-major), truncated to exactly n_requests
    cturn = np.repeat(np.arange(n_turns), attempts)[:n_requests]
    cfirst = (np.cumsum(attempts) - attempts)[cturn]
    n = len(cturn)
    attempt = np.arange(n) - cfirst + 1
    last_try = attempt == attempts[cturn]
    err = ~last_try | f3[cturn]
    csess = tsess[cturn]
    n_sess = int(csess[-1]) + 1
    cfeat, cmodel, cacct = s["feat"][csess], s["model"][csess], s["acct"][csess]
    first_turn = tidx[cturn] == 0

    inp = in_turn[cturn]
    out = np.where(err, np.where(rng.random(n) < 0.5, 0, rng.integers(1, 30, size=n)), out_turn[cturn])
    has_r = rng.random(n) < np.where(first_turn, _CACHE_READ_P[0], _CACHE_READ_P[1])
    has_w = _M_ANTHROPIC[cmodel] & (rng.random(n) < np.where(first_turn, _CACHE_WRITE_P[0], _CACHE_WRITE_P[1]))
    cr = np.where(has_r, (inp * rng.uniform(0.3, 0.85, size=n)).astype(np.int64), 0)
    cw = np.where(has_w, ((inp - cr) * rng.uniform(0.15, 0.6, size=n)).astype(np.int64), 0)
    cw = np.minimum(cw, inp - cr - 1)

    gap_s = np.where(attempt > 1, rng.uniform(0.5, 8.0, size=n), think[cturn])
    gap = (gap_s * 1e6).astype(np.int64)
    sess_first = np.flatnonzero(np.r_[True, csess[1:] != csess[:-1]])
    gap[sess_first] = 0
    cs = np.cumsum(gap)
    ts = s["start"][csess] + cs - cs[sess_first][csess]

    u = rng.random(n)
    not_forced = csess >= forced
    tel_only = (u < _P_TELEMETRY_ONLY) & not_forced
    bill_only = (u >= _P_TELEMETRY_ONLY) & (u < _P_TELEMETRY_ONLY + _P_BILLING_ONLY) & not_forced
    covered = (cmodel == _COMMIT_MODEL[cacct]) & (rng.random(n) < _P_COVERED)

    # session outcomes
    sfeat, stier = s["feat"][:n_sess], s["tier"][:n_sess]
    truth = rng.random(n_sess) < _F_SUCC[sfeat, stier]
    hard_fail = np.bincount(csess, weights=(last_try & f3[cturn]), minlength=n_sess) > 0
    truth &= ~(hard_fail & (rng.random(n_sess) < 0.8))
    escalated = np.where(truth, rng.random(n_sess) < _P_ESC_OK, rng.random(n_sess) < _P_ESC_FAIL)
    has_outcome = rng.random(n_sess) < _P_OUTCOME
    explicit = rng.random(n_sess) < _P_EXPLICIT
    last_ts = np.maximum.reduceat(ts, sess_first)
    delay_h = np.where(explicit, rng.uniform(1.0, 24.0, size=n_sess), rng.uniform(24.0, 72.0, size=n_sess))
    o1_ts = last_ts + (delay_h * _HOUR_US).astype(np.int64)
    corrected = has_outcome & (rng.random(n_sess) < _P_CORRECTED)
    o2_ts = o1_ts + (rng.uniform(1.0, 48.0, size=n_sess) * _HOUR_US).astype(np.int64)

    # Calls stay in session order (not time order): event files are sorted when written.
    calls = {
        "ts": ts, "sess": csess, "feat": cfeat, "model": cmodel, "acct": cacct, "pv": s["pv"][csess],
        "input": inp, "output": out, "cr": cr, "cw": cw, "attempt": attempt, "err": err,
        "tel_only": tel_only, "bill_only": bill_only, "covered": covered,
        "idx": np.arange(n, dtype=np.int64),  # request key
    }

    o = np.flatnonzero(has_outcome)
    c = np.flatnonzero(corrected)
    outcomes = {
        "sess": np.r_[o, c],
        "ts": np.r_[o1_ts[o], o2_ts[c]],
        "success": np.r_[truth[o] ^ corrected[o], truth[c]],
        "escalated": np.r_[escalated[o], escalated[c]],
        "explicit": np.r_[explicit[o], np.ones(len(c), dtype=bool)],
        "feat": np.r_[sfeat[o], sfeat[c]],
    }
    return _Day(day.toordinal(), n_sess, calls, outcomes)


# --------------------------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------------------------


def _day_events(day: _Day, seed: int, first_epoch_day: int, n_files: int) -> pl.DataFrame:
    """Compact event rows of one generated day (duplicates included), with their target file."""
    rng = np.random.default_rng(np.random.SeedSequence([seed & _MASK64, day.ordinal, 0xE7E7]))
    c, o = day.calls, day.outcomes
    keep = ~c["bill_only"]
    n1, n2 = int(keep.sum()), len(o["ts"])
    base = np.uint64(day.ordinal) << np.uint64(36)
    ts = np.r_[c["ts"][keep], o["ts"]]
    z2 = np.zeros(n2, dtype=np.int64)
    frame = pl.DataFrame(
        {
            "etype": np.r_[np.zeros(n1, np.uint8), np.ones(n2, np.uint8)],
            "ekey": base | np.arange(n1 + n2, dtype=np.uint64),
            "ts": ts,
            "rkey": np.r_[base | c["idx"][keep].astype(np.uint64), np.zeros(n2, np.uint64)],
            "skey": base | np.r_[c["sess"][keep], o["sess"]].astype(np.uint64),
            "feat": np.r_[c["feat"][keep], o["feat"]].astype(np.uint8),
            "model": np.r_[c["model"][keep], z2].astype(np.uint8),
            "pv": np.r_[c["pv"][keep], z2].astype(np.uint8),
            "input": np.r_[c["input"][keep], z2].astype(np.int32),
            "output": np.r_[c["output"][keep], z2].astype(np.int32),
            "cr": np.r_[c["cr"][keep], z2].astype(np.int32),
            "cw": np.r_[c["cw"][keep], z2].astype(np.int32),
            "attempt": np.r_[c["attempt"][keep], z2].astype(np.int8),
            "err": np.r_[c["err"][keep], np.zeros(n2, bool)],
            "success": np.r_[np.zeros(n1, bool), o["success"]],
            "escalated": np.r_[np.zeros(n1, bool), o["escalated"]],
            "explicit": np.r_[np.zeros(n1, bool), o["explicit"]],
            "fidx": np.minimum(ts // _DAY_US - first_epoch_day, n_files - 1).astype(np.int32),
            "sortkey": ts + (rng.normal(0.0, 1.5, size=n1 + n2) * 1e6).astype(np.int64),
        }
    )
    dup = np.flatnonzero(rng.random(n1 + n2) < _P_DUPLICATE)
    if len(dup):
        other = rng.random(len(dup)) < 0.5
        d = frame[dup]
        d = d.with_columns(
            fidx=pl.when(pl.Series(other)).then(pl.min_horizontal(pl.col("fidx") + 1, pl.lit(n_files - 1, pl.Int32))).otherwise(pl.col("fidx")),
            sortkey=pl.col("sortkey") + pl.Series(rng.integers(1_000_000, 900_000_000, size=len(dup))),
        )
        frame = pl.concat([frame, d])
    return frame


class _Background:
    """One worker thread for compression and file writes (zlib and pyarrow release the GIL), so
    they overlap with building the next chunk. Tasks run in submission order."""

    def __init__(self) -> None:
        self._ex = ThreadPoolExecutor(max_workers=1, thread_name_prefix="unitledger-generate")
        self._pending: deque[Future] = deque()

    def submit(self, fn, *args) -> None:
        self._pending.append(self._ex.submit(fn, *args))
        while len(self._pending) > 2:  # bound the memory held by queued chunks
            self._pending.popleft().result()

    def drain(self) -> None:
        while self._pending:
            self._pending.popleft().result()

    def close(self) -> None:
        try:
            self.drain()
        finally:
            self._ex.shutdown(wait=True)


def _with_ids(frame: pl.DataFrame, seed: int) -> pl.DataFrame:
    return frame.with_columns(
        _hex_ids("evt_", frame["ekey"].to_numpy(), _salt(seed, 1)).alias("event_id"),
        _hex_ids("req_", frame["rkey"].to_numpy(), _salt(seed, 2)).alias("request_id"),
        _hex_ids("ses_", frame["skey"].to_numpy(), _salt(seed, 3)).alias("session_id"),
    )


def _typed_events(frame: pl.LazyFrame) -> pl.LazyFrame:
    """Compact rows (with ids) -> the union event table (typed, nulls where a field does not apply)."""
    is_call = pl.col("etype") == 0

    def by_model(i: int) -> pl.Expr:
        return pl.when(is_call).then(pl.col("model").replace_strict({k: m[i] for k, m in enumerate(_MODELS)}, return_dtype=pl.String))

    return frame.select(
        event_type=pl.when(is_call).then(pl.lit("llm_call")).otherwise(pl.lit("outcome")),
        event_id=pl.col("event_id"),
        timestamp=pl.from_epoch("ts", time_unit="us").dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ"),
        request_id=pl.when(is_call).then(pl.col("request_id")),
        session_id=pl.col("session_id"),
        feature_tag=pl.col("feat").replace_strict(dict(enumerate(_F_NAMES)), return_dtype=pl.String),
        provider=by_model(1),
        model=by_model(0),
        model_version=by_model(3),
        prompt_version=pl.when(is_call).then(pl.col("pv").replace_strict(dict(enumerate(_PV_NAMES)), return_dtype=pl.String)),
        input_tokens=pl.when(is_call).then(pl.col("input")),
        output_tokens=pl.when(is_call).then(pl.col("output")),
        cache_read_input_tokens=pl.when(is_call).then(pl.col("cr")),
        cache_write_input_tokens=pl.when(is_call).then(pl.col("cw")),
        attempt=pl.when(is_call).then(pl.col("attempt")),
        status=pl.when(is_call).then(pl.when(pl.col("err")).then(pl.lit("error")).otherwise(pl.lit("ok"))),
        success=pl.when(~is_call).then(pl.col("success")),
        escalated=pl.when(~is_call).then(pl.col("escalated")),
        signal=pl.when(~is_call).then(pl.when(pl.col("explicit")).then(pl.lit("explicit")).otherwise(pl.lit("implicit"))),
    )


def _json_combos() -> dict[int, str]:
    """The JSON text between session_id's value and the first number (llm_call) or the end of the
    line (outcome), for every combination of the small-domain fields: one lookup per line."""
    out = {}
    for f, fname in enumerate(_F_NAMES):
        for m, spec in enumerate(_MODELS):
            for p, pv in enumerate(_PV_NAMES):
                out[f * 24 + m * 6 + p] = (
                    f'","feature_tag":"{fname}","provider":"{spec[1]}","model":"{spec[0]}",'
                    f'"model_version":"{spec[3]}","prompt_version":"{pv}","input_tokens":'
                )
        for k in range(8):
            success, escalated, explicit = bool(k & 4), bool(k & 2), bool(k & 1)
            out[1000 + f * 8 + k] = (
                f'","feature_tag":"{fname}","success":{str(success).lower()},"escalated":{str(escalated).lower()},'
                f'"signal":"{"explicit" if explicit else "implicit"}"}}'
            )
    return out


_JSON_COMBOS = _json_combos()
assert len(_PV_NAMES) <= 6 and len(_MODELS) <= 4


def _json_lines(frame: pl.LazyFrame) -> pl.LazyFrame:
    """Compact rows (with ids) -> one JSON object per line holding only the fields of its event
    type. No escaping is needed: every string value is generated here and is plain ASCII."""
    is_call = pl.col("etype") == 0
    combo = (
        pl.when(is_call)
        .then(pl.col("feat").cast(pl.Int64) * 24 + pl.col("model").cast(pl.Int64) * 6 + pl.col("pv").cast(pl.Int64))
        .otherwise(1000 + pl.col("feat").cast(pl.Int64) * 8 + pl.col("success").cast(pl.Int64) * 4
                   + pl.col("escalated").cast(pl.Int64) * 2 + pl.col("explicit").cast(pl.Int64))
        .replace_strict(_JSON_COMBOS, return_dtype=pl.String)
    )
    ts = pl.from_epoch("ts", time_unit="us").dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
    call = pl.concat_str(
        pl.lit('{"event_type":"llm_call","event_id":"'), pl.col("event_id"), pl.lit('","timestamp":"'), ts,
        pl.lit('","request_id":"'), pl.col("request_id"), pl.lit('","session_id":"'), pl.col("session_id"), combo,
        pl.col("input").cast(pl.String), pl.lit(',"output_tokens":'), pl.col("output").cast(pl.String),
        pl.lit(',"cache_read_input_tokens":'), pl.col("cr").cast(pl.String),
        pl.lit(',"cache_write_input_tokens":'), pl.col("cw").cast(pl.String),
        pl.lit(',"attempt":'), pl.col("attempt").cast(pl.String),
        pl.when(pl.col("err")).then(pl.lit(',"status":"error"}')).otherwise(pl.lit(',"status":"ok"}')),
    )
    outcome = pl.concat_str(
        pl.lit('{"event_type":"outcome","event_id":"'), pl.col("event_id"), pl.lit('","timestamp":"'), ts,
        pl.lit('","session_id":"'), pl.col("session_id"), combo,
    )
    return frame.select(line=pl.when(is_call).then(call).otherwise(outcome))


def _write_events_file(path: Path, frame: pl.DataFrame, fmt: str, seed: int, mtime: int) -> int:
    """One day's event file, written in chunks (a .gz file is one gzip member per chunk)."""
    tmp = path.with_name(f".{path.name}.tmp")
    frame = frame.drop("fidx").sort("sortkey", maintain_order=True)  # stable: ties keep generation order
    n = frame.height
    with open(tmp, "wb") as raw:
        if fmt == "parquet":
            w = pq.ParquetWriter(raw, _EVENT_SCHEMA, compression="zstd", store_schema=False)
            for lo in range(0, max(n, 1), _EVENT_CHUNK_ROWS):
                part = _with_ids(frame.slice(lo, _EVENT_CHUNK_ROWS), seed)
                t = _typed_events(part.lazy()).collect().to_arrow(compat_level=pl.CompatLevel.newest())
                w.write_table(t.cast(_EVENT_SCHEMA))
            w.close()
        else:
            gz = fmt.endswith(".gz")
            for lo in range(0, n, _EVENT_CHUNK_ROWS):
                part = _with_ids(frame.slice(lo, _EVENT_CHUNK_ROWS), seed)
                _json_lines(part.lazy()).sink_csv(
                    raw, include_header=False, quote_style="never", compression="gzip" if gz else "uncompressed",
                    compression_level=_GZIP_LEVEL if gz else None,
                )
    os.replace(tmp, path)
    _set_mtime(path, mtime)
    return n


TELEMETRY_FORMATS = ("events", "otlp", "litellm")


def _rewrite_telemetry(landing: Path, flat_files: list[Path], fmt: str, list_prices: pl.LazyFrame | None) -> list[Path]:
    """The flat event files rewritten in `fmt`, one file (or two: OTLP traces and logs; LiteLLM
    calls and flat outcomes) per day with the day file's modification time; returns the files.
    Retry turns are computed over every day first: a turn's retries may land in the next day's
    file, and its trace must be the same one."""
    from unitledger.sources.events import read_events_raw
    from unitledger.sources.files import LandingFile
    from unitledger.tools import telemetry_formats as formats

    def landing_file(path: Path) -> LandingFile:
        st = path.stat()
        return LandingFile(path, path.name, st.st_size, st.st_mtime_ns)

    fields = [name for name, _ in EVENT_COLUMNS]
    events = pl.concat(
        [read_events_raw(landing_file(p)).select(fields).with_columns(_file=pl.lit(i)) for i, p in enumerate(flat_files)]
    ).collect()
    if fmt == "otlp":
        events = formats.with_turns(events.lazy()).collect()
    written: list[Path] = []
    for i, flat in enumerate(flat_files):
        day = events.filter(pl.col("_file") == i).drop("_file").lazy()
        mtime = flat.stat().st_mtime_ns // 1_000_000_000
        stem = flat.name.split(".", 1)[0].removeprefix("events-")
        gz = ".gz" if flat.name.endswith(".gz") else ""
        outputs: list[tuple[Path, pl.LazyFrame]] = []
        if fmt == "otlp":
            outputs.append((landing / "otlp" / f"traces-{stem}.jsonl{gz}", formats.otlp_trace_lines(day)))
            outputs.append((landing / "otlp" / f"logs-{stem}.jsonl{gz}", formats.otlp_log_lines(day)))
        else:
            prices = list_prices if list_prices is not None else pl.LazyFrame(
                schema={"provider": pl.String, "model": pl.String, "token_type": pl.String, "currency": pl.String,
                        "effective_from": pl.Date, "effective_to": pl.Date, "price_per_token": MONEY}
            )
            outputs.append((landing / "gateways" / "litellm" / f"spendlogs-{stem}.csv", formats.litellm_spendlogs(day, prices)))
            labels = day.filter(pl.col("event_type") == "outcome").select(fields)
            outputs.append((landing / "events" / f"outcomes-{stem}.jsonl", labels))
        flat.unlink()
        for path, frame in outputs:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}")  # hidden (landing listings skip it), same suffix
            if path.name.endswith(".csv"):
                frame.sink_csv(tmp)
            elif path.parent.name == "events":
                frame.sink_ndjson(tmp)
            else:
                formats.write_lines(frame, tmp)
            os.replace(tmp, path)
            _set_mtime(path, mtime)
            written.append(path)
    return written


# --------------------------------------------------------------------------------------------
# FOCUS
# --------------------------------------------------------------------------------------------

# Column types in FOCUS Parquet files: high-cardinality columns plain strings, the rest
# dictionary-encoded strings. The files are written without the Arrow schema, so every reader
# sees plain UTF-8 string columns.
_PLAIN_COLUMNS = frozenset(("BilledCost", "EffectiveCost", "ListCost", "ContractedCost", "ConsumedQuantity", "PricingQuantity", "x_RequestId"))
_DICT_TYPE = pa.dictionary(pa.int32(), pa.string())
# Columns that are never null (FOCUS: MUST NOT be null) are REQUIRED Parquet fields.
_NOT_NULL = frozenset((
    "BilledCost", "BillingAccountId", "BillingAccountName", "BillingAccountType", "BillingCurrency",
    "BillingPeriodEnd", "BillingPeriodStart", "ChargeCategory", "ChargeDescription", "ChargeFrequency",
    "ChargePeriodEnd", "ChargePeriodStart", "ContractedCost", "EffectiveCost", "HostProviderName", "InvoiceId",
    "InvoiceIssuerName", "ListCost", "ProviderName", "PublisherName", "ServiceCategory", "ServiceName",
    "ServiceProviderName", "ServiceSubcategory", "Tags",
))
_FOCUS_ARROW = pa.schema(
    [pa.field(c, pa.string_view() if c in _PLAIN_COLUMNS else _DICT_TYPE, nullable=c not in _NOT_NULL) for c in FOCUS_COLUMNS]
)
_STAT_COLUMNS = ["BillingAccountId", "BillingPeriodStart", "ChargeCategory", "ChargePeriodStart"]


def _usage_rows(day: _Day, seed: int) -> pl.DataFrame:
    """Compact FOCUS usage rows of one generated day: one per billed request and token type."""
    c = day.calls
    billed = np.flatnonzero(~c["tel_only"])
    q = np.stack([c["input"][billed] - c["cr"][billed] - c["cw"][billed], c["output"][billed], c["cr"][billed], c["cw"][billed]], axis=1)
    ci, sku = np.nonzero(q > 0)
    qty = q[ci, sku]
    call = billed[ci]
    ts = c["ts"][call]
    rkey = (np.uint64(day.ordinal) << np.uint64(36)) | c["idx"][call].astype(np.uint64)
    h = _mix64((rkey * np.uint64(4) + sku.astype(np.uint64)) ^ _salt(seed, 4))
    return pl.DataFrame(
        {
            "acct": c["acct"][call].astype(np.uint8),
            "day": (ts // _DAY_US + _EPOCH_ORD).astype(np.int32),
            "hour_s": (ts // _HOUR_US) * 3600,
            "rkey": rkey,
            "code": (c["model"][call] * 4 + sku).astype(np.int32),  # (model, token type)
            "feat": c["feat"][call].astype(np.int32),
            "pv": c["pv"][call].astype(np.int32),
            "covered": c["covered"][call],
            "qty": qty.astype(np.int64),
            "h": h,
        }
    )


def _aggregate_usage(rows: pl.DataFrame) -> pl.DataFrame:
    """Usage rows summed the way providers bill: one row per (account, UTC hour, model and token
    type, committed or not), no request. Costs are quantity x unit price, so the summed rows bill
    exactly what the per-request rows would."""
    return (
        rows.group_by("acct", "day", "hour_s", "code", "covered")
        .agg(pl.col("qty").sum(), pl.col("h").min(), pl.col("rkey").min(), pl.col("feat").min(), pl.col("pv").min())
        .sort("day", "hour_s", "code", "covered")
        .select(rows.columns)
    )


@lru_cache(maxsize=None)
def _account_tables(acct: int) -> dict:
    """Per (model, token type) code: prices (1e-12 units of the account currency) and strings."""
    a = _ACCOUNTS[acct]
    t: dict[str, list] = {k: [] for k in ("lp", "cp", "kp", "SkuId", "SkuMeter", "SkuPriceId", "ChargeDescription",
                                          "ServiceName", "Prov", "ResourceId", "ResourceName", "x_ModelVersion")}
    for spec in _MODELS:
        short = f"{spec[2][:3].upper()}-{spec[0].upper()}"
        for k in range(4):
            lp = spec[5][k] * a[4] // 100
            sku_id = f"{short}-{_SKU_CODES[k]}"
            t["lp"].append(lp)
            t["cp"].append(lp * a[5] // 100)
            t["kp"].append(lp * _COMMIT_PCT // 100)
            t["SkuId"].append(sku_id)
            t["SkuMeter"].append(_SKU_METERS[k])
            t["SkuPriceId"].append(f"{sku_id}-{a[2]}-{a[0]}")
            t["ChargeDescription"].append(f"{spec[3]} {_SKU_METERS[k]}")
            t["ServiceName"].append("Claude API" if spec[1] == "anthropic" else "OpenAI API")
            t["Prov"].append(spec[2])
            t["ResourceId"].append(f"ug:{a[0]}:{spec[1]}/{spec[0]}")
            t["ResourceName"].append(spec[3])
            t["x_ModelVersion"].append(spec[3])
    for k in ("lp", "cp", "kp"):
        t[k] = np.array(t[k], dtype=np.int64)
    t["ListUnitPrice"] = [_dec(v) for v in t["lp"].tolist()]
    t["ContractedUnitPrice"] = [_dec(v) for v in t["cp"].tolist()]
    return t


def _money_strings(v: np.ndarray, enote: np.ndarray) -> pa.Array:
    """Exact decimal text of integer 1e-12 amounts: 12 fixed decimals ("0.000004500000"), or
    E-notation ("4.5E-6") where `enote` is set and the amount is not 0."""
    n = len(v)
    pair = np.empty((n, 2), dtype=np.int64)
    pair[:, 0] = v
    pair[:, 1] = v >> 63  # sign extension: the value as a little-endian int128
    dec = pa.Array.from_buffers(pa.decimal128(38, 12), n, [None, pa.py_buffer(pair)])
    s = pl.Series(dec).cast(pl.String)
    sel = np.flatnonzero(enote & (v != 0))
    if len(sel):
        s = s.scatter(sel, pl.select(_enote_expr(pl.lit(pl.Series(v[sel])))).to_series())
    return s.to_arrow(compat_level=pl.CompatLevel.newest())


def _dict_array(indices: np.ndarray | pa.Array, values: list[str], valid: np.ndarray | None = None) -> pa.Array:
    """Dictionary-encoded string column: `values[indices]`, null where `valid` is False. The
    dictionary is made unique (Parquet writes a dictionary with repeats as plain values)."""
    uniq = list(dict.fromkeys(values))
    if isinstance(indices, pa.Array):
        assert len(uniq) == len(values)
        arr = indices
    else:
        remap = np.array([uniq.index(v) for v in values], dtype=np.int32)
        arr = pa.array(remap[np.asarray(indices, dtype=np.intp)], type=pa.int32(), mask=None if valid is None else ~valid)
    return pa.DictionaryArray.from_arrays(arr, pa.array(uniq, type=pa.string()))


def _conform(frame: pl.DataFrame) -> pa.Table:
    """A frame of string columns as an Arrow table of the FOCUS Parquet schema."""
    cols = []
    for c in FOCUS_COLUMNS:
        arr = frame[c].to_arrow().cast(pa.string())
        cols.append(arr.cast(pa.string_view()) if c in _PLAIN_COLUMNS else pc.dictionary_encode(arr))
    return pa.Table.from_arrays(cols, schema=_FOCUS_ARROW)


@dataclass
class _Delivery:
    path: Path
    fmt: str
    acct: int
    month: date  # first day of the billing month
    last_day: date  # last covered day
    early: bool
    seed: int
    folder_date: date  # delivery date: its folder name and its mtime (midnight UTC)
    bg: _Background
    aggregated: bool = False  # usage billed provider-style: per hour, model, token type (no request id)
    rows: int = 0
    buffer: list[pl.DataFrame] = field(default_factory=list)
    buffered: int = 0
    usage_billed: int = 0
    covered_effective: int = 0
    routed: dict[int, int] = field(default_factory=dict)  # day ordinal -> billed requests
    _fh: object = None
    _pq: object = None

    def add(self, rows: pl.DataFrame) -> None:
        if rows.height == 0:
            return
        if self.early:  # an earlier snapshot: some rows not there yet, some quantities lower
            h = pl.col("h")
            rows = rows.filter((h % 100) >= _EARLY_DROP_PCT).with_columns(
                qty=pl.when(((h // 256) % 100) < _EARLY_SHRINK_PCT)
                .then(pl.max_horizontal(pl.lit(1, pl.Int64), pl.col("qty") * 97 // 100))
                .otherwise(pl.col("qty"))
            )
        t = _account_tables(self.acct)
        code, qty, cov = rows["code"].to_numpy(), rows["qty"].to_numpy(), rows["covered"].to_numpy()
        self.usage_billed += int(np.where(cov, 0, qty * t["cp"][code]).sum())
        self.covered_effective += int((qty[cov] * t["kp"][code[cov]]).sum())
        first_rows = rows["day"].to_numpy()[(code % 4) == 0]  # one input row per request
        days, counts = np.unique(first_rows, return_counts=True)
        for d_, n_ in zip(days.tolist(), counts.tolist()):  # at most two days
            self.routed[d_] = self.routed.get(d_, 0) + n_
        self.buffer.append(rows)
        self.buffered += rows.height
        if self.buffered >= _CHUNK_ROWS:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        if not self.buffer:
            return
        allrows = pl.concat(self.buffer) if len(self.buffer) > 1 else self.buffer[0]
        if self.aggregated:
            allrows = _aggregate_usage(allrows)
        self.buffer, self.buffered = [], 0
        n = allrows.height
        full = n if final else (n // _CHUNK_ROWS) * _CHUNK_ROWS
        for lo in range(0, full, _CHUNK_ROWS):
            self._write(self._materialize(allrows.slice(lo, min(_CHUNK_ROWS, full - lo))))
        if full < n:
            self.buffer, self.buffered = [allrows.slice(full)], n - full

    def _materialize(self, rows: pl.DataFrame) -> pa.Table | pl.DataFrame:
        """Usage rows as FOCUS columns: an Arrow table (Parquet) or a frame of strings (CSV)."""
        a, t = _ACCOUNTS[self.acct], _account_tables(self.acct)
        ym = f"{self.month:%Y-%m}"
        n = rows.height
        code, qty, cov = rows["code"].to_numpy(), rows["qty"].to_numpy(), rows["covered"].to_numpy()
        h = rows["h"].to_numpy()
        enote = ((h >> np.uint64(20)) % np.uint64(1000)) < _E_NOTATION_PER_MILLE
        contracted = qty * t["cp"][code]
        money = {
            "BilledCost": np.where(cov, 0, contracted),
            "EffectiveCost": np.where(cov, qty * t["kp"][code], contracted),
            "ListCost": qty * t["lp"][code],
            "ContractedCost": contracted,
        }
        hours, hour_idx = np.unique(rows["hour_s"].to_numpy(), return_inverse=True)
        starts = [_ts(datetime.fromtimestamp(int(s), timezone.utc).replace(tzinfo=None)) for s in hours.tolist()]
        ends = [_ts(datetime.fromtimestamp(int(s) + 3600, timezone.utc).replace(tzinfo=None)) for s in hours.tolist()]
        qty_s = pl.Series(qty).cast(pl.String).to_arrow(compat_level=pl.CompatLevel.newest())
        zeros = pa.array(np.zeros(n, dtype=np.int32))
        nulls = pa.DictionaryArray.from_arrays(pa.nulls(n, pa.int32()), pa.array([], type=pa.string()))
        zeros_if_covered = pa.array(np.zeros(n, dtype=np.int32), mask=~cov)
        const = {
            "BillingAccountId": a[0], "BillingAccountName": a[1], "BillingAccountType": "Billing Account",
            "BillingCurrency": a[2], "BillingPeriodEnd": _ts(_next_month(self.month)), "BillingPeriodStart": _ts(self.month),
            "ChargeCategory": "Usage", "ChargeFrequency": "Usage-Based", "ConsumedUnit": "Tokens",
            "InvoiceId": f"INV-{ym}-{a[0]}", "InvoiceIssuerName": _GATEWAY, "PricingUnit": "Tokens",
            "RegionId": a[3][0], "RegionName": a[3][1], "ResourceType": "Model Endpoint",
            "ServiceCategory": "AI and Machine Learning", "ServiceSubcategory": "Generative AI",
            "SubAccountType": "Project", "Tags": a[10],
        }
        covered_const = {
            "CommitmentDiscountCategory": "Spend", "CommitmentDiscountId": f"cd-{a[0]}-{ym}",
            "CommitmentDiscountName": f"{_MODELS[a[6]][2]} committed spend {ym}",
            "CommitmentDiscountStatus": "Used", "CommitmentDiscountType": "Committed Spend Plan",
        }
        by_code = ("ChargeDescription", "ContractedUnitPrice", "ListUnitPrice", "ResourceId", "ResourceName",
                   "ServiceName", "SkuId", "SkuMeter", "SkuPriceId", "x_ModelVersion")
        providers = ("HostProviderName", "ProviderName", "PublisherName", "ServiceProviderName")
        feat = rows["feat"].to_numpy()
        cols: dict[str, pa.Array] = {}
        for c in FOCUS_COLUMNS:
            if c in money:
                cols[c] = _money_strings(money[c], enote)
            elif c in const:
                cols[c] = _dict_array(zeros, [const[c]])
            elif c in covered_const:
                cols[c] = _dict_array(zeros_if_covered, [covered_const[c]])
            elif c in by_code:
                cols[c] = _dict_array(code, t[c])
            elif c in providers:
                cols[c] = _dict_array(code, t["Prov"])
            elif c in ("ConsumedQuantity", "PricingQuantity"):
                cols[c] = qty_s
            elif c == "ChargePeriodStart":
                cols[c] = _dict_array(hour_idx, starts)
            elif c == "ChargePeriodEnd":
                cols[c] = _dict_array(hour_idx, ends)
            elif c == "PricingCategory":
                cols[c] = _dict_array(cov, ["Standard", "Committed"])
            elif self.aggregated and c in ("SubAccountId", "SubAccountName", "x_RequestId", "x_PromptVersion", "x_FeatureTag"):
                cols[c] = nulls if c != "x_RequestId" else pa.nulls(n, pa.string_view())
            elif c == "SubAccountId":
                cols[c] = _dict_array(feat, [f[10] for f in _FEATURES])
            elif c == "SubAccountName":
                cols[c] = _dict_array(feat, [f[10].removeprefix("proj-").title() for f in _FEATURES])
            elif c == "x_RequestId":
                cols[c] = _hex_ids("req_", rows["rkey"].to_numpy(), _salt(self.seed, 2)).to_arrow(compat_level=pl.CompatLevel.newest())
            elif c == "x_PromptVersion":
                cols[c] = _dict_array(rows["pv"].to_numpy(), list(_PV_NAMES))
            elif c == "x_FeatureTag":
                cols[c] = _dict_array(feat, list(_F_NAMES))
            else:
                cols[c] = nulls
        table = pa.Table.from_arrays([cols[c] for c in FOCUS_COLUMNS], schema=_FOCUS_ARROW)
        if self.fmt == "parquet":
            return table
        frame = pl.from_arrow(table).with_columns(pl.all().cast(pl.String))
        flag = pl.Series(((h >> np.uint64(40)) % np.uint64(100)) < _NULL_LITERAL_PCT)
        return frame.with_columns([pl.when(flag).then(pl.col(c).fill_null("NULL")).otherwise(pl.col(c)) for c in FOCUS_COLUMNS])

    def _write(self, data: pa.Table | pl.DataFrame) -> None:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path.with_name(f".{self.path.name}.tmp"), "wb")
            if self.fmt == "parquet":
                self._pq = pq.ParquetWriter(self._fh, _FOCUS_ARROW, compression="snappy", store_schema=False,
                                            write_statistics=_STAT_COLUMNS)
        if self.fmt == "parquet":
            if isinstance(data, pl.DataFrame):
                data = _conform(data)
            self.bg.submit(self._pq.write_table, data)
            self.rows += data.num_rows
        else:  # each write of a .csv.gz is one gzip member
            gz = self.fmt == "csv.gz"
            data.select(FOCUS_COLUMNS).write_csv(
                self._fh, include_header=self.rows == 0, compression="gzip" if gz else "uncompressed",
                compression_level=6 if gz else None,
            )
            self.rows += data.height

    def abort(self) -> None:
        """Close and remove a half-written file (after an error)."""
        for h in (self._pq, self._fh):
            try:
                if h is not None:
                    h.close()
            except Exception:
                pass
        self.path.with_name(f".{self.path.name}.tmp").unlink(missing_ok=True)

    def finish(self, commitment: int, mtime: int) -> None:
        self._flush(final=True)
        self._write(self._month_rows(commitment))
        self.bg.drain()
        if self._pq is not None:
            self._pq.close()
        self._fh.close()
        os.replace(self.path.with_name(f".{self.path.name}.tmp"), self.path)
        for p in (self.path, self.path.parent):
            _set_mtime(p, mtime)

    def _month_rows(self, commitment: int) -> pl.DataFrame:
        """Rows without x_RequestId: routing fees, platform fee, commitment, credit, tax, correction."""
        a = _ACCOUNTS[self.acct]
        month, nxt = self.month, _next_month(self.month)
        ym = f"{month.year:04d}-{month.month:02d}"
        base = {
            "BillingAccountId": a[0], "BillingAccountName": a[1], "BillingAccountType": "Billing Account",
            "BillingCurrency": a[2], "BillingPeriodStart": _ts(month), "BillingPeriodEnd": _ts(nxt),
            "InvoiceId": f"INV-{ym}-{a[0]}", "InvoiceIssuerName": _GATEWAY,
            "HostProviderName": _GATEWAY, "ProviderName": _GATEWAY, "PublisherName": _GATEWAY,
            "ServiceProviderName": _GATEWAY, "ServiceName": "Unitgate Gateway",
            "ServiceCategory": "AI and Machine Learning", "ServiceSubcategory": "AI Platforms", "Tags": a[10],
        }

        def row(cost: int, effective: int | None = None, **kw: str) -> dict[str, str]:
            r = dict(base)
            r.update(BilledCost=_dec(cost), EffectiveCost=_dec(cost if effective is None else effective),
                     ListCost=_dec(cost), ContractedCost=_dec(cost))
            r.update(kw)
            return r

        rows = []
        fees = 0
        for d_ord in sorted(self.routed):
            d = date.fromordinal(d_ord)
            n = self.routed[d_ord]
            cost = n * a[9]
            fees += cost
            rows.append(row(cost, ChargeCategory="Usage", ChargeFrequency="Usage-Based",
                            ChargeDescription="Gateway routing fee per request",
                            ChargePeriodStart=_ts(d), ChargePeriodEnd=_ts(d + timedelta(days=1)),
                            ConsumedQuantity=str(n), ConsumedUnit="Requests", PricingQuantity=str(n),
                            PricingUnit="Requests", ListUnitPrice=_dec(a[9]), ContractedUnitPrice=_dec(a[9]),
                            PricingCategory="Standard", SkuId="UG-ROUTING", SkuMeter="Routed Requests",
                            SkuPriceId=f"UG-ROUTING-{a[2]}", RegionId=a[3][0], RegionName=a[3][1]))
        fee = a[8] * UNIT
        rows.append(row(fee, ChargeCategory="Purchase", ChargeFrequency="Recurring",
                        ChargeDescription="Unitgate platform subscription (monthly)",
                        ChargePeriodStart=_ts(month), ChargePeriodEnd=_ts(nxt), PricingQuantity="1",
                        PricingUnit="Subscriptions", ListUnitPrice=_dec(fee), ContractedUnitPrice=_dec(fee),
                        PricingCategory="Standard", SkuId="UG-PLATFORM", SkuPriceId=f"UG-PLATFORM-{a[2]}"))
        cm = _MODELS[a[6]]
        rows.append(row(commitment, effective=0, ChargeCategory="Purchase", ChargeFrequency="One-Time",
                        ChargeDescription=f"{cm[2]} committed spend plan {ym}",
                        ChargePeriodStart=_ts(month), ChargePeriodEnd=_ts(month + timedelta(days=1)),
                        CommitmentDiscountCategory="Spend", CommitmentDiscountId=f"cd-{a[0]}-{ym}",
                        CommitmentDiscountName=f"{cm[2]} committed spend {ym}",
                        CommitmentDiscountType="Committed Spend Plan", PricingQuantity="1",
                        PricingUnit="Commitments", ListUnitPrice=_dec(commitment),
                        ContractedUnitPrice=_dec(commitment), PricingCategory="Standard",
                        HostProviderName=cm[2], ProviderName=cm[2], PublisherName=cm[2], ServiceProviderName=cm[2],
                        ServiceName="Claude API" if cm[1] == "anthropic" else "OpenAI API",
                        ServiceSubcategory="Generative AI", SkuId="COMMIT-SPEND"))
        charges = self.usage_billed + fees + fee + commitment
        rng = np.random.default_rng(np.random.SeedSequence([self.seed & _MASK64, month.toordinal(), self.acct, 0xB111]))
        u = rng.random(2)
        if not self.early:
            credit = -max(_CENT, _round_cents(self.usage_billed * 5 // 100))
            rows.append(row(credit, ChargeCategory="Credit", ChargeFrequency="One-Time",
                            ChargeDescription="Promotional credit", ChargePeriodStart=_ts(month),
                            ChargePeriodEnd=_ts(nxt)))
            if self.acct == 0 or u[0] < 0.5:
                amount = max(_CENT, _round_cents(self.usage_billed * 3 // 1000)) * (1 if u[1] < 0.4 else -1)
                prev = _month_start(month - timedelta(days=1))
                rows.append(row(amount, ChargeCategory="Adjustment", ChargeClass="Correction",
                                ChargeFrequency="One-Time",
                                ChargeDescription=f"Correction of {prev:%Y-%m} token metering",
                                ChargePeriodStart=_ts(prev), ChargePeriodEnd=_ts(month)))
        tax = _round_cents(charges * a[7] // 100)
        rows.append(row(tax, ChargeCategory="Tax", ChargeFrequency="Recurring",
                        ChargeDescription=f"{'Sales tax' if a[2] == 'USD' else 'VAT'} {a[7]}%",
                        ChargePeriodStart=_ts(month), ChargePeriodEnd=_ts(nxt)))
        return pl.DataFrame(rows, schema={c: pl.String for c in FOCUS_COLUMNS})


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def generate(
    data_dir: Path,
    *,
    start: date = date(2026, 3, 1),
    days: int = 31,
    requests_per_day: int = 2000,
    seed: int = 7,
    focus_format: str = "csv",
    events_format: str = "jsonl.gz",
    restated_delivery: bool = False,
    billing: str = "request",
    telemetry_format: str = "events",
    list_prices: pl.LazyFrame | None = None,
    on_day: Callable[[date, int], None] | None = None,
) -> GenerateSummary:
    """Write synthetic FOCUS deliveries and telemetry event files under `<data_dir>/landing/`.

    billing: "request" (a usage row per request and token type, with x_RequestId) or "aggregated"
    (acct-us-001's usage as providers bill it, see AGGREGATED_ACCOUNTS).
    telemetry_format: the calls and outcomes as unitledger's flat events (landing/events/), as
    OTLP JSON (landing/otlp/: GenAI spans, outcomes as evaluation log records) or as LiteLLM
    SpendLogs CSV (landing/gateways/litellm/: calls, `spend` priced with `list_prices`,
    Telemetry.list_price_table(); outcomes stay flat events, a gateway has none): the same calls and
    outcomes whichever (unitledger.tools.telemetry_formats). `on_day(day, requests)` is called as each day is done (a
    progress bar)."""
    if telemetry_format not in TELEMETRY_FORMATS:
        raise ValueError(f"telemetry_format must be one of {list(TELEMETRY_FORMATS)}, not {telemetry_format!r}")
    if billing not in BILLING_STYLES:
        raise ValueError(f"billing must be one of {list(BILLING_STYLES)}, not {billing!r}")
    if focus_format not in _FOCUS_EXT:
        raise ValueError(f"focus_format must be one of {sorted(_FOCUS_EXT)}, not {focus_format!r}")
    if events_format not in _EVENT_EXT:
        raise ValueError(f"events_format must be one of {sorted(_EVENT_EXT)}, not {events_format!r}")
    if days < 1 or requests_per_day < 1:
        raise ValueError("days and requests_per_day must be >= 1")
    data_dir = Path(data_dir)
    focus_root = data_dir / "landing" / "focus"
    events_root = data_dir / "landing" / "events"
    focus_root.mkdir(parents=True, exist_ok=True)
    events_root.mkdir(parents=True, exist_ok=True)

    end = start + timedelta(days=days - 1)
    first_epoch_day = start.toordinal() - _EPOCH_ORD
    # months and their deliveries
    plans: dict[date, tuple[date, date, date]] = {}  # month -> (first, last, early cut)
    m = _month_start(start)
    while m <= end:
        first, last = max(start, m), min(end, _next_month(m) - timedelta(days=1))
        n = (last - first).days + 1
        plans[m] = (first, last, first + timedelta(days=max(1, n // 2) - 1))
        m = _next_month(m)

    open_deliveries: dict[tuple[int, date], list[_Delivery]] = {}

    def deliveries(acct: int, month: date) -> list[_Delivery]:
        key = (acct, month)
        if key not in open_deliveries:
            first, last, cut = plans[month]
            folder = focus_root / _ACCOUNTS[acct][0] / f"{month:%Y-%m}"
            ext = _FOCUS_EXT[focus_format]
            final_date = last + timedelta(days=1)
            aggregated = billing == "aggregated" and acct in AGGREGATED_ACCOUNTS
            final = _Delivery(folder / f"delivery-{final_date:%Y%m%d}" / f"part-0.{ext}",
                              focus_format, acct, month, last, False, seed, final_date, bg, aggregated)
            lst = [final]
            if restated_delivery:
                early_date = cut + timedelta(days=1) if cut < last else cut
                lst.append(_Delivery(folder / f"delivery-{early_date:%Y%m%d}" / f"part-0.{ext}",
                                     focus_format, acct, month, cut, True, seed, early_date, bg, aggregated))
            open_deliveries[key] = lst
        return open_deliveries[key]

    focus_files: list[Path] = []
    event_files: list[Path] = []
    focus_rows = events_written = requests = sessions = 0
    pending: pl.DataFrame | None = None
    bg = _Background()

    def finish_month(month: date) -> None:
        nonlocal focus_rows
        for acct in range(len(_ACCOUNTS)):
            lst = deliveries(acct, month)  # opens (empty) deliveries too: every account delivers
            final = lst[0]
            commitment = max(UNIT, -(-final.covered_effective // UNIT) * UNIT)
            for d in lst:
                d.finish(commitment, _midnight_epoch(d.folder_date))
                focus_files.append(d.path)
                focus_rows += d.rows
            del open_deliveries[(acct, month)]

    events_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="unitledger-events")
    events_job: Future | None = None
    try:
        for i in range(days):
            day = start + timedelta(days=i)
            sim = _simulate_day(seed, day, requests_per_day)
            day_requests = len(sim.calls["ts"])
            requests += day_requests
            sessions += sim.n_sessions
            ev = _day_events(sim, seed, first_epoch_day, days)
            usage = _usage_rows(sim, seed)
            del sim

            # telemetry: written by the events worker while this thread does the billing
            pending = ev if pending is None else pl.concat([pending, ev])
            del ev
            if pending["fidx"].min() == pending["fidx"].max() == i:  # e.g. the last day: no copy
                today, pending = pending, None
            else:
                today = pending.filter(pl.col("fidx") == i)
                pending = pending.filter(pl.col("fidx") != i)
            path = events_root / f"events-{day:%Y-%m-%d}.{_EVENT_EXT[events_format]}"
            if events_job is not None:
                events_written += events_job.result()
            events_job = events_worker.submit(
                _write_events_file, path, today, events_format, seed, _midnight_epoch(day + timedelta(days=1))
            )
            event_files.append(path)
            del today

            # billing
            if usage.height and usage["day"].max() > end.toordinal():
                usage = usage.filter(pl.col("day") <= end.toordinal())  # later usage is not billed yet
            parts = usage.partition_by("day", "acct", as_dict=True, maintain_order=True)
            del usage
            for (d_ord, acct), rows in sorted(parts.items()):
                for d in deliveries(acct, _month_start(date.fromordinal(d_ord))):
                    if d_ord <= d.last_day.toordinal():
                        d.add(rows)
            del parts
            if day == plans[_month_start(day)][1]:
                finish_month(_month_start(day))
            if on_day is not None:
                on_day(day, day_requests)
        if events_job is not None:
            events_written += events_job.result()
    except BaseException:
        if events_job is not None:
            events_job.cancel()
        events_worker.shutdown(wait=True)
        for lst in open_deliveries.values():
            for d in lst:
                d.abort()
        raise
    finally:
        events_worker.shutdown(wait=True)
        bg.close()

    if telemetry_format != "events":
        event_files = _rewrite_telemetry(data_dir / "landing", event_files, telemetry_format, list_prices)
    return GenerateSummary(
        focus_files=sorted(focus_files),
        event_files=event_files,
        focus_rows=focus_rows,
        events=events_written,
        requests=requests,
        sessions=sessions,
    )
