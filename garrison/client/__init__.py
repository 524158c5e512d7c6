"""Python client for garrison (sync and async); layers add their own modules here."""

from garrison.client.base import ApiError, AsyncClient, Client

__all__ = ["ApiError", "AsyncClient", "Client"]
