"""Observability: OTLP ingest, GenAI normalization, span store, queries, metrics, self-tracing."""
