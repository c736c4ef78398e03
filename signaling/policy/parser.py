"""Parser and type checker of the policy language (docs/POLICY.md has the grammar).

Recursive descent over the tokens of signaling/policy/lexer.py. Every error is a
PolicyError naming the line and column where the problem starts. The language has
no loops or definitions, and nesting is bounded, so parsing and evaluation are
linear in the size of the file.
"""

from __future__ import annotations

import re
import zoneinfo

from signaling.policy.lexer import PolicyError, Token, tokenize
from signaling.policy.syntax import (
    ACTIONS,
    ATTRS_PREFIX,
    DAYS,
    EFFECTS,
    FACT_TYPES,
    OBLIGATIONS,
    And,
    Compare,
    During,
    Expr,
    ListLiteral,
    Literal,
    Not,
    Operand,
    Or,
    Path,
    PolicyFile,
    Rule,
    Truth,
    Window,
)
from signaling.tokens import GRANTS

__all__ = ["parse_policy"]

MAX_DEPTH = 32
MAX_LIST_ITEMS = 64
_ROOTS = ("action", "subject", "resource", "context")
_SCALARS = frozenset({"string", "number", "bool", "action", "duration", "any"})
_ORDERED = frozenset({"number", "duration", "any"})
_ATTR_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,63}")
_OP_WORDS = ("is", "has", "in", "not", "during")


def parse_policy(text: str, name: str = "<policy>") -> PolicyFile:
    """Parse and type-check one policy file; PolicyError (with ``file`` = name) if bad."""
    try:
        return _Parser(text, name).parse_file()
    except PolicyError as exc:
        raise exc.in_file(name) from None


def _describe(token: Token) -> str:
    return "end of file" if token.kind == "end" else repr(token.text)


