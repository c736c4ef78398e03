"""The `sfu` command: serve, token, keys, audit."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import ipaddress
import json
import logging
import os
import re
import signal
import sys
import time
from pathlib import Path

from aiohttp import web

from sfu.control import DatapathUnavailable, MediaService
from signaling.app import create_app
from signaling.audit import AuditLog, AuditPaths, export, verify
from signaling.context import GUARD
from signaling.keystore import ALGORITHMS, DEFAULT_GRACE_S, KeyStore, KeyStoreError
from signaling.metrics import start_metrics_server
from signaling.policy import PolicyError, PolicyStore, ensure_policy_dir
from signaling.policy import commands as policy_commands
from signaling.policy.engine import PolicyEngine, setup_policy
from signaling.ratelimit import LimitsError, load_limits
from signaling.revocations import DEFAULT_LIFETIME_S, Revocation, RevocationError, RevocationStore
from signaling.rooms import RoomSettingsError, RoomSettingsFile
from signaling.tls import ensure_dev_certificate, server_ssl_context
from signaling.tokens import DEFAULT_TENANT, GRANTS, ROLE_GRANTS, AttrValue, SigningKeys

log = logging.getLogger("sfu")


def _env(name: str, default: str) -> str:
    return os.environ.get(f"SFU_{name}", default)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sfu", description="Secure WebRTC SFU")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("--host", default=_env("HOST", "127.0.0.1"), help="HTTPS listen address")
    serve.add_argument("--port", type=int, default=int(_env("PORT", "8443")), help="HTTPS port")
    serve.add_argument(
        "--media-port", type=int, default=int(_env("MEDIA_PORT", "40000")), help="UDP media port"
    )
    serve.add_argument("--data-dir", type=Path, default=Path(_env("DATA_DIR", "./data")))
    serve.add_argument(
        "--public-ip",
        default=_env("PUBLIC_IP", "") or None,
        help="address clients reach media at (default: --host); media then binds all interfaces",
    )
    serve.add_argument("--cert", type=Path, default=None, help="TLS certificate (PEM)")
    serve.add_argument("--key", type=Path, default=None, help="TLS private key (PEM)")
    serve.add_argument(
        "--media-timeout",
        type=float,
        default=float(_env("MEDIA_TIMEOUT", "30")),
        help="seconds of media silence (no ICE, DTLS or RTP) after which a peer is removed",
    )
    serve.add_argument(
        "--datapath",
        choices=["auto", "native", "python"],
        default=_env("DATAPATH", "auto"),
        help="per-packet path: native (Cython, when built), python, or auto (native if built)",
    )
    serve.add_argument(
        "--data-channels",
        choices=["process", "inline"],
        default=_env("DATA_CHANNELS", "process"),
        help="control and file channels in a process of their own (at a lower CPU priority"
        " than media) or inline on the media port",
    )
    serve.add_argument(
        "--data-port",
        type=int,
        default=int(_env("DATA_PORT", "-1")),
        help="UDP port of the data channel process (default: media port + 1, or any if that is 0)",
    )
    serve.add_argument(
        "--data-cpus",
        default=_env("DATA_CPUS", ""),
        help="CPUs for the data channel process, e.g. 1 or 2-3 (default: any): keep"
        " file floods off the cores that media uses",
    )
    serve.add_argument(
        "--files-budget-mb",
        type=int,
        default=int(_env("FILES_BUDGET_MB", "1024")),
        help="disk the files that rooms keep for later members may take, in MiB (all rooms)",
    )
    serve.add_argument(
        "--metrics-port",
        type=int,
        default=int(_env("METRICS_PORT", "9464")),
        help="Prometheus /metrics port (0 turns it off)",
    )
    serve.add_argument(
        "--metrics-host",
        default=_env("METRICS_HOST", "127.0.0.1"),
        help="address of the metrics listener (keep it private)",
    )
    serve.add_argument("--log-level", default=_env("LOG_LEVEL", "INFO"))

    token = sub.add_parser("token", help="print a signed access token")
    token.add_argument("--data-dir", type=Path, default=Path(_env("DATA_DIR", "./data")))
    token.add_argument("--room", required=True)
    token.add_argument("--identity", required=True)
    token.add_argument("--name", default=None, help="display name (default: identity)")
    rights = token.add_mutually_exclusive_group()
    rights.add_argument(
        "--role",
        choices=sorted(ROLE_GRANTS),
        default=None,
        help="grant preset (default: participant): "
        + "; ".join(f"{r} = {','.join(sorted(g))}" for r, g in sorted(ROLE_GRANTS.items())),
    )
    rights.add_argument(
        "--grants", default=None, help=f"comma-separated grants from: {','.join(GRANTS)}"
    )
    token.add_argument("--tenant", default=DEFAULT_TENANT)
    token.add_argument(
        "--mfa", type=int, default=0, help="assurance: 0 none, 1 password, 2 second factor"
    )
    token.add_argument(
        "--attr",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="verified attribute (repeatable); true/false and integers are typed",
    )
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")
    token.add_argument("--kid", default=None, help="sign with this key (default: the current)")

    keys = sub.add_parser("keys", help="list, rotate or import token keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    rotate = keys_sub.add_parser("rotate", help="add a new current key; old ones keep a grace")
    import_cmd = keys_sub.add_parser(
        "import", help="make an identity provider's public key a tenant's current key"
    )
    import_cmd.add_argument("--public-key", type=Path, required=True, help="PEM file")
    list_cmd = keys_sub.add_parser("list", help="print kid, created and status of each key")
    for command in (rotate, import_cmd, list_cmd):
        command.add_argument("--data-dir", type=Path, default=Path(_env("DATA_DIR", "./data")))
        command.add_argument(
            "--tenant",
            required=command is import_cmd,
            default=None,
            help="a tenant's own keys (they sign and verify only that tenant's tokens)",
        )
    for command in (rotate, import_cmd):
        command.add_argument(
            "--grace",
            type=float,
            default=float(DEFAULT_GRACE_S),
            help="seconds the previous key keeps verifying tokens (default: 86400)",
        )
    rotate.add_argument("--algorithm", choices=ALGORITHMS, default="ES256")
    revoke = sub.add_parser(
        "revoke", help="revoke a token (jti) or an identity's tokens; a running server applies it"
    )
    revoke.add_argument("--data-dir", type=Path, default=Path(_env("DATA_DIR", "./data")))
    whom = revoke.add_mutually_exclusive_group(required=True)
    whom.add_argument("--jti", default=None, help="the token id to revoke")
    whom.add_argument("--identity", default=None, help="revoke every token of this identity")
    revoke.add_argument("--tenant", default=DEFAULT_TENANT)
    revoke.add_argument(
        "--ttl",
        type=int,
        default=DEFAULT_LIFETIME_S,
        help="seconds to keep the entry: at least the revoked tokens' remaining lifetime",
    )
    policy_commands.add_parsers(sub, _env("DATA_DIR", "./data"))
    audit = sub.add_parser("audit", help="check or export the audit log")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify_cmd = audit_sub.add_parser("verify", help="exit 0 if the chain is intact")
    verify_cmd.add_argument("--data-dir", type=Path, default=Path(_env("DATA_DIR", "./data")))
    export_cmd = audit_sub.add_parser("export", help="print records as JSON lines")
    export_cmd.add_argument("--data-dir", type=Path, default=Path(_env("DATA_DIR", "./data")))
    export_cmd.add_argument(
        "--since", default=None, help="ISO 8601 time or unix seconds (default: everything)"
    )
    export_cmd.add_argument("--format", choices=["jsonl"], default="jsonl")
    return parser


def _parse_since(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        moment = datetime.datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.UTC)
        return moment.timestamp()


def _audit(args: argparse.Namespace) -> int:
    paths = AuditPaths.in_data_dir(args.data_dir)
    if args.audit_command == "verify":
        if not paths.key.exists():
            print(f"audit: no key at {paths.key}", file=sys.stderr)
            return 2
        result = verify(paths)
        if result.ok:
            print(f"audit log intact: {result.records} records")
            return 0
        print(f"audit log TAMPERED: {result.reason}", file=sys.stderr)
        return 1
    try:
        since = _parse_since(args.since)
    except ValueError:
        print(f"audit: --since {args.since!r} is neither a time nor a number", file=sys.stderr)
        return 2
    if not paths.database.exists():
        print(f"audit: no audit database at {paths.database}", file=sys.stderr)
        return 2
    for record in export(paths, since):
        print(json.dumps(record, ensure_ascii=False))
    return 0


_CPU_LIST = re.compile(r"\d+(-\d+)?(,\d+(-\d+)?)*")


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
    )
    data_dir: Path = args.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    announced = args.public_ip or args.host
    try:
        if ipaddress.ip_address(announced).is_unspecified:
            log.error("--host %s is not reachable by clients: pass --public-ip", announced)
            return 2
    except ValueError:
        log.error("--public-ip must be an IP address, got %r", announced)
        return 2
    if (args.cert is None) != (args.key is None):
        log.error("--cert and --key go together")
        return 2
    if args.data_cpus and not _CPU_LIST.fullmatch(args.data_cpus):
        log.error("--data-cpus must be a CPU list like 1 or 0,2 or 2-3, got %r", args.data_cpus)
        return 2
    if args.cert is None:
        extra = [args.public_ip] if args.public_ip else []
        cert, key = ensure_dev_certificate(data_dir, extra)
    else:
        cert, key = args.cert, args.key
    ssl_context = server_ssl_context(cert, key)
    keys = SigningKeys.load_or_create(data_dir)
    media_host = ("::" if ":" in announced else "0.0.0.0") if args.public_ip else args.host
    try:
        rooms = RoomSettingsFile(data_dir / "rooms.toml")
    except RoomSettingsError as exc:
        log.error("%s", exc)
        return 2
    try:
        policies = PolicyStore(ensure_policy_dir(data_dir))
    except (PolicyError, OSError) as exc:
        log.error("policies not loaded: %s", exc)
        return 2
    try:
        limits = load_limits(data_dir)
    except LimitsError as exc:
        log.error("%s", exc)
        return 2
    try:
        data_port = args.data_port
        if data_port < 0:
            data_port = args.media_port + 1 if args.media_port else 0
        media = MediaService(
            media_host,
            args.media_port,
            announced,
            args.media_timeout,
            args.datapath,
            args.data_channels,
            data_port,
            files_dir=data_dir / "files",
            files_budget=args.files_budget_mb * 1024 * 1024,
            data_cpus=args.data_cpus,
        )
    except DatapathUnavailable as exc:
        log.error("%s", exc)
        return 2
    media.set_track_limits(
        {"audio": limits.media.audio_pps, "video": limits.media.video_pps},
        {"audio": limits.media.audio_kbps * 1000, "video": limits.media.video_kbps * 1000},
    )
    audit = AuditLog(AuditPaths.in_data_dir(data_dir))
    app = create_app(media, keys, rooms, audit, limits.signaling)
    policies.audit = audit
    keys.on_change = lambda tenant, kid, kids: audit.record(
        "keys_changed", "sfu", tenant=tenant or "", current=kid, kids=kids
    )
    setup_policy(app, PolicyEngine(policies, rooms, audit), media)
    url_host = f"[{args.host}]" if ":" in args.host else args.host
    url = f"https://{url_host}:{args.port}/"

    async def main() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, args.host, args.port, ssl_context=ssl_context)
        await site.start()
        metrics = None
        if args.metrics_port:
            metrics = await start_metrics_server(
                media, args.metrics_host, args.metrics_port, app[GUARD]
            )
        log.info(
            "listening url=%s media_port=%d data_port=%d datapath=%s cert=%s",
            url,
            media.media_port,
            media.data_port,
            media.datapath,
            cert,
        )
        print(
            f"SFU ready at {url}  (media udp/{media.media_port}, data channels"
            f" udp/{media.data_port}, certificate {cert})",
            flush=True,
        )
        print(
            f"Join link: {url}#token=$(.venv/bin/sfu token --data-dir {data_dir} "
            "--room demo --identity alice)",
            flush=True,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        try:
            await stop.wait()
            log.info("shutting down")
        finally:
            if metrics is not None:
                await metrics.cleanup()
            # Sessions end cleanly (DTLS close_notify, keys wiped), the audit log is
            # flushed and checkpointed.
            await runner.cleanup()

    import uvloop

    uvloop.run(main())
    return 0


def parse_attr(text: str) -> tuple[str, AttrValue]:
    """``key=value`` with value true/false (bool), an integer (int) or else a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ValueError(f"--attr {text!r} is not KEY=VALUE")
    value: AttrValue
    if raw in ("true", "false"):
        value = raw == "true"
    else:
        try:
            value = int(raw)
        except ValueError:
            value = raw
    return key, value


