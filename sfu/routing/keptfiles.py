"""Files a room keeps for members who join later (rooms.toml ``keep_files``).

A file offered to the whole room of a room that keeps files is written to the
FileStore (sealed at rest) as it is relayed. A member whose file channel opens
later is offered every kept file its grants allow, as a transfer from the server
in the usual form (file_offer with ``"kept": true``, chunks, file_complete), paced
by its own back-pressure and the room's file quota. Kept files are deleted when
the room's last member leaves, or earlier when ``file_retention_s`` runs out; each
deletion is reported for the audit (``files_deleted``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sfu.io.filestore import FileStore, StoredFile, StoreError

if TYPE_CHECKING:
    from sfu.routing.datachannel import DataEndpoint, DataRelay, Transfer

log = logging.getLogger(__name__)

# (event, detail) about the room rather than one member: "files_deleted".
RoomReporter = Callable[[str, dict[str, Any]], None]


def report_nothing(event: str, detail: dict[str, Any]) -> None:
    return None


@dataclass(slots=True)
class Replay:
    """A kept file on its way to one later member."""

    number: int
    endpoint: DataEndpoint
    stored: StoredFile
    chunks: Iterator[bytes]
    started_at: float
    tokens: float = 0.0
    tokens_at: float = 0.0
    sent: int = 0
    uploaded: bool = False


def _summary(stored: StoredFile) -> dict[str, Any]:
    meta = stored.meta
    return {
        "name": meta.get("name"), "size": meta.get("plain_size", meta.get("size")),
        "mime": meta.get("mime"), "sha256": meta.get("sha256"), "from": meta.get("from"),
        "sealed": "sealed" in meta,
    }  # fmt: skip


class KeptFiles:
    """One room's kept files: storing uploads, replaying them, deleting them."""

    def __init__(self, relay: DataRelay) -> None:
        self.relay = relay
        self.store: FileStore | None = None
        self.report_room: RoomReporter = report_nothing
        self.replays: dict[int, Replay] = {}

    # -- uploads ----------------------------------------------------------------

    def begin(self, transfer: Transfer, announce: dict[str, Any], now: float) -> bool:
        """Keep this transfer's file if the room keeps files; True if it is kept."""
        limits = self.relay.limits
        if self.store is None or not limits.keep or transfer.offer.to is not None:
            return False
        meta = {k: v for k, v in announce.items() if k not in ("type", "transfer")}
        stored = self.store.begin(
            self.relay.name, meta, transfer.offer.size, now, limits.retention_s
        )
        if stored is None:
            log.warning("file not kept: the server's file budget is full room=%s", self.relay.name)
            return False
        transfer.kept = stored
        return True

    def chunk(self, transfer: Transfer, payload: bytes) -> None:
        if transfer.kept is None or self.store is None:
            return
        try:
            self.store.append(transfer.kept, payload)
        except StoreError as exc:
            log.warning("kept file dropped room=%s: %s", self.relay.name, exc)
            self.store.delete(transfer.kept)
            transfer.kept = None

    def uploaded(self, transfer: Transfer) -> None:
        if transfer.kept is not None and self.store is not None:
            self.store.finish(transfer.kept)

    def ended(self, transfer: Transfer) -> None:
        """The transfer is over; a file not wholly uploaded is not kept."""
        if transfer.kept is not None and self.store is not None and not transfer.kept.complete:
            self.store.delete(transfer.kept)
        transfer.kept = None

    # -- replays to later members -------------------------------------------------

    def offer_to(self, endpoint: DataEndpoint, now: float) -> None:
        """``endpoint``'s file channel just opened: offer it what the room kept."""
        if self.store is None:
            return
        for stored in self.store.kept(self.relay.name):
            sender = str(stored.meta.get("from", ""))
            if endpoint.session.data_authorize("receive_file", [sender]) is not None:
                continue
            number = self.relay.new_transfer_number()
            replay = Replay(number, endpoint, stored, self.store.read(stored), now, tokens_at=now)
            self.replays[number] = replay
            endpoint.send_json(
                endpoint.file,
                {**stored.meta, "type": "file_offer", "transfer": number, "kept": True},
            )
        self.pump(now)

    def pump(self, now: float) -> None:
        """Send what back-pressure and the room's quota allow of every replay."""
        rate = self.relay.limits.rate_bps / 8
        for replay in list(self.replays.values()):
            endpoint = replay.endpoint
            if endpoint.closed or endpoint.file is None:
                self._finish(replay, "participant left")
                continue
            replay.tokens = min(rate / 4, replay.tokens + (now - replay.tokens_at) * rate)
            replay.tokens_at = now
            prefix = replay.number.to_bytes(4, "big")
            while not replay.uploaded and replay.tokens > 0:
                if endpoint.file_full:
                    break
                try:
                    chunk = next(replay.chunks, None)
                except StoreError as exc:
                    log.warning("kept file unreadable room=%s: %s", self.relay.name, exc)
                    self._cancel(replay, "kept file lost")
                    break
                if chunk is None:
                    replay.uploaded = True
                    endpoint.send_json(
                        endpoint.file, {"type": "file_complete", "transfer": replay.number}
                    )
                    break
                endpoint.send_binary(endpoint.file, prefix + chunk)
                replay.sent += len(chunk)
                replay.tokens -= len(chunk)

    def on_received(self, source: DataEndpoint, number: int, ok: bool) -> bool:
        """A member confirmed a kept file; False if ``number`` is not one of its replays."""
        replay = self.replays.get(number)
        if replay is None or replay.endpoint is not source:
            return False
        self._finish(replay, "verified" if ok else "corrupt")
        return True

    def on_cancel(self, source: DataEndpoint, number: int) -> bool:
        replay = self.replays.get(number)
        if replay is None or replay.endpoint is not source:
            return False
        self._finish(replay, "declined")
        return True

    def forget(self, endpoint: DataEndpoint) -> None:
        for replay in list(self.replays.values()):
            if replay.endpoint is endpoint:
                self._finish(replay, "participant left")

    def _cancel(self, replay: Replay, reason: str) -> None:
        cancel = {"type": "file_cancel", "transfer": replay.number, "reason": reason}
        replay.endpoint.send_json(replay.endpoint.file, cancel)
        self._finish(replay, reason)

    def _finish(self, replay: Replay, result: str) -> None:
        if self.replays.pop(replay.number, None) is None:
            return
        endpoint = replay.endpoint
        endpoint.session.data_report(
            "file_transfer",
            {**_summary(replay.stored), "result": "complete" if result == "verified" else result,
             "kept": True, "relayed": replay.sent,
             "recipients": {endpoint.identity: result}},
        )  # fmt: skip

    # -- deletion ---------------------------------------------------------------

    def on_timer(self, now: float) -> None:
        if self.store is None:
            return
        expired = self.store.expire(now, self.relay.name)
        if expired:
            self._deleted(expired, "retention")
        if self.replays:
            self.pump(now)

    def room_emptied(self) -> None:
        if self.store is None:
            return
        for replay in list(self.replays.values()):
            self._finish(replay, "meeting ended")
        deleted = self.store.delete_room(self.relay.name)
        if deleted:
            self._deleted(deleted, "meeting ended")

    def _deleted(self, files: list[StoredFile], reason: str) -> None:
        for replay in list(self.replays.values()):
            if replay.stored in files:
                self._cancel(replay, "deleted")
        self.report_room("files_deleted", {"reason": reason, "files": [_summary(f) for f in files]})
