"""The policy applied to the server's sessions: checks on each action, and rechecks.

``check`` decides one action for a token (auditing a denial as ``policy_deny``).
Sessions that joined are watched: ``recheck`` decides again what each one is
doing (joined, publishing audio, ...) when something the last decision depended
on changed (the policy files, the session's grants, its camera, the room's
labels, or a time the decision named in ``changes_at``) and reports what is now
denied. Signaling calls it from a 1 s timer (``run_rechecks``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from sfu.control import MediaService
from signaling.policy.evaluator import Context, Decision, Resource, Subject, evaluate
from signaling.policy.loader import Auditor, PolicyStore
from signaling.rooms import RoomSettingsFile
from signaling.tokens import AccessToken

__all__ = [
    "POLICY",
    "PolicyEngine",
    "enforce_on_media",
    "watch_media_session",
    "Watched",
    "run_rechecks",
    "setup_policy",
    "subject_of",
]

log = logging.getLogger(__name__)

RECHECK_INTERVAL_S = 1.0
# Called with an action whose decision flipped, and the new decision: denied for
# something the session was doing, or allowed again for something denied live.
DenialListener = Callable[[str, Decision], None]
# The media class each publish action stops (sfu.control.MediaService.set_muted).
MEDIA_CLASS_OF_ACTION = {
    "publish:audio": "audio",
    "publish:video": "video",
    "publish:screen": "screen",
}


def subject_of(access: AccessToken, grants: frozenset[str] | None = None) -> Subject:
    """The policy's subject for a token; ``role`` is the verified attribute ``role``
    when the identity provider set one, else the grant preset (participant, viewer,
    custom)."""
    role = access.attrs.get("role")
    return Subject(
        identity=access.identity,
        tenant=access.tenant,
        grants=access.grants if grants is None else grants,
        role=role if isinstance(role, str) else access.role,
        mfa=access.mfa,
        attrs=access.attrs,
    )


@dataclass(slots=True)
class Watched:
    """A session the policy keeps deciding for."""

    access: AccessToken
    listener: DenialListener
    channel: str
    grants_now: Callable[[], frozenset[str]]
    grants: frozenset[str]
    joined_at: float
    camera_on: bool = False
    camera_since: float = 0.0
    # action -> the decision that allowed it last (None: not decided yet)
    active: dict[str, Decision | None] = field(default_factory=dict)
    # actions the session performs that a recheck denied, with that decision
    denied: dict[str, Decision] = field(default_factory=dict)
    dirty: bool = True


class PolicyEngine:
    """Decisions for tokens in rooms, with the room labels and the audit log."""

    def __init__(
        self,
        store: PolicyStore,
        rooms: RoomSettingsFile | None,
        audit: Auditor,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.rooms = rooms
        self.audit = audit
        self.clock = clock
        self.watched: dict[str, Watched] = {}
        self._generation = store.generation
        # Whether a session still exists; rechecks forget those that do not.
        self.is_live: Callable[[str], bool] = lambda session_id: True

    def resource(self, tenant: str, room: str) -> Resource:
        labels: tuple[str, ...] = ()
        if self.rooms is not None:
            labels = self.rooms.for_room(room, tenant).labels
        return Resource(tenant, room, frozenset(labels))

    def context(
        self, session_id: str | None, now: float, counterparty: tuple[str, str] | None = None
    ) -> Context:
        """The context of a decision; ``counterparty`` is (identity, tenant) of whoever
        a transfer goes to or comes from."""
        who, tenant = counterparty if counterparty is not None else (None, None)
        watched = self.watched.get(session_id) if session_id is not None else None
        if watched is None:
            return Context(now, counterparty_identity=who, counterparty_tenant=tenant)
        since = now - watched.camera_since
        return Context(
            now,
            camera_on=watched.camera_on,
            camera_on_for=since if watched.camera_on else None,
            camera_off_for=None if watched.camera_on else since,
            counterparty_identity=who,
            counterparty_tenant=tenant,
        )

    def decide(
        self,
        access: AccessToken,
        action: str,
        *,
        session_id: str | None = None,
        now: float | None = None,
        counterparty: tuple[str, str] | None = None,
    ) -> Decision:
        """Decide without auditing (dry runs, rechecks)."""
        when = self.clock() if now is None else now
        watched = self.watched.get(session_id) if session_id is not None else None
        subject = subject_of(access, watched.grants_now() if watched is not None else None)
        return evaluate(
            self.store.refresh(),
            subject,
            action,
            self.resource(access.tenant, access.room),
            self.context(session_id, when, counterparty),
        )

    def check(
        self,
        access: AccessToken,
        action: str,
        *,
        channel: str,
        session_id: str | None = None,
        remote: str = "",
        counterparty: tuple[str, str] | None = None,
    ) -> Decision:
        """Decide ``action``; a denial is audited as ``policy_deny``."""
        decision = self.decide(access, action, session_id=session_id, counterparty=counterparty)
        if not decision.allowed:
            self.audit_denial(access, action, decision, channel=channel, remote=remote)
        return decision

    def audit_denial(
        self,
        access: AccessToken,
        action: str,
        decision: Decision,
        *,
        channel: str,
        remote: str = "",
        live: bool = False,
    ) -> None:
        self.audit.record(
            "policy_deny", access.identity, access.room, tenant=access.tenant, action=action,
            rule=decision.rule, source=decision.source, reason=decision.reason,
            channel=channel, remote=remote, live=live,
        )  # fmt: skip

    def fulfil(
        self,
        access: AccessToken,
        action: str,
        decision: Decision,
        counterparties: list[str],
    ) -> None:
        """Carry out what an allowing decision obliges that can be done now."""
        if "audit_counterparty" in decision.obligations:
            self.audit.record(
                "policy_obligation", access.identity, access.room, tenant=access.tenant,
                obligation="audit_counterparty", action=action, rule=decision.rule,
                counterparties=sorted(counterparties),
            )  # fmt: skip
        if "delete_files_at_end" in decision.obligations:
            # The file channel relays live; a room that keeps files for later members
            # deletes them when its last member leaves, at the latest, and audits it
            # (files_deleted). Either way nothing outlives the meeting. Logged so the
            # record shows it was asked.
            keeps = (
                self.rooms is not None
                and self.rooms.for_room(access.room, access.tenant).keep_files
            )
            self.audit.record(
                "policy_obligation", access.identity, access.room, tenant=access.tenant,
                obligation="delete_files_at_end", action=action, rule=decision.rule,
                fulfilled=(
                    "kept sealed until the meeting ends, then deleted (files_deleted)"
                    if keeps else "relayed live, never stored"
                ),
            )  # fmt: skip

    # -- sessions that are watched
    def watch(
        self,
        session_id: str,
        access: AccessToken,
        channel: str,
        listener: DenialListener,
        grants: Callable[[], frozenset[str]] | None = None,
    ) -> None:
        """Keep deciding ``join`` (and what ``set_active`` adds) for this session.

        ``grants`` returns the session's grants now (a moderator may change them);
        by default the token's."""
        now = self.clock()
        grants_now = grants if grants is not None else (lambda: access.grants)
        self.watched[session_id] = Watched(
            access, listener, channel, grants_now, grants_now(), now, camera_since=now,
            active={"join": None},
        )  # fmt: skip

    def forget(self, session_id: str) -> None:
        self.watched.pop(session_id, None)

    def set_active(self, session_id: str, actions: set[str]) -> None:
        """The actions the session now performs besides ``join`` (e.g. publish:audio)."""
        watched = self.watched.get(session_id)
        if watched is None:
            return
        wanted = actions | {"join"}
        watched.active = {a: watched.active.get(a) for a in wanted if a not in watched.denied}
        watched.denied = {a: d for a, d in watched.denied.items() if a in wanted}
        watched.dirty = True

    def set_camera(self, session_id: str, on: bool) -> None:
        """The session's camera video started or stopped being sent."""
        watched = self.watched.get(session_id)
        if watched is None or watched.camera_on == on:
            return
        watched.camera_on, watched.camera_since, watched.dirty = on, self.clock(), True

    def recheck(self, now: float | None = None) -> list[tuple[str, str, Decision]]:
        """Decide again where something changed; (session, action, decision) for each
        action whose decision flipped: now denied (audited as ``policy_deny``), or
        allowed again after a live denial. Each goes to the session's listener."""
        when = self.clock() if now is None else now
        self.store.refresh()
        policies_changed = self.store.generation != self._generation
        self._generation = self.store.generation
        flipped: list[tuple[str, str, Decision]] = []
        for session_id, watched in list(self.watched.items()):
            if not self.is_live(session_id):
                del self.watched[session_id]
                continue
            grants = watched.grants_now()
            if grants != watched.grants:
                watched.grants, watched.dirty = grants, True
            last_by_action = {**watched.active, **watched.denied}
            for action, last in last_by_action.items():
                if not (
                    policies_changed
                    or watched.dirty
                    or last is None
                    or (last.changes_at is not None and when >= last.changes_at)
                    or "resource.labels" in last.depends_on
                ):
                    continue
                decision = self.decide(watched.access, action, session_id=session_id, now=when)
                was_denied = action in watched.denied
                if decision.allowed:
                    watched.denied.pop(action, None)
                    watched.active[action] = decision
                    if was_denied:
                        flipped.append((session_id, action, decision))
                    continue
                watched.active.pop(action, None)
                watched.denied[action] = decision
                if not was_denied:
                    flipped.append((session_id, action, decision))
                    self.audit_denial(
                        watched.access, action, decision, channel=watched.channel, live=True
                    )
            watched.dirty = False
        for session_id, action, decision in flipped:
            watched_now = self.watched.get(session_id)
            if watched_now is None:
                continue
            try:
                watched_now.listener(action, decision)
            except Exception:
                log.exception("policy denial listener failed session=%s", session_id)
        return flipped


