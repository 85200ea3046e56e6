import os
from pathlib import Path

import pytest

from unitledger.config import load_settings
from unitledger.layout import Layout

REPO = Path(__file__).resolve().parents[1]
os.environ.pop("DAGSTER_HOME", None)  # tests use ephemeral Dagster instances


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    return Layout(tmp_path / "data")


@pytest.fixture
def settings():
    return load_settings(REPO / "unitledger.toml")
