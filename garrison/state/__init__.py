"""State: LangGraph checkpointer and store, memory, retention, hot session state."""

from garrison.state.checkpoint import (
    AsyncGarrisonSaver,
    CorruptCheckpoint,
    GarrisonSaver,
    InvalidConfig,
    StateError,
    ValueTooLarge,
)

__all__ = ["AsyncGarrisonSaver", "CorruptCheckpoint", "GarrisonSaver", "InvalidConfig", "StateError",
           "ValueTooLarge"]
