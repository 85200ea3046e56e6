"""The one resource: where the data root and the settings file are."""


from pathlib import Path

import dagster as dg

from unitledger.config import Settings, load_settings
from unitledger.layout import Layout, default_data_dir


class Warehouse(dg.ConfigurableResource):
    """Data root (landing/, warehouse/, warehouse.duckdb) and settings file (unitledger.toml)."""

    data_dir: str = ""
    config_path: str = ""

    @property
    def layout(self) -> Layout:
        return Layout(Path(self.data_dir).resolve() if self.data_dir else default_data_dir())

    @property
    def settings(self) -> Settings:
        return load_settings(Path(self.config_path) if self.config_path else None)
