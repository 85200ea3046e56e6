"""Pure transforms of the data model: requests, allocation, intents, features, decisions, reconciliation."""
