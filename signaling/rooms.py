"""Per-room settings from <data-dir>/rooms.toml, reloaded when the file changes.

    [defaults]
    allow_bundle = true        # accept clients that bundle audio and video on one transport

    [rooms."board-meeting"]
    allow_bundle = false       # every channel on its own DTLS transport, or no entry

    [rooms."acme/board-meeting"]
    allow_bundle = false       # the same, for room "board-meeting" of tenant "acme"
    labels = ["confidential"]  # facts policies read as resource.labels

A room of tenant T is looked up as "T/room"; a bare name is a room of the
"default" tenant (tenant names never contain "/").

A file that does not parse never leaves the server without settings: the last valid
ones stay in force and the error is logged.
"""

from __future__ import annotations

import logging
import re
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class RoomSettingsError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class RoomSettings:
    allow_bundle: bool = True
    # What policies may know about the room (docs/POLICY.md: resource.labels).
    labels: tuple[str, ...] = ()
    # Files on the file channel: the largest accepted, and the media types allowed
    # ("type/subtype" or "type/*"; empty allows any). Refused before any byte moves.
    max_file_bytes: int = 100 * 1024 * 1024
    file_types: tuple[str, ...] = ()
    # The file channel's quota per sender, in kbit/s (protects audio and video).
    file_kbps: int = 8_000
    # Keep files sent to the whole room for members who join later (encrypted at
    # rest, sfu/io/filestore.py), until the meeting ends or, when not 0, for at most
    # file_retention_s seconds.
    keep_files: bool = False
    file_retention_s: int = 0


_MAX_LABELS = 32
_MAX_FILE_TYPES = 64
_FILE_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/(\*|[a-z0-9][a-z0-9!#$&^_.+-]*)")


def _settings(table: object, where: str, base: RoomSettings) -> RoomSettings:
    if not isinstance(table, dict):
        raise RoomSettingsError(f"{where} must be a table")
    known = {f.name: f.type for f in fields(RoomSettings)}
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in known:
            raise RoomSettingsError(f"{where}: unknown setting {key!r}")
        if key == "labels":
            if (
                not isinstance(value, list)
                or len(value) > _MAX_LABELS
                or not all(isinstance(v, str) and 0 < len(v) <= 64 for v in value)
            ):
                raise RoomSettingsError(
                    f"{where}.labels must be a list of at most {_MAX_LABELS} short strings"
                )
            value = tuple(value)
        elif key == "max_file_bytes":
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**53:
                raise RoomSettingsError(f"{where}.max_file_bytes must be a byte count")
        elif key == "file_kbps":
            if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 10**7:
                raise RoomSettingsError(f"{where}.file_kbps must be 1 to 10000000")
        elif key == "file_retention_s":
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 604_800:
                raise RoomSettingsError(f"{where}.file_retention_s must be 0 to 604800 seconds")
        elif key == "file_types":
            if (
                not isinstance(value, list)
                or len(value) > _MAX_FILE_TYPES
                or not all(isinstance(v, str) and _FILE_TYPE.fullmatch(v) for v in value)
            ):
                raise RoomSettingsError(
                    f"{where}.file_types must be a list of media types like image/png or image/*"
                )
            value = tuple(value)
        elif not isinstance(value, bool):
            raise RoomSettingsError(f"{where}.{key} must be true or false")
        values[key] = value
    return RoomSettings(**{**{f.name: getattr(base, f.name) for f in fields(base)}, **values})


def parse_room_settings(text: str) -> tuple[RoomSettings, dict[str, RoomSettings]]:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RoomSettingsError(str(exc)) from exc
    unknown = set(document) - {"defaults", "rooms"}
    if unknown:
        raise RoomSettingsError(f"unknown top-level table(s): {', '.join(sorted(unknown))}")
    defaults = _settings(document.get("defaults", {}), "defaults", RoomSettings())
    rooms_table = document.get("rooms", {})
    if not isinstance(rooms_table, dict):
        raise RoomSettingsError("rooms must be a table")
    rooms = {
        name: _settings(table, f'rooms."{name}"', defaults) for name, table in rooms_table.items()
    }
    return defaults, rooms


class RoomSettingsFile:
    """Settings for each room, from a TOML file that may change while the server runs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime_ns: int | None = None
        self._defaults = RoomSettings()
        self._rooms: dict[str, RoomSettings] = {}
        self.load(strict=True)

    def load(self, strict: bool = False) -> None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._mtime_ns, self._defaults, self._rooms = None, RoomSettings(), {}
            return
        if stat.st_mtime_ns == self._mtime_ns:
            return
        try:
            defaults, rooms = parse_room_settings(self.path.read_text(encoding="utf-8"))
        except (RoomSettingsError, OSError, UnicodeDecodeError) as exc:
            if strict:
                raise RoomSettingsError(f"{self.path}: {exc}") from exc
            log.error(
                "room settings not reloaded, keeping the last valid ones file=%s error=%s",
                self.path,
                exc,
            )
            self._mtime_ns = stat.st_mtime_ns
            return
        self._mtime_ns, self._defaults, self._rooms = stat.st_mtime_ns, defaults, rooms
        log.info("room settings loaded file=%s rooms=%d", self.path, len(rooms))

    def for_room(self, room: str, tenant: str = "default") -> RoomSettings:
        self.load()
        found = self._rooms.get(f"{tenant}/{room}")
        if found is None and tenant == "default":
            found = self._rooms.get(room)
        return self._defaults if found is None else found
