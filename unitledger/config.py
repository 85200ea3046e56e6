"""Settings users edit without touching code: unitledger.toml (see the file for its keys)."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from pathlib import Path

import polars as pl

from schemas.allocation import TOKEN_TYPES
from schemas.types import ISO_4217, MONEY

CONFIG_ENV = "UNITLEDGER_CONFIG"
START_DATE_ENV = "UNITLEDGER_START_DATE"
_BUNDLED = Path(__file__).resolve().parents[1] / "unitledger.toml"
_CENT = Decimal("0.01")


class ConfigError(Exception):
    """The settings file is wrong; the message names the file and the key."""


@dataclass(frozen=True)
class LaborCost:
    currency: str
    feature_tag: str | None  # None: the currency's default
    amount: Decimal


@dataclass(frozen=True)
class Nightly:
    """[schedule]: the trailing window the nightly run re-materializes."""

    trailing_days: int | None = None  # None: month to date + previous month until invoice_final_day
    invoice_final_day: int = 5


@dataclass(frozen=True)
class Freshness:
    """[freshness]: when the (warning-only) freshness checks complain."""

    label_coverage_floor: float = 0.8
    label_grace_days: int = 3


@dataclass(frozen=True)
class Reconciliation:
    """[reconciliation]: when a reconciliation row's status is warn or fail (shares are 0-1)."""

    unmatched_requests_warn: float = 0.01
    unmatched_requests_fail: float = 0.05
    telemetry_only_warn: float = 0.02
    coverage_warn: float = 0.0
    invoice_tolerance: Decimal = Decimal(0)
    gateway_gap_warn: float = 0.05  # gateway_gap's warning: |gateway − invoice| above this share of the invoice


@dataclass(frozen=True)
class Bounds:
    """[pipeline]: how far apart the records of one request or one intent may lie (whole UTC days).

    - session_days S: an intent is its session's calls from its first call's date up to S days after
      it; later calls are reported, not counted in the intent.
    - billing_delay_days B: a FOCUS row belongs to its request's call when their dates are at most B
      days apart (at least 1: a call just before midnight is billed after it); a row further away is
      late billing, reported and reconciled on its own.
    - detection_horizon_days H: how far from a FOCUS row the pipeline looks for its request's call (or
      its request's first row) to tell late billing from a billing-only request. At least 2 × B."""

    session_days: int = 2
    billing_delay_days: int = 2
    detection_horizon_days: int = 31


@dataclass(frozen=True)
class Settings:
    path: Path
    start_date: date
    labor: tuple[LaborCost, ...]
    bounds: Bounds = Bounds()
    nightly: Nightly = Nightly()
    freshness: Freshness = Freshness()
    reconciliation: Reconciliation = Reconciliation()
    telemetry: Telemetry = field(default_factory=lambda: Telemetry())
    decisions: Decisions = field(default_factory=lambda: Decisions())
    allocation: Allocation = field(default_factory=lambda: Allocation())

    def labor_table(self) -> pl.LazyFrame:
        """Labor cost of one failed intent per (feature_tag, billing_currency); feature null = default."""
        return pl.DataFrame(
            {
                "feature_tag": [c.feature_tag for c in self.labor],
                "billing_currency": [c.currency for c in self.labor],
                "labor_cost_per_failure": [c.amount for c in self.labor],
            },
            schema={"feature_tag": pl.String, "billing_currency": pl.String, "labor_cost_per_failure": MONEY},
        ).lazy()


def config_path(explicit: Path | None = None) -> Path:
    chosen = explicit or os.environ.get(CONFIG_ENV)
    if chosen:
        if not Path(chosen).is_file():
            raise ConfigError(f"{chosen}: no such config file")
        return Path(chosen).resolve()
    local = Path("unitledger.toml")
    return local.resolve() if local.is_file() else _BUNDLED


