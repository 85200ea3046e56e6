"""The report step: the decision frames of a window (steps/decisions.py, from the per-day tables'
stored sums), the reconciliation of the window's billing periods and the settings, rendered into
one self-contained HTML file (unitledger/warehouse/report.py), replaced atomically. The `report`
asset and `unitledger report` run it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from unitledger import months
from unitledger.config import Settings
from unitledger.layout import Layout
from unitledger.model.decisions import Scenario
from unitledger.steps.decisions import Window, compute_decisions
from unitledger.warehouse.manifest import read_manifest
from unitledger.warehouse.publish import write_text_atomic
from unitledger.warehouse.report import render_report

TITLE = "unitledger: what AI features cost per successful outcome"


@dataclass
class ReportResult:
    path: Path
    window: Window
    size: int  # bytes
    rows: dict[str, int]  # rows of each table shown
    timings: dict[str, float] = field(default_factory=dict)


def build_report(
    layout: Layout,
    settings: Settings,
    window_days: int | None = None,
    output: Path | None = None,
    now: datetime | None = None,
    scenario: Scenario | None = None,
) -> ReportResult:
    """Write the report of the `window_days` (default [decisions] window_days) ending at the latest
    built day to `output` (default warehouse/report.html). Reads one version of the warehouse;
    writes nothing but the file."""
    timings: dict[str, float] = {}
    began = time.perf_counter()
    manifest = read_manifest(layout)
    computed = compute_decisions(layout, settings, window_days, scenario, manifest)
    window = computed.window
    periods = [months.period_key(m) for m in months.months(window.first, window.last)]
    reconciliation = manifest.scan(layout, "reconciliation", periods).collect()
    timings["read_and_compute"] = time.perf_counter() - began
    tables = computed.tables
    inputs = {
        "trends": tables["cost_per_success_trends"],
        "break_even": pl.concat([tables["break_even"], tables["what_if"]]),
        "money": tables["money_breakdown"],
        "label_coverage": computed.label_coverage,
        "reconciliation": reconciliation,
        "regressions": tables["version_regressions"],
        "weighted": tables["weighted_cost_per_success"],
    }
    began = time.perf_counter()
    html = render_report(
        title=TITLE,
        generated_at=now or datetime.now(timezone.utc),
        window_start=window.first,
        window_end=window.last,
        **inputs,
    )
    timings["render"] = time.perf_counter() - began
    began = time.perf_counter()
    path = output or layout.report_path
    write_text_atomic(html, path)
    timings["write"] = time.perf_counter() - began
    return ReportResult(path, window, path.stat().st_size, {k: v.height for k, v in inputs.items()}, timings)
