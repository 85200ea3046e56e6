"""The cost model: requests with their cost, allocation, intents, features, decisions, reconciliation."""
