"""Metering: prices, the usage ledger, budgets with reservations, rollups and reports."""
