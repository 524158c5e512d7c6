"""AES-256-GCM for langgraph's EncryptedSerializer (checkpoint encryption at rest)."""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from garrison.state.checkpoint.errors import CorruptCheckpoint

CIPHER_NAME = "aesgcm"


class AesGcmCipher:
    """``CipherProtocol``: 12-byte random nonce + ciphertext with tag."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the state encryption key must be 32 bytes (AES-256)")
        self._aead = AESGCM(key)

    @classmethod
    def from_key(cls, key: bytes | str | Path) -> AesGcmCipher:
        """From raw bytes, a base64 string, or a key file (base64, as written by ``load_or_create_key``)."""
        if isinstance(key, Path):
            key = key.read_text().strip()
        if isinstance(key, str):
            key = base64.b64decode(key)
        return cls(key)

    def encrypt(self, plaintext: bytes) -> tuple[str, bytes]:
        nonce = secrets.token_bytes(12)
        return CIPHER_NAME, nonce + self._aead.encrypt(nonce, plaintext, None)

    def decrypt(self, ciphername: str, ciphertext: bytes) -> bytes:
        if ciphername != CIPHER_NAME:
            raise CorruptCheckpoint(f"unknown cipher {ciphername!r}")
        try:
            return self._aead.decrypt(ciphertext[:12], ciphertext[12:], None)
        except InvalidTag as exc:
            raise CorruptCheckpoint("decryption failed: wrong key or tampered row") from exc


def load_or_create_key(path: Path) -> bytes:
    """The key in ``path``, created (mode 0600) on first use."""
    if path.exists():
        return base64.b64decode(path.read_text().strip())
    key = AESGCM.generate_key(bit_length=256)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(base64.b64encode(key).decode() + "\n")
    return key
