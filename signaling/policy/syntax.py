"""The policy language's syntax tree and vocabulary: what a rule may name."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ACTIONS",
    "DAYS",
    "EFFECTS",
    "FACT_TYPES",
    "OBLIGATIONS",
    "And",
    "Compare",
    "During",
    "Expr",
    "Literal",
    "ListLiteral",
    "Not",
    "Operand",
    "Or",
    "Path",
    "PolicyFile",
    "Rule",
    "Truth",
    "Window",
]

# What a subject may try; "publish:<channel>" per channel of docs/TOKENS.md.
ACTIONS: frozenset[str] = frozenset(
    {
        "join",
        "publish:audio",
        "publish:video",
        "publish:screen",
        "publish:control",
        "subscribe",
        "send_file",
        "receive_file",
        "record",
        "moderate",
        "export_audit",
    }
)
EFFECTS = ("allow", "deny", "oblige")
# What an allowed action additionally requires of the server.
OBLIGATIONS: frozenset[str] = frozenset({"audit_counterparty", "delete_files_at_end"})
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

# The facts a rule may read and their types. "any" is a verified attribute: a
# boolean, integer or string, or missing. "duration" is whole seconds.
FACT_TYPES: dict[str, str] = {
    "action": "action",
    "subject.identity": "string",
    "subject.role": "string",
    "subject.tenant": "string",
    "subject.mfa": "number",
    "subject.grants": "list",
    "resource.tenant": "string",
    "resource.room": "string",
    "resource.labels": "list",
    "context.time": "time",
    "context.camera_on": "bool",
    "context.camera_on_for": "duration",
    "context.camera_off_for": "duration",
    "context.counterparty.identity": "string",
    "context.counterparty.tenant": "string",
}
ATTRS_PREFIX = "subject.attrs."


@dataclass(frozen=True, slots=True)
class Path:
    """A fact, e.g. ``subject.mfa`` or ``subject.attrs.real_name_verified``."""

    name: str
    type: str
    line: int
    col: int


@dataclass(frozen=True, slots=True)
class Literal:
    value: str | int | bool
    type: str  # "string", "number", "bool", "action"
    line: int
    col: int


@dataclass(frozen=True, slots=True)
class ListLiteral:
    items: tuple[Literal, ...]
    line: int
    col: int


@dataclass(frozen=True, slots=True)
class Window:
    """Days of the week (0 = Monday) and minutes of the day [start, end) in ``zone``."""

    days: frozenset[int]
    start_min: int
    end_min: int
    zone: str
    line: int
    col: int


Operand = Path | Literal | ListLiteral


@dataclass(frozen=True, slots=True)
class Compare:
    """``left op right``; op is is, is_not, has, in, not_in, >=, >, <=, <."""

    op: str
    left: Operand
    right: Operand
    line: int
    col: int


@dataclass(frozen=True, slots=True)
class During:
    """``context.time during <window>``."""

    left: Path
    window: Window
    line: int
    col: int


@dataclass(frozen=True, slots=True)
class Truth:
    """A boolean fact on its own: ``context.camera_on``."""

    path: Path
    line: int
    col: int


@dataclass(frozen=True, slots=True)
class Not:
    expr: Expr
    line: int
    col: int


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[Expr, ...]


Expr = Compare | During | Truth | Not | And | Or


@dataclass(frozen=True, slots=True)
class Rule:
    """One statement: ``allow|deny|oblige "name" when <condition> ...``."""

    effect: str
    name: str
    condition: Expr
    condition_text: str
    because: str | None
    obligations: tuple[str, ...]
    file: str
    line: int

    @property
    def source(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class PolicyFile:
    name: str
    rules: tuple[Rule, ...]
