"""``sfu policy lint`` and ``sfu policy check`` (docs/POLICY.md, "Command line")."""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path
from typing import TextIO

from signaling.policy.engine import subject_of
from signaling.policy.evaluator import Context, Resource, evaluate
from signaling.policy.lexer import PolicyError
from signaling.policy.loader import DEFAULT_POLICY, PolicySet
from signaling.policy.parser import parse_policy
from signaling.policy.syntax import ACTIONS
from signaling.rooms import RoomSettingsError, RoomSettingsFile
from signaling.tokens import DEFAULT_TENANT, GRANTS, AccessToken, AttrValue

__all__ = ["EXIT_DENY", "add_parsers", "run"]

EXIT_DENY = 3
EXIT_USAGE = 2


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser], data_dir: str) -> None:
    policy = sub.add_parser("policy", help="lint policy files or try a decision")
    policy_sub = policy.add_subparsers(dest="policy_command", required=True)
    lint = policy_sub.add_parser("lint", help="exit 1 and print file:line:col for a bad file")
    lint.add_argument("files", nargs="+", type=Path, metavar="FILE")
    check = policy_sub.add_parser("check", help="dry run: print ALLOW/DENY and the rule")
    where = check.add_mutually_exclusive_group()
    where.add_argument("--data-dir", type=Path, default=Path(data_dir))
    where.add_argument("--policies", type=Path, default=None, help="a directory of *.policy")
    check.add_argument(
        "--subject",
        required=True,
        help="identity=I,tenant=T,role=R,mfa=N,grants=G1+G2,attrs.KEY=VALUE",
    )
    check.add_argument("--action", required=True, choices=sorted(ACTIONS))
    check.add_argument("--resource", required=True, help="tenant=T,room=R,labels=L1+L2")
    check.add_argument(
        "--context",
        default="",
        help="time=ISO8601,camera_on=true,camera_off_for=S,camera_on_for=S,"
        "counterparty.identity=I,counterparty.tenant=T",
    )


def _pairs(text: str, flag: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag}: {item!r} is not KEY=VALUE")
        pairs[key.strip()] = value.strip()
    return pairs


def _typed(raw: str) -> AttrValue:
    if raw in ("true", "false"):
        return raw == "true"
    try:
        return int(raw)
    except ValueError:
        return raw


def _subject(text: str) -> AccessToken:
    pairs = _pairs(text, "--subject")
    attrs: dict[str, AttrValue] = {}
    for key in [k for k in pairs if k.startswith("attrs.")]:
        attrs[key[len("attrs.") :]] = _typed(pairs.pop(key))
    if "role" in pairs:
        attrs["role"] = pairs.pop("role")
    grants = frozenset(filter(None, pairs.pop("grants", "").split("+")))
    unknown = sorted(grants - set(GRANTS))
    if unknown:
        raise ValueError(f"--subject: unknown grant {unknown[0]!r}")
    identity = pairs.pop("identity", "someone")
    tenant = pairs.pop("tenant", DEFAULT_TENANT)
    mfa = int(pairs.pop("mfa", "0"))
    if pairs:
        raise ValueError(f"--subject: unknown key {sorted(pairs)[0]!r}")
    return AccessToken(
        identity=identity, room="", grants=grants, name=identity, token_id="dry-run",
        expires_at=0.0, tenant=tenant, mfa=mfa, attrs=attrs,
    )  # fmt: skip


def _context(text: str) -> Context:
    pairs = _pairs(text, "--context")
    moment = datetime.datetime.now(datetime.UTC)
    if "time" in pairs:
        moment = datetime.datetime.fromisoformat(pairs.pop("time"))
        if moment.tzinfo is None:
            raise ValueError("--context: time needs a UTC offset, e.g. 2026-11-30T10:00:00+01:00")
    camera_on = pairs.pop("camera_on", None)
    on_for = pairs.pop("camera_on_for", None)
    off_for = pairs.pop("camera_off_for", None)
    context = Context(
        moment.timestamp(),
        camera_on=None if camera_on is None else camera_on == "true",
        camera_on_for=None if on_for is None else float(on_for),
        camera_off_for=None if off_for is None else float(off_for),
        counterparty_identity=pairs.pop("counterparty.identity", None),
        counterparty_tenant=pairs.pop("counterparty.tenant", None),
    )
    if pairs:
        raise ValueError(f"--context: unknown key {sorted(pairs)[0]!r}")
    if context.camera_on is None and (on_for is not None or off_for is not None):
        context = Context(
            context.time, off_for is None, context.camera_on_for, context.camera_off_for,
            context.counterparty_identity, context.counterparty_tenant,
        )  # fmt: skip
    return context


def _policies(args: argparse.Namespace) -> PolicySet:
    if args.policies is not None:
        return PolicySet.load(args.policies)
    directory = args.data_dir / "policies"
    if not directory.exists():
        # What the server would write on first start.
        return PolicySet.parse({"default.policy": DEFAULT_POLICY})
    return PolicySet.load(directory)


def _check(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        access = _subject(args.subject)
        resource_pairs = _pairs(args.resource, "--resource")
        tenant = resource_pairs.pop("tenant", access.tenant)
        room = resource_pairs.pop("room", "")
        labels = resource_pairs.pop("labels", None)
        if resource_pairs:
            raise ValueError(f"--resource: unknown key {sorted(resource_pairs)[0]!r}")
        context = _context(args.context)
        policies = _policies(args)
        if labels is None and args.policies is None:
            rooms = RoomSettingsFile(args.data_dir / "rooms.toml")
            label_set = frozenset(rooms.for_room(room, tenant).labels)
        else:
            label_set = frozenset(filter(None, (labels or "").split("+")))
    except PolicyError as exc:
        err.write(f"{exc}\n")
        return EXIT_USAGE
    except (ValueError, OSError, RoomSettingsError) as exc:
        err.write(f"error: {exc}\n")
        return EXIT_USAGE
    decision = evaluate(
        policies, subject_of(access), args.action, Resource(tenant, room, label_set), context
    )
    out.write(f"{'ALLOW' if decision.allowed else 'DENY'}\n")
    out.write(f"rule: {decision.rule or '-'}")
    out.write(f" ({decision.source})\n" if decision.source else "\n")
    out.write(f"reason: {decision.reason}\n")
    if decision.obligations:
        out.write(f"obligations: {', '.join(decision.obligations)}\n")
    if decision.changes_at is not None:
        until = datetime.datetime.fromtimestamp(decision.changes_at, datetime.UTC)
        out.write(f"may change at: {until.isoformat(timespec='seconds')}\n")
    return 0 if decision.allowed else EXIT_DENY


def _lint(files: list[Path], out: TextIO, err: TextIO) -> int:
    failed = 0
    for path in files:
        try:
            parse_policy(path.read_text(encoding="utf-8"), str(path))
        except PolicyError as exc:
            err.write(f"{exc}\n")
            failed += 1
        except UnicodeDecodeError as exc:
            err.write(f"{path}:1:1: not UTF-8 text (byte {exc.start})\n")
            failed += 1
        except OSError as exc:
            err.write(f"{path}: {exc.strerror or exc}\n")
            failed += 1
        else:
            out.write(f"{path}: ok\n")
    return 1 if failed else 0


def run(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Run ``sfu policy ...``; the exit status."""
    if args.policy_command == "lint":
        return _lint(args.files, out, err)
    return _check(args, out, err)
