"""Settings users edit without touching code: unitledger.toml (see the file for its keys)."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from pathlib import Path

import polars as pl

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
        for name in ("unmatched_requests_warn", "unmatched_requests_fail", "telemetry_only_warn", "coverage_warn")
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