def load_settings(explicit: Path | None = None) -> Settings:
    path = config_path(explicit)
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    pipeline = raw.get("pipeline", {})
    start_text = os.environ.get(START_DATE_ENV) or pipeline.get("start_date", "2026-01-01")
    try:
        start = date.fromisoformat(str(start_text))
    except ValueError as exc:
        raise ConfigError(f"{path}: pipeline.start_date {start_text!r} is not a YYYY-MM-DD date") from exc
    return Settings(
        path=path,
        start_date=start,
        labor=tuple(_labor(path, raw.get("labor", {}))),
        bounds=_bounds(path, pipeline),
        nightly=_nightly(path, raw.get("schedule", {})),
        freshness=_freshness(path, raw.get("freshness", {})),
        reconciliation=_reconciliation(path, raw.get("reconciliation", {})),
        telemetry=_telemetry(path, raw.get("telemetry", {})),
        decisions=_decisions(path, raw.get("decisions", {})),
        allocation=parse_allocation(path, raw.get("allocation", {})),
    )


def _int(path: Path, key: str, value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"{path}: {key}: {value!r} must be a whole number from {lo} to {hi}")
    return value


def _bounds(path: Path, section: dict) -> Bounds:
    unknown = set(section) - {"start_date", *Bounds.__dataclass_fields__}
    if unknown:
        raise ConfigError(f"{path}: [pipeline]: unknown key(s) {', '.join(sorted(unknown))}")
    days = {name: section.get(name, getattr(Bounds, name)) for name in Bounds.__dataclass_fields__}
    bounds = Bounds(
        session_days=_int(path, "pipeline.session_days", days["session_days"], 0, 366),
        billing_delay_days=_int(path, "pipeline.billing_delay_days", days["billing_delay_days"], 1, 183),
        detection_horizon_days=_int(path, "pipeline.detection_horizon_days", days["detection_horizon_days"], 2, 3660),
    )
    if bounds.detection_horizon_days < 2 * bounds.billing_delay_days:
        raise ConfigError(
            f"{path}: pipeline.detection_horizon_days ({bounds.detection_horizon_days}) must be at least twice "
            f"pipeline.billing_delay_days ({bounds.billing_delay_days})"
        )
    return bounds


def _nightly(path: Path, section: dict) -> Nightly:
    trailing = section.get("trailing_days")
    return Nightly(
        trailing_days=None if trailing is None else _int(path, "schedule.trailing_days", trailing, 1, 3660),
        invoice_final_day=_int(path, "schedule.invoice_final_day", section.get("invoice_final_day", Nightly.invoice_final_day), 0, 28),
    )


def _freshness(path: Path, section: dict) -> Freshness:
    floor = section.get("label_coverage_floor", Freshness.label_coverage_floor)
    if isinstance(floor, bool) or not isinstance(floor, int | float) or not 0 <= floor <= 1:
        raise ConfigError(f"{path}: freshness.label_coverage_floor: {floor!r} must be a number from 0 to 1")
    grace = _int(path, "freshness.label_grace_days", section.get("label_grace_days", Freshness.label_grace_days), 0, 60)
    return Freshness(label_coverage_floor=float(floor), label_grace_days=grace)


