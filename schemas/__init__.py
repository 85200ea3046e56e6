"""Pandera models: the single source of truth for every table's columns, types and meaning.

The pipeline validates with these models and the data dictionary (`unitledger tables`,
docs/data-dictionary.md) is generated from them, so the two cannot drift.
"""

from schemas.events import IgnoredRecord, StagedEvaluation, StagedLlmCall, StagedOutcome, StagedSpan
from schemas.focus import StagedFocus
from schemas.outputs import CostPerIntent, CostPerSuccess, IntentCosts, Quarantine, RequestCosts

__all__ = [
    "CostPerIntent",
    "IgnoredRecord",
    "CostPerSuccess",
    "IntentCosts",
    "Quarantine",
    "RequestCosts",
    "StagedEvaluation",
    "StagedFocus",
    "StagedLlmCall",
    "StagedOutcome",
    "StagedSpan",
]
