"""Real components for browser tests: the SFU server process and Chromium pages.

Run these tests in a network namespace that has only loopback, so that neither
the server nor Chromium can send a packet anywhere else:

    unshare -n bash -c 'ip link set lo up && exec .venv/bin/pytest -q tests/e2e'
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from playwright.async_api import Browser, BrowserContext, Page, Playwright

REPO_ROOT = Path(__file__).resolve().parents[2]
CLI_MODULE = "signaling.cli"
CHROMIUM_PATH = "/usr/bin/chromium"
SERVER_START_TIMEOUT_S = 20.0
SERVER_STOP_TIMEOUT_S = 10.0
JOIN_TIMEOUT_S = 10.0
LOG_TAIL_CHARS = 20_000

T = TypeVar("T")


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def spki_sha256_b64(cert_pem: bytes) -> str:
    """Base64 SHA-256 of the certificate's SubjectPublicKeyInfo, as Chromium pins it."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")


LOOSE_LIMITS = """[signaling]
requests_per_s = 100000
requests_burst = 100000
connections_per_ip = 10000
messages_per_s = 100000
messages_burst = 100000
auth_failures = 100000
"""


@dataclass
class SfuServer:
    """One `sfu serve` process on free ports with its own data directory."""

    data_dir: Path
    port: int
    media_port: int
    log_path: Path
    extra_args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def cert_path(self) -> Path:
        return self.data_dir / "tls" / "cert.pem"

    def start(self) -> None:
        # Every test client is 127.0.0.1: per-address limits would tie tests together.
        # tests/e2e/test_rate_limits.py writes its own strict limits.toml first.
        limits = self.data_dir / "limits.toml"
        if not limits.exists():
            limits.write_text(LOOSE_LIMITS)
        command = [
            sys.executable,
            "-m",
            CLI_MODULE,
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--media-port",
            str(self.media_port),
            "--data-dir",
            str(self.data_dir),
            *self.extra_args,
        ]
        if "--metrics-port" not in self.extra_args:
            command += ["--metrics-port", "0"]  # test servers must not fight over 9464
        if "--data-port" not in self.extra_args:
            command += ["--data-port", "0"]  # media port + 1 may be taken
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        self._wait_healthy()

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        last_problem = "no attempt yet"
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"sfu serve exited with {self.process.returncode} before it was healthy\n"
                    f"{self.log_tail()}"
                )
            if self.cert_path.exists():
                try:
                    status = self._get_status("/healthz")
                except (OSError, ssl.SSLError) as exc:
                    last_problem = repr(exc)
                else:
                    if status == 200:
                        return
                    last_problem = f"GET /healthz -> {status}"
            else:
                last_problem = f"{self.cert_path} does not exist yet"
            time.sleep(0.1)
        raise RuntimeError(
            f"sfu serve not healthy after {SERVER_START_TIMEOUT_S} s ({last_problem})\n"
            f"{self.log_tail()}"
        )

    def _get_status(self, path: str) -> int:
        # The dev certificate is the only trust anchor; its names are not checked
        # because the pin on the certificate itself is what identifies the server.
        context = ssl.create_default_context(cafile=str(self.cert_path))
        context.check_hostname = False
        try:
            with urllib.request.urlopen(self.base_url + path, timeout=2, context=context) as resp:
                status: int = resp.status
                return status
        except urllib.error.HTTPError as exc:
            return exc.code

    def token(
        self,
        room: str,
        identity: str,
        role: str = "participant",
        ttl: int = 600,
        *,
        grants: list[str] | None = None,
        tenant: str | None = None,
    ) -> str:
        """`sfu token`: a role preset, or exactly ``grants``; in ``tenant`` if given."""
        rights = ["--grants", ",".join(grants)] if grants is not None else ["--role", role]
        command = [
            sys.executable,
            "-m",
            CLI_MODULE,
            "token",
            "--data-dir",
            str(self.data_dir),
            "--room",
            room,
            "--identity",
            identity,
            *rights,
            *(["--tenant", tenant] if tenant is not None else []),
            "--ttl",
            str(ttl),
        ]
        done = subprocess.run(
            command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=30, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"sfu token failed ({done.returncode}): {done.stderr}")
        return done.stdout.strip()

    def spki_pin(self) -> str:
        return spki_sha256_b64(self.cert_path.read_bytes())

    def log_tail(self) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no server log: {exc})"
        return text[-LOG_TAIL_CHARS:]

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=SERVER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=SERVER_STOP_TIMEOUT_S)


