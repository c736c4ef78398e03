"""Policy files on disk: ``<data-dir>/policies/*.policy``, reloaded when they change.

A set that does not parse never replaces the one in force: the error is logged
and audited (``policy_error``) and the last valid set keeps deciding.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from signaling.policy.lexer import PolicyError
from signaling.policy.parser import parse_policy
from signaling.policy.syntax import PolicyFile

__all__ = ["DEFAULT_POLICY", "PolicySet", "PolicyStore", "ensure_policy_dir"]

log = logging.getLogger(__name__)

RELOAD_INTERVAL_S = 1.0
SUFFIX = ".policy"

DEFAULT_POLICY = """\
# Written by the server on first start of this data directory. It allows exactly
# what access tokens grant (docs/TOKENS.md), and nothing else: deny is the default.
# Edit it, or add more *.policy files here; see docs/POLICY.md.

allow "a valid token admits its holder to its room"
  when action is join

allow "publishing audio needs the publish:audio grant"
  when action is publish:audio and subject.grants has "publish:audio"

allow "publishing video needs the publish:video grant"
  when action is publish:video and subject.grants has "publish:video"

allow "sharing the screen needs the publish:screen grant"
  when action is publish:screen and subject.grants has "publish:screen"

allow "publishing control data needs the publish:control grant"
  when action is publish:control and subject.grants has "publish:control"

allow "sending files needs the publish:file grant"
  when action is send_file and subject.grants has "publish:file"

allow "subscribing and receiving files need the subscribe grant"
  when action in [subscribe, receive_file] and subject.grants has "subscribe"

allow "recording needs the record grant"
  when action is record and subject.grants has "record"

allow "moderating needs the moderate or the admin grant"
  when action is moderate
   and (subject.grants has "moderate" or subject.grants has "admin")

allow "exporting the audit log needs the admin grant"
  when action is export_audit and subject.grants has "admin"
"""


class Auditor(Protocol):
    def record(self, event: str, actor: str = "", room: str = "", **detail: Any) -> None: ...


@dataclass(frozen=True, slots=True)
class PolicySet:
    """Parsed policy files in name order (the order rules are tried in)."""

    files: tuple[PolicyFile, ...] = ()

    def __iter__(self) -> Iterator[PolicyFile]:
        return iter(self.files)

    @property
    def rule_count(self) -> int:
        return sum(len(f.rules) for f in self.files)

    @classmethod
    def parse(cls, sources: dict[str, str]) -> PolicySet:
        """From file name -> text; PolicyError for the first bad file."""
        return cls(tuple(parse_policy(sources[name], name) for name in sorted(sources)))

    @classmethod
    def load(cls, directory: Path) -> PolicySet:
        """Every ``*.policy`` file in ``directory``; PolicyError (or OSError) if one is bad."""
        sources: dict[str, str] = {}
        for path in sorted(directory.glob(f"*{SUFFIX}")):
            try:
                sources[path.name] = path.read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                raise PolicyError(f"not UTF-8 text (byte {exc.start})", 1, 1, path.name) from None
        return cls.parse(sources)


def ensure_policy_dir(data_dir: Path) -> Path:
    """``<data_dir>/policies``; created with ``default.policy`` when it does not exist."""
    directory = data_dir / "policies"
    if not directory.exists():
        directory.mkdir(parents=True)
        (directory / "default.policy").write_text(DEFAULT_POLICY, encoding="utf-8")
        log.info("wrote the default policy file=%s", directory / "default.policy")
    return directory


def _signature(directory: Path) -> tuple[tuple[str, int, int], ...]:
    # Taken every RELOAD_INTERVAL_S: os.scandir lists the same names as
    # Path.glob("*.policy") (a suffix match on POSIX) at a third of its cost.
    entries = []
    try:
        with os.scandir(directory) as listing:
            for entry in listing:
                if not entry.name.endswith(SUFFIX):
                    continue
                try:
                    stat = entry.stat()
                except OSError:
                    continue
                entries.append((entry.name, stat.st_mtime_ns, stat.st_size))
    except OSError:  # no directory (any more): no files, as Path.glob says
        return ()
    return tuple(sorted(entries))


class PolicyStore:
    """The policy set in force, picked up from disk when files change.

    The first load is strict (a bad file raises); later ones keep the last valid
    set on error. ``refresh()`` looks at the directory at most once per
    RELOAD_INTERVAL_S; ``reload()`` looks now.
    """

    def __init__(
        self,
        directory: Path,
        audit: Auditor | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = directory
        self.audit = audit
        self._clock = clock
        self._signature = _signature(directory)
        self.policies = PolicySet.load(directory)
        self.generation = 0
        self._checked_at = clock()
        log.info(
            "policies loaded dir=%s files=%d rules=%d",
            directory,
            len(self.policies.files),
            self.policies.rule_count,
        )

    def refresh(self) -> PolicySet:
        now = self._clock()
        if now - self._checked_at >= RELOAD_INTERVAL_S:
            self.reload()
        return self.policies

    def reload(self) -> bool:
        """Load the files again if they changed; True if a new set is in force."""
        self._checked_at = self._clock()
        signature = _signature(self.directory)
        if signature == self._signature:
            return False
        self._signature = signature
        try:
            policies = PolicySet.load(self.directory)
        except (PolicyError, OSError) as exc:
            log.error("policies not reloaded, keeping the last valid set: %s", exc)
            if self.audit is not None:
                detail: dict[str, Any] = {"error": str(exc)}
                if isinstance(exc, PolicyError):
                    detail.update(file=exc.file, line=exc.line, col=exc.col)
                self.audit.record("policy_error", "sfu", **detail)
            return False
        self.policies = policies
        self.generation += 1
        log.info("policies reloaded files=%d rules=%d", len(policies.files), policies.rule_count)
        if self.audit is not None:
            self.audit.record(
                "policy_loaded", "sfu", files=[f.name for f in policies.files],
                rules=policies.rule_count,
            )  # fmt: skip
        return True
