"""Client for the LLM gateway's administration API (/api/llm) and metering (/api/usage...).

For model calls use any OpenAI client with base URL ``<garrison>/v1`` and a garrison key.
"""

from __future__ import annotations

from typing import Any

from garrison.client.base import AsyncClient, Client


class LLMAdmin:
    """``LLMAdmin(Client(url, key)).add_model("llama", "http://10.0.0.5:8000/v1", kind="vllm")``."""

    def __init__(self, client: Client) -> None:
        self.c = client

    def add_model(self, model: str, base_url: str, **fields: Any) -> Any:
        body = {"model": model, "base_url": base_url, **{k: v for k, v in fields.items() if v is not None}}
        return self.c.request("POST", "/api/llm/models", json=body)

    def update_model(self, model: str, **fields: Any) -> Any:
        return self.c.request("PATCH", f"/api/llm/models/{model}", json=fields)

    def list_models(self) -> Any:
        return self.c.request("GET", "/api/llm/models")

    def remove_model(self, model: str, replica: str | None = None) -> Any:
        params = {"replica": replica} if replica else None
        return self.c.request("DELETE", f"/api/llm/models/{model}", params=params)


class Metering:
    def __init__(self, client: Client) -> None:
        self.c = client

    def usage(self, by: str = "model", **params: Any) -> Any:
        query = {"by": by, **{k: v for k, v in params.items() if v is not None}}
        return self.c.request("GET", "/api/usage", params=query)

    def resources(self, by: str = "resource", **params: Any) -> Any:
        query = {"by": by, **{k: v for k, v in params.items() if v is not None}}
        return self.c.request("GET", "/api/usage/resources", params=query)

    def budgets(self) -> Any:
        return self.c.request("GET", "/api/metering/budgets")

    def create_budget(self, scope: str, limit_usd: str, *, scope_id: str | None = None, window: str = "month",
                      tenant_id: str | None = None) -> Any:
        body = {"scope": scope, "scope_id": scope_id, "window": window, "limit_usd": limit_usd,
                "tenant_id": tenant_id}
        return self.c.request("POST", "/api/metering/budgets", json=body)

    def delete_budget(self, budget_id: str) -> Any:
        return self.c.request("DELETE", f"/api/metering/budgets/{budget_id}")

    def prices(self) -> Any:
        return self.c.request("GET", "/api/metering/prices")

    def set_price(self, model: str, input_per_mtok: str, output_per_mtok: str, **fields: Any) -> Any:
        body = {"model": model, "input_per_mtok": input_per_mtok, "output_per_mtok": output_per_mtok,
                **{k: v for k, v in fields.items() if v is not None}}
        return self.c.request("POST", "/api/metering/prices", json=body)


class AsyncMetering:
    def __init__(self, client: AsyncClient) -> None:
        self.c = client

    async def usage(self, by: str = "model", **params: Any) -> Any:
        query = {"by": by, **{k: v for k, v in params.items() if v is not None}}
        return await self.c.request("GET", "/api/usage", params=query)
