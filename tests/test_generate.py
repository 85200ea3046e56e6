"""Tests of unitledger.tools.generate: the synthetic landing data must be deterministic and carry every
kind of mess the pipeline has to survive. Every property is checked by reading the written files
back independently (json / gzip / polars), never through the generator's own structures."""

from __future__ import annotations

import gzip
import json
import os
import re
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from unitledger.tools.generate import GenerateSummary, generate

RPD, DAYS, START = 300, 3, date(2026, 3, 1)
SMALL = dict(start=START, days=DAYS, requests_per_day=RPD, seed=7)

LLM_FIELDS = {
    "event_type", "event_id", "timestamp", "request_id", "session_id", "feature_tag", "provider", "model",
    "model_version", "prompt_version", "input_tokens", "output_tokens", "cache_read_input_tokens",
    "cache_write_input_tokens", "attempt", "status",
}
OUTCOME_FIELDS = {"event_type", "event_id", "timestamp", "session_id", "feature_tag", "success", "escalated", "signal"}
DECIMAL_COLUMNS = (
    "BilledCost", "EffectiveCost", "ListCost", "ContractedCost", "ListUnitPrice", "ContractedUnitPrice",
    "ConsumedQuantity", "PricingQuantity",
)
REQUIRED_FOCUS = (
    "BilledCost", "BillingAccountId", "BillingAccountName", "BillingAccountType", "BillingCurrency",
    "BillingPeriodStart", "BillingPeriodEnd", "ChargeCategory", "ChargeClass", "ChargeDescription", "ChargeFrequency",
    "ChargePeriodStart", "ChargePeriodEnd", "CommitmentDiscountCategory", "CommitmentDiscountId",
    "CommitmentDiscountStatus", "CommitmentDiscountType", "ConsumedQuantity", "ConsumedUnit", "ContractedCost",
    "ContractedUnitPrice", "EffectiveCost", "HostProviderName", "InvoiceId", "InvoiceIssuerName", "ListCost",
    "ListUnitPrice", "PricingCategory", "PricingQuantity", "PricingUnit", "ProviderName", "PublisherName",
    "RegionId", "RegionName", "ResourceId", "ServiceCategory", "ServiceSubcategory", "ServiceName",
    "ServiceProviderName", "SkuId", "SkuMeter", "SkuPriceId", "SubAccountId", "Tags", "x_RequestId",
    "x_ModelVersion", "x_PromptVersion", "x_FeatureTag",
)
RFC3339_US = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
FOCUS_TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


# --- reading the files back -----------------------------------------------------------------------


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def read_events(root: Path) -> list[dict]:
    """Every event line/row of every event file, with `_file` (file name) added."""
    out = []
    for f in sorted((root / "landing" / "events").iterdir()):
        if f.name.endswith(".parquet"):
            for row in pl.read_parquet(f).to_dicts():
                row = {k: v for k, v in row.items() if v is not None}
                row["_file"] = f.name
                out.append(row)
        else:
            opener = gzip.open if f.name.endswith(".gz") else open
            with opener(f, "rt", encoding="utf-8") as fh:
                for line in fh:
                    row = json.loads(line)
                    row["_file"] = f.name
                    out.append(row)
    return out


def focus_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "landing" / "focus").rglob("part-*") if p.is_file())


def read_focus_file(path: Path) -> pl.DataFrame:
    if path.name.endswith(".parquet"):
        return pl.read_parquet(path)
    return pl.read_csv(path, infer_schema=False, null_values=["NULL"])


def read_focus(root: Path) -> pl.DataFrame:
    frames = [read_focus_file(p).with_columns(_file=pl.lit(str(p.relative_to(root)))) for p in focus_files(root)]
    return pl.concat(frames)


def latest_deliveries(root: Path) -> pl.DataFrame:
    """Rows of the newest delivery (by mtime) of each account/month folder."""
    newest = {}
    for p in focus_files(root):
        key = p.parent.parent
        if key not in newest or p.stat().st_mtime > newest[key].stat().st_mtime:
            newest[key] = p
    return pl.concat([read_focus_file(p) for p in sorted(newest.values())])


