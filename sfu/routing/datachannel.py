"""Control and file channels: each session's SCTP association and the room's relay.

Every participant opens two data channels on a transport of their own (no BUNDLE
with audio or video): "control" (chat, reactions, raised hands) and "file"
(announced, chunked transfers). The SFU relays them between the room's members by
permission, stamping the sender on everything. On each association the control
stream goes before the file stream (strict priority at message boundaries, file
chunks at most 16 KiB), so a file flood delays a chat message by one chunk at most.

File chunks are relayed live, with back-pressure instead of buffering: the bytes
of a chunk are released from the sender's receive window only once every
recipient has room again, so a slow recipient slows the sender, and a recipient
that stays stuck is dropped from the transfer (FILE_STALL_S). A transfer whose
sender goes away is paused, and continues when the sender comes back (resume.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from sfu.proto import sctp
from sfu.proto.dcep import PPID_STRING
from sfu.routing.keptfiles import KeptFiles
from sfu.routing.resume import Resumption
from sfu.wire import datamsg
from sfu.wire.datamsg import (
    Chat,
    DataMessageError,
    FileCancel,
    FileOffer,
    FileReceived,
    Hand,
    Reaction,
)

if TYPE_CHECKING:
    from sfu.io.filestore import StoredFile
    from sfu.routing.transport import Transport

log = logging.getLogger(__name__)

CONTROL_LABEL = "control"
FILE_LABEL = "file"
CONTROL_PRIORITY = 0
FILE_PRIORITY = 1
# The largest message we accept; chunks and control messages are far smaller.
MAX_MESSAGE_SIZE = 64 * 1024
# Unacknowledged bytes a recipient's file stream may hold before the sender waits.
FILE_HIGH_WATER = 1024 * 1024
FILE_LOW_WATER = 256 * 1024
# A recipient that takes nothing for this long is dropped from the transfer.
FILE_STALL_S = 10.0
# Transfers one sender may have running at once.
MAX_OPEN_TRANSFERS = 4
# Running transfers are authorized again this often.
RECHECK_S = 1.0


@dataclass(frozen=True, slots=True)
class FileLimits:
    """A room's rules for files: refused before any byte is relayed."""

    max_bytes: int = 100 * 1024 * 1024
    # Media types or "type/*" patterns; empty allows every type.
    types: tuple[str, ...] = ()
    # The file channel's quota: bytes per second one sender may push through the
    # relay. It keeps a file flood from taking the CPU that audio and video need.
    rate_bps: int = 8_000_000
    # Keep files sent to the whole room for later joiners (sfu/io/filestore.py), until
    # the room empties or for at most retention_s seconds.
    keep: bool = False
    retention_s: float | None = None

    def allows_type(self, mime: str) -> bool:
        if not self.types:
            return True
        major = mime.split("/", 1)[0]
        return mime in self.types or f"{major}/*" in self.types


# (action, counterparty identities) -> None, or why not. Actions: "publish:control"
# (each control message), "send_file" and "receive_file" (each transfer, and again
# every RECHECK_S while it runs, so a revoked grant stops a transfer).
Authorizer = Callable[[str, list[str]], str | None]
# (event, detail) for the audit: "file_transfer" when one ends.
Reporter = Callable[[str, dict[str, Any]], None]


def deny_all(action: str, counterparties: list[str]) -> str | None:
    """Until signaling installs its policy, nothing moves (fail closed)."""
    return "no policy decides about data channels here"


def report_nothing(event: str, detail: dict[str, Any]) -> None:
    return None


@dataclass(slots=True)
class Transfer:
    number: int
    sender: DataEndpoint
    offer: FileOffer
    recipients: dict[str, DataEndpoint]
    started_at: float
    relayed: int = 0
    outcome: dict[str, str] = field(default_factory=dict)  # identity -> result
    stalled_since: float | None = None
    held: int = 0  # bytes not yet released to the sender's window
    checked_at: float = 0.0
    kept: StoredFile | None = None  # the room keeps this file for later members
    paused_at: float | None = None  # the sender went away (resume.py)
    resumes: int = 0


class DataRoom(Protocol):
    @property
    def data(self) -> DataRelay: ...