def chromium_args(spki_pin: str) -> list[str]:
    # Playwright adds --headless itself; in this Chromium that is the new headless mode.
    return [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        "--autoplay-policy=no-user-gesture-required",
        "--allow-loopback-in-peer-connection",
        f"--ignore-certificate-errors-spki-list={spki_pin}",
        # Defence in depth for the loopback-only rule: no name lookups, no mDNS.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--disable-features=WebRtcHideLocalIpsWithMdns",
        # Background pages must keep decoding and polling on time.
        "--disable-background-timer-throttling",
        "--disable-renderer-backgrounding",
        "--disable-backgrounding-occluded-windows",
    ]


async def launch_chromium(playwright: Playwright, spki_pin: str) -> Browser:
    return await playwright.chromium.launch(
        executable_path=CHROMIUM_PATH, headless=True, args=chromium_args(spki_pin)
    )


async def poll(
    probe: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    *,
    timeout_s: float,
    interval_s: float = 0.1,
    what: str,
) -> T:
    """Call `probe` until `done(value)`, or fail after `timeout_s` showing the last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await probe()
        if done(value):
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout_s} s waiting for {what}; last: {value!r}"
            )
        await asyncio.sleep(interval_s)


@dataclass
class Participant:
    """One meeting page in its own browser context."""

    identity: str
    context: BrowserContext
    page: Page
    console: list[str] = field(default_factory=list)

    async def sfu(self, expression: str) -> Any:
        """Evaluate `expression` against the page's `window.sfu` (bound as `sfu`)."""
        return await self.page.evaluate(
            f"async () => {{ const sfu = window.sfu; return {expression}; }}"
        )

    async def close(self) -> None:
        await self.context.close()


async def open_participant(
    browser: Browser,
    server: SfuServer,
    room: str,
    identity: str,
    role: str = "participant",
    grants: list[str] | None = None,
) -> Participant:
    """Open the meeting page with a fresh token (a role, or exactly ``grants``) and
    wait until it has joined."""
    token = await asyncio.to_thread(server.token, room, identity, role, grants=grants)
    context = await browser.new_context(
        permissions=["camera", "microphone"], viewport={"width": 800, "height": 600}
    )
    page = await context.new_page()
    participant = Participant(identity=identity, context=context, page=page)
    page.on("console", lambda msg: participant.console.append(f"{msg.type}: {msg.text}"))
    page.on("pageerror", lambda exc: participant.console.append(f"pageerror: {exc}"))
    try:
        await page.goto(f"{server.base_url}/#token={token}")
        await poll(
            lambda: participant.sfu("sfu ? sfu.state : null"),
            lambda state: state not in (None, "connecting"),
            timeout_s=JOIN_TIMEOUT_S,
            what=f"{identity} to join {room}",
        )
        state = await participant.sfu("sfu.state")
        if state != "joined":
            error = await participant.sfu("sfu.lastError")
            raise AssertionError(f"{identity} did not join: state={state} error={error}")
    except BaseException as exc:
        exc.add_note(f"console of {identity}:\n" + "\n".join(participant.console[-50:]))
        await context.close()
        raise
    return participant


@asynccontextmanager
async def meeting(
    browser: Browser,
    server: SfuServer,
    room: str,
    identities: list[str],
    grants: list[str] | None = None,
) -> AsyncIterator[list[Participant]]:
    """Pages for `identities` joined to `room`, in order; all closed on exit.

    Pages the test appends to the yielded list are closed too. On an error the
    pages' console output is printed, which pytest shows with the failure.
    """
    participants: list[Participant] = []
    try:
        for identity in identities:
            participants.append(
                await open_participant(browser, server, room, identity, grants=grants)
            )
        yield participants
    except BaseException:
        for participant in participants:
            print(f"--- console of {participant.identity} ---")
            print("\n".join(participant.console[-50:]))
        raise
    finally:
        for participant in participants:
            await participant.close()
