"""The page's key distribution in Python (benchmarks/loadgen/e2ee_keys.py), without a
network: participants exchange their messages through a relay that does what the
server does (stamps ``from``, removes ``to``, delivers to one or to all others)."""

from __future__ import annotations

from benchmarks.loadgen.e2ee import b64decode, parse_header
from benchmarks.loadgen.e2ee_keys import OFF_GRACE_S, OFF_PUBLIC_KEY, KeyDistribution, Message

VP8_KEYFRAME = bytes([0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A, 0x40, 0x01, 0xF0, 0x00]) + bytes(200)
OPUS_FRAME = bytes([0x78]) + bytes(60)


class Relay:
    """The signaling server's part: e2ee_* messages go to ``to`` or to everyone else."""

    def __init__(self, *identities: str) -> None:
        self.members = {identity: KeyDistribution(identity) for identity in identities}
        self.log: list[tuple[str, Message]] = []
        for identity, member in self.members.items():
            member.on_room_joined([other for other in identities if other != identity])

    def __getitem__(self, identity: str) -> KeyDistribution:
        return self.members[identity]

    def send(self, sender: str, messages: list[Message], now: float) -> None:
        for message in messages:
            self.log.append((sender, message))
            relayed: dict[str, object] = {k: v for k, v in message.items() if k != "to"}
            relayed["from"] = sender
            to = message.get("to")
            targets = [to] if to is not None else [i for i in self.members if i != sender]
            for target in targets:
                self.send(target, self.members[target].on_message(relayed, now), now)

    def lock(self, identity: str, on: bool, now: float) -> None:
        self.send(identity, self.members[identity].set_enabled(on, now), now)


def test_locked_members_share_keys_and_open_each_others_frames_and_others_drop_them() -> None:
    relay = Relay("alice", "bob", "carol")
    relay.lock("alice", True, 0.0)
    relay.lock("bob", True, 0.0)
    alice, bob, carol = relay["alice"], relay["bob"], relay["carol"]

    assert (alice.state("bob"), bob.state("alice")) == ("encrypted", "encrypted")
    assert alice.members["bob"].safety_number == bob.members["alice"].safety_number is not None
    sealed = alice.encrypt_frame(VP8_KEYFRAME, "video/VP8", 0.5)
    assert sealed is not None and sealed != VP8_KEYFRAME and sealed[:10] == VP8_KEYFRAME[:10]
    assert bob.decrypt_frame("alice", sealed, "vp8", 0.5) == VP8_KEYFRAME
    assert bob.frames["alice"].decrypted == 1 and bob.frames["alice"].kid == 0
    # Carol never turned her lock on: she knows alice encrypts, holds no key, drops.
    assert carol.state("alice") == "locked-out"
    assert carol.decrypt_frame("alice", sealed, "vp8", 0.5) is None
    assert carol.frames["alice"].dropped == 1
    # Carol's own frames are plaintext and pass as such.
    assert carol.encrypt_frame(OPUS_FRAME, "opus", 0.5) == OPUS_FRAME
    assert alice.decrypt_frame("carol", OPUS_FRAME, "opus", 0.5) == OPUS_FRAME
    assert alice.frames["carol"].passed == 1
    # Only alice and bob were sent keys, one each, and each once.
    keys = [(sender, m["to"]) for sender, m in relay.log if m["type"] == "e2ee_key"]
    assert sorted(keys) == [("alice", "bob"), ("bob", "alice")]
    assert alice.all_encrypted() is False  # carol is not encrypted


def test_a_member_who_leaves_gets_no_key_made_after_it_left() -> None:
    relay = Relay("alice", "bob", "carol")
    for identity in ("alice", "bob", "carol"):
        relay.lock(identity, True, 0.0)
    alice = relay["alice"]
    relay.members.pop("carol")
    before = len(relay.log)
    relay.send("alice", alice.on_participant_left("carol", 10.0), 10.0)
    sent = [m for _, m in relay.log[before:]]
    assert [(m["type"], m["to"]) for m in sent] == [("e2ee_key", "bob")]
    # After the activation delay frames move to key 1, which bob holds and carol does not.
    sealed = alice.encrypt_frame(OPUS_FRAME, "opus", 11.0)
    assert sealed is not None and parse_header(sealed)[0] == 1
    assert relay["bob"].decrypt_frame("alice", sealed, "opus", 11.0) == OPUS_FRAME


