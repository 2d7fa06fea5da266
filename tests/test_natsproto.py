"""The Trio NATS client's pieces that need no server: the protocol's parser and
writer, credentials, and the choice of the next server."""

from __future__ import annotations

import base64
import json
import os
from urllib.parse import urlsplit

import nkeys
import pytest

from transport import ConnectOptions, InvalidSpecError, open_transport
from transport.natsproto._auth import credentials, read_creds
from transport.natsproto._protocol import (
    OK,
    PING,
    PONG,
    Err,
    Info,
    Msg,
    Parser,
    ProtocolError,
    connect_frame,
    decode_headers,
    encode_headers,
    pub_frame,
    sub_frame,
    unsub_frame,
)
from transport.natsproto._servers import ServerPool

# -- parsing -----------------------------------------------------------------------


def hmsg(head: bytes, block: bytes, data: bytes) -> bytes:
    """An HMSG as the server writes it, its sizes counted."""
    return b"HMSG %b %d %d\r\n%b%b\r\n" % (head, len(block), len(block) + len(data), block, data)


STREAM = (
    b'INFO {"server_id":"S1","version":"2.12.0","headers":true,"max_payload":1048576}\r\n'
    b"PING\r\n"
    b"+OK\r\n"
    b"MSG a.b 7 5\r\nhello\r\n"
    b"MSG a.c 7 _INBOX.x.1 0\r\n\r\n"
    + hmsg(b"$JS.ACK.x 9 _INBOX.r", b"NATS/1.0\r\nNats-Msg-Id: m-1\r\n\r\n", b"abc")
    + hmsg(b"_INBOX.p.1 3", b"NATS/1.0 100 Idle Heartbeat\r\n\r\n", b"")
    + b"PONG\r\n"
    b"-ERR 'Permissions Violation for Publish to \"x\"'\r\n"
)


def check_stream_events(events: list[object]) -> None:
    info, ping, ok, plain, empty, stored, beat, pong, err = events
    assert isinstance(info, Info)
    assert info.fields["server_id"] == "S1"
    assert (ping, ok, pong) == (PING, OK, PONG)
    assert isinstance(plain, Msg)
    assert (plain.subject, plain.sid, plain.reply) == ("a.b", 7, None)
    assert plain.data == b"hello"
    assert plain.headers is None
    assert plain.status is None
    assert isinstance(empty, Msg)
    assert (empty.reply, empty.data) == ("_INBOX.x.1", b"")
    assert isinstance(stored, Msg)
    assert stored.headers == {"Nats-Msg-Id": "m-1"}
    assert (stored.data, stored.status, stored.reply) == (b"abc", None, "_INBOX.r")
    assert isinstance(beat, Msg)
    assert (beat.status, beat.description) == ("100", "Idle Heartbeat")
    assert beat.headers == {}
    assert beat.data == b""
    assert isinstance(err, Err)
    assert err.text == 'Permissions Violation for Publish to "x"'


def test_the_parser_reads_every_operation_of_the_protocol():
    check_stream_events(Parser().feed(STREAM))


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64])
def test_the_parser_reads_the_same_however_the_bytes_are_split(size):
    parser = Parser()
    events: list[object] = []
    for start in range(0, len(STREAM), size):
        events += parser.feed(STREAM[start : start + size])
    check_stream_events(events)


def test_a_payload_holding_crlf_and_protocol_words_is_data():
    data = b"PING\r\nMSG x 1 3\r\n"
    (msg,) = Parser().feed(b"MSG s 1 %d\r\n%b\r\n" % (len(data), data))
    assert isinstance(msg, Msg)
    assert msg.data == data


@pytest.mark.parametrize(
    "wire",
    [
        b"HELLO there\r\n",
        b"MSG a.b x 5\r\nhello\r\n",
        b"MSG a.b 1\r\n",
        b"MSG a.b 1 -1\r\n",
        b"MSG a.b 1 3\r\nabcXY",
        b"HMSG a 1 40 20\r\n",
        b"HMSG a 1 2 4\r\nabcd\r\n",
        b"HMSG a 1 14 14\r\nHTTP/1.1 200\r\n\r\n",
        b"INFO [1, 2]\r\n",
        b"INFO {not json\r\n",
        b"MSG a.b 1 999999999999\r\n",
    ],
)
def test_what_is_not_the_protocol_is_refused(wire):
    with pytest.raises(ProtocolError):
        Parser().feed(wire)


