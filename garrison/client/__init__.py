"""Python client for garrison (sync and async); layers add their own modules here."""

from garrison.client.base import ApiError, AsyncClient, Client
from garrison.client.sandbox import Sandbox

__all__ = ["ApiError", "AsyncClient", "Client", "Sandbox"]
