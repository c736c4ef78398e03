"""Deciding one action: deny wins, no matching allow means deny, and say why.

Pure: the caller passes the subject, action, resource and context (with the time),
and gets a Decision that names the rule, what it read (``depends_on``) and when
the passing of time alone may change it (``changes_at``), so callers know when to
decide again.
"""

from __future__ import annotations

import datetime
import zoneinfo
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from signaling.policy.syntax import (
    ATTRS_PREFIX,
    And,
    Compare,
    During,
    Expr,
    ListLiteral,
    Literal,
    Not,
    Operand,
    Path,
    PolicyFile,
    Rule,
    Truth,
    Window,
)

__all__ = ["Context", "Decision", "Resource", "Subject", "evaluate"]

Scalar = str | int | bool
Value = Scalar | frozenset[str] | None
# Context facts that grow with time while nothing else changes.
_DURATIONS = frozenset({"context.camera_on_for", "context.camera_off_for"})


@dataclass(frozen=True, slots=True)
class Subject:
    """Who acts: from the access token, with grants as they are now."""

    identity: str
    tenant: str
    grants: frozenset[str] = frozenset()
    role: str = ""
    mfa: int = 0
    attrs: Mapping[str, Scalar] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Resource:
    """What is acted on: a room of a tenant and its labels (rooms.toml)."""

    tenant: str
    room: str
    labels: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Context:
    """The state of the world the decision is made in; ``time`` is Unix seconds.

    A fact that is None is unknown: it equals nothing (docs/POLICY.md).
    """

    time: float
    camera_on: bool | None = None
    camera_on_for: float | None = None
    camera_off_for: float | None = None
    counterparty_identity: str | None = None
    counterparty_tenant: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome: ``rule`` and ``source`` (file:line) name the deciding rule."""

    allowed: bool
    rule: str | None
    reason: str
    source: str | None = None
    obligations: tuple[str, ...] = ()
    depends_on: frozenset[str] = frozenset()
    changes_at: float | None = None

    def explain(self) -> str:
        verdict = "ALLOW" if self.allowed else "DENY"
        if self.rule is None:
            return f"{verdict}: {self.reason}"
        return f"{verdict} by rule {self.rule!r} ({self.source}): {self.reason}"


class _Facts:
    """Reads facts for one decision and remembers which it read."""

    def __init__(self, subject: Subject, action: str, resource: Resource, context: Context):
        self.subject = subject
        self.action = action
        self.resource = resource
        self.context = context
        self.used: set[str] = set()
        self.changes_at: float | None = None

    def value(self, path: Path) -> Value:
        name = path.name
        self.used.add(name)
        s, r, c = self.subject, self.resource, self.context
        if name.startswith(ATTRS_PREFIX):
            return s.attrs.get(name[len(ATTRS_PREFIX) :])
        facts: dict[str, Value] = {
            "action": self.action,
            "subject.identity": s.identity,
            "subject.role": s.role,
            "subject.tenant": s.tenant,
            "subject.mfa": s.mfa,
            "subject.grants": s.grants,
            "resource.tenant": r.tenant,
            "resource.room": r.room,
            "resource.labels": r.labels,
            "context.camera_on": c.camera_on,
            "context.camera_on_for": None if c.camera_on_for is None else int(c.camera_on_for),
            "context.camera_off_for": None if c.camera_off_for is None else int(c.camera_off_for),
            "context.counterparty.identity": c.counterparty_identity,
            "context.counterparty.tenant": c.counterparty_tenant,
        }
        return facts[name]

    def raw_duration(self, name: str) -> float | None:
        return (
            self.context.camera_on_for if name.endswith("on_for") else self.context.camera_off_for
        )

    def change_at(self, when: float) -> None:
        if when > self.context.time and (self.changes_at is None or when < self.changes_at):
            self.changes_at = when


def _operand(facts: _Facts, operand: Operand) -> Value:
    if isinstance(operand, Path):
        return facts.value(operand)
    if isinstance(operand, Literal):
        return operand.value
    return frozenset(str(item.value) for item in operand.items)


def _same(left: Value, right: Value) -> bool:
    # bool is an int in Python; true must never equal 1 here.
    return type(left) is type(right) and left == right


def _ordered(op: str, left: int, right: int) -> bool:
    if op == ">=":
        return left >= right
    if op == ">":
        return left > right
    if op == "<=":
        return left <= right
    return left < right


def _number(value: Value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _compare(facts: _Facts, node: Compare) -> bool:
    left, right = _operand(facts, node.left), _operand(facts, node.right)
    if left is None or right is None:
        # A missing fact equals nothing: "is not" and "not in" hold, all else fails.
        return node.op in ("is_not", "not_in")
    if node.op == "is":
        return _same(left, right)
    if node.op == "is_not":
        return not _same(left, right)
    if node.op == "has":
        return isinstance(left, frozenset) and isinstance(right, str) and right in left
    if node.op in ("in", "not_in"):
        assert isinstance(node.right, ListLiteral)
        found = any(_same(left, item.value) for item in node.right.items)
        return found if node.op == "in" else not found
    a, b = _number(left), _number(right)
    if a is None or b is None:
        return False
    _note_threshold(facts, node)
    return _ordered(node.op, a, b)


def _note_threshold(facts: _Facts, node: Compare) -> None:
    """A duration against a number flips once, when the duration passes it."""
    for side, other, flip in ((node.left, node.right, False), (node.right, node.left, True)):
        if isinstance(side, Path) and side.name in _DURATIONS and isinstance(other, Literal):
            current = facts.raw_duration(side.name)
            if current is None or not isinstance(other.value, int):
                continue
            op = node.op
            if flip:
                op = {">=": "<=", ">": "<", "<=": ">=", "<": ">"}[op]
            # ">" and "<=" turn at threshold + 1 whole second, ">=" and "<" at it.
            threshold = other.value + (1 if op in (">", "<=") else 0)
            if current < threshold:
                facts.change_at(facts.context.time + (threshold - current))


def _local(window: Window, moment: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(moment, zoneinfo.ZoneInfo(window.zone))


def _inside(window: Window, moment: float) -> bool:
    local = _local(window, moment)
    minute = local.hour * 60 + local.minute
    return local.weekday() in window.days and window.start_min <= minute < window.end_min


def _next_boundary(window: Window, moment: float) -> float | None:
    """The first start or end of the window after ``moment``."""
    zone = zoneinfo.ZoneInfo(window.zone)
    today = _local(window, moment).date()
    best: float | None = None
    for offset in range(9):
        day = today + datetime.timedelta(days=offset)
        if day.weekday() not in window.days:
            continue
        for minute in (window.start_min, window.end_min):
            start = datetime.datetime.combine(day, datetime.time(), tzinfo=zone)
            when = (start + datetime.timedelta(minutes=minute)).timestamp()
            if when > moment and (best is None or when < best):
                best = when
        if best is not None:
            return best
    return best


def _during(facts: _Facts, node: During) -> bool:
    facts.used.add("context.time")
    moment = facts.context.time
    boundary = _next_boundary(node.window, moment)
    if boundary is not None:
        facts.change_at(boundary)
    return _inside(node.window, moment)


def _holds(facts: _Facts, expr: Expr) -> bool:
    if isinstance(expr, Compare):
        return _compare(facts, expr)
    if isinstance(expr, During):
        return _during(facts, expr)
    if isinstance(expr, Truth):
        return _same(facts.value(expr.path), True)
    if isinstance(expr, Not):
        return not _holds(facts, expr.expr)
    if isinstance(expr, And):
        return all(_holds(facts, item) for item in expr.items)
    return any(_holds(facts, item) for item in expr.items)


def _reason(rule: Rule) -> str:
    return rule.because if rule.because is not None else f"{rule.condition_text}"


def evaluate(
    policies: Iterable[PolicyFile],
    subject: Subject,
    action: str,
    resource: Resource,
    context: Context,
) -> Decision:
    """Decide ``action``: the first matching deny rule wins; else the first matching
    allow rule; else deny. Obligations come from that allow rule and every matching
    oblige rule."""
    facts = _Facts(subject, action, resource, context)
    rules = [rule for policy in policies for rule in policy.rules]
    decision: Decision | None = None
    for rule in rules:
        if rule.effect == "deny" and _holds(facts, rule.condition):
            decision = Decision(False, rule.name, _reason(rule), rule.source)
            break
    if decision is None:
        allow = next((r for r in rules if r.effect == "allow" and _holds(facts, r.condition)), None)
        if allow is None:
            decision = Decision(False, None, f"no rule allows {action} (deny by default)")
        else:
            obligations = dict.fromkeys(allow.obligations)
            for rule in rules:
                if rule.effect == "oblige" and _holds(facts, rule.condition):
                    obligations.update(dict.fromkeys(rule.obligations))
            decision = Decision(True, allow.name, _reason(allow), allow.source, tuple(obligations))
    return Decision(
        decision.allowed,
        decision.rule,
        decision.reason,
        decision.source,
        decision.obligations,
        frozenset(facts.used),
        facts.changes_at,
    )