def test_an_endless_control_line_is_refused():
    parser = Parser()
    for _ in range(16):  # 1 MiB: the longest line taken
        assert parser.feed(b"x" * 65536) == []  # a line not ended yet
    with pytest.raises(ProtocolError, match="too long"):
        parser.feed(b"x" * 65536)


# -- writing -----------------------------------------------------------------------


def test_headers_survive_a_round_trip_with_the_status_kept_apart():
    block = encode_headers({"Nats-Msg-Id": "a b:c", "X-Empty": "", "Ünï": "çödé"})
    headers, status, description = decode_headers(block)
    assert headers == {"Nats-Msg-Id": "a b:c", "X-Empty": "", "Ünï": "çödé"}
    assert (status, description) == (None, None)
    assert decode_headers(b"NATS/1.0 503\r\n\r\n") == ({}, "503", None)
    found = decode_headers(b"NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 3\r\n\r\n")
    assert found == ({"Nats-Pending-Messages": "3"}, "408", "Request Timeout")


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Evil": "a\r\nNats-Msg-Id: forged"},
        {"X-Evil": "a\nb"},
        {"Bad Name": "v"},
        {"Bad:Name": "v"},
        {"": "v"},
        {"Bad\rName": "v"},
    ],
)
def test_a_header_that_could_forge_others_is_refused(headers):
    with pytest.raises(InvalidSpecError):
        encode_headers(headers)


def test_the_writer_frames_publishes_and_subscriptions():
    assert pub_frame("a.b", None, b"hi", None) == b"PUB a.b 2\r\nhi\r\n"
    assert pub_frame("a.b", "r.1", b"", None) == b"PUB a.b r.1 0\r\n\r\n"
    block = b"NATS/1.0\r\nK: v\r\n\r\n"
    assert pub_frame("a", "r", b"xyz", block) == b"HPUB a r %d %d\r\n%bxyz\r\n" % (
        len(block),
        len(block) + 3,
        block,
    )
    assert sub_frame("a.>", 4) == b"SUB a.> 4\r\n"
    assert sub_frame("a.*", 5, "workers") == b"SUB a.* workers 5\r\n"
    assert unsub_frame(4) == b"UNSUB 4\r\n"
    assert json.loads(connect_frame({"verbose": False})[len(b"CONNECT ") :]) == {"verbose": False}
    # What the writer frames, the parser reads back (the server's MSG has a sid).
    (msg,) = Parser().feed(hmsg(b"a 1 r", block, b"xyz"))
    assert isinstance(msg, Msg)
    assert (msg.headers, msg.data) == ({"K": "v"}, b"xyz")


@pytest.mark.parametrize("subject", ["a b", "a\r\nPUB x 1", "", "a\tb"])
def test_a_subject_that_would_break_the_framing_is_refused(subject):
    with pytest.raises(InvalidSpecError):
        pub_frame(subject, None, b"", None)
    with pytest.raises(InvalidSpecError):
        pub_frame("ok", subject or " ", b"", None)


# -- credentials -------------------------------------------------------------------


def _seed() -> bytes:
    return bytes(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER))


def _verify(public: str, nonce: str, sig: str) -> bool:
    signature = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
    keys = nkeys.from_seed(bytearray(SEED))
    assert keys.public_key.decode() == public
    return bool(keys.verify(nonce.encode(), signature))


SEED = _seed()


def test_credentials_from_options_come_before_the_url():
    url = urlsplit("nats://u:p%40ss@h:4222")
    assert credentials(ConnectOptions(), url, None) == {"user": "u", "pass": "p@ss"}
    assert credentials(ConnectOptions(token="t"), url, None) == {"auth_token": "t"}
    given = ConnectOptions(user="a", password="b")
    assert credentials(given, url, None) == {"user": "a", "pass": "b"}
    assert credentials(ConnectOptions(), urlsplit("nats://tok@h"), None) == {"auth_token": "tok"}
    assert credentials(ConnectOptions(), urlsplit("nats://h"), None) == {}


def test_an_nkey_seed_signs_the_servers_nonce(tmp_path):
    path = tmp_path / "user.nk"
    path.write_bytes(b"# a comment-free seed file\n" + SEED + b"\n")
    fields = credentials(ConnectOptions(nkey_seed_file=str(path)), urlsplit("nats://h"), "n0nce")
    assert set(fields) == {"nkey", "sig"}
    assert _verify(fields["nkey"], "n0nce", fields["sig"])


