"""One participant's end-to-end encryption state, as the meeting page keeps it.

The page splits this between ``EndToEnd`` in signaling/static/app.js (identity key,
``e2ee_hello`` / ``e2ee_key``) and its Worker (signaling/static/e2ee-worker.js: sender
keys, keyrings, which frames pass); the design is written at the top of the Worker.
``KeyDistribution`` is the same rules in one sans-I/O object for Python clients: it
takes signaling messages, room events and the time, and returns the messages to send;
it encrypts outgoing frames and decides for every incoming one whether it is
decrypted, passed on unchanged or dropped. It never touches a socket or a clock.

The rules, briefly (docs/E2EE.md has the rest):

* Lock on: make the identity key (once per session) and the sender keys, announce the
  key to the room, and from then on encrypt every frame (a frame that cannot be is
  dropped, never sent in clear).
* A hello from X while on: answer X with our hello (once, until X turns off) and wrap
  for X every key of ``keys_to_share`` not yet sent to it. A newcomer gets our hello.
* New sender keys when someone leaves, leaves the encrypted group, or on the timer;
  each goes to every member that announced a key and heard our hello.
* Lock off: an ``e2ee_hello`` with 32 zero bytes tells the room; we forget every key
  we were given. A member that turns off is expected to send plaintext; its keys are
  kept ``off_grace_s`` for frames in flight.
* Receiving from X: X never announced a key (or turned off): frames pass. X announced
  one: a frame opens under a key X sent us, or it is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from benchmarks.loadgen.e2ee import (
    ACTIVATION_DELAY_S,
    KEY_GRACE_S,
    PUBLIC_KEY_BYTES,
    ROTATION_INTERVAL_S,
    E2EEError,
    IdentityKeyPair,
    ReceiverKeyring,
    SenderKey,
    SenderKeys,
    b64decode,
    clear_prefix_len,
    hello_message,
    key_message,
    parse_header,
    safety_number,
    unwrap_sender_key,
    wrap_sender_key,
)

# The "E2EE off" notice: an all-zero public key, a low-order point never used as a key.
OFF_PUBLIC_KEY = "A" * 43
# How long a member's keys are kept after it turned E2EE off (the page's E2EE_OFF_GRACE_MS).
OFF_GRACE_S = 3.0

Message = dict[str, str]
Mode = Literal["plain", "encrypted"]


@dataclass
class FrameCounters:
    """What became of one sender's frames here (the page's ``sfu.e2ee.frames()``)."""

    decrypted: int = 0
    dropped: int = 0
    passed: int = 0
    kid: int | None = None  # the KID of the last frame that opened


@dataclass
class SentCounters:
    """What became of our own frames (the page's ``sfu.e2ee.sent()``)."""

    encrypted: int = 0
    dropped: int = 0
    plain: int = 0


@dataclass
class Member:
    """Another participant, as far as E2EE goes."""

    public_key: bytes | None = None  # the first identity key it announced
    encrypting: bool = False  # announced a key and has not turned off since
    conflict: bool = False  # announced a second, different key: trusted no more
    answered: bool = False  # has our hello since it last turned on
    mode: Mode = "plain"  # what its frames are expected to be
    sent_kids: set[int] = field(default_factory=set)  # our KIDs wrapped for it
    kids: set[int] = field(default_factory=set)  # its KIDs we were given
    keyring: ReceiverKeyring | None = None
    forget_at: float | None = None  # when its keyring goes, after it turned off
    safety_number: str | None = None


class KeyDistribution:
    """The page's E2EE rules for one participant ``identity``; times are seconds, passed in."""

    def __init__(
        self,
        identity: str,
        *,
        rotation_interval_s: float = ROTATION_INTERVAL_S,
        activation_delay_s: float = ACTIVATION_DELAY_S,
        grace_s: float = KEY_GRACE_S,
        off_grace_s: float = OFF_GRACE_S,
    ) -> None:
        self.identity = identity
        self.rotation_interval_s = rotation_interval_s
        self.activation_delay_s = activation_delay_s
        self.grace_s = grace_s
        self.off_grace_s = off_grace_s
        self.enabled = False
        self.identity_key: IdentityKeyPair | None = None
        self.sender_keys: SenderKeys | None = None
        self.members: dict[str, Member] = {}
        self.present: set[str] = set()  # the others in the room now
        self.frames: dict[str, FrameCounters] = {}
        self.sent = SentCounters()
        self.refused_keys = 0  # blobs that did not open, or stale keys
        self._keyframe_wanted: list[str] = []

    # ------------------------------------------------------------ room events

    def on_room_joined(self, identities: list[str]) -> None:
        """The others already in the room when we joined."""
        self.present.update(i for i in identities if i != self.identity)

    def on_participant_joined(self, identity: str, now: float) -> list[Message]:
        """A newcomer: it gets our hello (and our keys once its hello arrives)."""
        if identity == self.identity:
            return []
        self.present.add(identity)
        if not self.enabled or self.identity_key is None:
            return []
        self._member(identity).answered = True
        return [hello_message(self.identity_key.public_key, to=identity)]

    def on_participant_left(self, identity: str, now: float) -> list[Message]:
        """Forget what it gave us; what we send from now on is under a key it lacks."""
        self.present.discard(identity)
        if self.members.pop(identity, None) is None:
            return []
        return self.rotate(now)

    # ------------------------------------------------------------ our own lock

    def set_enabled(self, on: bool, now: float) -> list[Message]:
        """Turn E2EE on or off; returns what to tell the room."""
        if on == self.enabled:
            return []
        if not on:
            self.enabled = False
            for member in self.members.values():
                member.answered = False
                member.sent_kids.clear()
                member.kids.clear()
                member.keyring = None
                member.forget_at = None
            return [{"type": "e2ee_hello", "public_key": OFF_PUBLIC_KEY}]
        if self.identity_key is None:
            self.identity_key = IdentityKeyPair.generate()
        if self.sender_keys is None:
            self.sender_keys = SenderKeys(
                now,
                rotation_interval_s=self.rotation_interval_s,
                activation_delay_s=self.activation_delay_s,
            )
        self.enabled = True
        out = [hello_message(self.identity_key.public_key)]
        for identity in self.present:
            self._member(identity).answered = True
        for identity, member in self.members.items():
            if member.public_key is not None and member.safety_number is None:
                member.safety_number = safety_number(
                    self.identity_key.public_key, member.public_key
                )
            # Members already encrypting answered nobody's hello for us: give them our keys.
            if member.encrypting and not member.conflict:
                out += self._share(identity, member, now)
        return out

    def rotate(self, now: float) -> list[Message]:
        """A new sender key now, wrapped for every member of the encrypted group."""
        if not self.enabled or self.sender_keys is None:
            return []
        return self._distribute(self.sender_keys.rotate(now))

    def tick(self, now: float) -> list[Message]:
        """Timers: drop keys of members that turned off, rotate when the interval is up."""
        for member in self.members.values():
            if member.forget_at is not None and now >= member.forget_at:
                member.keyring = None
                member.forget_at = None
        if self.enabled and self.sender_keys is not None and self.sender_keys.rotation_due(now):
            return self.rotate(now)
        return []

    # ------------------------------------------------------------ signaling

    def on_message(self, message: dict[str, object], now: float) -> list[Message]:
        """An ``e2ee_hello`` or ``e2ee_key`` from the server; returns the replies."""
        sender = message.get("from")
        if not isinstance(sender, str) or sender == self.identity:
            return []
        kind = message.get("type")
        if kind == "e2ee_hello":
            text = message.get("public_key")
            return self._on_hello(sender, text, now) if isinstance(text, str) else []
        if kind == "e2ee_key":
            blob = message.get("blob")
            return self._on_key(sender, blob, now) if isinstance(blob, str) else []
        return []

    def _on_hello(self, sender: str, text: str, now: float) -> list[Message]:
        member = self._member(sender)
        if text == OFF_PUBLIC_KEY:
            return self._member_off(member, now)
        try:
            public_key = b64decode(text)
        except E2EEError:
            return []
        if len(public_key) != PUBLIC_KEY_BYTES:
            return []
        if member.public_key is not None and member.public_key != public_key:
            # Someone (the server?) swapped the key: this identity's frames are dropped
            # and it gets none of our keys until it leaves and comes back.
            member.conflict = True
            member.kids.clear()
            member.keyring = None
            member.mode = "encrypted"
            return []
        member.forget_at = None
        member.public_key = public_key
        member.encrypting = True
        member.mode = "encrypted"
        if not self.enabled or member.conflict or self.identity_key is None:
            return []
        if member.safety_number is None:
            member.safety_number = safety_number(self.identity_key.public_key, public_key)
        out: list[Message] = []
        if not member.answered:
            out.append(hello_message(self.identity_key.public_key, to=sender))
            member.answered = True
        return out + self._share(sender, member, now)

    def _member_off(self, member: Member, now: float) -> list[Message]:
        had_our_keys = bool(member.sent_kids)
        member.encrypting = False
        member.answered = False
        member.sent_kids.clear()
        member.kids.clear()
        member.mode = "plain"
        if member.keyring is not None:
            member.forget_at = now + self.off_grace_s
        # It left the encrypted group: what we send from now on is under a key it lacks.
        return self.rotate(now) if had_our_keys else []

    def _on_key(self, sender: str, blob_text: str, now: float) -> list[Message]:
        member = self.members.get(sender)
        if (
            not self.enabled
            or self.identity_key is None
            or member is None
            or not member.encrypting
            or member.conflict
            or member.public_key is None
        ):
            return []
        try:
            kid, base_key = unwrap_sender_key(
                self.identity_key, self.identity, sender, member.public_key, b64decode(blob_text)
            )
            if member.keyring is None:
                member.keyring = ReceiverKeyring(grace_s=self.grace_s)
            member.keyring.add_key(kid, base_key, now)
        except E2EEError:
            self.refused_keys += 1
            return []
        member.kids.add(kid)
        self._counters(sender)
        # Frames dropped while we had no key left the decoder without a reference.
        self._keyframe_wanted.append(sender)
        return []

    def take_keyframe_requests(self) -> list[str]:
        """Senders whose video should restart at a keyframe (a key of theirs arrived)."""
        wanted, self._keyframe_wanted = self._keyframe_wanted, []
        return list(dict.fromkeys(wanted))

    # ------------------------------------------------------------ frames

    def encrypt_frame(self, frame: bytes, codec: str, now: float) -> bytes | None:
        """The frame to send: encrypted while on, unchanged while off, None to drop it."""
        if not self.enabled or self.sender_keys is None:
            self.sent.plain += 1
            return frame
        try:
            out = self.sender_keys.encrypt_frame(frame, codec, now)
        except E2EEError:
            self.sent.dropped += 1  # never in clear while E2EE is on
            return None
        self.sent.encrypted += 1
        return out

    def decrypt_frame(self, sender: str, data: bytes, codec: str, now: float) -> bytes | None:
        """The frame for the decoder, or None to drop it (see the module's rules)."""
        count = self._counters(sender)
        member = self.members.get(sender)
        mode: Mode = member.mode if member is not None else "plain"
        keyring = member.keyring if member is not None else None
        if keyring is not None:
            try:
                plaintext = keyring.decrypt_frame(data, codec, now)
            except E2EEError:
                pass
            else:
                count.decrypted += 1
                count.kid = parse_header(data[clear_prefix_len(codec, data) :])[0]
                return plaintext
        # In "plain" mode a keyring is only kept for the grace after the sender turned
        # off: what does not open is its plaintext.
        if mode == "plain":
            count.passed += 1
            return data
        count.dropped += 1
        return None

    # ------------------------------------------------------------ what it shows

    @property
    def public_key(self) -> bytes | None:
        return self.identity_key.public_key if self.identity_key is not None else None

    @property
    def current_kid(self) -> int | None:
        """The KID our frames are encrypted under now (None while never enabled)."""
        return self.sender_keys.current.kid if self.sender_keys is not None else None

    def state(self, identity: str) -> str:
        """The page's tile state for ``identity``: plain, conflict, locked-out, waiting,
        encrypted."""
        member = self.members.get(identity)
        if member is None or not member.encrypting:
            return "plain"
        if member.conflict:
            return "conflict"
        if not self.enabled:
            return "locked-out"
        return "encrypted" if member.kids else "waiting"

    def all_encrypted(self) -> bool:
        """On, and holding a key of every other member of the room."""
        if not self.enabled:
            return False
        for identity in self.present:
            member = self.members.get(identity)
            if member is None or not member.encrypting or member.conflict or not member.kids:
                return False
        return True

    # ------------------------------------------------------------ helpers

    def _member(self, identity: str) -> Member:
        member = self.members.get(identity)
        if member is None:
            member = self.members[identity] = Member()
        return member

    def _counters(self, identity: str) -> FrameCounters:
        count = self.frames.get(identity)
        if count is None:
            count = self.frames[identity] = FrameCounters()
        return count

    def _share(self, identity: str, member: Member, now: float) -> list[Message]:
        if self.sender_keys is None:
            return []
        out: list[Message] = []
        for key in self.sender_keys.keys_to_share(now):
            out += self._send_key(identity, member, key)
        return out

    def _distribute(self, key: SenderKey) -> list[Message]:
        out: list[Message] = []
        for identity, member in self.members.items():
            if member.encrypting and not member.conflict and member.answered:
                out += self._send_key(identity, member, key)
        return out

    def _send_key(self, identity: str, member: Member, key: SenderKey) -> list[Message]:
        if key.kid in member.sent_kids or member.public_key is None:
            return []
        if self.identity_key is None:
            return []
        member.sent_kids.add(key.kid)
        blob = wrap_sender_key(
            self.identity_key, self.identity, identity, member.public_key, key.kid, key.base_key
        )
        return [key_message(identity, blob)]
