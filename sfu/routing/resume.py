"""File transfers that survive their sender's reconnect (docs/DATA_CHANNELS.md).

When a sender's file channel or whole endpoint goes away mid-transfer (a network
change, a page that reconnects), its transfers are paused instead of ended: the
recipients are told (``file_paused``) and keep what they have, the SFU keeps no
byte, only the transfer's numbers. A session of the same identity in the same room
that offers the same file again with ``"resume": true`` within PAUSE_GRACE_S is
authorized again like a new offer and continues the same transfer from the bytes
already relayed (``file_accepted`` with ``"offset"``; recipients get
``file_resumed``). A transfer that nobody resumes ends as "sender did not come back".

Recipients that go away are dropped from the transfer as before: rejoining the
middle of a running stream would need per-recipient offsets and re-sent ranges.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sfu.wire.datamsg import FileOffer

if TYPE_CHECKING:
    from sfu.routing.datachannel import DataEndpoint, DataRelay, Transfer

# How long a paused transfer waits for its sender to come back.
PAUSE_GRACE_S = 60.0
# Paused transfers one identity may have in a room; beyond it the oldest ends.
MAX_PAUSED_PER_SENDER = 4
SENDER_LEFT = "sender left"
NOT_BACK = "sender did not come back"
# Outcomes a recipient reported itself (file_received); the others came as file_cancel.
RECEIVED = {"verified": True, "corrupt": False}


def same_file(offer: FileOffer, paused: FileOffer) -> bool:
    """Whether a resume offer repeats the interrupted one (everything but ``resume``)."""
    return (
        offer.name, offer.size, offer.mime, offer.sha256, offer.to, offer.sealed,
        offer.plain_size,
    ) == (
        paused.name, paused.size, paused.mime, paused.sha256, paused.to, paused.sealed,
        paused.plain_size,
    )  # fmt: skip


class Resumption:
    """A room's paused transfers: pausing, resuming and expiring them."""

    def __init__(self, relay: DataRelay) -> None:
        self.relay = relay

    def paused(self) -> list[Transfer]:
        return [t for t in self.relay.transfers.values() if t.paused_at is not None]

    def pause(self, transfer: Transfer, now: float) -> None:
        """The sender is gone: keep the transfer, without a sender, for PAUSE_GRACE_S."""
        if transfer.paused_at is not None:
            return  # its file channel went first, then the rest of its connection
        sender = transfer.sender
        sender.transfers.pop(transfer.number, None)
        if transfer.held and not sender.closed:
            sender.association.release(transfer.held)
            sender.mark()
        transfer.held = 0
        transfer.paused_at = now
        transfer.stalled_since = None
        notice = {"type": "file_paused", "transfer": transfer.number,
                  "offset": transfer.relayed, "reason": SENDER_LEFT}  # fmt: skip
        for endpoint in transfer.recipients.values():
            endpoint.send_json(endpoint.file, notice)
        mine = [t for t in self.paused() if t.sender.identity == sender.identity]
        for oldest in sorted(mine, key=lambda t: t.paused_at or 0.0)[:-MAX_PAUSED_PER_SENDER]:
            self.relay.end_transfer(oldest, "too many paused transfers", now)

    def expire(self, now: float) -> None:
        for transfer in self.paused():
            if transfer.paused_at is None or now - transfer.paused_at < PAUSE_GRACE_S:
                continue
            transfer.paused_at = None
            self.relay.maybe_finish(transfer)  # every recipient has it and said so
            if transfer.number in self.relay.transfers:
                self.relay.end_transfer(transfer, NOT_BACK, now)

    def resume(self, source: DataEndpoint, offer: FileOffer, now: float) -> None:
        """``source`` offers a file again with ``resume``: continue its paused transfer,
        checked again as if it were new (grants, policy, limits, transfers at once)."""
        relay = self.relay

        def refuse(code: str, message: str) -> None:
            source.send_error(source.file, code, message, id=offer.file_id)

        # Only the identity that started it: a paused transfer of somebody else, one
        # that expired or ended, or one in another room is not found.
        mine = [
            t
            for t in self.paused()
            if t.sender.identity == source.identity and t.offer.file_id == offer.file_id
        ]
        if not mine:
            refuse("not_found", f"no paused transfer {offer.file_id!r} of yours to resume")
            return
        matching = [t for t in mine if same_file(offer, t.offer)]
        if not matching:
            refuse("resume_mismatch", "a resumed offer must repeat the interrupted one exactly")
            return
        transfer = matching[0]
        recipients = list(transfer.recipients.values())
        why = source.session.data_authorize("send_file", [e.identity for e in recipients])
        if why is not None:
            refuse("forbidden", why)
            relay.end_transfer(transfer, f"no longer allowed: {why}", now)
            return
        limits = relay.limits
        rule = None
        if offer.file_bytes > limits.max_bytes:
            rule = "file_too_large"
        elif not limits.allows_type(offer.mime):
            rule = "file_type_refused"
        if rule is not None:  # the room's rules changed while the sender was away
            refuse(rule, "the room's file rules no longer allow this file")
            relay.end_transfer(transfer, "the room's file rules changed", now)
            return
        from sfu.routing.datachannel import MAX_OPEN_TRANSFERS

        if len(source.transfers) >= MAX_OPEN_TRANSFERS:
            refuse("busy", f"at most {MAX_OPEN_TRANSFERS} transfers at once; still paused")
            return
        for endpoint in recipients:
            if endpoint.session.data_authorize("receive_file", [source.identity]) is not None:
                relay.drop_recipient(transfer, endpoint, "no longer allowed to receive", now)
        if transfer.number not in relay.transfers:
            refuse("no_recipients", "nobody here may receive this file any more")
            return
        transfer.sender = source
        transfer.paused_at = None
        transfer.resumes += 1
        transfer.checked_at = now
        source.transfers[transfer.number] = transfer
        resumed = {"type": "file_resumed", "transfer": transfer.number, "offset": transfer.relayed}
        for endpoint in transfer.recipients.values():
            endpoint.send_json(endpoint.file, resumed)
        everyone = set(transfer.outcome) | {e.identity for e in transfer.recipients.values()}
        source.send_json(
            source.file,
            {"type": "file_accepted", "id": offer.file_id, "transfer": transfer.number,
             "recipients": sorted(everyone), "kept": transfer.kept is not None,
             "resumed": True, "offset": transfer.relayed},
        )  # fmt: skip
        # What recipients said while the sender was away, in the usual form.
        for identity, result in sorted(transfer.outcome.items()):
            if result in RECEIVED:
                said = {"type": "file_received", "transfer": transfer.number,
                        "ok": RECEIVED[result], "from": identity}  # fmt: skip
            else:
                said = {"type": "file_cancel", "transfer": transfer.number, "reason": result,
                        "recipient": identity}  # fmt: skip
            source.send_json(source.file, said)
        relay.maybe_finish(transfer)
