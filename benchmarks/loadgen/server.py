"""The SFU under test: a self-started `sfu serve`, or a running one, and what /proc says."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from benchmarks.loadgen.whip import pinned_context, require_loopback
from signaling.keystore import INDEX_NAME, KEY_DIR_NAME

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_DATAPATH_LOG = re.compile(r"\bdatapath=(\w+)")


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads) from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def udp_socket_drops(port: int) -> int | None:
    """The kernel's drop counter of the UDP socket bound to port (receive buffer full)."""
    found = None
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) >= 13 and int(parts[1].rsplit(":", 1)[1], 16) == port:
                found = (found or 0) + int(parts[12])
    return found


def listening_pid(port: int) -> int | None:
    """The pid owning the TCP socket listening on port, if this user can see it."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            # st 0A is LISTEN
            if len(parts) >= 10 and parts[3] == "0A":
                if int(parts[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(parts[9])
    if not inodes:
        return None
    targets = {f"socket:[{inode}]" for inode in inodes}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in targets:
                    return int(entry.name)
        except OSError:
            continue
    return None


LOAD_TEST_LIMITS = """[signaling]
requests_per_s = 100000
requests_burst = 100000
connections_per_ip = 100000
messages_per_s = 100000
messages_burst = 100000
"""


class ServerProcess:
    """What a server under test offers besides its protocol: its process's CPU time,
    memory and log, and a clean stop. Subclasses (dataclasses) hold the fields."""

    pid: int | None
    process: subprocess.Popen[bytes] | None
    log_path: Path | None

    def cpu_seconds(self) -> float | None:
        if self.pid is None:
            return None
        try:
            return cpu_seconds(self.pid)
        except OSError:
            return None

    def rss_kb(self) -> int | None:
        if self.pid is None:
            return None
        try:
            return rss_kb(self.pid)
        except OSError:
            return None

    def log_tail(self, chars: int = 4000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_bytes()[-chars:].decode("utf-8", "replace")

    def stop_process(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT_S)


@dataclass
class SfuUnderTest(ServerProcess):
    """Where the SFU is and how to read it; start() only when self-started."""

    base_url: str
    data_dir: Path
    pid: int | None = None
    self_started: bool = False
    extra_args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    _tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def cert_path(self) -> Path:
        return self.data_dir / "tls" / "cert.pem"

    @property
    def signing_key_path(self) -> Path:
        """The key index the server signs and verifies tokens with (signaling/keystore.py)."""
        return self.data_dir / KEY_DIR_NAME / INDEX_NAME

    @classmethod
    def running(cls, url: str, data_dir: Path, pid: int | None = None) -> SfuUnderTest:
        """A server someone else started; its pid is found from its listening port."""
        parts = urlsplit(url)
        require_loopback(parts.hostname or "")
        if pid is None and parts.port:
            pid = listening_pid(parts.port)
        return cls(url.rstrip("/"), data_dir, pid=pid)

    @classmethod
    def self_started_default(cls, extra_args: list[str] | None = None) -> SfuUnderTest:
        tmp = tempfile.TemporaryDirectory(prefix="sfu-loadgen-")
        port = free_port(socket.SOCK_STREAM)
        server = cls(
            f"https://127.0.0.1:{port}",
            Path(tmp.name),
            self_started=True,
            extra_args=list(extra_args or []),
        )
        server._tmp = tmp
        return server

    def start(self) -> None:
        # All load clients share 127.0.0.1: lift the per-address signaling limits that
        # would otherwise turn 200 listeners joining at once into 429s.
        limits = self.data_dir / "limits.toml"
        if not limits.exists():
            limits.write_text(LOAD_TEST_LIMITS)
        port = self.base_url.rsplit(":", 1)[1]
        media_port = free_port(socket.SOCK_DGRAM)
        command = [
            sys.executable,
            "-m",
            "signaling.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            port,
            "--media-port",
            str(media_port),
            "--data-dir",
            str(self.data_dir),
            *self.extra_args,
        ]
        if "--data-port" not in self.extra_args:
            command += ["--data-port", "0"]  # media port + 1 may be taken
        self.log_path = self.data_dir / "server.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        self.pid = self.process.pid
        self._wait_healthy()

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        problem = "not tried"
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"sfu serve exited with {self.process.returncode}\n{self.log_tail()}"
                )
            if self.cert_path.exists():
                try:
                    self.health()
                    return
                except (OSError, ValueError) as exc:
                    problem = repr(exc)
            time.sleep(0.1)
        raise RuntimeError(f"sfu serve not healthy after {START_TIMEOUT_S:g} s: {problem}")

    def health(self) -> dict[str, Any]:
        """GET /healthz (counters); raises OSError unless it answers 200."""
        context = pinned_context(self.cert_path)
        try:
            with urllib.request.urlopen(
                self.base_url + "/healthz", timeout=5, context=context
            ) as resp:
                data: dict[str, Any] = json.load(resp)
                return data
        except urllib.error.HTTPError as exc:
            raise OSError(f"/healthz -> {exc.code}") from exc

    def logged_datapath(self) -> str | None:
        """The datapath the server said it uses at start (self-started servers only)."""
        match = _DATAPATH_LOG.search(self.log_tail(1_000_000))
        return match.group(1) if match else None

    def stop(self) -> None:
        self.stop_process()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
