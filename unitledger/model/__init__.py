"""Pure transforms of the cost model: requests, allocation, intents, features, decisions, reconciliation."""