def all_bytes(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# --- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, GenerateSummary]:
    root = tmp_path_factory.mktemp("gen_csv")
    return root, generate(root, **SMALL)


@pytest.fixture(scope="module")
def events(run) -> list[dict]:
    return read_events(run[0])


@pytest.fixture(scope="module")
def calls(events) -> list[dict]:
    seen, out = set(), []
    for e in events:
        if e["event_type"] == "llm_call" and e["event_id"] not in seen:
            seen.add(e["event_id"])
            out.append(e)
    return out


@pytest.fixture(scope="module")
def focus(run) -> pl.DataFrame:
    return latest_deliveries(run[0])


@pytest.fixture(scope="module")
def usage(focus) -> pl.DataFrame:
    return focus.filter(pl.col("x_RequestId").is_not_null())


# --- layout, summary, determinism ------------------------------------------------------------------


def test_layout_mtimes_and_summary(run, events):
    root, summary = run
    names = sorted(p.name for p in (root / "landing" / "events").iterdir())
    assert names == [f"events-2026-03-0{d}.jsonl.gz" for d in (1, 2, 3)]
    assert [p.name for p in summary.event_files] == names
    for p in summary.event_files:
        day = date.fromisoformat(p.name[7:17])
        midnight_after = datetime(day.year, day.month, day.day, tzinfo=timezone.utc) + timedelta(days=1)
        assert p.stat().st_mtime == midnight_after.timestamp()
    rel = [str(p.relative_to(root / "landing" / "focus")) for p in focus_files(root)]
    assert rel == [
        "acct-eu-002/2026-03/delivery-20260304/part-0.csv",
        "acct-us-001/2026-03/delivery-20260304/part-0.csv",
    ]
    assert sorted(summary.focus_files) == focus_files(root)
    for p in focus_files(root):
        assert p.stat().st_mtime == datetime(2026, 3, 4, tzinfo=timezone.utc).timestamp()
    assert summary.events == len(events)
    assert summary.focus_rows == read_focus(root).height
    assert summary.requests == RPD * DAYS
    sessions = {e["session_id"] for e in events}
    assert summary.sessions == len({e["session_id"] for e in events if e["event_type"] == "llm_call"} | sessions)
    # only landing/ was written
    assert sorted(p.name for p in root.iterdir()) == ["landing"]
    assert sorted(p.name for p in (root / "landing").iterdir()) == ["events", "focus"]
    assert not [p for p in root.rglob(".*")], "temporary files left behind"


def test_same_seed_same_bytes_other_seed_differs(run, tmp_path):
    root, _ = run
    again = tmp_path / "again"
    generate(again, **SMALL)
    assert all_bytes(again) == all_bytes(root)
    other = tmp_path / "other"
    generate(other, **{**SMALL, "seed": 8})
    a, b = all_bytes(root), all_bytes(other)
    assert a.keys() == b.keys()
    assert all(a[k][0] != b[k][0] for k in a)


def test_rerun_overwrites_and_touches_nothing_else(tmp_path):
    kw = dict(SMALL, requests_per_day=60, days=2)
    generate(tmp_path, **kw)
    first = all_bytes(tmp_path)
    sentinel = tmp_path / "landing" / "focus" / "keep.txt"
    sentinel.write_text("mine")
    other = tmp_path / "warehouse" / "x.parquet"
    other.parent.mkdir()
    other.write_bytes(b"not touched")
    victim = next(iter(p for p in tmp_path.rglob("part-0.csv")))
    victim.write_text("garbage")
    generate(tmp_path, **kw)
    after = all_bytes(tmp_path)
    assert sentinel.read_text() == "mine" and other.read_bytes() == b"not touched"
    del after[str(sentinel.relative_to(tmp_path))], after[str(other.relative_to(tmp_path))]
    assert after == first


def test_bad_arguments():
    with pytest.raises(ValueError):
        generate(Path("/nonexistent/never"), focus_format="xlsx")
    with pytest.raises(ValueError):
        generate(Path("/nonexistent/never"), events_format="csv")


# --- telemetry ----------------------------------------------------------------------------------------


def test_event_fields_and_types(events):
    assert {e["event_type"] for e in events} == {"llm_call", "outcome"}
    for e in events:
        fields = set(e) - {"_file"}
        assert fields == (LLM_FIELDS if e["event_type"] == "llm_call" else OUTCOME_FIELDS)
        assert RFC3339_US.match(e["timestamp"])
        if e["event_type"] == "llm_call":
            tokens = [e[k] for k in ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_write_input_tokens")]
            assert all(isinstance(t, int) and t >= 0 for t in tokens)
            # OpenTelemetry convention: input includes cache reads and writes
            assert e["input_tokens"] > e["cache_read_input_tokens"] + e["cache_write_input_tokens"]
            assert isinstance(e["attempt"], int) and e["attempt"] >= 1
            assert e["status"] in ("ok", "error")
            assert e["provider"] in ("anthropic", "openai")
            assert e["event_id"].startswith("evt_") and e["request_id"].startswith("req_")
        else:
            assert isinstance(e["success"], bool) and isinstance(e["escalated"], bool)
            assert e["signal"] in ("explicit", "implicit")


def test_events_land_in_the_file_of_their_day(events):
    # Late labels after the last generated day go to the last file; duplicates may be re-delivered
    # in the next day's file; everything else is in the file of its UTC date.
    last = START + timedelta(days=DAYS - 1)
    ids = Counter(e["event_id"] for e in events)
    for e in events:
        day = min(_ts(e["timestamp"]).date(), last)
        file_day = date.fromisoformat(e["_file"][7:17])
        if ids[e["event_id"]] == 1:
            assert file_day == day
        else:
            assert file_day in (day, min(day + timedelta(days=1), last))


def test_requests_per_day_and_join_keys(run, calls, usage):
    root, summary = run
    telemetry_ids = {c["request_id"] for c in calls}
    billing_ids = set(usage["x_RequestId"].to_list())
    assert len(telemetry_ids) == len(calls)  # one llm_call per request id
    assert len(telemetry_ids | billing_ids) == summary.requests == RPD * DAYS
    per_day = Counter(c["timestamp"][:10] for c in calls)
    for d in ("2026-03-01", "2026-03-02", "2026-03-03"):
        assert abs(per_day[d] - RPD) <= 0.02 * RPD + 3, per_day
    billing_only = billing_ids - telemetry_ids
    telemetry_only = telemetry_ids - billing_ids
    assert 1 <= len(billing_only) <= 0.03 * RPD * DAYS
    assert 1 <= len(telemetry_only) <= 0.03 * RPD * DAYS


def test_duplicate_events_same_content(events):
    by_id = defaultdict(list)
    for e in events:
        by_id[e["event_id"]].append(e)
    dups = {k: v for k, v in by_id.items() if len(v) > 1}
    assert 0.002 * len(by_id) <= len(dups) <= 0.03 * len(by_id)
    same_file = other_file = 0
    for copies in dups.values():
        contents = [{k: v for k, v in c.items() if k != "_file"} for c in copies]
        assert all(c == contents[0] for c in contents)
        files = {c["_file"] for c in copies}
        same_file += len(files) == 1
        other_file += len(files) > 1
    assert same_file > 0 and other_file > 0


def test_events_roughly_but_not_strictly_sorted(run):
    root, _ = run
    for f in sorted((root / "landing" / "events").iterdir()):
        with gzip.open(f, "rt") as fh:
            stamps = [json.loads(line)["timestamp"] for line in fh]
        inversions = sum(a > b for a, b in zip(stamps, stamps[1:]))
        assert 0 < inversions < 0.5 * len(stamps)


def test_retries_have_new_request_ids(calls):
    by_session = defaultdict(list)
    for c in calls:
        by_session[c["session_id"]].append(c)
    retries = [c for c in calls if c["attempt"] >= 2]
    assert 0.03 <= len(retries) / len(calls) <= 0.08
    assert any(c["attempt"] == 2 for c in retries)
    explained = 0
    for r in retries:
        earlier = [
            c for c in by_session[r["session_id"]]
            if c["attempt"] == r["attempt"] - 1 and c["status"] == "error" and c["timestamp"] < r["timestamp"]
        ]
        assert all(c["request_id"] != r["request_id"] for c in earlier)
        explained += bool(earlier)
    assert explained >= 0.9 * len(retries)  # the failed attempt may be lost from telemetry
    assert 0.03 <= sum(c["status"] == "error" for c in calls) / len(calls) <= 0.12


def test_sessions_cross_midnight(calls):
    dates_by_session = defaultdict(set)
    for c in calls:
        dates_by_session[c["session_id"]].add(c["timestamp"][:10])
    for d in range(DAYS):
        day, nxt = str(START + timedelta(days=d)), str(START + timedelta(days=d + 1))
        crossing = [s for s, ds in dates_by_session.items() if {day, nxt} <= ds]
        assert len(crossing) >= 3, (day, crossing)


def test_features_models_and_behaviour(calls):
    features = {c["feature_tag"] for c in calls}
    assert len(features) >= 5
    support = [c for c in calls if c["feature_tag"] == "support_chat"]
    models = {c["model"] for c in support}
    assert {"claude-haiku", "claude-opus"} <= models
    turns = {}
    for m in ("claude-haiku", "claude-opus"):
        first = [c for c in support if c["model"] == m and c["attempt"] == 1]
        turns[m] = len(first) / len({c["session_id"] for c in first})
    assert turns["claude-haiku"] > 3.0 > 2.0 > turns["claude-opus"] >= 1.0
    assert {c["model_version"] for c in calls} >= {"claude-haiku-2026-01", "claude-opus-2026-02"}
    # token sizes differ by feature
    mean_input = {f: sum(c["input_tokens"] for c in calls if c["feature_tag"] == f and c["attempt"] == 1)
                  / max(1, sum(1 for c in calls if c["feature_tag"] == f and c["attempt"] == 1)) for f in features}
    assert max(mean_input.values()) > 3 * min(mean_input.values())


def test_prompt_version_changes_mid_month(tmp_path):
    generate(tmp_path, start=date(2026, 3, 15), days=2, requests_per_day=200, seed=3)
    support = [e for e in read_events(tmp_path) if e["event_type"] == "llm_call" and e["feature_tag"] == "support_chat"]
    first_calls = {}
    for c in sorted(support, key=lambda c: c["timestamp"]):
        first_calls.setdefault(c["session_id"], c)
    by_day = defaultdict(set)
    for c in first_calls.values():
        by_day[c["timestamp"][:10]].add(c["prompt_version"])
    assert by_day["2026-03-15"] == {"v3"}
    assert by_day["2026-03-16"] == {"v4"}


def test_outcomes_late_and_corrected(calls, events):
    outcomes = list({e["event_id"]: e for e in events if e["event_type"] == "outcome"}.values())
    call_sessions = defaultdict(list)
    for c in calls:
        call_sessions[c["session_id"]].append(_ts(c["timestamp"]))
    labelled = {o["session_id"] for o in outcomes}
    share = len(labelled & set(call_sessions)) / len(call_sessions)
    assert 0.8 <= share <= 0.95
    by_session = defaultdict(list)
    for o in outcomes:
        by_session[o["session_id"]].append(o)
    corrected = 0
    for s, labels in by_session.items():
        labels.sort(key=lambda o: o["timestamp"])
        if s in call_sessions:
            delay = _ts(labels[0]["timestamp"]) - max(call_sessions[s])
            assert timedelta(minutes=30) <= delay <= timedelta(days=3, hours=1)
        if len(labels) > 1:
            assert len(labels) == 2 and labels[1]["timestamp"] > labels[0]["timestamp"]
            assert labels[1]["success"] != labels[0]["success"]  # the later label wins
            corrected += 1
    assert 0.01 <= corrected / len(by_session) <= 0.12
    latest = [v[-1] for v in by_session.values()]
    esc_fail = [o["escalated"] for o in latest if not o["success"]]
    esc_ok = [o["escalated"] for o in latest if o["success"]]
    assert sum(esc_fail) / len(esc_fail) > 0.25 > sum(esc_ok) / len(esc_ok) > 0
    assert 0.5 < sum(o["success"] for o in latest) / len(latest) < 0.95


# --- billing -------------------------------------------------------------------------------------------


def test_focus_columns_and_timestamps(run, focus):
    for p in focus_files(run[0]):
        header = p.read_text().splitlines()[0].split(",")
        assert set(REQUIRED_FOCUS) <= set(header)
        assert len(header) == len(set(header))
    for col in ("BillingPeriodStart", "BillingPeriodEnd", "ChargePeriodStart", "ChargePeriodEnd"):
        assert focus[col].drop_nulls().len() == focus.height
        assert all(FOCUS_TS.match(v) for v in focus[col].to_list())
    assert set(focus["BillingPeriodStart"]) == {"2026-03-01T00:00:00Z"}
    assert set(focus["BillingPeriodEnd"]) == {"2026-04-01T00:00:00Z"}
    u = focus.filter(pl.col("x_RequestId").is_not_null())
    assert set(u["ServiceCategory"]) == {"AI and Machine Learning"}
    assert set(u["ServiceSubcategory"]) == {"Generative AI"}
    assert set(u["ChargeCategory"]) == {"Usage"} and set(u["ChargeFrequency"]) == {"Usage-Based"}
    assert u["ChargeClass"].null_count() == u.height
    assert set(u["ConsumedUnit"]) == {"Tokens"} == set(u["PricingUnit"])
    assert set(u["SkuMeter"]) == {"Input Tokens", "Output Tokens", "Cache Read Tokens", "Cache Write Tokens"}
    for row in u.select("ChargePeriodStart", "ChargePeriodEnd").unique().iter_rows():
        start, end = _ts(row[0]), _ts(row[1])
        assert start.minute == start.second == 0 and end - start == timedelta(hours=1)


def test_money_is_exact_decimal_text(run, focus):
    raw = "".join(p.read_text() for p in focus_files(run[0]))
    assert ",NULL," in raw  # real exports write some nulls as the string NULL
    enote = 0
    for col in DECIMAL_COLUMNS:
        for text in focus[col].drop_nulls().to_list():
            value = Decimal(text)
            assert value.is_finite() and value.as_tuple().exponent >= -12, (col, text)
            assert re.fullmatch(r"-?\d+(\.\d+)?([eE][-+]?\d+)?", text), (col, text)
            enote += "E" in text.upper()
    assert enote > 0
    for col in ("BilledCost", "EffectiveCost", "ListCost", "ContractedCost"):
        assert focus[col].null_count() == 0


def test_usage_cost_is_quantity_times_price(usage):
    d = lambda s: Decimal(s)  # noqa: E731
    covered = 0
    for r in usage.iter_rows(named=True):
        qty = d(r["PricingQuantity"])
        assert qty == d(r["ConsumedQuantity"]) and qty > 0 and qty == qty.to_integral_value()
        assert d(r["ListCost"]) == qty * d(r["ListUnitPrice"])
        assert d(r["ContractedCost"]) == qty * d(r["ContractedUnitPrice"])
        assert d(r["ContractedUnitPrice"]) <= d(r["ListUnitPrice"])
        if r["CommitmentDiscountStatus"] == "Used":
            covered += 1
            assert d(r["BilledCost"]) == 0 and d(r["EffectiveCost"]) > 0
            assert r["CommitmentDiscountId"] and r["PricingCategory"] == "Committed"
        else:
            assert r["CommitmentDiscountId"] is None
            assert d(r["BilledCost"]) == d(r["EffectiveCost"]) == d(r["ContractedCost"])
    assert covered > 0


def test_rows_per_request_about_two_and_a_half(usage):
    ratio = usage.height / usage["x_RequestId"].n_unique()
    assert 2.0 <= ratio <= 3.0


def test_tokens_match_telemetry(calls, usage):
    by_req = defaultdict(dict)
    for r in usage.select("x_RequestId", "SkuMeter", "ConsumedQuantity", "x_ModelVersion", "x_FeatureTag",
                          "x_PromptVersion", "ChargePeriodStart", "ChargePeriodEnd").iter_rows(named=True):
        assert r["SkuMeter"] not in by_req[r["x_RequestId"]]
        by_req[r["x_RequestId"]][r["SkuMeter"]] = r
    matched = failed_billed = 0
    for c in calls:
        rows = by_req.get(c["request_id"])
        if not rows:
            continue
        matched += 1
        q = {k: int(v["ConsumedQuantity"]) for k, v in rows.items()}
        cr, cw = q.get("Cache Read Tokens", 0), q.get("Cache Write Tokens", 0)
        assert q["Input Tokens"] + cr + cw == c["input_tokens"]
        assert cr == c["cache_read_input_tokens"] and cw == c["cache_write_input_tokens"]
        assert q.get("Output Tokens", 0) == c["output_tokens"]
        any_row = next(iter(rows.values()))
        assert (any_row["x_ModelVersion"], any_row["x_FeatureTag"], any_row["x_PromptVersion"]) == (
            c["model_version"], c["feature_tag"], c["prompt_version"])
        assert _ts(any_row["ChargePeriodStart"]) <= _ts(c["timestamp"]) < _ts(any_row["ChargePeriodEnd"])
        failed_billed += c["status"] == "error"
    assert matched >= 0.95 * len(calls)
    assert failed_billed > 0  # the retry tax is billed


def test_rows_without_request_id(focus):
    other = focus.filter(pl.col("x_RequestId").is_null())
    cats = Counter(other["ChargeCategory"].to_list())
    assert {"Tax", "Credit", "Purchase", "Usage", "Adjustment"} <= set(cats)
    for acct in ("acct-us-001", "acct-eu-002"):
        mine = other.filter(pl.col("BillingAccountId") == acct)
        assert mine.filter(pl.col("ChargeCategory") == "Tax").height == 1
        credit = mine.filter(pl.col("ChargeCategory") == "Credit")
        assert credit.height == 1
        assert Decimal(credit["BilledCost"][0]) < 0 and Decimal(credit["EffectiveCost"][0]) < 0
        daily = mine.filter(pl.col("ChargeCategory") == "Usage")
        assert daily.height == DAYS  # one gateway fee row per day
        purchase = mine.filter((pl.col("ChargeCategory") == "Purchase") & (pl.col("ChargeFrequency") == "One-Time"))
        assert purchase.height == 1
        amount = Decimal(purchase["BilledCost"][0])
        assert amount > 0 and Decimal(purchase["EffectiveCost"][0]) == 0
        cd_id = purchase["CommitmentDiscountId"][0]
        covered = focus.filter((pl.col("CommitmentDiscountId") == cd_id) & (pl.col("ChargeCategory") == "Usage"))
        assert covered.height > 0 and set(covered["CommitmentDiscountStatus"]) == {"Used"}
        effective = sum(Decimal(v) for v in covered["EffectiveCost"])
        assert 0 < effective <= amount
        assert sum(Decimal(v) for v in covered["BilledCost"]) == 0
    corrections = other.filter(pl.col("ChargeClass") == "Correction")
    assert corrections.height >= 1
    assert set(corrections["ChargeCategory"]) == {"Adjustment"}
    assert all(_ts(s) < _ts("2026-03-01T00:00:00Z") for s in corrections["ChargePeriodStart"])


def test_accounts_currencies_invoices(focus, usage):
    pairs = set(focus.select("BillingAccountId", "BillingCurrency").unique().iter_rows())
    assert pairs == {("acct-us-001", "USD"), ("acct-eu-002", "EUR")}
    invoices = set(focus.select("BillingAccountId", "InvoiceId").unique().iter_rows())
    assert invoices == {("acct-us-001", "INV-2026-03-acct-us-001"), ("acct-eu-002", "INV-2026-03-acct-eu-002")}
    eur = usage.filter(pl.col("BillingCurrency") == "EUR")
    assert 0.02 * usage.height < eur.height < 0.5 * usage.height
    assert {"email_draft"} <= set(eur["x_FeatureTag"]) and "email_draft" not in set(
        usage.filter(pl.col("BillingCurrency") == "USD")["x_FeatureTag"])
    assert set(usage["ProviderName"]) == {"Anthropic", "OpenAI"}
    assert usage.filter(pl.col("ProviderName") != pl.col("ServiceProviderName")).height == 0
    assert usage.filter(pl.col("ProviderName") != pl.col("HostProviderName")).height == 0


# --- restatement and formats ------------------------------------------------------------------------------


def test_restated_delivery_is_older_and_superseded(tmp_path, run):
    generate(tmp_path, **SMALL, restated_delivery=True)
    missing = changed = 0
    for acct in ("acct-us-001", "acct-eu-002"):
        folders = sorted((tmp_path / "landing" / "focus" / acct / "2026-03").iterdir())
        assert [f.name for f in folders] == ["delivery-20260302", "delivery-20260304"]
        early, final = (f / "part-0.csv" for f in folders)
        assert early.stat().st_mtime < final.stat().st_mtime
        assert early.stat().st_mtime == datetime(2026, 3, 2, tzinfo=timezone.utc).timestamp()
        e, f = read_focus_file(early), read_focus_file(final)
        e_days = set(e["ChargePeriodStart"].str.slice(0, 10))
        assert e_days <= {"2026-03-01"} < set(f["ChargePeriodStart"].str.slice(0, 10))
        assert e.filter(pl.col("ChargeCategory") == "Credit").height == 0  # not yet issued
        # on the day both cover, the earlier snapshot lacks rows and has other quantities and costs
        key = ["x_RequestId", "SkuMeter"]
        fe = f.filter(pl.col("x_RequestId").is_not_null() & pl.col("ChargePeriodStart").str.starts_with("2026-03-01"))
        ee = e.filter(pl.col("x_RequestId").is_not_null())
        assert ee.join(fe, on=key, how="anti").height == 0
        missing += fe.height - ee.height
        both = ee.join(fe, on=key, suffix="_f")
        diff = both.filter(pl.col("PricingQuantity") != pl.col("PricingQuantity_f"))
        assert diff.filter(pl.col("ListCost") == pl.col("ListCost_f")).height == 0
        changed += diff.height
    assert missing > 0 and changed > 0
    # the final deliveries are the same as without restatement
    assert read_focus(tmp_path).filter(pl.col("_file").str.contains("20260304")).drop("_file").equals(
        read_focus(run[0]).drop("_file"))


def test_parquet_holds_the_same_values_as_csv(run, tmp_path):
    root, _ = run
    generate(tmp_path, **SMALL, focus_format="parquet", events_format="parquet")
    csv_files, pq_files = focus_files(root), focus_files(tmp_path)
    assert [p.with_suffix("") for p in csv_files] == [
        root / p.relative_to(tmp_path).with_suffix("") for p in pq_files]
    for c, p in zip(csv_files, pq_files):
        a, b = read_focus_file(c), read_focus_file(p)
        assert b.schema == pl.Schema({name: pl.String for name in a.columns})  # all text, decimals included
        assert a.equals(b)
    ev_pq = pl.read_parquet(sorted((tmp_path / "landing" / "events").iterdir()))
    assert ev_pq.schema["input_tokens"] == pl.Int64 and ev_pq.schema["success"] == pl.Boolean
    assert ev_pq.schema["timestamp"] == pl.String
    key = lambda e: json.dumps({k: v for k, v in e.items() if k != "_file"}, sort_keys=True)  # noqa: E731
    assert sorted(map(key, read_events(tmp_path))) == sorted(map(key, read_events(root)))


def test_plain_and_gzip_formats_hold_the_same_content(run, tmp_path):
    root, _ = run
    generate(tmp_path, **SMALL, focus_format="csv.gz", events_format="jsonl")
    for a, b in zip(sorted((root / "landing" / "events").iterdir()), sorted((tmp_path / "landing" / "events").iterdir())):
        assert b.name == a.name.removesuffix(".gz")
        assert gzip.decompress(a.read_bytes()) == b.read_bytes()
    for a, b in zip(focus_files(root), focus_files(tmp_path)):
        assert b.name == "part-0.csv.gz"
        assert gzip.decompress(b.read_bytes()) == a.read_bytes()


def test_month_boundary_gets_two_billing_periods(tmp_path):
    generate(tmp_path, start=date(2026, 3, 30), days=3, requests_per_day=80, seed=5)
    rel = sorted(str(p.relative_to(tmp_path / "landing" / "focus")) for p in focus_files(tmp_path))
    assert rel == [
        "acct-eu-002/2026-03/delivery-20260401/part-0.csv",
        "acct-eu-002/2026-04/delivery-20260402/part-0.csv",
        "acct-us-001/2026-03/delivery-20260401/part-0.csv",
        "acct-us-001/2026-04/delivery-20260402/part-0.csv",
    ]
    for p in focus_files(tmp_path):
        f = read_focus_file(p)
        month = p.parent.parent.name
        assert set(f["BillingPeriodStart"]) == {f"{month}-01T00:00:00Z"}
        usage_days = set(f.filter(pl.col("x_RequestId").is_not_null())["ChargePeriodStart"].str.slice(0, 7))
        assert usage_days == {month}
