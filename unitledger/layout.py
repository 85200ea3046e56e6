"""Where everything lives under the data root. Only these paths are ever written: nothing taken
from an input file is used as a path."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DATA_DIR_ENV = "UNITLEDGER_DATA_DIR"


def default_data_dir() -> Path:
    return Path(os.environ.get(DATA_DIR_ENV, "data")).resolve()


class DataRootError(Exception):
    """The data root has no landing folder: a mistyped --data-dir, most likely."""


@dataclass(frozen=True)
class Layout:
    data_dir: Path

    def require_landing(self) -> Layout:
        """This layout, when its data root has a landing folder. Everything but the generator checks
        it first: a mistyped data root would otherwise become a new, empty warehouse, and the run
        would report success."""
        if not self.landing.is_dir():
            raise DataRootError(
                f"{self.data_dir} is not a data root: it has no landing folder ({self.landing}). "
                f"Check --data-dir or ${DATA_DIR_ENV}; `unitledger generate` creates a data root with one."
            )
        return self

    @property
    def landing(self) -> Path:
        return self.data_dir / "landing"

    @property
    def landing_focus(self) -> Path:
        return self.landing / "focus"

    @property
    def landing_events(self) -> Path:
        return self.landing / "events"

    @property
    def landing_otlp(self) -> Path:
        """OTLP JSON traces and logs (the OpenTelemetry Collector's file exporter)."""
        return self.landing / "otlp"

    def landing_gateway(self, gateway: str) -> Path:
        """Request logs of one LLM gateway: litellm, openrouter or helicone."""
        return self.landing / "gateways" / gateway

    @property
    def landing_invoices(self) -> Path:
        return self.landing / "invoices"

    @property
    def warehouse(self) -> Path:
        return self.data_dir / "warehouse"

    @property
    def duckdb_path(self) -> Path:
        return self.data_dir / "warehouse.duckdb"

    @property
    def report_path(self) -> Path:
        """The HTML report (unitledger report, the `report` asset), replaced atomically."""
        return self.warehouse / "report.html"

    @property
    def tmp(self) -> Path:
        # Scratch for outputs being built: same filesystem as the tables, so a finished file can be
        # renamed into place atomically, but outside warehouse/ so no reader's glob ever sees a
        # half-written scratch file.
        return self.data_dir / ".scratch"

    def staged(self, name: str) -> Path:
        """Per-landing-file typed Parquet: staged/focus, staged/llm_calls, staged/outcomes."""
        return self.warehouse / "staged" / name

    def quarantine(self, source: str) -> Path:
        """Staged bad rows of one landing folder (`focus`, `events`), per landing file; what readers
        see is the published `quarantine` table (unitledger.steps.staging.publish_quarantine)."""
        return self.staged("quarantine") / source

    def table(self, name: str) -> Path:
        return self.warehouse / name
