"""Hash-chained, append-only audit log with signed checkpoints."""