class _Parser:
    def __init__(self, text: str, name: str) -> None:
        self.text = text
        self.name = name
        self.tokens = tokenize(text)
        self.pos = 0
        self.depth = 0

    # -- token helpers
    def peek(self, ahead: int = 0) -> Token:
        return self.tokens[min(self.pos + ahead, len(self.tokens) - 1)]

    def next(self) -> Token:
        token = self.peek()
        if token.kind != "end":
            self.pos += 1
        return token

    def is_word(self, word: str, ahead: int = 0) -> bool:
        token = self.peek(ahead)
        return token.kind == "word" and token.text == word

    def is_punct(self, punct: str) -> bool:
        token = self.peek()
        return token.kind == "punct" and token.text == punct

    def expect_word(self, word: str, after: str) -> Token:
        token = self.next()
        if token.kind != "word" or token.text != word:
            raise self.error(token, f"expected '{word}' {after}, found {_describe(token)}")
        return token

    def expect_punct(self, punct: str, after: str) -> Token:
        token = self.next()
        if token.kind != "punct" or token.text != punct:
            raise self.error(token, f"expected '{punct}' {after}, found {_describe(token)}")
        return token

    @staticmethod
    def error(token: Token, message: str) -> PolicyError:
        return PolicyError(message, token.line, token.col)

    # -- statements
    def parse_file(self) -> PolicyFile:
        rules: list[Rule] = []
        seen: dict[str, int] = {}
        while self.peek().kind != "end":
            rule = self.parse_rule()
            if rule.name in seen:
                raise PolicyError(
                    f"rule name {rule.name!r} already used on line {seen[rule.name]}",
                    rule.line,
                    1,
                )
            seen[rule.name] = rule.line
            rules.append(rule)
        return PolicyFile(self.name, tuple(rules))

    def parse_rule(self) -> Rule:
        start = self.next()
        if start.kind != "word" or start.text not in EFFECTS:
            raise self.error(
                start, f"expected a rule (allow, deny or oblige), found {_describe(start)}"
            )
        name_token = self.next()
        if name_token.kind != "string" or not str(name_token.value).strip():
            raise self.error(
                name_token, f"expected the rule's name in quotes, found {_describe(name_token)}"
            )
        self.expect_word("when", "after the rule's name")
        first = self.peek()
        condition = self.parse_or()
        last = self.tokens[self.pos - 1]
        condition_text = " ".join(self.text[first.offset : last.end].split())
        because = None
        if self.is_word("because"):
            self.next()
            reason = self.next()
            if reason.kind != "string":
                raise self.error(reason, f"expected a quoted reason, found {_describe(reason)}")
            because = str(reason.value)
        obligations: list[str] = []
        if self.is_word("then"):
            then = self.next()
            if start.text == "deny":
                raise self.error(then, "a deny rule has no obligations")
            while True:
                token = self.next()
                if token.kind != "word" or token.text not in OBLIGATIONS:
                    raise self.error(
                        token,
                        f"unknown obligation {_describe(token)}; obligations are "
                        + ", ".join(sorted(OBLIGATIONS)),
                    )
                obligations.append(token.text)
                if not self.is_punct(","):
                    break
                self.next()
        elif start.text == "oblige":
            token = self.peek()
            raise self.error(token, f"expected 'then' and an obligation, found {_describe(token)}")
        token = self.peek()
        if token.kind != "end" and not (token.kind == "word" and token.text in EFFECTS):
            raise self.error(
                token,
                f"expected 'and', 'or', 'because', 'then' or the next rule, found "
                f"{_describe(token)}",
            )
        return Rule(
            effect=start.text,
            name=str(name_token.value),
            condition=condition,
            condition_text=condition_text,
            because=because,
            obligations=tuple(obligations),
            file=self.name,
            line=start.line,
        )

    # -- conditions
    def enter(self, token: Token) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(token, f"condition nested deeper than {MAX_DEPTH} levels")

    def parse_or(self) -> Expr:
        items = [self.parse_and()]
        while self.is_word("or"):
            self.next()
            items.append(self.parse_and())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def parse_and(self) -> Expr:
        items = [self.parse_not()]
        while self.is_word("and"):
            self.next()
            items.append(self.parse_not())
        return items[0] if len(items) == 1 else And(tuple(items))

    def parse_not(self) -> Expr:
        token = self.peek()
        if self.is_word("not"):
            self.next()
            self.enter(token)
            inner = self.parse_not()
            self.depth -= 1
            return Not(inner, token.line, token.col)
        if self.is_punct("("):
            self.next()
            self.enter(token)
            inner = self.parse_or()
            self.depth -= 1
            self.expect_punct(")", "to close the '(' on line " + str(token.line))
            return inner
        return self.parse_comparison()

    def parse_comparison(self) -> Expr:
        start = self.peek()
        left = self.parse_operand()
        token = self.peek()
        op: str | None = None
        if token.kind == "punct" and token.text in (">=", ">", "<=", "<"):
            op = token.text
            self.next()
        elif self.is_word("is"):
            self.next()
            op = "is"
            if self.is_word("not"):
                self.next()
                op = "is_not"
        elif self.is_word("has"):
            self.next()
            op = "has"
        elif self.is_word("in"):
            self.next()
            op = "in"
        elif self.is_word("not") and self.is_word("in", 1):
            self.next()
            self.next()
            op = "not_in"
        elif self.is_word("during"):
            self.next()
            if not (isinstance(left, Path) and left.type == "time"):
                raise self.error(start, "'during' needs context.time on its left")
            return During(left, self.parse_window(), start.line, start.col)
        if op is None:
            if isinstance(left, Path) and left.type in ("bool", "any"):
                return Truth(left, start.line, start.col)
            raise self.error(
                token,
                f"expected a comparison (is, is not, has, in, not in, >=, >, <=, <, during) "
                f"after {_describe(start)}, found {_describe(token)}",
            )
        right_token = self.peek()
        right = self.parse_operand()
        return self.check_compare(op, left, right, start, right_token)

    def parse_operand(self) -> Operand:
        token = self.next()
        if token.kind == "string":
            return Literal(str(token.value), "string", token.line, token.col)
        if token.kind == "number":
            return Literal(int(token.value), "number", token.line, token.col)
        if token.kind == "punct" and token.text == "[":
            return self.parse_list(token)
        if token.kind != "word" or token.text in _OP_WORDS or token.text in ("and", "or"):
            raise self.error(token, f"expected a fact or a value, found {_describe(token)}")
        if token.text in ("true", "false"):
            return Literal(token.text == "true", "bool", token.line, token.col)
        if token.text not in _ROOTS:
            return Literal(token.text, "word", token.line, token.col)
        parts = [token.text]
        while self.is_punct("."):
            self.next()
            part = self.next()
            if part.kind != "word":
                raise self.error(part, f"expected a name after '.', found {_describe(part)}")
            parts.append(part.text)
        name = ".".join(parts)
        if name in FACT_TYPES:
            return Path(name, FACT_TYPES[name], token.line, token.col)
        key = name[len(ATTRS_PREFIX) :]
        if name.startswith(ATTRS_PREFIX) and _ATTR_KEY.fullmatch(key):
            return Path(name, "any", token.line, token.col)
        known = ", ".join(sorted(FACT_TYPES)) + ", subject.attrs.<key>"
        raise self.error(token, f"unknown fact {name!r}; facts are {known}")

    def parse_list(self, open_token: Token) -> ListLiteral:
        items: list[Literal] = []
        if self.is_punct("]"):
            self.next()
            return ListLiteral((), open_token.line, open_token.col)
        while True:
            if self.is_punct("["):
                token = self.peek()
                raise self.error(token, "a list holds values, not lists")
            item = self.parse_operand()
            if not isinstance(item, Literal):
                where = item
                raise PolicyError("a list holds values, not facts or lists", where.line, where.col)
            items.append(item)
            if len(items) > MAX_LIST_ITEMS:
                raise PolicyError(
                    f"list longer than {MAX_LIST_ITEMS} items", open_token.line, open_token.col
                )
            token = self.next()
            if token.kind == "punct" and token.text == "]":
                return ListLiteral(tuple(items), open_token.line, open_token.col)
            if token.kind != "punct" or token.text != ",":
                raise self.error(token, f"expected ',' or ']' in a list, found {_describe(token)}")

    def parse_window(self) -> Window:
        first = self.peek()
        days: set[int] = set()
        while self.peek().kind == "word":
            start_day = self.day(self.next())
            end_day = start_day
            if self.is_punct(".."):
                self.next()
                end_day = self.day(self.next())
            day = start_day
            days.add(day)
            while day != end_day:
                day = (day + 1) % 7
                days.add(day)
            if not self.is_punct(","):
                break
            self.next()
        start = self.next()
        if start.kind != "time":
            raise self.error(start, f"expected a time of day like 09:00, found {_describe(start)}")
        self.expect_punct("..", "between the start and end of the hours")
        end = self.next()
        if end.kind != "time":
            raise self.error(end, f"expected a time of day like 17:30, found {_describe(end)}")
        start_min, end_min = int(start.value), int(end.value)
        if start_min >= 24 * 60 or end_min <= start_min:
            raise self.error(start, "hours must start before they end, within one day")
        zone = "UTC"
        if self.is_word("in"):
            self.next()
            zone_token = self.next()
            if zone_token.kind != "string":
                raise self.error(
                    zone_token,
                    f'expected a time zone in quotes like "Europe/Zurich", found '
                    f"{_describe(zone_token)}",
                )
            zone = str(zone_token.value)
            if not _zone_exists(zone):
                raise self.error(zone_token, f"unknown time zone {zone!r}")
        return Window(frozenset(days or range(7)), start_min, end_min, zone, first.line, first.col)

    def day(self, token: Token) -> int:
        if token.kind != "word" or token.text not in DAYS:
            raise self.error(token, f"expected a day ({', '.join(DAYS)}), found {_describe(token)}")
        return DAYS.index(token.text)

    # -- types
    def check_compare(
        self, op: str, left: Operand, right: Operand, start: Token, right_token: Token
    ) -> Compare:
        if not isinstance(left, Path) and not isinstance(right, Path):
            raise self.error(start, "a comparison needs a fact (subject., resource., ...)")
        if isinstance(left, Literal) and left.type == "word":
            raise self.error(start, f"unknown name {left.value!r}; quote a value")
        if op in ("in", "not_in"):
            if not isinstance(right, ListLiteral):
                raise self.error(right_token, "'in' needs a list like [a, b]")
            if not isinstance(left, Path) or left.type not in _SCALARS:
                raise self.error(start, "'in' needs a single-valued fact on its left")
            items = tuple(self.check_value(left.type, item) for item in right.items)
            return Compare(
                op, left, ListLiteral(items, right.line, right.col), start.line, start.col
            )
        if isinstance(right, ListLiteral) or isinstance(left, ListLiteral):
            raise self.error(right_token, f"a list goes with 'in', not '{op.replace('_', ' ')}'")
        if op == "has":
            if not isinstance(left, Path) or left.type != "list":
                raise self.error(start, "'has' needs a list fact on its left (labels, grants)")
            if isinstance(right, Path):
                if right.type not in ("string", "any"):
                    raise self.error(right_token, "'has' needs a text value on its right")
                return Compare(op, left, right, start.line, start.col)
            value = self.check_value("string", right)
            if left.name == "subject.grants" and value.value not in GRANTS:
                raise self.error(
                    right_token, f"unknown grant {value.value!r}; grants are {', '.join(GRANTS)}"
                )
            return Compare(op, left, value, start.line, start.col)
        if isinstance(left, Path) and left.type == "list":
            raise self.error(start, f"{left.name} is a list: use 'has'")
        if isinstance(right, Path) and right.type == "list":
            raise self.error(right_token, f"{right.name} is a list: use 'has'")
        if isinstance(left, Path) and left.type == "time":
            raise self.error(start, "context.time is compared with 'during'")
        if isinstance(right, Path) and right.type == "time":
            raise self.error(right_token, "context.time is compared with 'during'")
        if op in (">=", ">", "<=", "<"):
            for side, token in ((left, start), (right, right_token)):
                kind = side.type if isinstance(side, Path | Literal) else "list"
                if kind not in _ORDERED:
                    raise self.error(token, f"'{op}' compares numbers, not {kind} values")
            return Compare(op, left, right, start.line, start.col)
        if isinstance(left, Path) and isinstance(right, Path):
            if not _compatible(left.type, right.type):
                raise self.error(
                    right_token, f"cannot compare {left.name} ({left.type}) with {right.type}"
                )
            return Compare(op, left, right, start.line, start.col)
        if isinstance(left, Path) and isinstance(right, Literal):
            return Compare(op, left, self.check_value(left.type, right), start.line, start.col)
        assert isinstance(left, Literal) and isinstance(right, Path)
        return Compare(op, self.check_value(right.type, left), right, start.line, start.col)

    def check_value(self, fact_type: str, value: Literal) -> Literal:
        """``value`` as a literal of ``fact_type``, or PolicyError at its position."""
        if fact_type == "action":
            if value.type not in ("word", "string") or value.value not in ACTIONS:
                raise PolicyError(
                    f"unknown action {value.value!r}; actions are {', '.join(sorted(ACTIONS))}",
                    value.line,
                    value.col,
                )
            return Literal(value.value, "action", value.line, value.col)
        if value.type == "word":
            raise PolicyError(
                f"unknown name {value.value!r}; quote text values", value.line, value.col
            )
        expected = "number" if fact_type == "duration" else fact_type
        if expected != "any" and value.type != expected:
            raise PolicyError(
                f"expected a {expected} value, found {value.type} {value.value!r}",
                value.line,
                value.col,
            )
        return value


def _compatible(left: str, right: str) -> bool:
    numeric = {"number", "duration"}
    return left == right or "any" in (left, right) or {left, right} <= numeric


def _zone_exists(zone: str) -> bool:
    try:
        zoneinfo.ZoneInfo(zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True
