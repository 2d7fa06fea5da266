"""Operator-mode NATS for tests: JWTs signed with fresh NKeys, and a .creds file.

A server in operator mode authenticates users by a JWT signed by their
account, which the operator signed; a client proves it holds the user's
NKey with the seed from the same ``.creds`` file. Everything here is made
per test with the ``nkeys`` package, so no ``nsc`` tool is needed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nkeys

#: An account that may use everything, JetStream included (-1: no limit).
_OPEN_LIMITS = {
    "subs": -1,
    "data": -1,
    "payload": -1,
    "imports": -1,
    "exports": -1,
    "wildcards": True,
    "conn": -1,
    "leaf": -1,
}
_JETSTREAM_LIMITS = {"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}


def _keypair(prefix: int) -> tuple[nkeys.KeyPair, bytes]:
    seed = nkeys.encode_seed(os.urandom(32), prefix)
    return nkeys.from_seed(bytearray(seed)), bytes(seed)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt(issuer: nkeys.KeyPair, subject: str, name: str, nats: dict[str, Any]) -> str:
    claims: dict[str, Any] = {
        "iat": int(time.time()),
        "iss": issuer.public_key.decode(),
        "name": name,
        "sub": subject,
        "nats": {**nats, "version": 2},
    }
    digest = hashlib.sha256(json.dumps(claims, separators=(",", ":")).encode()).digest()
    claims["jti"] = base64.b32encode(digest).decode().rstrip("=")
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    signature = issuer.sign(f"{header}.{payload}".encode())
    return f"{header}.{payload}.{_b64(signature)}"


@dataclass(frozen=True)
class Operator:
    """A trust chain: the server config that trusts it, and creds files it issued."""

    config_text: str
    account: nkeys.KeyPair

    def creds(self, path: Path) -> Path:
        """Write a ``.creds`` file for a new user of the account; return its path."""
        user, seed = _keypair(nkeys.PREFIX_BYTE_USER)
        # Without limits of its own a user may hold no subscription at all.
        claims = {"type": "user", "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1}
        token = _jwt(self.account, user.public_key.decode(), "engine", claims)
        path.write_text(
            f"-----BEGIN NATS USER JWT-----\n{token}\n------END NATS USER JWT------\n\n"
            f"-----BEGIN USER NKEY SEED-----\n{seed.decode()}\n------END USER NKEY SEED------\n"
        )
        return path


def operator() -> Operator:
    """A new operator, a system account and an account with JetStream."""
    op, _ = _keypair(nkeys.PREFIX_BYTE_OPERATOR)
    account, _ = _keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    system, _ = _keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    op_jwt = _jwt(op, op.public_key.decode(), "operator", {"type": "operator"})
    account_jwt = _jwt(
        op,
        account.public_key.decode(),
        "engine",
        {"type": "account", "limits": {**_OPEN_LIMITS, **_JETSTREAM_LIMITS}},
    )
    system_jwt = _jwt(
        op, system.public_key.decode(), "SYS", {"type": "account", "limits": _OPEN_LIMITS}
    )
    # JetStream needs a system account in operator mode.
    config_text = (
        f"operator: {op_jwt}\n"
        f"system_account: {system.public_key.decode()}\n"
        "resolver: MEMORY\n"
        "resolver_preload: {\n"
        f"  {account.public_key.decode()}: {account_jwt}\n"
        f"  {system.public_key.decode()}: {system_jwt}\n"
        "}\n"
    )
    return Operator(config_text, account)
