"""Janus (Debian's `janus` package) as the server under test: config, start, stop, /proc.

Everything lives in a temporary directory: janus.jcfg plus the two configs Janus then
reads (the HTTP transport, the videoroom plugin), and plugin/transport folders holding a
symlink to the one library each that is wanted, so that nothing else is loaded. Janus
generates its DTLS certificate itself (no `certificates` given), has no STUN server and
gathers ICE candidates only on the interface named in `ice_enforce_list`.

Janus never gathers on loopback interfaces (src/ice.c skips IFF_LOOPBACK), so it needs
an interface that is not `lo` but carries a loopback-range address: see
benchmarks/janus/netns.py, which makes one inside a private network namespace.
"""

from __future__ import annotations

import json
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.janus.netns import loopback_alias
from benchmarks.loadgen.server import ServerProcess, free_port

JANUS_BINARY = Path("/usr/bin/janus")
JANUS_LIB_DIR = Path("/usr/lib/x86_64-linux-gnu/janus")
VIDEOROOM_LIBRARY = "libjanus_videoroom.so"
HTTP_LIBRARY = "libjanus_http.so"
BASE_PATH = "/janus"
START_TIMEOUT_S = 20.0
RTP_PORTS = 2000  # one port per PeerConnection: plenty for scenario 1's 21
DEBUG_LEVEL = 3  # warnings and errors only: logging must not cost CPU in the window


class JanusUnavailable(Exception):
    """Janus cannot run here; the message says why (for "janus skipped: ...")."""


def janus_missing_reason() -> str | None:
    """Why Janus cannot be used at all on this machine, or None when it can."""
    if not JANUS_BINARY.exists():
        return f"{JANUS_BINARY} not found (apt-get install --no-install-recommends janus)"
    for folder, library in (("plugins", VIDEOROOM_LIBRARY), ("transports", HTTP_LIBRARY)):
        if not (JANUS_LIB_DIR / folder / library).exists():
            return f"{JANUS_LIB_DIR / folder / library} not found"
    return None


