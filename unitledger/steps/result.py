"""What a step returns: its tables' metadata, its check outcomes and its seconds per stage."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import polars as pl

from unitledger.checks.validation import CheckOutcome


@dataclass
class StepResult:
    """What a step produced: per table metadata, check outcomes (blocking; `warnings`: reported,
    never blocking), and seconds per stage."""

    tables: dict[str, dict] = field(default_factory=dict)
    checks: dict[str, list[CheckOutcome]] = field(default_factory=dict)
    warnings: dict[str, list[CheckOutcome]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(c.passed for outcomes in self.checks.values() for c in outcomes)

    def failures(self) -> list[str]:
        return [f"{table}.{c.name}: {c.description}" for table, cs in self.checks.items() for c in cs if not c.passed]

    @contextmanager
    def timed(self, stage: str):
        began = time.perf_counter()
        yield
        self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - began


def money_total(frame: pl.LazyFrame, column: str) -> dict[str, str]:
    """Exact per-currency total of a money column, as text (Dagster metadata has no decimal type)."""
    totals = (
        frame.group_by("billing_currency")
        .agg(pl.col(column).sum())
        .filter(pl.col("billing_currency").is_not_null())
        .sort("billing_currency")
        .collect()
    )
    return {row["billing_currency"]: str(row[column]) for row in totals.iter_rows(named=True)}