def test_a_creds_file_gives_its_jwt_and_signs_with_its_seed(tmp_path):
    path = tmp_path / "user.creds"
    path.write_text(
        "-----BEGIN NATS USER JWT-----\neyJ0.eyJ1.c2ln\n------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "-----BEGIN USER NKEY SEED-----\n" + SEED.decode() + "\n------END USER NKEY SEED------\n"
    )
    assert read_creds(str(path)) == ("eyJ0.eyJ1.c2ln", SEED)
    fields = credentials(ConnectOptions(credentials_file=str(path)), urlsplit("nats://h"), "abc")
    assert fields["jwt"] == "eyJ0.eyJ1.c2ln"
    public = nkeys.from_seed(bytearray(SEED)).public_key.decode()
    assert _verify(public, "abc", fields["sig"])


@pytest.mark.parametrize(
    ("option", "content", "message"),
    [
        ("nkey_seed_file", None, "NKey seed file .*missing: No such file"),
        ("nkey_seed_file", "nothing here\n", "NKey seed file .*: no seed in it"),
        ("nkey_seed_file", "SUnotaseed\n", "NKey seed file .*: not a usable NKey seed"),
        ("credentials_file", None, "credentials file .*missing: No such file"),
        ("credentials_file", "just text\n", "credentials file .*: no user JWT and seed"),
    ],
)
def test_unusable_credential_files_are_refused_by_name(tmp_path, option, content, message):
    path = tmp_path / "missing"
    if content is not None:
        path = tmp_path / "file"
        path.write_text(content)
    with pytest.raises(InvalidSpecError, match=message):
        credentials(ConnectOptions(**{option: str(path)}), urlsplit("nats://h"), "nonce")


# -- the next server -----------------------------------------------------------------


def test_the_least_tried_server_comes_first_and_waits_grow_to_the_cap():
    pool = ServerPool(
        ["nats://a:4222", "nats://b:4223"], reconnect_wait=0.25, max_reconnect_wait=1.0
    )
    a, b = pool.servers
    assert pool.next() == (a, 0.0)
    pool.failed(a)
    assert pool.next() == (b, 0.0)
    pool.failed(b)
    pool.failed(b)
    server, wait = pool.next()
    assert server is a
    assert 0.4 <= wait <= 0.5
    for _ in range(10):
        pool.failed(a)
    assert pool.next()[0] is b
    pool.failed(b)
    pool.failed(b)
    pool.failed(b)
    for _ in range(20):
        assert pool.next()[1] <= 1.0


def test_a_server_connected_to_goes_last_among_equals():
    pool = ServerPool(["nats://a", "nats://b"], reconnect_wait=0.1, max_reconnect_wait=1.0)
    a, b = pool.servers
    pool.connected(a)
    assert pool.next()[0] is b


def test_servers_announced_by_the_cluster_join_the_pool_once():
    pool = ServerPool(["tls://seed.example:4222"], reconnect_wait=0.1, max_reconnect_wait=1.0)
    pool.learn(["10.0.0.2:4222", "10.0.0.3:4223", "seed.example:4222", "10.0.0.2:4222"])
    pool.learn(["bad:port:x", 7, "", "[::1]:4224"])
    assert [s.netloc for s in pool.servers] == [
        "seed.example:4222",
        "10.0.0.2:4222",
        "10.0.0.3:4223",
        "[::1]:4224",
    ]
    learnt = pool.servers[1]
    # Learnt servers speak the same scheme, and TLS checks the name first given.
    assert (learnt.implicit, learnt.url.scheme, learnt.tls_hostname) == (
        True,
        "tls",
        "seed.example",
    )


# -- choosing the client -------------------------------------------------------------


def test_the_options_choose_the_client_before_the_environment(monkeypatch):
    monkeypatch.delenv("ACTORS_NATS_CLIENT", raising=False)
    assert ConnectOptions().nats_client() == "trio"
    monkeypatch.setenv("ACTORS_NATS_CLIENT", "nats-py")
    assert ConnectOptions().nats_client() == "nats-py"
    assert ConnectOptions(client="trio").nats_client() == "trio"
    monkeypatch.setenv("ACTORS_NATS_CLIENT", " ")
    assert ConnectOptions().nats_client() == "trio"


async def test_an_unknown_client_is_refused_by_where_it_was_named(monkeypatch):
    with pytest.raises(InvalidSpecError, match="client: unknown NATS client 'asyncio'"):
        ConnectOptions(client="asyncio")
    monkeypatch.setenv("ACTORS_NATS_CLIENT", "bogus")
    with pytest.raises(InvalidSpecError, match="ACTORS_NATS_CLIENT: unknown NATS client 'bogus'"):
        async with open_transport("nats://127.0.0.1:4222"):
            pytest.fail("opened a transport on an unknown client")
