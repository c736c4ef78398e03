"""Tokens of the policy language, each with the line and column it starts at."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["MAX_POLICY_BYTES", "PolicyError", "Token", "tokenize"]

# A policy is read by people; anything this large is a mistake or an attack.
MAX_POLICY_BYTES = 256 * 1024
MAX_STRING_CHARS = 256
MAX_NUMBER = 2**53 - 1
_UNITS = {"s": 1, "min": 60, "h": 3600}

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*(?::[A-Za-z0-9_\-]+)*")
_NUMBER = re.compile(r"-?[0-9]+(?![0-9:])([A-Za-z]*)")
_TIME = re.compile(r"([0-9]{1,2}):([0-9]{2})(?![0-9])")
_PUNCT = ("..", ">=", "<=", ">", "<", "(", ")", "[", "]", ",", ".")


class PolicyError(Exception):
    """A policy file is malformed. ``code`` is always "bad_policy".

    ``str()`` is ``file:line:col: message`` (the file part only when known).
    """

    code = "bad_policy"

    def __init__(self, message: str, line: int, col: int, file: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.col = col
        self.file = file

    def in_file(self, file: str) -> PolicyError:
        return PolicyError(self.message, self.line, self.col, file)

    def __str__(self) -> str:
        where = f"{self.line}:{self.col}: {self.message}"
        return f"{self.file}:{where}" if self.file else where


@dataclass(frozen=True, slots=True)
class Token:
    """``kind``: word, string, number, time, punct or end; ``value`` is typed."""

    kind: str
    text: str
    value: str | int
    line: int
    col: int
    offset: int
    end: int


def tokenize(text: str) -> list[Token]:
    """All tokens of ``text`` followed by an ``end`` token; PolicyError at the first bad one."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_POLICY_BYTES:
        raise PolicyError(f"policy file larger than {MAX_POLICY_BYTES} bytes", 1, 1)
    tokens: list[Token] = []
    pos, line, line_start, length = 0, 1, 0, len(text)
    while pos < length:
        ch = text[pos]
        col = pos - line_start + 1
        if ch == "\n":
            pos, line, line_start = pos + 1, line + 1, pos + 1
            continue
        if ch in " \t\r":
            pos += 1
            continue
        if ch == "#":
            newline = text.find("\n", pos)
            pos = length if newline < 0 else newline
            continue
        if ch == '"':
            value, end = _string(text, pos, line, col)
            tokens.append(Token("string", text[pos:end], value, line, col, pos, end))
            pos = end
            continue
        time_match = _TIME.match(text, pos)
        if time_match:
            hours, minutes = int(time_match.group(1)), int(time_match.group(2))
            if minutes > 59 or hours > 24 or (hours == 24 and minutes):
                raise PolicyError(f"invalid time of day {time_match.group(0)!r}", line, col)
            end = time_match.end()
            tokens.append(Token("time", text[pos:end], hours * 60 + minutes, line, col, pos, end))
            pos = end
            continue
        number_match = _NUMBER.match(text, pos)
        if number_match:
            end = number_match.end()
            unit = number_match.group(1)
            digits = text[pos : end - len(unit)]
            if len(digits) > 17 or abs(int(digits)) > MAX_NUMBER:
                raise PolicyError("number out of range", line, col)
            if unit and unit not in _UNITS:
                raise PolicyError(
                    f"unknown unit {unit!r} (use s, min or h)", line, col + len(digits)
                )
            number = int(digits) * _UNITS.get(unit, 1)
            tokens.append(Token("number", text[pos:end], number, line, col, pos, end))
            pos = end
            continue
        word_match = _WORD.match(text, pos)
        if word_match:
            end = word_match.end()
            tokens.append(Token("word", text[pos:end], text[pos:end], line, col, pos, end))
            pos = end
            continue
        punct = next((p for p in _PUNCT if text.startswith(p, pos)), None)
        if punct is not None:
            end = pos + len(punct)
            tokens.append(Token("punct", punct, punct, line, col, pos, end))
            pos = end
            continue
        if ch == "=" or ch == "!":
            raise PolicyError(f"unexpected {ch!r}: compare with 'is' or 'is not'", line, col)
        raise PolicyError(f"unexpected character {ch!r}", line, col)
    tokens.append(Token("end", "", "", line, pos - line_start + 1, pos, pos))
    return tokens


def _string(text: str, start: int, line: int, col: int) -> tuple[str, int]:
    """A double-quoted string with \\" and \\\\ escapes, on one line."""
    out: list[str] = []
    pos = start + 1
    while pos < len(text):
        ch = text[pos]
        if ch == '"':
            if len(out) > MAX_STRING_CHARS:
                raise PolicyError(f"string longer than {MAX_STRING_CHARS} characters", line, col)
            return "".join(out), pos + 1
        if ch == "\n":
            break
        if ch == "\\":
            nxt = text[pos + 1 : pos + 2]
            if nxt not in ('"', "\\"):
                raise PolicyError(
                    'unknown escape in string (only \\" and \\\\)', line, col + pos - start
                )
            out.append(nxt)
            pos += 2
            continue
        if ord(ch) < 0x20 or ord(ch) == 0x7F:
            raise PolicyError("control character in string", line, col + pos - start)
        out.append(ch)
        pos += 1
    raise PolicyError("string not closed on this line", line, col)