def _token(args: argparse.Namespace) -> int:
    try:
        attrs = dict(parse_attr(text) for text in args.attr)
        grants = None
        if args.grants is not None:
            grants = [g.strip() for g in args.grants.split(",") if g.strip()]
            unknown = [g for g in grants if g not in GRANTS]
            if unknown:
                raise ValueError(f"unknown grant {unknown[0]!r}; grants are: {', '.join(GRANTS)}")
        keys = SigningKeys.load_or_create(args.data_dir)
        token = keys.issue(
            identity=args.identity,
            room=args.room,
            role=args.role,
            grants=grants,
            tenant=args.tenant,
            ttl_s=args.ttl,
            name=args.name,
            mfa=args.mfa,
            attrs=attrs,
            kid=args.kid,
        )
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0


def _iso(seconds: float) -> str:
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _keys(args: argparse.Namespace, now: float | None = None) -> int:
    when = time.time() if now is None else now
    try:
        store = KeyStore(args.data_dir, args.tenant)
        if args.keys_command in ("rotate", "import"):
            if args.grace < 0:
                raise ValueError("--grace must not be negative")
            if args.keys_command == "rotate":
                entry = store.rotate(when, args.grace, args.algorithm)
            else:
                entry = store.import_public(when, args.public_key.read_bytes(), args.grace)
            until = _iso(when + args.grace)
            whose = "" if args.tenant is None else f" of tenant {args.tenant}"
            print(
                f"new current key{whose} {entry.kid} ({entry.algorithm});"
                f" the previous key verifies until {until}"
            )
            return 0
        entries = store.ensure(when) if args.tenant is None else store.entries()
    except (KeyStoreError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{'KID':<16}  {'ALG':<5}  {'CREATED':<20}  STATUS")
    for entry in entries:
        status = entry.status(when)
        if status == "retired" and entry.valid_until is not None:
            status = f"retired, verifies until {_iso(entry.valid_until)}"
        elif status == "expired" and entry.valid_until is not None:
            status = f"expired {_iso(entry.valid_until)}"
        if not entry.can_sign:
            status += " (public key only)"
        print(f"{entry.kid:<16}  {entry.algorithm:<5}  {_iso(entry.created):<20}  {status}")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    now = time.time()
    try:
        if args.ttl <= 0:
            raise ValueError("--ttl must be positive")
        entry = Revocation(
            args.tenant, args.jti, args.identity, now, now + args.ttl, f"cli:{os.getuid()}"
        )
        RevocationStore(args.data_dir).add(entry)
    except (RevocationError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    what = f"token {args.jti}" if args.jti else f"identity {args.identity!r}"
    print(f"revoked {what} in tenant {args.tenant} until {_iso(entry.expires_at)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "revoke":
        return _revoke(args)
    if args.command == "serve":
        return _serve(args)
    if args.command == "audit":
        return _audit(args)
    if args.command == "policy":
        return policy_commands.run(args)
    if args.command == "keys":
        return _keys(args)
    return _token(args)


if __name__ == "__main__":
    sys.exit(main())
