"""Property-based tests of the WebSocket message handling (signaling/ws.py).

A `Connection` is driven directly with generated text — before and after a valid
join — against a real MediaService, signing keys, room settings and audit log. Each
message must either be applied or refused with a ProtocolError carrying one of the
documented codes; nothing else may escape, and the connection must still answer a
ping afterwards.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sfu.control import MediaService
from signaling.audit import AuditLog, AuditPaths
from signaling.rooms import RoomSettingsFile
from signaling.tokens import SigningKeys
from signaling.ws import Connection, ProtocolError
from tests.fuzzing import examples

# Every `code` docs/PROTOCOL.md lists for errors sent to the client.
DOCUMENTED_CODES = {
    "bad_json", "bad_message", "too_large", "unknown_type", "unsupported_version",
    "not_joined", "already_joined", "unauthorized", "forbidden", "bad_sdp",
    "unknown_track", "codec_mismatch", "unsupported", "session_closed", "internal",
    "rate_limited", "join_timeout",
}  # fmt: skip


class World:
    def __init__(self, data_dir: Path) -> None:
        self.media = MediaService("127.0.0.1", 0, "127.0.0.1")
        self.keys = SigningKeys.load_or_create(data_dir)
        self.rooms = RoomSettingsFile(data_dir / "rooms.toml")
        self.audit = AuditLog(AuditPaths.in_data_dir(data_dir))

    def connection(self) -> Connection:
        # The socket is only used by the reader and writer tasks, which are not run.
        ws = cast(web.WebSocketResponse, None)
        return Connection(ws, self.media, self.keys, self.rooms, self.audit, "192.0.2.1")

    def joined(self) -> Connection:
        connection = self.connection()
        token = self.keys.issue(identity="fuzz", room="lobby", role="participant")
        connection._handle_text(json.dumps({"type": "join", "version": 1, "token": token}))
        assert connection.token is not None
        return connection


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    world = World(tmp_path_factory.mktemp("ws-fuzz"))
    yield world
    world.audit.close()


def drain(connection: Connection) -> list[dict[str, Any]]:
    out = []
    while not connection.outbox.empty():
        item = connection.outbox.get_nowait()
        if item is not None:
            out.append(item)
    return out


def apply(connection: Connection, text: str) -> None:
    try:
        connection._handle_text(text)
    except ProtocolError as exc:
        assert exc.code in DOCUMENTED_CODES, exc.code
        assert isinstance(exc.message, str) and exc.message
    connection._handle_text('{"type": "ping"}')
    assert drain(connection)[-1]["type"] == "pong"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
message_types = st.sampled_from(["join", "offer", "leave", "ping", "subscribe", ""]) | st.text(
    max_size=10
)
sdp_lines = st.lists(
    st.sampled_from(
        [
            "v=0",
            "o=- 1 1 IN IP4 0.0.0.0",
            "s=-",
            "t=0 0",
            "a=group:BUNDLE 0 1",
            "m=audio 9 UDP/TLS/RTP/SAVPF 111",
            "m=video 9 UDP/TLS/RTP/SAVPF 96",
            "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
            "c=IN IP4 0.0.0.0",
            "a=mid:0",
            "a=mid:1",
            "a=sendonly",
            "a=recvonly",
            "a=sendrecv",
            "a=inactive",
            "a=rtpmap:111 opus/48000/2",
            "a=rtpmap:96 VP8/90000",
            "a=rtcp-mux",
            "a=ice-ufrag:abcd",
            "a=ice-pwd:" + "p" * 24,
            "a=setup:active",
            "a=setup:passive",
            "a=fingerprint:sha-256 " + ":".join(["AB"] * 32),
            "a=ssrc:1 cname:x",
            "a=ssrc:x",
        ]
    )
    | st.text(max_size=30),
    max_size=30,
).map("\r\n".join)
mids = st.dictionaries(
    st.sampled_from(["0", "1", "2"]) | st.text(max_size=4),
    st.fixed_dictionaries(
        {},
        optional={
            "publish": st.sampled_from(["cam", "mic"]) | json_values,
            "subscribe": st.text(max_size=12) | json_values,
            "source": st.sampled_from(["camera", "screen"]) | json_values,
        },
    )
    | json_values,
    max_size=4,
)
messages = st.fixed_dictionaries(
    {"type": message_types},
    optional={
        "version": st.integers() | json_values,
        "token": st.text(max_size=60) | json_values,
        "room": st.text(max_size=20) | json_values,
        "sdp": sdp_lines | json_values,
        "mids": mids | json_values,
    },
)


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_any_text_is_applied_or_refused_with_a_documented_code(world: World, text: str) -> None:
    apply(world.connection(), text)


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages)
def test_message_shaped_json_before_joining(world: World, message: dict[str, Any]) -> None:
    apply(world.connection(), json.dumps(message))


@settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(messages, min_size=1, max_size=5))
def test_message_sequences_after_a_valid_join(world: World, sequence: list[dict[str, Any]]) -> None:
    connection = world.joined()
    try:
        for message in sequence:
            if message.get("type") == "leave":
                continue  # leaving is legal and ends what the next messages would test
            apply(connection, json.dumps(message))
    finally:
        if connection.session_id is not None:
            world.media.close_session(connection.session_id, "fuzz done")
