"""A network where Janus can gather a loopback candidate: a private namespace with one
extra interface that carries 127.0.0.2.

Janus (src/ice.c) skips interfaces flagged IFF_LOOPBACK when it gathers candidates, so
on a normal machine its only host candidates would be on real interfaces, which the
load generator refuses to use. Inside a fresh network namespace (`unshare -n`) we may
add an interface of our own: an empty bridge is up and running, and an address from
127.0.0.0/8 on it is delivered locally like any loopback address. Nothing outside the
namespace changes, and nothing inside it can reach another machine.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
import sys
from pathlib import Path

ALIAS_INTERFACE = "janus-lo"
ALIAS_ADDRESS = "127.0.0.2"
REPO_ROOT = Path(__file__).resolve().parents[2]
_SETUP = (
    "ip link set lo up"
    f" && ip link add {ALIAS_INTERFACE} type bridge"
    f" && ip addr add {ALIAS_ADDRESS}/32 dev {ALIAS_INTERFACE}"
    f" && ip link set {ALIAS_INTERFACE} up"
)


def loopback_alias() -> tuple[str, str] | None:
    """(interface, address) of a non-loopback interface with a 127.x address, if any."""
    try:
        out = subprocess.run(
            ["ip", "-j", "-4", "addr", "show"], capture_output=True, text=True, timeout=5
        ).stdout
        links = json.loads(out or "[]")
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return None
    for link in links:
        if "LOOPBACK" in link.get("flags", []) or "UP" not in link.get("flags", []):
            continue
        for info in link.get("addr_info", []):
            address = info.get("local", "")
            try:
                if ipaddress.ip_address(address).is_loopback:
                    return str(link.get("ifname", "")), address
            except ValueError:
                continue
    return None


def netns_missing_reason() -> str | None:
    """Why a private network namespace with the alias cannot be made here, or None."""
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return f"`{tool}` not found"
    try:
        probe = subprocess.run(
            ["unshare", "-n", "sh", "-c", _SETUP], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare -n failed: {exc}"
    if probe.returncode != 0:
        problem = probe.stderr.strip() or f"exit {probe.returncode}"
        return f"cannot make a private network namespace with a loopback alias: {problem}"
    return None


def in_private_netns(argv: list[str]) -> list[str]:
    """The command that runs argv in a fresh network namespace with the alias set up."""
    return ["unshare", "-n", "sh", "-c", _SETUP + ' && exec "$@"', "sh", *argv]


def python_module_command(module: str, args: list[str]) -> list[str]:
    """`python -m module args` with this interpreter, inside a private namespace."""
    return in_private_netns([sys.executable, "-m", module, *args])
