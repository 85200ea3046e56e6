import os
from pathlib import Path

import pytest

from unitledger.config import load_settings
from unitledger.layout import Layout

REPO = Path(__file__).resolve().parents[1]
# The real FOCUS 1.0 sample lives in shared/, beside the repo (CI clones the repo next to it).
FOCUS_SAMPLE = REPO.parent / "shared" / "data" / "focus-sample-1.0" / "focus_sample.csv"
if not FOCUS_SAMPLE.exists():
    FOCUS_SAMPLE = Path("/work/shared/data/focus-sample-1.0/focus_sample.csv")
os.environ.pop("DAGSTER_HOME", None)  # tests use ephemeral Dagster instances


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    return Layout(tmp_path / "data")


@pytest.fixture
def settings():
    return load_settings(REPO / "unitledger.toml")
