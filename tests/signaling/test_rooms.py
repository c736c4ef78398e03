"""Room settings file: parsing, defaults, live reload, and keeping the last valid file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from signaling.rooms import RoomSettings, RoomSettingsError, RoomSettingsFile, parse_room_settings


def test_missing_file_means_defaults(tmp_path: Path) -> None:
    assert RoomSettingsFile(tmp_path / "rooms.toml").for_room("any") == RoomSettings()


def test_room_overrides_defaults() -> None:
    defaults, rooms = parse_room_settings(
        '[defaults]\nallow_bundle = false\n[rooms."open"]\nallow_bundle = true\n'
    )
    assert defaults.allow_bundle is False
    assert rooms["open"].allow_bundle is True


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[defaults]\nallow_bundle = 1\n", "true or false"),
        ("[defaults]\nbundle = true\n", "unknown setting"),
        ("[other]\n", "unknown top-level"),
        ("rooms = 3\n", "rooms must be a table"),
        ("[defaults\n", "line 1"),
    ],
)
def test_malformed_settings_are_refused_with_a_reason(text: str, fragment: str) -> None:
    with pytest.raises(RoomSettingsError, match=fragment):
        parse_room_settings(text)


def test_malformed_file_at_startup_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "rooms.toml"
    path.write_text("[defaults]\nallow_bundle = 'yes'\n")
    with pytest.raises(RoomSettingsError, match="rooms.toml"):
        RoomSettingsFile(path)


def test_edits_are_picked_up_and_a_broken_edit_keeps_the_last_valid_settings(
    tmp_path: Path,
) -> None:
    path = tmp_path / "rooms.toml"
    path.write_text('[rooms."a"]\nallow_bundle = false\n')
    settings = RoomSettingsFile(path)
    assert settings.for_room("a").allow_bundle is False
    path.write_text('[rooms."a"]\nallow_bundle = true\n')
    os.utime(path, ns=(1, 10**18))  # a new mtime even on coarse clocks
    assert settings.for_room("a").allow_bundle is True
    path.write_text("[rooms.a\n")
    os.utime(path, ns=(1, 2 * 10**18))
    assert settings.for_room("a").allow_bundle is True


def test_rooms_of_other_tenants_do_not_take_default_tenant_settings(tmp_path: Path) -> None:
    path = tmp_path / "rooms.toml"
    path.write_text(
        '[rooms."board"]\nallow_bundle = false\n[rooms."acme/town"]\nallow_bundle = false\n'
    )
    rooms = RoomSettingsFile(path)
    assert rooms.for_room("board").allow_bundle is False
    assert rooms.for_room("board", "default").allow_bundle is False
    assert rooms.for_room("board", "acme").allow_bundle is True
    assert rooms.for_room("town", "acme").allow_bundle is False
    assert rooms.for_room("town").allow_bundle is True
