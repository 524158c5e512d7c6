"""The LangGraph Platform ``/store`` API on the state layer's long-term store (``StateService.store``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Response

from garrison.core.clock import rfc3339
from garrison.core.errors import BadRequest, NotFound, ServiceUnavailable
from garrison.core.principal import Principal
from garrison.identity.deps import require
from garrison.platform import Platform, get_platform
from garrison.runtime import serde

router = APIRouter(tags=["langgraph"])
READ, WRITE = require("runtime:read"), require("runtime:invoke")
JsonBody = Body(default_factory=dict)


def _store(platform: Platform, principal: Principal) -> Any:
    factory = getattr(platform.services.get("state"), "store", None)
    if factory is None:
        raise ServiceUnavailable("the long-term store is not available: the state layer offers no store",
                                 slug="store-unavailable")
    return factory(principal.tenant_id)


def _namespace(raw: Any, what: str = "namespace", allow_empty: bool = False) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(p, str) and p and "." not in p for p in raw):
        raise BadRequest(f"{what} must be a list of non-empty strings without '.'")
    if any("\x00" in p or len(p) > 256 for p in raw):  # PostgreSQL text cannot hold NUL
        raise BadRequest(f"{what} labels must be at most 256 characters, without NUL")
    if not raw and not allow_empty:
        raise BadRequest(f"{what} must not be empty")
    if len(raw) > 16:
        raise BadRequest(f"{what} has more than 16 labels")
    return tuple(raw)


def _key(raw: Any) -> str:
    if not isinstance(raw, str) or not 1 <= len(raw) <= 512 or "\x00" in raw:
        raise BadRequest("key must be a string of 1 to 512 characters, without NUL")
    return raw


def item_out(item: Any) -> dict[str, Any]:
    out = {"namespace": list(item.namespace), "key": item.key, "value": serde.jsonable(item.value),
           "created_at": rfc3339(item.created_at), "updated_at": rfc3339(item.updated_at)}
    if getattr(item, "score", None) is not None:
        out["score"] = item.score
    return out


@router.put("/store/items", status_code=204)
async def put_item(body: dict[str, Any] = JsonBody, principal: Principal = Depends(WRITE),
                   platform: Platform = Depends(get_platform)) -> Response:
    namespace, key = _namespace(body.get("namespace")), _key(body.get("key"))
    value = body.get("value")
    if not isinstance(value, dict):
        raise BadRequest("value must be a JSON object")
    index = body.get("index")
    if index is not None and index is not False and not (isinstance(index, list)
                                                         and all(isinstance(f, str) for f in index)):
        raise BadRequest("index must be false or a list of field paths")
    await _store(platform, principal).aput(namespace, key, value, index=index)
    return Response(status_code=204)


@router.get("/store/items")
async def get_item(namespace: str, key: str, principal: Principal = Depends(READ),
                   platform: Platform = Depends(get_platform)) -> dict[str, Any]:
    ns = _namespace(namespace.split(".") if namespace else [])
    item = await _store(platform, principal).aget(ns, _key(key))
    if item is None:
        raise NotFound(f"no item {key!r} in namespace {list(ns)}")
    return item_out(item)


@router.delete("/store/items", status_code=204)
async def delete_item(body: dict[str, Any] = JsonBody, principal: Principal = Depends(WRITE),
                      platform: Platform = Depends(get_platform)) -> Response:
    await _store(platform, principal).adelete(_namespace(body.get("namespace")), _key(body.get("key")))
    return Response(status_code=204)


def _page(body: dict[str, Any]) -> tuple[int, int]:
    limit, offset = body.get("limit", 10), body.get("offset", 0)
    if not isinstance(limit, int) or not 1 <= limit <= 1000 or not isinstance(offset, int) or offset < 0:
        raise BadRequest("limit must be 1-1000 and offset a non-negative integer")
    return limit, offset


@router.post("/store/items/search")
async def search_items(body: dict[str, Any] = JsonBody, principal: Principal = Depends(READ),
                       platform: Platform = Depends(get_platform)) -> dict[str, Any]:
    prefix = _namespace(body.get("namespace_prefix", []), "namespace_prefix", allow_empty=True)
    limit, offset = _page(body)
    flt, query = body.get("filter"), body.get("query")
    if flt is not None and not isinstance(flt, dict):
        raise BadRequest("filter must be an object")
    if query is not None and not isinstance(query, str):
        raise BadRequest("query must be a string")
    items = await _store(platform, principal).asearch(prefix, query=query, filter=flt, limit=limit, offset=offset)
    return {"items": [item_out(i) for i in items]}


@router.post("/store/namespaces")
async def list_namespaces(body: dict[str, Any] = JsonBody, principal: Principal = Depends(READ),
                          platform: Platform = Depends(get_platform)) -> dict[str, Any]:
    prefix = _namespace(body["prefix"], "prefix") if body.get("prefix") else None
    suffix = _namespace(body["suffix"], "suffix") if body.get("suffix") else None
    depth = body.get("max_depth")
    if depth is not None and (not isinstance(depth, int) or depth < 1):
        raise BadRequest("max_depth must be a positive integer")
    limit, offset = _page({"limit": body.get("limit", 100), "offset": body.get("offset", 0)})
    found = await _store(platform, principal).alist_namespaces(prefix=prefix, suffix=suffix, max_depth=depth,
                                                               limit=limit, offset=offset)
    return {"namespaces": [list(n) for n in found]}
