"""Interop: our SctpAssociation against aiortc's RTCSctpTransport as an independent peer.

aiortc expects an RTCDtlsTransport; `FakeDtls` stands in for it in memory and hands
each SCTP packet across as one "record". aiortc is the DTLS client, so it sends INIT
and opens channels with even stream ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiortc import RTCDataChannel, RTCDataChannelParameters, RTCSctpTransport
from aiortc.rtcsctptransport import RTCSctpCapabilities

from sfu.proto.dcep import PPID_BINARY, PPID_STRING
from sfu.proto.sctp import (
    AssociationClosed,
    AssociationEstablished,
    ChannelClosed,
    ChannelOpened,
    MessageReceived,
    SctpAssociation,
    SctpEvent,
)
from sfu.wire import sctp as wire

BIG = 1024 * 1024
WAIT_S = 10.0


class FakeDtls:
    """The parts of RTCDtlsTransport that RTCSctpTransport uses."""

    def __init__(self, bridge: Bridge) -> None:
        self.state = "connected"
        self._role = "client"
        self._bridge = bridge
        self._data_receiver: Any = None

    def _register_data_receiver(self, receiver: Any) -> None:
        self._data_receiver = receiver

    def _unregister_data_receiver(self, receiver: Any) -> None:
        if self._data_receiver is receiver:
            self._data_receiver = None

    async def _send_data(self, data: bytes) -> None:
        if self._bridge.drop is not None and self._bridge.drop(data):
            return
        self._bridge.from_aiortc(data)


@dataclass
class Bridge:
    """Drives our association with the event loop's clock and carries packets."""

    assoc: SctpAssociation
    events: list[SctpEvent] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    dtls: FakeDtls | None = None
    drop: Callable[[bytes], bool] | None = None  # drops chosen packets from aiortc

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def from_aiortc(self, data: bytes) -> None:
        self.assoc.receive(data, self.now())
        self.wake.set()

    async def run(self) -> None:
        while True:
            self.wake.clear()
            for packet in self.assoc.packets_to_send(self.now()):
                receiver = self.dtls._data_receiver if self.dtls else None
                if receiver is not None:
                    await receiver._handle_data(packet)
            self.events.extend(self.assoc.events())
            if self.wake.is_set():
                continue
            deadline = self.assoc.get_timeout()
            timeout = None if deadline is None else max(0.0, deadline - self.now())
            # asyncio.timeout, unlike wait_for on 3.11, never swallows a cancellation.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self.wake.wait()
            self.assoc.handle_timeout(self.now())


async def wait_for(condition: Callable[[], bool], timeout: float = WAIT_S) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


@dataclass
class Peers:
    bridge: Bridge
    sctp: RTCSctpTransport

    @property
    def events(self) -> list[SctpEvent]:
        return self.bridge.events

    def received(self, sid: int) -> list[MessageReceived]:
        return [e for e in self.events if isinstance(e, MessageReceived) and e.stream_id == sid]


@pytest.fixture(params=["aiortc-initiates", "both-initiate"])
async def peers(request: pytest.FixtureRequest) -> AsyncIterator[Peers]:
    assoc = SctpAssociation(
        max_message_size=2 * BIG, peer_max_message_size=2 * BIG, rng=random.Random(7)
    )
    bridge = Bridge(assoc)
    bridge.dtls = FakeDtls(bridge)
    sctp = RTCSctpTransport(bridge.dtls)  # type: ignore[arg-type]
    if request.param == "both-initiate":
        assoc.start(bridge.now())
    task = asyncio.create_task(bridge.run())
    try:
        await sctp.start(RTCSctpCapabilities(maxMessageSize=2 * BIG), 5000)
        await wait_for(lambda: any(isinstance(e, AssociationEstablished) for e in bridge.events))
        await wait_for(lambda: sctp.state == "connected")
        yield Peers(bridge, sctp)
    finally:
        await sctp.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            async with asyncio.timeout(WAIT_S):
                await task


async def open_from_aiortc(peers: Peers, **kwargs: Any) -> tuple[RTCDataChannel, int]:
    channel = RTCDataChannel(peers.sctp, RTCDataChannelParameters(label="chat", **kwargs))
    await wait_for(lambda: channel.readyState == "open")
    await wait_for(lambda: any(isinstance(e, ChannelOpened) for e in peers.events))
    opened = [e for e in peers.events if isinstance(e, ChannelOpened)][0]
    assert channel.id is not None
    assert opened.stream_id == channel.id
    return channel, channel.id