def test_rotation_activates_after_the_delay_and_old_frames_still_open_in_the_grace() -> None:
    relay = Relay("alice", "bob")
    relay.lock("alice", True, 0.0)
    relay.lock("bob", True, 0.0)
    alice, bob = relay["alice"], relay["bob"]
    old = alice.encrypt_frame(OPUS_FRAME, "opus", 1.0)
    relay.send("alice", alice.rotate(2.0), 2.0)
    assert bob.members["alice"].kids == {0, 1}
    still_old = alice.encrypt_frame(OPUS_FRAME, "opus", 2.5)
    new = alice.encrypt_frame(OPUS_FRAME, "opus", 3.0)
    assert old is not None and still_old is not None and new is not None
    assert (parse_header(still_old)[0], parse_header(new)[0]) == (0, 1)
    assert bob.decrypt_frame("alice", new, "opus", 3.0) == OPUS_FRAME
    assert bob.decrypt_frame("alice", old, "opus", 4.0) == OPUS_FRAME  # within grace
    assert bob.decrypt_frame("alice", old, "opus", 9.0) is None  # key 0 retired


def test_the_off_hello_makes_a_member_plain_and_its_keys_go_after_the_grace() -> None:
    relay = Relay("alice", "bob")
    relay.lock("alice", True, 0.0)
    relay.lock("bob", True, 0.0)
    alice, bob = relay["alice"], relay["bob"]
    in_flight = alice.encrypt_frame(OPUS_FRAME, "opus", 1.0)
    before = len(relay.log)
    relay.lock("alice", False, 2.0)
    off, *rest = [m for _, m in relay.log[before:]]
    assert off == {"type": "e2ee_hello", "public_key": OFF_PUBLIC_KEY}
    assert b64decode(OFF_PUBLIC_KEY) == bytes(32)
    # Bob rotated, since alice had his key, and sent the new key to nobody.
    assert not [m for m in rest if m["type"] == "e2ee_key"]
    assert bob.state("alice") == "plain" and alice.state("bob") == "locked-out"
    assert alice.encrypt_frame(OPUS_FRAME, "opus", 2.1) == OPUS_FRAME
    assert bob.decrypt_frame("alice", OPUS_FRAME, "opus", 2.1) == OPUS_FRAME  # plaintext
    assert in_flight is not None
    assert bob.decrypt_frame("alice", in_flight, "opus", 2.2) == OPUS_FRAME  # grace
    relay.send("bob", bob.tick(2.0 + OFF_GRACE_S + 0.1), 2.0 + OFF_GRACE_S + 0.1)
    assert bob.members["alice"].keyring is None
    # Alice, off, drops bob's encrypted frames: she forgot his keys.
    sealed = bob.encrypt_frame(OPUS_FRAME, "opus", 6.0)
    assert sealed is not None and alice.decrypt_frame("bob", sealed, "opus", 6.0) is None
    # Turning on again re-announces the same identity key and shares keys again.
    relay.lock("alice", True, 7.0)
    assert bob.state("alice") == "encrypted" and alice.state("bob") == "encrypted"
    assert bob.members["alice"].conflict is False


def test_a_second_identity_key_for_a_member_blocks_it() -> None:
    relay = Relay("alice", "bob")
    relay.lock("alice", True, 0.0)
    relay.lock("bob", True, 0.0)
    bob = relay["bob"]
    impostor = KeyDistribution("alice")
    hello = impostor.set_enabled(True, 1.0)[0]
    assert bob.on_message({**hello, "from": "alice"}, 1.0) == []
    assert bob.state("alice") == "conflict"
    sealed = relay["alice"].encrypt_frame(OPUS_FRAME, "opus", 1.5)
    assert sealed is not None and bob.decrypt_frame("alice", sealed, "opus", 1.5) is None
    assert bob.rotate(2.0) == []  # no more keys for that identity


def test_a_key_that_arrives_asks_for_a_keyframe_of_its_sender_once() -> None:
    relay = Relay("alice", "bob")
    relay.lock("alice", True, 0.0)
    assert relay["bob"].take_keyframe_requests() == []
    relay.lock("bob", True, 0.0)
    assert relay["bob"].take_keyframe_requests() == ["alice"]
    assert relay["bob"].take_keyframe_requests() == []


def test_while_on_a_frame_that_cannot_be_encrypted_is_dropped_not_sent() -> None:
    relay = Relay("alice")
    relay.lock("alice", True, 0.0)
    assert relay["alice"].encrypt_frame(b"\x00\x00\x00\x01\x67", "video/H264", 1.0) is None
    assert relay["alice"].sent.dropped == 1 and relay["alice"].sent.plain == 0