def janus_version() -> str:
    """What `janus --help` says about itself (first line), e.g. "1102 (1.1.2)"."""
    try:
        out = subprocess.run(
            [str(JANUS_BINARY), "--help"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    for line in out.splitlines():
        if line.startswith("Janus version:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def free_port_range(size: int) -> tuple[int, int]:
    """A start port whose next `size` UDP ports were free a moment ago (best effort)."""
    for _ in range(50):
        start = 20000 + (free_port(socket.SOCK_DGRAM) % 20000)
        probes: list[socket.socket] = []
        try:
            for port in range(start, start + size, max(1, size // 20)):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                probes.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in probes:
                sock.close()
        return start, start + size - 1
    raise JanusUnavailable("no free UDP port range for Janus")


def render_jcfg(sections: dict[str, dict[str, Any]]) -> str:
    """libconfig text (the .jcfg format) for sections of scalar settings."""
    lines: list[str] = []
    for name, items in sections.items():
        lines.append(f"{name}: {{")
        for key, value in items.items():
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, int):
                text = str(value)
            else:
                text = json.dumps(str(value))
            lines.append(f"\t{key} = {text}")
        lines.append("}")
    return "\n".join(lines) + "\n"


@dataclass
class JanusConfig:
    """What varies between runs; everything else is fixed in write_config()."""

    http_port: int
    ice_interface: str
    ice_address: str
    rtp_port_range: tuple[int, int]
    debug_level: int = DEBUG_LEVEL


def write_config(root: Path, config: JanusConfig) -> Path:
    """The config, plugin and transport folders under root; returns janus.jcfg's path."""
    configs = root / "conf"
    plugins = root / "plugins"
    transports = root / "transports"
    empty = root / "empty"
    for folder in (configs, plugins, transports, empty):
        folder.mkdir(parents=True, exist_ok=True)
    (plugins / VIDEOROOM_LIBRARY).symlink_to(JANUS_LIB_DIR / "plugins" / VIDEOROOM_LIBRARY)
    (transports / HTTP_LIBRARY).symlink_to(JANUS_LIB_DIR / "transports" / HTTP_LIBRARY)
    low, high = config.rtp_port_range
    main: dict[str, dict[str, Any]] = {
        "general": {
            "configs_folder": str(configs),
            "plugins_folder": str(plugins),
            "transports_folder": str(transports),
            "events_folder": str(empty),
            "loggers_folder": str(empty),
            "debug_level": config.debug_level,
            "session_timeout": 60,
            "server_name": "loadgen-janus",
            "interface": config.ice_address,
        },
        # No cert_pem/cert_key: Janus generates its own DTLS certificate at start.
        "certificates": {},
        "media": {"ipv6": False, "rtp_port_range": f"{low}-{high}"},
        # No stun_server and no turn_server: host candidates only, on one interface.
        "nat": {
            "ice_enforce_list": config.ice_interface,
            "ignore_mdns": True,
            "nice_debug": config.debug_level >= 6,
        },
        "plugins": {},
        "transports": {},
        "loggers": {},
        "events": {"broadcast": False},
    }
    (configs / "janus.jcfg").write_text(render_jcfg(main))
    http: dict[str, dict[str, Any]] = {
        "general": {
            "json": "plain",
            "base_path": BASE_PATH,
            "http": True,
            "port": config.http_port,
            "ip": "127.0.0.1",
            "https": False,
        },
        "admin": {"admin_http": False, "admin_https": False},
        "cors": {},
    }
    (configs / "janus.transport.http.jcfg").write_text(render_jcfg(http))
    # Rooms are created over the API by the load generator; none are predefined.
    (configs / "janus.plugin.videoroom.jcfg").write_text(render_jcfg({"general": {}}))
    return configs / "janus.jcfg"


@dataclass
class JanusUnderTest(ServerProcess):
    """A self-started Janus on loopback, read like benchmarks.loadgen's SfuUnderTest."""

    ice_interface: str
    ice_address: str
    base_url: str = ""
    pid: int | None = None
    self_started: bool = True
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    root: Path | None = None
    _tmp: tempfile.TemporaryDirectory[str] | None = None
    extra_args: list[str] = field(default_factory=list)
    version: str = ""
    debug_level: int = DEBUG_LEVEL
    kept_log: str = ""  # the log's tail, kept when stop() removes the directory

    def start(self) -> None:
        reason = janus_missing_reason()
        if reason is not None:
            raise JanusUnavailable(reason)
        self._tmp = tempfile.TemporaryDirectory(prefix="janus-loadgen-")
        self.root = Path(self._tmp.name)
        port = free_port(socket.SOCK_STREAM)
        config = JanusConfig(
            port,
            self.ice_interface,
            self.ice_address,
            free_port_range(RTP_PORTS),
            self.debug_level,
        )
        jcfg = write_config(self.root, config)
        self.base_url = f"http://127.0.0.1:{port}{BASE_PATH}"
        self.log_path = self.root / "janus.log"
        # --configs-folder on the command line: janus.jcfg's own configs_folder is read
        # too late for the plugins, which would otherwise load /etc/janus's samples.
        command = [
            str(JANUS_BINARY),
            "--config",
            str(jcfg),
            "--configs-folder",
            str(jcfg.parent),
            "--disable-colors",
            *self.extra_args,
        ]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, cwd=self.root, stdout=log, stderr=subprocess.STDOUT
            )
        self.pid = self.process.pid
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        problem = "not tried"
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise JanusUnavailable(
                    f"janus exited with {self.process.returncode}\n{self.log_tail()}"
                )
            try:
                info = self.info()
                if "janus.plugin.videoroom" not in info.get("plugins", {}):
                    raise JanusUnavailable(f"janus runs without the videoroom plugin: {info}")
                return
            except (OSError, ValueError) as exc:
                problem = repr(exc)
            time.sleep(0.1)
        tail = self.log_tail()
        self.stop()
        raise JanusUnavailable(
            f"janus HTTP API not answering after {START_TIMEOUT_S:g} s: {problem}\n{tail}"
        )

    def health(self) -> dict[str, Any]:
        """No packet counters to read: the runner counts what the clients exchanged."""
        return {}

    def info(self) -> dict[str, Any]:
        """GET /janus/info: version, plugins and transports (raises OSError if down)."""
        try:
            with urllib.request.urlopen(self.base_url + "/info", timeout=5) as resp:
                data: dict[str, Any] = json.load(resp)
                return data
        except urllib.error.HTTPError as exc:
            raise OSError(f"/info -> {exc.code}") from exc

    def stop(self) -> None:
        self.stop_process()
        if self._tmp is not None:
            if self.log_path is not None and self.log_path.exists():
                self.kept_log = self.log_tail(20000)
            self._tmp.cleanup()
            self._tmp = None


def start_janus() -> JanusUnderTest:
    """A started Janus on this namespace's loopback alias; JanusUnavailable says why not."""
    reason = janus_missing_reason()
    if reason is not None:
        raise JanusUnavailable(reason)
    alias = loopback_alias()
    if alias is None:
        raise JanusUnavailable(
            "no interface with a 127.x address besides lo: Janus gathers no candidates on "
            "loopback interfaces; run through `python -m benchmarks.janus`, which makes a "
            "private network namespace with one"
        )
    janus = JanusUnderTest(*alias, version=janus_version())
    janus.start()
    return janus