def _share(path: Path, key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ConfigError(f"{path}: {key}: {value!r} must be a number from 0 to 1")
    return float(value)


def _reconciliation(path: Path, section: dict) -> Reconciliation:
    defaults = Reconciliation()
    unknown = set(section) - set(Reconciliation.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"{path}: [reconciliation]: unknown key(s) {', '.join(sorted(unknown))}")
    shares = {
        name: _share(path, f"reconciliation.{name}", section.get(name, getattr(defaults, name)))
        for name in ("unmatched_requests_warn", "unmatched_requests_fail", "telemetry_only_warn", "coverage_warn", "gateway_gap_warn")
    }
    if shares["unmatched_requests_warn"] > shares["unmatched_requests_fail"]:
        raise ConfigError(f"{path}: reconciliation.unmatched_requests_warn must not exceed unmatched_requests_fail")
    tolerance = _decimal(path, "reconciliation.invoice_tolerance", section.get("invoice_tolerance", defaults.invoice_tolerance))
    return Reconciliation(**shares, invoice_tolerance=tolerance)


def _labor(path: Path, section: dict) -> list[LaborCost]:
    costs = []
    for currency, table in section.items():
        if currency not in ISO_4217:
            raise ConfigError(f"{path}: [labor.{currency}]: not an ISO 4217 currency code")
        if "default" not in table:
            raise ConfigError(f"{path}: [labor.{currency}] needs a `default` entry")
        costs.append(LaborCost(currency, None, _amount(path, f"labor.{currency}.default", table["default"])))
        for feature, spec in table.get("features", {}).items():
            costs.append(LaborCost(currency, feature, _amount(path, f"labor.{currency}.features.{feature}", spec)))
    return costs


def _decimal(path: Path, key: str, value: object) -> Decimal:
    try:
        result = Decimal(str(value))
    except InvalidOperation as exc:
        raise ConfigError(f"{path}: {key}: {value!r} is not a number") from exc
    if not result.is_finite() or result < 0:
        raise ConfigError(f"{path}: {key}: {value!r} must be a finite number >= 0")
    return result


def _amount(path: Path, key: str, spec: object) -> Decimal:
    if isinstance(spec, dict) and set(spec) == {"flat"}:
        return _decimal(path, f"{key}.flat", spec["flat"])
    if isinstance(spec, dict) and set(spec) == {"hourly_rate", "minutes_to_fix"}:
        rate = _decimal(path, f"{key}.hourly_rate", spec["hourly_rate"])
        minutes = _decimal(path, f"{key}.minutes_to_fix", spec["minutes_to_fix"])
        return (rate * minutes / 60).quantize(_CENT, rounding=ROUND_HALF_EVEN)
    raise ConfigError(f"{path}: {key}: give either {{ flat = ... }} or {{ hourly_rate = ..., minutes_to_fix = ... }}")


# --- [telemetry]: OTLP GenAI spans and gateway logs (unitledger.sources.otlp / .gateways) --------

LIST_PRICE_TOKEN_TYPES = ("input", "output", "cache_read", "cache_write")
SESSION_FALLBACKS = ("trace", "call")
TELEMETRY_SOURCE_FORMATS = ("otlp", "litellm", "openrouter", "helicone")
_PER_MILLION = Decimal(1_000_000)


@dataclass(frozen=True)
class ListPrice:
    """One list price: per token of `token_type`, from `effective_from` (UTC date) until the next
    entry of the same provider and model."""

    provider: str
    model: str
    token_type: str
    currency: str
    effective_from: date
    price_per_token: Decimal


@dataclass(frozen=True)
class Telemetry:
    """[telemetry]: how OTLP spans and gateway records map to calls, sessions and outcomes.

    Attribute lists are in order of preference; each name is looked up on the span (log record,
    gateway metadata) first, then on its resource."""

    session_attributes: tuple[str, ...] = ("gen_ai.conversation.id", "session.id", "langfuse.session.id")
    session_fallback: str = "trace"  # a call with no session attribute: its trace is its intent, or "call": itself
    feature_attributes: tuple[str, ...] = ("app.feature", "gen_ai.agent.name", "gen_ai.workflow.name", "service.name")
    default_feature: str = "untagged"  # gateway records with no feature hint at all
    prompt_version_attributes: tuple[str, ...] = ("app.prompt_version", "gen_ai.prompt.version", "langfuse.observation.prompt.version")
    request_id_attributes: tuple[str, ...] = ("gen_ai.response.id",)
    attempt_attributes: tuple[str, ...] = ("app.attempt",)
    escalated_attributes: tuple[str, ...] = ("app.escalated",)
    success_evaluators: tuple[str, ...] = ()  # empty: every evaluator's result is a session label
    explicit_evaluators: tuple[str, ...] = ("user_feedback",)
    pass_labels: tuple[str, ...] = ("pass", "passed", "success", "succeeded", "true", "yes", "correct", "good")
    fail_labels: tuple[str, ...] = ("fail", "failed", "failure", "false", "no", "incorrect", "bad")
    score_threshold: float = 0.5
    input_excludes_cache: tuple[str, ...] = ()  # source formats whose input count leaves cache tokens out
    list_prices: tuple[ListPrice, ...] = ()

    def list_price_table(self) -> pl.LazyFrame:
        """List prices as rows: provider, model, token_type, currency, effective_from (Date),
        effective_to (Date, exclusive; null = still valid), price_per_token (MONEY)."""
        rows = pl.DataFrame(
            {
                "provider": [p.provider for p in self.list_prices],
                "model": [p.model for p in self.list_prices],
                "token_type": [p.token_type for p in self.list_prices],
                "currency": [p.currency for p in self.list_prices],
                "effective_from": [p.effective_from for p in self.list_prices],
                "price_per_token": [p.price_per_token for p in self.list_prices],
            },
            schema={"provider": pl.String, "model": pl.String, "token_type": pl.String, "currency": pl.String,
                    "effective_from": pl.Date, "price_per_token": MONEY},
        )
        key = ["provider", "model", "token_type"]
        return (
            rows.sort(*key, "effective_from")
            .with_columns(effective_to=pl.col("effective_from").shift(-1).over(key))
            .select(*key, "currency", "effective_from", "effective_to", "price_per_token")
            .lazy()
        )


def _names(path: Path, key: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(f"{path}: {key}: {value!r} must be a list of non-empty strings")
    return tuple(value)


def _telemetry(path: Path, section: dict) -> Telemetry:
    defaults = Telemetry()
    known = set(Telemetry.__dataclass_fields__)
    unknown = set(section) - known
    if unknown:
        raise ConfigError(f"{path}: [telemetry]: unknown key(s) {', '.join(sorted(unknown))}")
    lists = {
        name: _names(path, f"telemetry.{name}", section[name]) if name in section else getattr(defaults, name)
        for name in known
        if isinstance(getattr(defaults, name), tuple) and name != "list_prices"
    }
    fallback = section.get("session_fallback", defaults.session_fallback)
    if fallback not in SESSION_FALLBACKS:
        raise ConfigError(f"{path}: telemetry.session_fallback: {fallback!r} must be one of {', '.join(SESSION_FALLBACKS)}")
    feature = section.get("default_feature", defaults.default_feature)
    if not isinstance(feature, str) or not feature.strip():
        raise ConfigError(f"{path}: telemetry.default_feature: {feature!r} must be a non-empty string")
    threshold = section.get("score_threshold", defaults.score_threshold)
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or threshold != threshold:
        raise ConfigError(f"{path}: telemetry.score_threshold: {threshold!r} must be a number")
    bad_sources = set(lists["input_excludes_cache"]) - set(TELEMETRY_SOURCE_FORMATS)
    if bad_sources:
        raise ConfigError(f"{path}: telemetry.input_excludes_cache: {', '.join(sorted(bad_sources))} not among {', '.join(TELEMETRY_SOURCE_FORMATS)}")
    overlap = {v.lower() for v in lists["pass_labels"]} & {v.lower() for v in lists["fail_labels"]}
    if overlap:
        raise ConfigError(f"{path}: telemetry: label(s) {', '.join(sorted(overlap))} in both pass_labels and fail_labels")
    return Telemetry(
        **lists,
        session_fallback=fallback,
        default_feature=feature,
        score_threshold=float(threshold),
        list_prices=_list_prices(path, section.get("list_prices", [])),
    )


def _list_prices(path: Path, entries: object) -> tuple[ListPrice, ...]:
    """[[telemetry.list_prices]] entries: provider, model, currency, effective_from and a price per
    million tokens for one or more of LIST_PRICE_TOKEN_TYPES (quoted decimals)."""
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: telemetry.list_prices must be an array of tables ([[telemetry.list_prices]])")
    prices: list[ListPrice] = []
    seen: set[tuple] = set()
    for number, entry in enumerate(entries, start=1):
        key = f"telemetry.list_prices[{number}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: {key} must be a table")
        unknown = set(entry) - {"provider", "model", "currency", "effective_from", *LIST_PRICE_TOKEN_TYPES}
        if unknown:
            raise ConfigError(f"{path}: {key}: unknown key(s) {', '.join(sorted(unknown))}")
        for name in ("provider", "model", "currency", "effective_from"):
            if name not in entry:
                raise ConfigError(f"{path}: {key}: `{name}` is required")
        provider, model, currency = entry["provider"], entry["model"], entry["currency"]
        if not all(isinstance(v, str) and v.strip() for v in (provider, model)):
            raise ConfigError(f"{path}: {key}: provider and model must be non-empty strings")
        if currency not in ISO_4217:
            raise ConfigError(f"{path}: {key}.currency: {currency!r} is not an ISO 4217 currency code")
        start = entry["effective_from"]
        if not isinstance(start, date):
            try:
                start = date.fromisoformat(str(start))
            except ValueError as exc:
                raise ConfigError(f"{path}: {key}.effective_from: {start!r} is not a YYYY-MM-DD date") from exc
        token_types = [t for t in LIST_PRICE_TOKEN_TYPES if t in entry]
        if not token_types:
            raise ConfigError(f"{path}: {key}: give a price per million tokens for at least one of {', '.join(LIST_PRICE_TOKEN_TYPES)}")
        for token_type in token_types:
            if not isinstance(entry[token_type], str):
                raise ConfigError(f"{path}: {key}.{token_type}: quote the price ({entry[token_type]!r}) so it stays an exact decimal")
            per_token = _decimal(path, f"{key}.{token_type}", entry[token_type]) / _PER_MILLION
            if per_token != per_token.quantize(Decimal(1).scaleb(-MONEY.scale)):
                raise ConfigError(f"{path}: {key}.{token_type}: {entry[token_type]!r} per million has more than {MONEY.scale} decimal places per token")
            identity = (provider, model, token_type, start)
            if identity in seen:
                raise ConfigError(f"{path}: {key}: {provider} {model} {token_type} from {start} is listed twice")
            seen.add(identity)
            prices.append(ListPrice(provider, model, token_type, currency, start, per_token))
    return tuple(prices)


# --------------------------------------------------------------------------------------------
# [decisions]: windows, workflow classes and what-if defaults of the decision tables
# --------------------------------------------------------------------------------------------

TRAFFIC_WEIGHTS = ("config", "observed")


@dataclass(frozen=True)
class WorkflowClass:
    """[decisions.classes.<name>]: features doing one kind of task, and its share of the traffic mix."""

    name: str
    features: tuple[str, ...]
    weight: float | None = None  # None: observed traffic


@dataclass(frozen=True)
class WhatIf:
    """[decisions.what_if]: the scenario `unitledger compare` shows beside the actual figures."""

    labor: tuple[LaborCost, ...] = ()  # replaces [labor] for the currencies it lists
    price_multipliers: tuple[tuple[str, Decimal], ...] = ()  # (model_version, factor on its token cost)

    # The scenario's labor table, in the shape of Settings.labor_table (which reads only .labor).
    labor_table = Settings.labor_table

    @property
    def is_empty(self) -> bool:
        return not self.labor and not self.price_multipliers


@dataclass(frozen=True)
class Decisions:
    window_days: int = 30
    regression_window_days: int = 14
    traffic_weights: str = "observed"
    classes: tuple[WorkflowClass, ...] = ()
    what_if: WhatIf = WhatIf()

    def classes_table(self) -> pl.LazyFrame | None:
        """(workflow_class, feature_tag, weight) rows, or None when no class is configured."""
        if not self.classes:
            return None
        rows = [(c.name, feature, c.weight) for c in self.classes for feature in c.features]
        return pl.DataFrame(
            rows, schema={"workflow_class": pl.String, "feature_tag": pl.String, "weight": pl.Float64}, orient="row"
        ).lazy()


def _decisions(path: Path, section: dict) -> Decisions:
    known = {"window_days", "regression_window_days", "traffic_weights", "classes", "what_if"}
    unknown = set(section) - known
    if unknown:
        raise ConfigError(f"{path}: [decisions]: unknown key(s) {', '.join(sorted(unknown))}")
    defaults = Decisions()
    weights = section.get("traffic_weights", defaults.traffic_weights)
    if weights not in TRAFFIC_WEIGHTS:
        raise ConfigError(f"{path}: decisions.traffic_weights: {weights!r} must be one of {', '.join(TRAFFIC_WEIGHTS)}")
    classes = _workflow_classes(path, section.get("classes", {}), weights)
    return Decisions(
        window_days=_int(path, "decisions.window_days", section.get("window_days", defaults.window_days), 1, 3660),
        regression_window_days=_int(
            path, "decisions.regression_window_days", section.get("regression_window_days", defaults.regression_window_days), 1, 366
        ),
        traffic_weights=weights,
        classes=classes,
        what_if=_what_if(path, section.get("what_if", {})),
    )


def _workflow_classes(path: Path, section: object, weights: str) -> tuple[WorkflowClass, ...]:
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: decisions.classes must be a table of [decisions.classes.<name>] tables")
    classes, owner = [], {}
    for name, spec in section.items():
        key = f"decisions.classes.{name}"
        if not isinstance(spec, dict) or set(spec) - {"features", "weight"}:
            raise ConfigError(f"{path}: [{key}]: give features = [...] and, with traffic_weights = \"config\", weight = <number>")
        features = spec.get("features")
        if not isinstance(features, list) or not features or not all(isinstance(f, str) and f for f in features):
            raise ConfigError(f"{path}: {key}.features: {features!r} must be a non-empty list of feature tags")
        for feature in features:
            if feature in owner:
                raise ConfigError(f"{path}: {key}.features: {feature!r} is already in decisions.classes.{owner[feature]}")
            owner[feature] = name
        weight = spec.get("weight")
        if weight is not None and (isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 < weight < float("inf")):
            raise ConfigError(f"{path}: {key}.weight: {weight!r} must be a number > 0 (weights are normalized to sum to 1)")
        if weights == "config" and weight is None:
            raise ConfigError(f"{path}: {key}.weight is required with decisions.traffic_weights = \"config\"")
        classes.append(WorkflowClass(name, tuple(features), None if weight is None else float(weight)))
    if weights == "config" and not classes:
        raise ConfigError(f"{path}: decisions.traffic_weights = \"config\" needs [decisions.classes.<name>] tables with weights")
    return tuple(classes)


def _what_if(path: Path, section: object) -> WhatIf:
    if not isinstance(section, dict) or set(section) - {"labor", "price_multipliers"}:
        raise ConfigError(f"{path}: [decisions.what_if]: only `labor` and `price_multipliers` can be set")
    labor = section.get("labor", {})
    if not isinstance(labor, dict):
        raise ConfigError(f"{path}: decisions.what_if.labor must be tables like [labor]: [decisions.what_if.labor.USD]")
    multipliers = section.get("price_multipliers", {})
    if not isinstance(multipliers, dict):
        raise ConfigError(f"{path}: decisions.what_if.price_multipliers must be a table of \"model_version\" = \"factor\"")
    factors = tuple(
        (model, _decimal(path, f"decisions.what_if.price_multipliers.{model}", factor)) for model, factor in multipliers.items()
    )
    try:
        costs = _labor(path, labor)
    except ConfigError as exc:  # _labor names keys as under [labor]: name them where they are
        raise ConfigError(str(exc).replace(f"{path}: [labor.", f"{path}: [decisions.what_if.labor.").replace(
            f"{path}: labor.", f"{path}: decisions.what_if.labor.")) from exc
    return WhatIf(labor=tuple(costs), price_multipliers=factors)


# --- [allocation]: allocating AI billing rows without a request id to requests by token share ---

# Columns a meter rule may match (FOCUS text columns that name a usage meter).
METER_RULE_COLUMNS = ("SkuMeter", "x_SkuMeterName", "x_UsageType", "SkuId", "ChargeDescription", "ServiceName")


@dataclass(frozen=True)
class MeterRule:
    """A billing row whose text matches `pattern` (a regular expression, Rust syntax, searched in
    `columns` in order) bills `token_type` tokens of `model` (or of the pattern's `model` group)."""

    pattern: str
    token_type: str
    model: str | None = None
    columns: tuple[str, ...] = ("SkuMeter", "x_SkuMeterName", "x_UsageType")


@dataclass(frozen=True)
class AccountRule:
    """Calls matching every given condition (None: any) that carry no account hint of their own
    belong to `billing_account_id` (and `sub_account_id` when given). Conditions: what the call
    is (feature_tag, provider, model) and what a gateway says about who made it (api_key_id,
    team_id, project_id: staged gateway fields, schemas.StagedLlmCall)."""

    billing_account_id: str
    sub_account_id: str | None = None
    feature_tag: str | None = None
    provider: str | None = None
    model: str | None = None
    api_key_id: str | None = None
    team_id: str | None = None
    project_id: str | None = None


@dataclass(frozen=True)
class Allocation:
    """[allocation]: how aggregated AI billing rows are recognized and matched to calls."""

    model_aliases: tuple[tuple[str, str], ...] = ()
    provider_aliases: tuple[tuple[str, str], ...] = ()
    units: tuple[tuple[str, int], ...] = ()  # ConsumedUnit -> tokens per unit, beside the built-in ones
    meter_rules: tuple[MeterRule, ...] = ()
    account_rules: tuple[AccountRule, ...] = ()
    token_coverage_warn: float = 0.95
    # Opt-in: shared costs (tax, support, purchases, credits) spread over each account's features
    # in a table of their own (fully_loaded_costs_monthly), never in token_cost.
    fully_loaded: bool = False


def parse_allocation(path: Path, section: dict) -> Allocation:
    """The [allocation] section of `path`; ConfigError names the file and the key or rule."""
    known = {"model_aliases", "provider_aliases", "units", "meter_rules", "account_rules", "token_coverage_warn", "fully_loaded"}
    unknown = set(section) - known
    if unknown:
        raise ConfigError(f"{path}: [allocation]: unknown key(s) {', '.join(sorted(unknown))}")
    return Allocation(
        model_aliases=_aliases(path, "model_aliases", section.get("model_aliases", {})),
        provider_aliases=_aliases(path, "provider_aliases", section.get("provider_aliases", {})),
        units=_units(path, section.get("units", {})),
        meter_rules=tuple(_meter_rule(path, i, rule) for i, rule in enumerate(_rule_list(path, "meter_rules", section))),
        account_rules=tuple(_account_rule(path, i, rule) for i, rule in enumerate(_rule_list(path, "account_rules", section))),
        token_coverage_warn=_share(path, "allocation.token_coverage_warn", section.get("token_coverage_warn", 0.95)),
        fully_loaded=_flag(path, "allocation.fully_loaded", section.get("fully_loaded", False)),
    )


def _flag(path: Path, key: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{path}: {key} must be true or false, got {value!r}")
    return value


def _text(path: Path, key: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{path}: {key}: {value!r} must be a non-empty string")
    return value


def _aliases(path: Path, name: str, table: object) -> tuple[tuple[str, str], ...]:
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: allocation.{name} must be a table of \"name\" = \"canonical name\"")
    return tuple((_text(path, f"allocation.{name} key", k), _text(path, f"allocation.{name}.{k}", v)) for k, v in table.items())


def _units(path: Path, table: object) -> tuple[tuple[str, int], ...]:
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: allocation.units must be a table of \"unit\" = tokens per unit")
    return tuple((_text(path, "allocation.units key", unit), _int(path, f"allocation.units.{unit}", n, 1, 10**12)) for unit, n in table.items())


def _rule_list(path: Path, name: str, section: dict) -> list[dict]:
    rules = section.get(name, [])
    if not isinstance(rules, list) or not all(isinstance(r, dict) for r in rules):
        raise ConfigError(f"{path}: allocation.{name} must be an array of tables ([[allocation.{name}]])")
    return rules


def _meter_rule(path: Path, index: int, rule: dict) -> MeterRule:
    where = f"allocation.meter_rules[{index}]"
    unknown = set(rule) - {"pattern", "token_type", "model", "columns"}
    if unknown:
        raise ConfigError(f"{path}: {where}: unknown key(s) {', '.join(sorted(unknown))}")
    pattern = _text(path, f"{where}.pattern", rule.get("pattern"))
    where = f"{where} (pattern {pattern!r})"
    try:  # the rule runs as a Polars (Rust) regular expression: check it compiles there
        pl.Series([""]).str.contains(pattern)
    except pl.exceptions.PolarsError as exc:
        raise ConfigError(f"{path}: {where}: not a valid regular expression: {exc}") from exc
    token_type = rule.get("token_type")
    if token_type not in TOKEN_TYPES:
        raise ConfigError(f"{path}: {where}: token_type {token_type!r} must be one of {', '.join(TOKEN_TYPES)}")
    model = rule.get("model")
    if model is None and "(?P<model>" not in pattern:
        raise ConfigError(f"{path}: {where}: give `model`, or a (?P<model>...) group in the pattern")
    if model is not None:
        model = _text(path, f"{where}.model", model)
    columns = rule.get("columns", list(MeterRule.columns))
    if not isinstance(columns, list) or not columns or any(c not in METER_RULE_COLUMNS for c in columns):
        raise ConfigError(f"{path}: {where}: columns {columns!r} must be a non-empty list of {', '.join(METER_RULE_COLUMNS)}")
    return MeterRule(pattern=pattern, token_type=token_type, model=model, columns=tuple(columns))


def _account_rule(path: Path, index: int, rule: dict) -> AccountRule:
    where = f"allocation.account_rules[{index}]"
    fields = set(AccountRule.__dataclass_fields__)
    unknown = set(rule) - fields
    if unknown:
        raise ConfigError(f"{path}: {where}: unknown key(s) {', '.join(sorted(unknown))}")
    values = {k: _text(path, f"{where}.{k}", v) for k, v in rule.items()}
    if "billing_account_id" not in values:
        raise ConfigError(f"{path}: {where}: billing_account_id is required")
    return AccountRule(**values)
