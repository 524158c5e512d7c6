"""Tenants, principals, API keys, scopes and short-lived tokens."""
