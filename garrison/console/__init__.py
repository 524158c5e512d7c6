"""Web console: server-rendered shell pages that read the API with the operator's key."""
