"""Signed checkpoints, kept outside the database so truncation of the table shows."""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from garrison.core.signing import load_or_create_ed25519, load_public


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    hash: str
    ts: str
    signature: str

    def message(self) -> bytes:
        return f"garrison-audit-checkpoint|{self.seq}|{self.hash}|{self.ts}".encode()


class CheckpointFile:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.path = directory / "checkpoints.jsonl"
        self.key_path = directory / "checkpoint.key"

    def signer(self) -> Ed25519PrivateKey:
        return load_or_create_ed25519(self.key_path)

    def public_key(self) -> Ed25519PublicKey | None:
        pub = self.key_path.with_suffix(".pub")
        return load_public(pub) if pub.exists() else None

    def append(self, key: Ed25519PrivateKey, seq: int, hash_: str, ts: str) -> Checkpoint:
        unsigned = Checkpoint(seq, hash_, ts, "")
        sig = base64.b64encode(key.sign(unsigned.message())).decode()
        cp = Checkpoint(seq, hash_, ts, sig)
        self.dir.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"seq": seq, "hash": hash_, "ts": ts, "sig": sig}) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return cp

    def read(self) -> list[Checkpoint]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                d = json.loads(line)
                out.append(Checkpoint(int(d["seq"]), str(d["hash"]), str(d["ts"]), str(d["sig"])))
            except (ValueError, KeyError, TypeError):
                # A torn last line after a crash is not a checkpoint; verify reports it.
                out.append(Checkpoint(-1, "", "", ""))
        return out

    @staticmethod
    def valid(pub: Ed25519PublicKey, cp: Checkpoint) -> bool:
        try:
            pub.verify(base64.b64decode(cp.signature), cp.message())
            return True
        except (InvalidSignature, ValueError):
            return False
