"""Fixtures for end-to-end tests: a real SFU server process, one headless Chromium, and
an HTTPS client that trusts the server's development certificate."""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from playwright.async_api import Browser, async_playwright

from tests.e2e.harness import SfuServer, free_tcp_port, free_udp_port, launch_chromium
from tests.peers import client_ssl, use_loopback_only


@pytest.fixture(scope="module")
def sfu_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SfuServer]:
    data_dir: Path = tmp_path_factory.mktemp("sfu")
    server = SfuServer(
        data_dir=data_dir,
        port=free_tcp_port(),
        media_port=free_udp_port(),
        log_path=data_dir / "server.log",
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
async def http(sfu_server: SfuServer) -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTPS/WebSocket client session for the module's server (loopback only)."""
    use_loopback_only()
    connector = aiohttp.TCPConnector(ssl=client_ssl(sfu_server.cert_path))
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def chromium(sfu_server: SfuServer) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await launch_chromium(playwright, sfu_server.spki_pin())
        try:
            yield browser
        finally:
            await browser.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the server's log to the report of a failed test that used it."""
    report = yield
    if report.failed:
        funcargs = getattr(item, "funcargs", {})
        server = funcargs.get("sfu_server")
        if isinstance(server, SfuServer):
            report.sections.append(("sfu server log", server.log_tail()))
    return report
