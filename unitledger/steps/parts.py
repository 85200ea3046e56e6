"""Steps worked in parts by processes of their own (the daily step's phases, the month's
reconciliation parts, fanned out by Dagster): the folder a run keeps its parts in between the steps
that write them and the one that publishes them, and its plan there."""

from __future__ import annotations

import json
from pathlib import Path

from unitledger.layout import Layout
from unitledger.warehouse.publish import write_text_atomic

PLAN = "plan.json"


def parts_folder(layout: Layout, step: str, key: str) -> Path:
    """Where the parts of run `key` of `step` are kept: outside scratch (cleared of dead processes'
    folders, and each step may run in another process) and outside the warehouse (never read by
    analysts)."""
    return layout.data_dir / ".parts" / step / key


def write_plan(fields: dict, folder: Path) -> None:
    """Save a run's plan (JSON values) in its folder, in one rename: written last, once the files
    the parts need are complete, so a part never runs on a half-prepared folder."""
    write_text_atomic(json.dumps(fields), folder / PLAN)


def read_plan(folder: Path, missing: str) -> dict:
    """The plan write_plan saved in `folder`; `missing`: what to do when there is none."""
    plan_file = folder / PLAN
    if not plan_file.exists():
        raise FileNotFoundError(f"no plan in {folder}: {missing}")
    return json.loads(plan_file.read_text(encoding="utf-8"))
