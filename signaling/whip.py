"""WHIP (RFC 9725) ingest and WHEP egress over HTTPS.

A POST creates a session from an SDP offer and answers 201 with the SDP answer and a
Location; DELETE on that location ends it. The resource URL holds 128 random bits,
so it is a capability: only who created the session knows it.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass

from aiohttp import web

from sfu.control import (
    MediaError,
    MediaService,
    OfferedSection,
    RoomEvent,
    SessionClosed,
    SessionPolicy,
    describe_offer,
)
from signaling.context import AUDIT, GUARD, KEYS, MEDIA, ROOMS, client_address
from signaling.moderation import MODERATION
from signaling.policy.engine import POLICY, watch_media_session
from signaling.tokens import AccessToken, SigningKeys, TokenError

log = logging.getLogger(__name__)

MAX_OFFER_BYTES = 256 * 1024
# The grant a WHIP publisher needs for each kind of m-section it sends.
WHIP_GRANTS = {"audio": "publish:audio", "video": "publish:video"}
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, DELETE, PATCH, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match",
    "Access-Control-Expose-Headers": "Location, Link, ETag, Accept-Patch",
    "Access-Control-Max-Age": "600",
}


@dataclass(slots=True)
class Resource:
    session_id: str
    tenant: str
    room: str
    kind: str  # "whip" | "whep"


RESOURCES: web.AppKey[dict[str, Resource]] = web.AppKey("whip_resources", dict)


def _error(status: int, message: str) -> web.Response:
    headers = dict(CORS_HEADERS)
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="sfu"'
    return web.Response(status=status, text=message + "\n", headers=headers)


def _authenticate(request: web.Request, room: str) -> AccessToken | web.Response:
    """The bearer token, if valid and for ``room``; else the 401/403 response (audited)."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return _error(401, "missing bearer token")
    keys: SigningKeys = request.app[KEYS]
    audit = request.app[AUDIT]
    channel, remote = request.path.split("/")[1], client_address(request)
    guard = request.app[GUARD]
    try:
        access = keys.verify(token.strip())
    except TokenError as exc:
        audit.record("auth_failure", channel=channel, reason=exc.message, remote=remote)
        guard.auth_failed(remote, time.monotonic())
        return _error(401, exc.message)
    guard.auth_succeeded(remote)
    try:
        access.require(room)
    except TokenError as exc:
        audit.record(
            "auth_failure", access.identity, room, tenant=access.tenant, channel=channel,
            reason=exc.message, remote=remote,
        )  # fmt: skip
        return _error(403, exc.message)
    return access


def _authorize(
    request: web.Request, access: AccessToken, grants: list[str] | None
) -> web.Response | None:
    """403 naming the first grant in ``grants`` the token lacks (audited), else None.

    ``None`` is the check before the offer is read: any one publish grant WHIP can
    use; a success is audited only once the needed grants are known.
    """
    audit = request.app[AUDIT]
    channel, remote = request.path.split("/")[1], client_address(request)
    if grants is not None:
        missing = next((grant for grant in grants if grant not in access.grants), None)
        reason = f"token does not grant {missing}"
    else:
        missing = None if access.grants & set(WHIP_GRANTS.values()) else "publish"
        reason = f"token does not grant {' or '.join(WHIP_GRANTS.values())}"
    if missing is not None:
        audit.record(
            "auth_failure", access.identity, access.room, tenant=access.tenant, channel=channel,
            reason=reason, grant=missing, remote=remote,
        )  # fmt: skip
        return _error(403, reason)
    if grants is not None:
        audit.record(
            "auth_success", access.identity, access.room, tenant=access.tenant, channel=channel,
            role=access.role, grants=sorted(access.grants), token_id=access.token_id,
            kid=access.kid, remote=remote,
        )  # fmt: skip
    return None


def _policy_refusal(
    request: web.Request, access: AccessToken, actions: list[str]
) -> web.Response | None:
    """403 naming the policy rule that denies the first of ``actions`` (audited)."""
    # app[POLICY], not .get: an application without a policy engine fails closed.
    engine = request.app[POLICY]
    channel, remote = request.path.split("/")[1], client_address(request)
    for action in actions:
        decision = engine.check(access, action, channel=channel, remote=remote)
        if not decision.allowed:
            return _error(403, f"{action} denied by policy: {decision.explain()}")
    return None


def _whip_grants(sections: list[OfferedSection]) -> list[str]:
    """The publish grants (= policy actions) for what a WHIP offer sends."""
    return sorted({WHIP_GRANTS[s.kind] for s in sections if s.sending and s.kind in WHIP_GRANTS})


async def handle_options(request: web.Request) -> web.Response:
    headers = dict(CORS_HEADERS)
    headers["Accept-Post"] = "application/sdp"
    return web.Response(status=204, headers=headers)


