"""Loading the LangGraph graphs of a deployed version into this process.

This is the local executor: a graph runs inside garrison's worker, its checkpoints in
the state layer. Each version's modules load under their own names, so two versions of
one agent never share module state.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

from garrison.core.errors import Problem


class GraphLoadFailed(Problem):
    status, slug, title = 422, "graph-load-failed", "The agent's graph could not be loaded"


_lock = threading.Lock()
_cache: dict[tuple[str, str], Any] = {}


def _load_module(root: Path, file: str, key: str) -> Any:
    path = (root / file).resolve()
    if not path.is_relative_to(root.resolve()) or not path.is_file():
        raise GraphLoadFailed(f"{file} is not a file of the bundle")
    name = f"garrison_agent_{key}_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise GraphLoadFailed(f"cannot import {file}")
    module = importlib.util.module_from_spec(spec)
    # The bundle's own helper modules import by plain name.
    if str(root) not in sys.path:
        sys.path.append(str(root))
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:  # an agent's sys.exit() must not stop garrison
        sys.modules.pop(name, None)
        raise GraphLoadFailed(f"importing {file} failed: {type(exc).__name__}: {exc}") from exc
    return module


def load_graph(root: Path, ref: str, key: str) -> Any:
    """The compiled graph ``file.py:variable`` of the bundle at ``root`` (cached per version)."""
    with _lock:
        cached = _cache.get((key, ref))
        if cached is not None:
            return cached
        file, _, variable = ref.partition(":")
        module = _load_module(root, file, key)
        graph = getattr(module, variable, None)
        if graph is None:
            raise GraphLoadFailed(f"{file} defines no {variable!r}")
        if hasattr(graph, "compile") and not hasattr(graph, "astream"):
            graph = graph.compile()  # a StateGraph builder
        if not hasattr(graph, "astream") or not hasattr(graph, "copy"):
            raise GraphLoadFailed(f"{ref} is not a LangGraph graph (StateGraph or compiled graph)")
        _cache[(key, ref)] = graph
        return graph


def check_loads(root: Path, refs: dict[str, str]) -> None:
    """Import every graph of a bundle once, at deploy time, so a broken bundle never becomes a version."""
    key = f"check_{uuid.uuid4().hex}"
    try:
        for ref in refs.values():
            load_graph(root, ref, key)
    finally:
        with _lock:
            for cached in [k for k in _cache if k[0] == key]:
                del _cache[cached]
        for name in [n for n in sys.modules if n.startswith(f"garrison_agent_{key}_")]:
            del sys.modules[name]


def bind(graph: Any, checkpointer: Any, store: Any | None) -> Any:
    """The same graph, persisting through the tenant's checkpointer (and store, when there is one)."""
    update: dict[str, Any] = {"checkpointer": checkpointer}
    if store is not None:
        update["store"] = store
    return graph.copy(update=update)
