"""The one resource: where the data root and the settings file are, and what day it is."""


from datetime import date, datetime, timezone
from pathlib import Path

import dagster as dg

from unitledger.config import Settings, load_settings
from unitledger.layout import DataRootError, Layout, default_data_dir


class Warehouse(dg.ConfigurableResource):
    """Data root (landing/, warehouse/, warehouse.duckdb), settings file (unitledger.toml) and the
    day the freshness checks take as today."""

    data_dir: str = ""
    config_path: str = ""
    today: str = ""  # YYYY-MM-DD: a fixed today (tests); empty: the UTC date by the clock

    @property
    def layout(self) -> Layout:
        """The data root's layout; a root without a landing folder fails the run (or the sensor
        tick) naming it, before anything is written."""
        layout = Layout(Path(self.data_dir).resolve() if self.data_dir else default_data_dir())
        try:
            return layout.require_landing()
        except DataRootError as exc:
            raise dg.Failure(description=str(exc)) from exc

    @property
    def settings(self) -> Settings:
        return load_settings(Path(self.config_path) if self.config_path else None)

    def current_date(self) -> date:
        """Today: the fixed `today` when set, else the current UTC date."""
        return date.fromisoformat(self.today) if self.today else datetime.now(timezone.utc).date()