def enforce_on_media(media: MediaService, session_id: str, action: str, decision: Decision) -> bool:
    """Stop (or resume) in the media plane what a live decision is about: a publish
    action mutes that class of the session's tracks, subscribe pauses what it
    receives. False if the action is not one the media plane can stop alone
    (``join``: the caller ends the session)."""
    media_class = MEDIA_CLASS_OF_ACTION.get(action)
    if media_class is not None:
        media.set_muted(session_id, media_class, not decision.allowed, by="policy")
        return True
    if action == "subscribe":
        media.set_receiving(session_id, decision.allowed, by="policy")
        return True
    return False


async def run_rechecks(engine: PolicyEngine, interval_s: float = RECHECK_INTERVAL_S) -> None:
    """Recheck watched sessions every ``interval_s`` until cancelled."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            engine.recheck()
        except Exception:
            log.exception("policy recheck failed")


POLICY: web.AppKey[PolicyEngine] = web.AppKey("policy", PolicyEngine)


def watch_media_session(
    engine: PolicyEngine,
    media: MediaService,
    session_id: str,
    access: AccessToken,
    channel: str,
    actions: set[str],
    camera_on: bool,
) -> None:
    """Watch a WHIP or WHEP session: what a recheck denies stops in the media plane,
    and a denied join (nothing to tell the client but the end) ends the session."""

    def on_change(action: str, decision: Decision) -> None:
        if not enforce_on_media(media, session_id, action, decision) and not decision.allowed:
            media.end_session(session_id, f"policy: {decision.explain()}")

    engine.watch(session_id, access, channel, on_change)
    engine.set_camera(session_id, camera_on)
    engine.set_active(session_id, actions)


def setup_policy(app: web.Application, engine: PolicyEngine, media: MediaService) -> None:
    """Put ``engine`` where handlers find it and run its rechecks while the app runs."""
    app[POLICY] = engine
    engine.is_live = lambda session_id: session_id in media.sessions
    tasks: list[asyncio.Task[None]] = []

    async def start(app: web.Application) -> None:
        tasks.append(asyncio.create_task(run_rechecks(engine)))

    async def stop(app: web.Application) -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    app.on_startup.append(start)
    app.on_cleanup.insert(0, stop)