class DataOwner(Protocol):
    """The session a DataEndpoint belongs to: a routing Session when data channels
    run in the media process, a HostedSession in the data process (datahost.py)."""

    @property
    def session_id(self) -> str: ...

    @property
    def identity(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def closed(self) -> bool: ...

    @property
    def room(self) -> DataRoom: ...

    @property
    def data_authorize(self) -> Authorizer: ...

    @property
    def data_report(self) -> Reporter: ...


class DataEndpoint:
    """One session's SCTP association and its two channels."""

    def __init__(
        self, session: DataOwner, transport: Transport, remote_port: int, remote_max_message: int
    ) -> None:
        self.session = session
        self.transport = transport
        self.association = sctp.SctpAssociation(
            remote_port=remote_port,
            max_message_size=MAX_MESSAGE_SIZE,
            peer_max_message_size=remote_max_message,
            manual_release=True,
        )
        self.control: int | None = None
        self.file: int | None = None
        self.transfers: dict[int, Transfer] = {}  # sending, by number
        self.closed = False
        # The file quota's token bucket, in bytes (FileLimits.rate_bps).
        self.file_tokens = 0.0
        self.file_tokens_at = 0.0

    @property
    def relay(self) -> DataRelay:
        return self.session.room.data

    @property
    def identity(self) -> str:
        return self.session.identity

    # -- from the transport ---------------------------------------------------

    def on_packet(self, packet: bytes, now: float) -> None:
        if self.closed:
            return
        self.association.receive(packet, now)
        self._process(now)

    def on_timer(self, now: float) -> None:
        if self.closed:
            return
        deadline = self.association.get_timeout()
        if deadline is not None and deadline <= now:
            self.association.handle_timeout(now)
        self._process(now)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.relay.forget(self)
        stats = self.association.stats
        log.info(
            "data channels closed session=%s packets_in=%d packets_out=%d retransmissions=%d"
            " t3_expirations=%d window_drops=%d",
            self.session.session_id, stats.packets_in, stats.packets_out,
            stats.retransmissions, stats.t3_expirations, stats.window_drops,
        )  # fmt: skip

    # -- events ---------------------------------------------------------------

    def _process(self, now: float) -> None:
        for event in self.association.events():
            try:
                self._on_event(event, now)
            except Exception:  # one bad message must not take the association down
                log.exception("data channel event failed session=%s", self.session.session_id)
        self.mark()

    def mark(self) -> None:
        """Queue this endpoint for the worker's next flush (after the receive batch)."""
        if not self.closed:
            self.transport.worker.data_dirty.add(self)

    def _on_event(self, event: sctp.SctpEvent, now: float) -> None:
        if isinstance(event, sctp.ChannelOpened):
            self._on_channel_opened(event)
        elif isinstance(event, sctp.MessageReceived):
            self._on_message(event, now)
        elif isinstance(event, sctp.ChannelClosed):
            if event.stream_id == self.control:
                self.control = None
            elif event.stream_id == self.file:
                self.file = None
                self.relay.cancel_all(self, "file channel closed", now)
        elif isinstance(event, sctp.BufferedAmountLow):
            self.relay.on_drained(now)
        elif isinstance(event, sctp.MessageTooLarge):
            self.send_error(event.stream_id, "too_large", "message too large for this channel")
        elif isinstance(event, sctp.AssociationClosed):
            self.close()

    def _on_channel_opened(self, event: sctp.ChannelOpened) -> None:
        if event.label == CONTROL_LABEL and self.control is None:
            self.control = event.stream_id
            self.association.set_stream_priority(event.stream_id, CONTROL_PRIORITY)
        elif event.label == FILE_LABEL and self.file is None:
            self.file = event.stream_id
            self.association.set_stream_priority(event.stream_id, FILE_PRIORITY)
            self.association.set_buffered_amount_low_threshold(event.stream_id, FILE_LOW_WATER)
            if event.ordered and event.max_retransmits is None and event.lifetime_ms is None:
                self.relay.kept.offer_to(self, time.monotonic())
        else:
            # Only the two channels exist; anything else is closed at once.
            log.info("refused data channel session=%s", self.session.session_id)
            self.association.close_channel(event.stream_id)
            return
        if event.max_retransmits is not None or event.lifetime_ms is not None or not event.ordered:
            self.send_error(
                event.stream_id,
                "unsupported",
                f"the {event.label} channel must be ordered and reliable; it is closed",
            )
            self.association.close_channel(event.stream_id)
            if event.stream_id == self.control:
                self.control = None
            else:
                self.file = None

    def _on_message(self, event: sctp.MessageReceived, now: float) -> None:
        size = len(event.data)
        text = event.ppid == PPID_STRING
        counters = self.transport.worker.counters
        if event.stream_id in (self.control, self.file):
            channel = "control" if event.stream_id == self.control else "file"
            counters[f"data_messages:{channel}"] += 1
        if event.stream_id == self.control:
            self.association.release(size)
            if not text:
                self.send_error(self.control, "bad_message", "control messages are text")
                return
            self.relay.on_control(self, _text(event), now)
        elif event.stream_id == self.file:
            if text:
                self.association.release(size)
                self.relay.on_file_text(self, _text(event), now)
            else:
                self.relay.on_chunk(self, event.data, size, now)
        else:
            self.association.release(size)

    # -- sending --------------------------------------------------------------

    def send_json(self, stream_id: int | None, message: dict[str, Any]) -> bool:
        return self._send(stream_id, datamsg.encode(message))

    def send_binary(self, stream_id: int | None, data: bytes) -> bool:
        return self._send(stream_id, data)

    def _send(self, stream_id: int | None, data: bytes | str) -> bool:
        """str goes as a text message, bytes as binary (RFC 8831 PPIDs)."""
        if stream_id is None or self.closed:
            return False
        channel = "control" if stream_id == self.control else "file"
        size = len(data) if isinstance(data, bytes) else len(data.encode("utf-8"))
        self.transport.worker.counters[f"data_sent_bytes:{channel}"] += size
        try:
            self.association.send(stream_id, data, time.monotonic())
        except sctp.SctpError as exc:
            log.debug("data channel send failed session=%s: %s", self.session.session_id, exc)
            return False
        self.mark()
        return True

    def send_error(self, stream_id: int | None, code: str, message: str, **extra: Any) -> None:
        self.transport.worker.counters[f"data_refused:{code}"] += 1
        self.send_json(stream_id, {"type": "error", "code": code, "message": message, **extra})

    def file_backlog(self) -> int:
        return 0 if self.file is None else self.association.buffered_amount(self.file)

    @property
    def file_full(self) -> bool:
        """Its file stream holds more unacknowledged bytes than FILE_HIGH_WATER."""
        return self.file_backlog() > FILE_HIGH_WATER

    def flush(self, now: float) -> None:
        if self.closed:
            return
        for packet in self.association.packets_to_send(now):
            self.transport.send_sctp(packet)


def _text(event: sctp.MessageReceived) -> str:
    return event.data.decode("utf-8", errors="replace")


class DataRelay:
    """A room's control and file traffic between its members' endpoints."""

    def __init__(self, name: str = "") -> None:
        self.name = name
        self.endpoints: dict[str, DataEndpoint] = {}
        self.transfers: dict[int, Transfer] = {}
        self._next_transfer = 1
        self._seq = 0
        self.limits = FileLimits()
        self.kept = KeptFiles(self)
        self.resumption = Resumption(self)

    def new_transfer_number(self) -> int:
        number = self._next_transfer
        self._next_transfer = self._next_transfer % (2**32 - 1) + 1
        return number

    def attach(self, endpoint: DataEndpoint) -> None:
        self.endpoints[endpoint.session.session_id] = endpoint

    def forget(self, endpoint: DataEndpoint) -> None:
        if self.endpoints.get(endpoint.session.session_id) is endpoint:
            del self.endpoints[endpoint.session.session_id]
        now = time.monotonic()
        self.cancel_all(endpoint, "participant left", now)
        self.kept.forget(endpoint)
        if not self.endpoints:
            self.kept.room_emptied()  # the meeting is over: kept files go

    def _members(self, exclude: DataEndpoint) -> list[DataEndpoint]:
        return [
            e
            for e in self.endpoints.values()
            if e is not exclude and not e.closed and not e.session.closed
        ]

    def _find(self, identity: str, exclude: DataEndpoint) -> DataEndpoint | None:
        for endpoint in self._members(exclude):
            if endpoint.identity == identity:
                return endpoint
        return None

    # -- control channel ------------------------------------------------------

    def on_control(self, source: DataEndpoint, text: str, now: float) -> None:
        try:
            message = datamsg.parse_control(text)
        except DataMessageError as exc:
            source.send_error(source.control, exc.code, exc.message)
            return
        targets = self._members(source)
        to = message.to if isinstance(message, Chat) else None
        if to is not None:
            targets = [e for e in targets if e.identity == to]
            if not targets:
                source.send_error(source.control, "not_found", f"{to!r} is not here")
                return
        why = source.session.data_authorize("publish:control", [e.identity for e in targets])
        if why is not None:
            source.send_error(source.control, "forbidden", why)
            return
        self._seq += 1
        out: dict[str, Any] = {
            "from": source.identity,
            "name": source.session.name,
            "seq": self._seq,
            "ts": int(time.time() * 1000),
        }
        if isinstance(message, Chat):
            out["type"] = "chat"
            # End-to-end encrypted: relayed as it came, opaque to the SFU.
            if message.sealed is not None:
                out["sealed"] = message.sealed
            else:
                out["body"] = message.body
            if message.ref is not None:
                out["id"] = message.ref
        elif isinstance(message, Reaction):
            out.update(type="reaction", emoji=message.emoji)
        elif isinstance(message, Hand):
            out.update(type="hand", raised=message.raised)
        if to is not None:
            out["to"] = to
        for endpoint in targets:
            endpoint.send_json(endpoint.control, out)
        if isinstance(message, Chat) and message.ref is not None:
            source.send_json(source.control, {"type": "sent", "id": message.ref, "seq": self._seq})

    def notice(self, text: str) -> None:
        """A message from the server (moderators' notices) to everyone's control channel."""
        for endpoint in list(self.endpoints.values()):
            endpoint.send_json(endpoint.control, {"type": "notice", "text": text})

    # -- file channel ---------------------------------------------------------

    def on_file_text(self, source: DataEndpoint, text: str, now: float) -> None:
        try:
            message = datamsg.parse_file_message(text)
        except DataMessageError as exc:
            source.send_error(source.file, exc.code, exc.message)
            return
        if isinstance(message, FileOffer):
            self._offer(source, message, now)
        elif isinstance(message, FileReceived):
            transfer = self.transfers.get(message.transfer)
            if transfer is None and self.kept.on_received(source, message.transfer, message.ok):
                return
            if transfer is None or source.session.session_id not in transfer.recipients:
                source.send_error(source.file, "not_found", "no such transfer to you")
                return
            transfer.outcome[source.identity] = "verified" if message.ok else "corrupt"
            transfer.sender.send_json(
                transfer.sender.file,
                {"type": "file_received", "transfer": transfer.number, "ok": message.ok,
                 "from": source.identity},
            )  # fmt: skip
            self.maybe_finish(transfer)
        elif isinstance(message, FileCancel):
            transfer = self.transfers.get(message.transfer)
            if transfer is None:
                if not self.kept.on_cancel(source, message.transfer):
                    source.send_error(source.file, "not_found", "no such transfer")
            elif transfer.sender is source or (
                transfer.paused_at is not None and transfer.sender.identity == source.identity
            ):
                self.end_transfer(transfer, "cancelled by the sender", now)
            elif source.session.session_id in transfer.recipients:
                self.drop_recipient(transfer, source, "declined", now)
            else:
                source.send_error(source.file, "not_found", "no such transfer")

    def _offer(self, source: DataEndpoint, offer: FileOffer, now: float) -> None:
        if offer.resume:
            self.resumption.resume(source, offer, now)
            return

        def refuse(code: str, message: str) -> None:
            source.send_error(source.file, code, message, id=offer.file_id)

        candidates = self._members(source)
        if offer.to is not None:
            candidates = [e for e in candidates if e.identity == offer.to]
            if not candidates:
                refuse("not_found", f"{offer.to!r} is not here")
                return
        candidates = [e for e in candidates if e.file is not None]
        why = source.session.data_authorize("send_file", [e.identity for e in candidates])
        if why is not None:
            refuse("forbidden", why)
            return
        if offer.file_bytes > self.limits.max_bytes:
            refuse("file_too_large", f"files here are at most {self.limits.max_bytes} bytes")
            return
        if not self.limits.allows_type(offer.mime):
            refuse("file_type_refused", f"files of type {offer.mime} are not allowed here")
            return
        if len(source.transfers) >= MAX_OPEN_TRANSFERS:
            refuse("busy", f"at most {MAX_OPEN_TRANSFERS} transfers at once")
            return
        recipients = {
            e.session.session_id: e
            for e in candidates
            if e.session.data_authorize("receive_file", [source.identity]) is None
        }
        if not recipients:
            refuse("no_recipients", "nobody here may receive this file")
            return
        number = self.new_transfer_number()
        transfer = Transfer(number, source, offer, recipients, now, checked_at=now)
        self.transfers[number] = transfer
        source.transfers[number] = transfer
        announce: dict[str, Any] = {
            "type": "file_offer", "transfer": number, "id": offer.file_id, "from": source.identity,
            "size": offer.size, "mime": offer.mime,
        }  # fmt: skip
        if offer.sealed is not None:  # end-to-end encrypted: name and hash are inside
            announce.update(sealed=offer.sealed, plain_size=offer.plain_size)
        else:
            announce.update(name=offer.name, sha256=offer.sha256)
        kept = self.kept.begin(transfer, announce, now)
        for endpoint in recipients.values():
            endpoint.send_json(endpoint.file, announce)
        source.send_json(
            source.file,
            {"type": "file_accepted", "id": offer.file_id, "transfer": number,
             "recipients": sorted(e.identity for e in recipients.values()), "kept": kept},
        )  # fmt: skip
        if offer.size == 0:
            self._complete_upload(transfer)

    def on_chunk(self, source: DataEndpoint, data: bytes, size: int, now: float) -> None:
        try:
            number, payload = datamsg.parse_chunk(data)
        except DataMessageError as exc:
            source.association.release(size)
            source.send_error(source.file, exc.code, exc.message)
            return
        transfer = source.transfers.get(number)
        if transfer is None:
            source.association.release(size)
            source.send_error(source.file, "not_found", "chunk for no transfer of yours",
                              transfer=number)  # fmt: skip
            return
        if transfer.relayed + len(payload) > transfer.offer.size:
            source.association.release(size)
            source.send_error(source.file, "too_large", "more bytes than the offer announced",
                              transfer=number)  # fmt: skip
            self.end_transfer(transfer, "sender exceeded the announced size", now)
            return
        transfer.relayed += len(payload)
        for endpoint in transfer.recipients.values():
            endpoint.send_binary(endpoint.file, data)
        self.kept.chunk(transfer, payload)
        transfer.held += size
        self._release(transfer, now)
        if transfer.relayed == transfer.offer.size:
            self._complete_upload(transfer)

    def _complete_upload(self, transfer: Transfer) -> None:
        self.kept.uploaded(transfer)
        for endpoint in transfer.recipients.values():
            done = {"type": "file_complete", "transfer": transfer.number}
            endpoint.send_json(endpoint.file, done)

    def _release(self, transfer: Transfer, now: float) -> None:
        """Give the sender its window back once every recipient has room and its
        quota allows: until then the sender's receive window stays closed, so it
        slows down instead of the SFU buffering."""
        if transfer.held == 0:
            return
        if any(e.file_full for e in transfer.recipients.values()):
            if transfer.stalled_since is None:
                transfer.stalled_since = now
            return
        transfer.stalled_since = None
        sender = transfer.sender
        rate = self.limits.rate_bps / 8
        burst = rate / 4  # a quarter second's worth
        elapsed = max(0.0, now - sender.file_tokens_at)
        sender.file_tokens = min(burst, sender.file_tokens + elapsed * rate)
        sender.file_tokens_at = now
        if sender.file_tokens <= 0:
            return  # the timer tries again
        sender.file_tokens -= transfer.held
        sender.association.release(transfer.held)
        transfer.held = 0
        sender.mark()  # a window update may be due

    def on_drained(self, now: float) -> None:
        for transfer in list(self.transfers.values()):
            self._release(transfer, now)
        if self.kept.replays:
            self.kept.pump(now)

    def on_timer(self, now: float) -> None:
        self.kept.on_timer(now)
        self.resumption.expire(now)
        for transfer in list(self.transfers.values()):
            self._release(transfer, now)
            if transfer.paused_at is None and now - transfer.checked_at >= RECHECK_S:
                transfer.checked_at = now
                self._recheck(transfer, now)
        for transfer in list(self.transfers.values()):
            if transfer.stalled_since is None or now - transfer.stalled_since < FILE_STALL_S:
                continue
            for endpoint in list(transfer.recipients.values()):
                if endpoint.file_full:
                    self.drop_recipient(transfer, endpoint, "stalled", now)

    def _recheck(self, transfer: Transfer, now: float) -> None:
        """Grants and policy may have changed since the offer: stop what they no longer allow."""
        sender = transfer.sender
        others = [e.identity for e in transfer.recipients.values()]
        why = sender.session.data_authorize("send_file", others)
        if why is not None:
            self.end_transfer(transfer, f"no longer allowed: {why}", now)
            return
        for endpoint in list(transfer.recipients.values()):
            if endpoint.session.data_authorize("receive_file", [sender.identity]) is not None:
                self.drop_recipient(transfer, endpoint, "no longer allowed to receive", now)
                if transfer.number not in self.transfers:
                    return

    def drop_recipient(
        self, transfer: Transfer, endpoint: DataEndpoint, why: str, now: float
    ) -> None:
        transfer.recipients.pop(endpoint.session.session_id, None)
        transfer.outcome[endpoint.identity] = why
        endpoint.send_json(endpoint.file, {"type": "file_cancel", "transfer": transfer.number,
                                           "reason": why})  # fmt: skip
        transfer.sender.send_json(
            transfer.sender.file,
            {"type": "file_cancel", "transfer": transfer.number, "reason": why,
             "recipient": endpoint.identity},
        )  # fmt: skip
        if not transfer.recipients:
            self.end_transfer(transfer, "no recipients left", now)
        else:
            self._release(transfer, now)
            self.maybe_finish(transfer)

    def maybe_finish(self, transfer: Transfer) -> None:
        """Finish a transfer that every recipient settled; a paused one waits for its
        sender, who would otherwise never hear the results (resume.py)."""
        if transfer.paused_at is not None:
            return
        if transfer.relayed == transfer.offer.size and all(
            e.identity in transfer.outcome for e in transfer.recipients.values()
        ):
            self._finish(transfer, "complete")

    def end_transfer(self, transfer: Transfer, reason: str, now: float) -> None:
        for endpoint in transfer.recipients.values():
            endpoint.send_json(endpoint.file, {"type": "file_cancel", "transfer": transfer.number,
                                               "reason": reason})  # fmt: skip
        if not transfer.sender.closed:
            transfer.sender.send_json(transfer.sender.file, {
                "type": "file_cancel", "transfer": transfer.number, "reason": reason})  # fmt: skip
            if transfer.held:
                transfer.sender.association.release(transfer.held)
                transfer.held = 0
                transfer.sender.mark()
        self._finish(transfer, reason)

    def _finish(self, transfer: Transfer, result: str) -> None:
        if self.transfers.pop(transfer.number, None) is None:
            return
        self.kept.ended(transfer)
        transfer.sender.transfers.pop(transfer.number, None)
        outcome = "complete" if result == "complete" else "ended"
        transfer.sender.transport.worker.counters[f"file_transfers:{outcome}"] += 1
        offer = transfer.offer
        transfer.sender.session.data_report(
            "file_transfer",
            {"result": result, "name": offer.name, "size": offer.file_bytes, "mime": offer.mime,
             "sha256": offer.sha256, "sealed": offer.sealed is not None,
             "relayed": transfer.relayed, "resumed": transfer.resumes,
             "recipients": dict(sorted(transfer.outcome.items()))},
        )  # fmt: skip

    def cancel_all(self, endpoint: DataEndpoint, reason: str, now: float) -> None:
        """``endpoint`` is gone (or lost its file channel): pause what it sends (its
        identity may come back and resume), drop it from what it receives."""
        for transfer in list(self.transfers.values()):
            if transfer.sender is endpoint:
                self.resumption.pause(transfer, now)
            elif endpoint.session.session_id in transfer.recipients:
                self.drop_recipient(transfer, endpoint, reason, now)
