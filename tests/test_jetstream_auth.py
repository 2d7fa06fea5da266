"""JetStream only: connecting to servers that require credentials or TLS.

Each test starts its own nats-server configured to require them, then shows
that the right ConnectOptions get in (and work end to end) and wrong ones are
refused within a bounded time: wrong credentials at once with AuthorizationError
(a ConnectionLostError that retrying does not cure).
"""

from __future__ import annotations

import shutil

import pytest
import trio
from certificates import make_certificates
from natsserver import NatsServer

from transport import (
    AuthorizationError,
    ConnectionLostError,
    ConnectOptions,
    KVSpec,
    StreamSpec,
    open_transport,
)

pytestmark = pytest.mark.jetstream


async def round_trip(url: str, options: ConnectOptions) -> None:
    """Publish, and write and read a key: proof the connection really works."""
    with trio.fail_after(20):
        async with open_transport(url, options) as transport:
            await transport.ensure_stream(StreamSpec(name="AUTH", subjects=("auth.>",)))
            assert (await transport.publish("auth.a", b"in")).seq >= 1
            kv = await transport.ensure_kv(KVSpec(bucket="AUTH"))
            revision = await kv.put("k", b"v")
            entry = await kv.get("k")
            assert entry is not None
            assert (entry.value, entry.revision) == (b"v", revision)


async def assert_refused(
    url: str, options: ConnectOptions, error: type[ConnectionLostError] = AuthorizationError
) -> None:
    with trio.fail_after(30), pytest.raises(error):
        async with open_transport(url, options):
            pytest.fail("connected without the right credentials")


@pytest.fixture
def password_server(tmp_path):
    config = {"authorization": {"user": "engine", "password": "s3cret"}}
    with NatsServer(tmp_path / "nats", config=config) as server:
        yield server


@pytest.fixture
def token_server(tmp_path):
    with NatsServer(tmp_path / "nats", config={"authorization": {"token": "t0ken"}}) as server:
        yield server


async def test_user_and_password_from_options_or_url_get_in(password_server):
    url = password_server.url
    await round_trip(url, ConnectOptions(user="engine", password="s3cret"))
    await round_trip(url.replace("nats://", "nats://engine:s3cret@"), ConnectOptions())


async def test_a_wrong_password_or_none_is_refused(password_server):
    short = {"connect_timeout": 1.0}
    await assert_refused(password_server.url, ConnectOptions(user="engine", password="no", **short))
    await assert_refused(password_server.url, ConnectOptions(**short))


async def test_a_token_gets_in_and_a_wrong_one_is_refused(token_server):
    await round_trip(token_server.url, ConnectOptions(token="t0ken"))
    await assert_refused(token_server.url, ConnectOptions(token="wrong", connect_timeout=1.0))


# -- TLS ------------------------------------------------------------------------


@pytest.fixture
def mutual_tls_server(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make test certificates")
    certs = make_certificates(tmp_path / "certs")
    config = {
        "tls": {
            "cert_file": str(certs / "server.pem"),
            "key_file": str(certs / "server.key"),
            "ca_file": str(certs / "ca.pem"),
            "verify": True,  # clients must present a certificate from the CA
        }
    }
    with NatsServer(tmp_path / "nats", config=config) as server:
        yield server, certs


async def test_tls_with_a_client_certificate_gets_in(mutual_tls_server):
    server, certs = mutual_tls_server
    options = ConnectOptions(
        tls_ca_file=str(certs / "ca.pem"),
        tls_cert_file=str(certs / "client.pem"),
        tls_key_file=str(certs / "client.key"),
    )
    await round_trip(server.url.replace("nats://", "tls://"), options)


async def test_tls_without_a_client_certificate_is_refused(mutual_tls_server):
    server, certs = mutual_tls_server
    options = ConnectOptions(tls_ca_file=str(certs / "ca.pem"), connect_timeout=1.0)
    await assert_refused(server.url.replace("nats://", "tls://"), options, ConnectionLostError)
