import os
from datetime import date
from pathlib import Path

import pytest

from unitledger.config import load_settings
from unitledger.layout import Layout

REPO = Path(__file__).resolve().parents[1]
# The real FOCUS 1.0 sample lives in shared/, beside the repo (CI clones the repo next to it).
FOCUS_SAMPLE = REPO.parent / "shared" / "data" / "focus-sample-1.0" / "focus_sample.csv"
if not FOCUS_SAMPLE.exists():
    FOCUS_SAMPLE = Path("/work/shared/data/focus-sample-1.0/focus_sample.csv")
# "Today" for every step that needs one (staging's billing periods, the backfill's last day): after
# all the tests' data, and fixed, so no test depends on the clock.
TODAY = date(2026, 12, 31)
# The FOCUS 1.3 column list (a table in the shared reference), for tests that need a real header.
FOCUS_REFERENCE = REPO.parent / "shared" / "reference" / "focus-1.3.md"
if not FOCUS_REFERENCE.exists():
    FOCUS_REFERENCE = Path("/work/shared/reference/focus-1.3.md")
os.environ.pop("DAGSTER_HOME", None)  # tests use ephemeral Dagster instances


def leftovers(layout: Layout) -> list[Path]:
    """Files a finished (or failed) run should not leave behind: half-written outputs and scratch."""
    stray = [p for p in layout.warehouse.rglob("*") if p.is_file() and p.suffix in (".part", ".tmp")]
    return stray + (list(layout.tmp.iterdir()) if layout.tmp.exists() else [])


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    return Layout(tmp_path / "data")


@pytest.fixture
def settings():
    return load_settings(REPO / "unitledger.toml")


@pytest.fixture(autouse=True)
def reconciliation_in_buckets(monkeypatch):
    """Every test's monthly reconciliation runs in three hash buckets of request ids (the data are
    far below steps.reconciliation.BUCKET_ROWS): the expectations, worked out for the whole month,
    hold for the sum of its parts."""
    from unitledger.steps import reconciliation

    monkeypatch.setattr(reconciliation, "bucket_count", lambda request_rows: 3)
