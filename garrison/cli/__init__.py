"""Command-line interface (Typer and Rich)."""
