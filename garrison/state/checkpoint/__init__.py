"""LangGraph checkpointers on garrison's store."""

from garrison.state.checkpoint.errors import CorruptCheckpoint, InvalidConfig, StateError, ValueTooLarge
from garrison.state.checkpoint.saver import AsyncGarrisonSaver, GarrisonSaver

__all__ = ["AsyncGarrisonSaver", "CorruptCheckpoint", "GarrisonSaver", "InvalidConfig", "StateError",
           "ValueTooLarge"]
