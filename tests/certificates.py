"""Test certificates made with the openssl command: a CA, a server and a client.

Shared by the transport's and the services' TLS tests.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(folder: Path) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, in ``folder``.

    Skips the calling test without the openssl command.
    """
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make test certificates")
    folder.mkdir()
    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=actors test CA",
        cwd=folder,
    )  # fmt: skip
    (folder / "server.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    (folder / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name in ("server", "client"):
        openssl(
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
            "-out", f"{name}.csr", "-subj", f"/CN={name}",
            cwd=folder,
        )  # fmt: skip
        openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "1", "-out", f"{name}.pem", "-extfile", f"{name}.ext",
            cwd=folder,
        )  # fmt: skip
    return folder


def mutual_tls_config(certs: Path) -> dict[str, Any]:
    """The ``nats-server`` configuration that serves TLS with the certificates in
    ``certs`` and requires a client certificate from their CA."""
    return {
        "tls": {
            "cert_file": str(certs / "server.pem"),
            "key_file": str(certs / "server.key"),
            "ca_file": str(certs / "ca.pem"),
            "verify": True,  # clients must present a certificate from the CA
        }
    }