async def test_aiortc_init_establishes_and_its_channel_opens(peers: Peers) -> None:
    channel, sid = await open_from_aiortc(peers, protocol="proto")
    opened = [e for e in peers.events if isinstance(e, ChannelOpened)]
    assert opened == [ChannelOpened(sid, "chat", "proto", True, None, None, True)]
    assert sid % 2 == 0


async def test_text_and_binary_flow_both_ways(peers: Peers) -> None:
    channel, sid = await open_from_aiortc(peers)
    got: list[str | bytes] = []
    channel.on("message", got.append)
    channel.send("hello sfu")
    channel.send(b"\x01\x02")
    channel.send("")
    await wait_for(lambda: len(peers.received(sid)) == 3)
    assert [(e.ppid, e.data) for e in peers.received(sid)] == [
        (PPID_STRING, b"hello sfu"),
        (PPID_BINARY, b"\x01\x02"),
        (PPID_STRING, b""),
    ]
    now = peers.bridge.now()
    peers.bridge.assoc.send(sid, "hello aiortc", now)
    peers.bridge.assoc.send(sid, b"\x03", now)
    peers.bridge.assoc.send(sid, b"", now)
    peers.bridge.wake.set()
    await wait_for(lambda: len(got) == 3)
    assert got == ["hello aiortc", b"\x03", b""]


async def test_one_megabyte_message_arrives_intact_both_ways(peers: Peers) -> None:
    channel, sid = await open_from_aiortc(peers)
    got: list[str | bytes] = []
    channel.on("message", got.append)
    payload = random.Random(3).randbytes(BIG)
    channel.send(payload)
    await wait_for(lambda: len(peers.received(sid)) == 1)
    assert peers.received(sid)[0].data == payload
    peers.bridge.assoc.send(sid, payload[::-1], peers.bridge.now())
    peers.bridge.wake.set()
    await wait_for(lambda: len(got) == 1)
    assert got == [payload[::-1]]


async def test_channel_opened_from_our_side_reaches_aiortc(peers: Peers) -> None:
    channels: list[RTCDataChannel] = []
    peers.sctp.on("datachannel", channels.append)
    sid = peers.bridge.assoc.open_channel("from-sfu", protocol="p", ordered=False)
    peers.bridge.wake.set()
    await wait_for(lambda: len(channels) == 1)
    await wait_for(lambda: any(isinstance(e, ChannelOpened) for e in peers.events))
    assert sid % 2 == 1
    assert (channels[0].id, channels[0].label, channels[0].ordered) == (sid, "from-sfu", False)
    got: list[str | bytes] = []
    channels[0].on("message", got.append)
    peers.bridge.assoc.send(sid, b"unordered", peers.bridge.now())
    peers.bridge.wake.set()
    await wait_for(lambda: got == [b"unordered"])


async def test_closing_from_aiortc_emits_channel_closed(peers: Peers) -> None:
    channel, sid = await open_from_aiortc(peers)
    channel.send("last")
    channel.close()
    await wait_for(lambda: ChannelClosed(sid) in peers.events)
    await wait_for(lambda: channel.readyState == "closed")
    assert [e.data for e in peers.received(sid)] == [b"last"]


async def test_closing_from_our_side_closes_aiortc_channel(peers: Peers) -> None:
    channel, sid = await open_from_aiortc(peers)
    peers.bridge.assoc.close_channel(sid)
    peers.bridge.wake.set()
    await wait_for(lambda: channel.readyState == "closed")
    await wait_for(lambda: ChannelClosed(sid) in peers.events)


async def test_partially_reliable_channel_from_aiortc_skips_lost_message(peers: Peers) -> None:
    channel, sid = await open_from_aiortc(peers, maxRetransmits=0)
    opened = [e for e in peers.events if isinstance(e, ChannelOpened)][0]
    assert opened.max_retransmits == 0

    def lose_once(packet: bytes) -> bool:
        chunks = wire.parse_packet(packet).chunks
        return any(isinstance(c, wire.DataChunk) and c.user_data == b"lost" for c in chunks)

    peers.bridge.drop = lose_once
    channel.send(b"before")
    await wait_for(lambda: len(peers.received(sid)) == 1)
    channel.send(b"lost")
    for i in range(8):
        channel.send(b"after%d" % i)
        await asyncio.sleep(0.01)
    await wait_for(lambda: len(peers.received(sid)) == 9)
    assert [e.data for e in peers.received(sid)] == [b"before"] + [b"after%d" % i for i in range(8)]
    assert peers.bridge.assoc.stats.duplicate_tsns == 0


async def test_aiortc_stop_aborts_our_association(peers: Peers) -> None:
    await peers.sctp.stop()
    await wait_for(lambda: AssociationClosed("peer abort") in peers.events)