async def _create(request: web.Request, kind: str) -> web.Response:
    room = request.match_info["room"]
    access = _authenticate(request, room)
    if isinstance(access, web.Response):
        return access
    # WHEP is authorized before the body is read; WHIP first needs at least one
    # publish grant and, once the offer is read, the grants for what it sends.
    refusal = _authorize(request, access, None if kind == "whip" else ["subscribe"])
    if refusal is None:
        refusal = _policy_refusal(
            request, access, ["join"] if kind == "whip" else ["join", "subscribe"]
        )
    if refusal is not None:
        return refusal
    if request.content_type != "application/sdp":
        return _error(415, "Content-Type must be application/sdp")
    if request.content_length is not None and request.content_length > MAX_OFFER_BYTES:
        return _error(413, f"offer larger than {MAX_OFFER_BYTES} bytes")
    body = await request.content.read(MAX_OFFER_BYTES + 1)
    if len(body) > MAX_OFFER_BYTES:
        return _error(413, f"offer larger than {MAX_OFFER_BYTES} bytes")
    try:
        offer = body.decode("utf-8")
    except UnicodeDecodeError:
        return _error(400, "offer is not UTF-8 text")
    media: MediaService = request.app[MEDIA]
    resources = request.app[RESOURCES]
    resource_id = secrets.token_urlsafe(16)

    def on_event(event: RoomEvent) -> None:
        if isinstance(event, SessionClosed):
            resources.pop(resource_id, None)

    allow_bundle = request.app[ROOMS].for_room(room, access.tenant).allow_bundle
    if kind == "whip":
        policy = SessionPolicy(
            can_publish=True, can_subscribe=False, prefer_bundle=True, allow_bundle=allow_bundle
        )
    else:
        policy = SessionPolicy(
            can_publish=False,
            can_subscribe=True,
            prefer_bundle=True,
            allow_bundle=allow_bundle,
            announce=False,
            follow=True,
            follow_identity=request.match_info.get("identity"),
        )
    try:
        sections = describe_offer(offer)
    except MediaError as exc:
        return _error(400, exc.message)
    if kind == "whip":
        needed = _whip_grants(sections)
        refusal = _authorize(request, access, needed)
        if refusal is None:
            refusal = _policy_refusal(request, access, needed)
        if refusal is not None:
            return refusal
    session = media.open_session(access.room_key, access.identity, access.name, policy, on_event)
    try:
        result = media.negotiate(session.session_id, offer, {})
    except MediaError as exc:
        media.close_session(session.session_id, "offer refused")
        return _error(403 if exc.code == "forbidden" else 400, exc.message)
    except Exception:
        log.exception("%s negotiation failed tenant=%s room=%s", kind, access.tenant, room)
        media.close_session(session.session_id, "internal error")
        return _error(500, "internal error; the session was not created")
    usable = result.published if kind == "whip" else result.receiving
    if not usable:
        media.close_session(session.session_id, "offer refused")
        reasons = "; ".join(text for _code, text in result.warnings) or "no usable m-section"
        return _error(400, f"nothing to {'publish' if kind == 'whip' else 'receive'}: {reasons}")
    resources[resource_id] = Resource(session.session_id, access.tenant, room, kind)
    moderation = request.app.get(MODERATION)
    if moderation is not None:
        # A moderator or a revocation ends the session as the server: media stops,
        # the resource is gone (SessionClosed reaches on_event).
        session_id = session.session_id
        moderation.register(
            session_id, kind, access, lambda _code, reason: media.end_session(session_id, reason)
        )
    # Rechecked while the session lasts; a denial stops its media or ends it.
    actions = {"subscribe"} if kind == "whep" else set(_whip_grants(sections))
    camera = kind == "whip" and "publish:video" in actions
    watch_media_session(
        request.app[POLICY], media, session.session_id, access, kind, actions, camera
    )
    if kind == "whep":
        request.app[AUDIT].record(
            "subscribe", access.identity, room, tenant=access.tenant,
            follow=request.match_info.get("identity") or "*",
        )  # fmt: skip
    location = f"/resource/{resource_id}"
    headers = dict(CORS_HEADERS)
    headers["Location"] = location
    headers["Content-Type"] = "application/sdp"
    log.info(
        "%s session created tenant=%s room=%s identity=%s",
        kind,
        access.tenant,
        room,
        access.identity,
    )
    return web.Response(status=201, body=result.sdp.encode(), headers=headers)


async def handle_whip(request: web.Request) -> web.Response:
    return await _create(request, "whip")


async def handle_whep(request: web.Request) -> web.Response:
    return await _create(request, "whep")


async def handle_resource_delete(request: web.Request) -> web.Response:
    resource = request.app[RESOURCES].pop(request.match_info["resource"], None)
    if resource is None:
        return _error(404, "no such WHIP/WHEP session")
    request.app[MEDIA].close_session(resource.session_id, "deleted by client")
    return web.Response(status=200, headers=CORS_HEADERS)


async def handle_resource_patch(request: web.Request) -> web.Response:
    if request.match_info["resource"] not in request.app[RESOURCES]:
        return _error(404, "no such WHIP/WHEP session")
    headers = dict(CORS_HEADERS)
    headers["Allow"] = "DELETE, OPTIONS"
    # The SFU is ICE-lite with a single host candidate: trickle and restarts are not needed.
    return web.Response(
        status=405, text="trickle ICE and ICE restart are not supported\n", headers=headers
    )


def add_routes(app: web.Application) -> None:
    app[RESOURCES] = {}
    app.router.add_post("/whip/{room}", handle_whip)
    app.router.add_options("/whip/{room}", handle_options)
    app.router.add_post("/whep/{room}", handle_whep)
    app.router.add_post("/whep/{room}/{identity}", handle_whep)
    app.router.add_options("/whep/{room}", handle_options)
    app.router.add_options("/whep/{room}/{identity}", handle_options)
    app.router.add_delete("/resource/{resource}", handle_resource_delete)
    app.router.add_patch("/resource/{resource}", handle_resource_patch)
    app.router.add_options("/resource/{resource}", handle_options)
