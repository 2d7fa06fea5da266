"""JetStream only: connecting to servers that require credentials or TLS.

Each test starts its own nats-server configured to require them, then shows
that the right ConnectOptions get in (and work end to end) and wrong ones are
refused within a bounded time: wrong credentials at once with AuthorizationError
(a ConnectionLostError that retrying does not cure). A ``tls://`` URL (or TLS
files) means TLS or nothing: a server that offers none is refused before
anything, credentials included, is sent to it.
"""

from __future__ import annotations

import json

import pytest
import trio
from certificates import make_certificates, mutual_tls_config
from natsserver import NatsServer, http_get

from transport import (
    AuthorizationError,
    ConnectionLostError,
    ConnectionState,
    ConnectOptions,
    InvalidSpecError,
    KVSpec,
    StreamSpec,
    open_transport,
)

pytestmark = [pytest.mark.jetstream, pytest.mark.usefixtures("nats_client")]


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
    certs = make_certificates(tmp_path / "certs")
    config = mutual_tls_config(certs)
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


# -- TLS or nothing ----------------------------------------------------------------


def _connects_in_log(server: NatsServer) -> int:
    """How many CONNECT commands the server (tracing, ``-DV``) has received."""
    return server.log_path.read_text(errors="replace").count("<<- [CONNECT")


@pytest.fixture
def tracing_password_server(tmp_path):
    """A server without TLS that logs every command it receives."""
    config = {"authorization": {"user": "engine", "password": "s3cret"}}
    with NatsServer(tmp_path / "nats", config=config, extra_args=["-DV"]) as server:
        yield server


async def test_a_tls_url_to_a_server_without_tls_is_refused_before_anything_is_sent(
    tracing_password_server,
):
    server = tracing_password_server
    secure = server.url.replace("nats://", "tls://")
    credentials = {"user": "engine", "password": "s3cret"}
    began = trio.current_time()
    with pytest.raises(ConnectionLostError, match="offers no TLS, and the URL says tls://"):
        await round_trip(secure, ConnectOptions(**credentials, connect_timeout=5.0))
    # Refused on the server's first word, not after the connect timeout ran out.
    assert trio.current_time() - began < 5.0
    # Nothing reached the server: no CONNECT, so no password in the clear.
    assert _connects_in_log(server) == 0
    # The same server over nats:// is reached, and its trace shows the CONNECT.
    await round_trip(server.url, ConnectOptions(**credentials))
    assert _connects_in_log(server) >= 1


async def test_tls_files_with_a_nats_url_require_tls_too(tracing_password_server, tmp_path):
    certs = make_certificates(tmp_path / "certs")
    server = tracing_password_server
    options = ConnectOptions(user="engine", password="s3cret", tls_ca_file=str(certs / "ca.pem"))
    with pytest.raises(ConnectionLostError, match="offers no TLS, and TLS files were given"):
        await round_trip(server.url, options)
    assert _connects_in_log(server) == 0


async def test_a_server_offering_tls_without_requiring_it_is_spoken_to_over_tls(tmp_path):
    certs = make_certificates(tmp_path / "certs")
    config = {
        "tls": {"cert_file": str(certs / "server.pem"), "key_file": str(certs / "server.key")},
        "allow_non_tls": True,
    }
    with NatsServer(tmp_path / "nats", config=config) as server:
        options = ConnectOptions(tls_ca_file=str(certs / "ca.pem"), name="secure-one")
        with trio.fail_after(20):
            async with open_transport(server.url.replace("nats://", "tls://"), options):
                status, body = await trio.to_thread.run_sync(
                    http_get, f"{server.monitor_url}/connz?subs=0", 5.0
                )
        assert status == 200
        (mine,) = [c for c in json.loads(body)["connections"] if c.get("name") == "secure-one"]
        assert mine.get("tls_version"), mine


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"tls_ca_file": "missing.pem"}, "TLS CA bundle .*missing.pem: No such file"),
        ({"tls_ca_file": "junk.pem"}, "TLS CA bundle .*junk.pem: not a usable PEM file"),
        (
            {"tls_cert_file": "junk.pem", "tls_key_file": "junk.pem"},
            "TLS client certificate .*junk.pem with key .*junk.pem: not a usable PEM file",
        ),
    ],
)
async def test_unusable_tls_files_are_refused_by_name(password_server, tmp_path, files, message):
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    options = ConnectOptions(**{key: str(tmp_path / name) for key, name in files.items()})
    with trio.fail_after(10), pytest.raises(InvalidSpecError, match=message):
        async with open_transport(password_server.url, options):
            pytest.fail("connected with unusable TLS files")


async def test_a_reconnect_to_a_server_that_lost_its_tls_sends_nothing(tmp_path):
    """The server comes back without TLS (an impostor on its port, say): the
    transport tries, sends nothing, stays disconnected, and gets back in once
    the server has TLS again."""
    certs = make_certificates(tmp_path / "certs")
    plain = {"authorization": {"user": "engine", "password": "s3cret"}}
    secure = {
        **plain,
        "tls": {"cert_file": str(certs / "server.pem"), "key_file": str(certs / "server.key")},
    }
    options = ConnectOptions(user="engine", password="s3cret", tls_ca_file=str(certs / "ca.pem"))
    with NatsServer(tmp_path / "nats", config=secure, extra_args=["-DV"]) as server:
        url = server.url.replace("nats://", "tls://")
        with trio.fail_after(60):
            async with open_transport(url, options) as transport:
                await transport.ensure_stream(StreamSpec(name="AUTH", subjects=("auth.>",)))
                events = transport.connection_events()
                await trio.to_thread.run_sync(server.kill)
                server.config = plain
                await trio.to_thread.run_sync(server.restart)
                run = server.log_path.stat().st_size  # where the plain run's log starts

                def plain_run_log() -> str:
                    with server.log_path.open("rb") as log:
                        log.seek(run)
                        return log.read().decode(errors="replace")

                # Another process's log is all there is to wait on: poll it.
                while plain_run_log().count("Client connection closed") < 2:  # noqa: ASYNC110
                    await trio.sleep(0.05)
                assert "<<- [CONNECT" not in plain_run_log()
                assert transport.state is not ConnectionState.CONNECTED

                await trio.to_thread.run_sync(server.kill)
                server.config = secure
                await trio.to_thread.run_sync(server.restart)
                async for event in events:
                    if event.state is ConnectionState.CONNECTED:
                        break
                assert (await transport.publish("auth.after", b"x")).seq >= 1
