"""signaling/static/e2ee.js in real headless Chromium agrees with the Python twin:
frames, wrapped keys and safety numbers cross between them in both directions.

The module is served from a small aiohttp server on 127.0.0.1 (a module script needs
http, and http://127.0.0.1 is a secure context, which WebCrypto requires)."""

from __future__ import annotations

import hashlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from playwright.async_api import Browser, Page, async_playwright

from benchmarks.loadgen.e2ee import (
    IdentityKeyPair,
    ReceiverKeyring,
    SenderKey,
    SenderKeys,
    b64decode,
    b64encode,
    derive_data_key_salt,
    open_chat,
    open_file_offer,
    safety_number,
    seal_chat,
    seal_file,
    unwrap_sender_key,
    wrap_sender_key,
)
from tests.e2ee.test_e2ee import (
    FRAMES,
    GCM,
    GCM_CTR,
    GCM_KID,
    X25519_ALICE_PRIVATE,
    X25519_ALICE_PUBLIC,
    X25519_BOB_PUBLIC,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

REPO_ROOT = Path(__file__).resolve().parents[2]
STATIC_DIR = REPO_ROOT / "signaling" / "static"
CHROMIUM_PATH = "/usr/bin/chromium"
PAGE_HTML = "<!doctype html><meta charset='utf-8'><title>e2ee</title>"

# Loaded once into the page: the module, and hex helpers for passing bytes across.
PAGE_SETUP = """async () => {
  window.e2ee = await import("/static/e2ee.js");
  window.hex = (data) =>
    Array.from(e2ee.toBytes(data), (b) => b.toString(16).padStart(2, "0")).join("");
  window.unhex = (text) => Uint8Array.from(text.match(/../g) ?? [], (pair) => parseInt(pair, 16));
}"""


async def index(_request: web.Request) -> web.Response:
    return web.Response(text=PAGE_HTML, content_type="text/html")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def origin() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_static("/static/", STATIC_DIR)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    site = web.SockSite(runner, sock)
    try:
        await site.start()
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        await runner.cleanup()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM_PATH, headless=True)
        try:
            yield browser
        finally:
            await browser.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def page(chromium: Browser, origin: str) -> AsyncIterator[Page]:
    context = await chromium.new_context()
    try:
        page = await context.new_page()
        await page.goto(origin + "/")
        await page.evaluate(PAGE_SETUP)
        yield page
    finally:
        await context.close()


async def in_page(page: Page, script: str, arg: Any = None) -> Any:
    return await page.evaluate(script, arg)


async def test_page_has_webcrypto_x25519(page: Page) -> None:
    assert await in_page(page, "() => e2ee.x25519Supported()") is True


async def test_page_matches_rfc9605_gcm_vector(page: Page) -> None:
    result = await in_page(
        page,
        """async (v) => {
          const base = unhex(v.base_key);
          const { key, salt } = await e2ee.deriveKeySalt(v.kid, base);
          const frameKey = await e2ee.FrameKey.create(v.kid, base);
          const ct = await frameKey.seal(v.ctr, unhex(v.metadata), unhex(v.pt));
          const ring = new e2ee.ReceiverKeyring();
          await ring.addKey(v.kid, base, 0);
          const pt = await ring.decrypt(unhex(v.ct), unhex(v.metadata), 0);
          return { key: hex(key), salt: hex(salt), ct: hex(ct), pt: hex(pt) };
        }""",
        {**GCM, "kid": GCM_KID, "ctr": GCM_CTR},
    )
    assert result == {
        "key": GCM["sframe_key"],
        "salt": GCM["sframe_salt"],
        "ct": GCM["ct"],
        "pt": GCM["pt"],
    }


async def test_frames_encrypted_in_page_decrypt_in_python(page: Page) -> None:
    result = await in_page(
        page,
        """async (frames) => {
          const key = await e2ee.SenderKey.generate(5);
          const encrypted = [];
          for (const [codec, frame] of frames) {
            encrypted.push(hex(await key.encryptFrame(unhex(frame).buffer, codec)));
          }
          return { baseKey: hex(key.baseKey), encrypted };
        }""",
        [[codec, frame.hex()] for codec, frame, _ in FRAMES],
    )
    ring = ReceiverKeyring()
    ring.add_key(5, bytes.fromhex(result["baseKey"]), 0.0)
    for (codec, frame, _), encrypted in zip(FRAMES, result["encrypted"], strict=True):
        assert ring.decrypt_frame(bytes.fromhex(encrypted), codec, 0.0) == frame


async def test_frames_encrypted_in_python_decrypt_in_page(page: Page) -> None:
    key = SenderKey.generate(kid=300)
    encrypted = [(codec, key.encrypt_frame(frame, codec).hex()) for codec, frame, _ in FRAMES]
    result = await in_page(
        page,
        """async ({ baseKey, encrypted }) => {
          const ring = new e2ee.ReceiverKeyring();
          await ring.addKey(300, unhex(baseKey), 0);
          const frames = [];
          for (const [codec, data] of encrypted) {
            frames.push(hex(await ring.decryptFrame(unhex(data).buffer, codec, 0)));
          }
          const tampered = unhex(encrypted[0][1]);
          tampered[tampered.length - 1] ^= 1;
          const error = await ring.decryptFrame(tampered, encrypted[0][0], 0).catch((e) => e.code);
          return { frames, error };
        }""",
        {"baseKey": key.base_key.hex(), "encrypted": encrypted},
    )
    assert result["frames"] == [frame.hex() for _, frame, _ in FRAMES]
    assert result["error"] == "decrypt_failed"


async def test_key_wrapped_in_python_unwraps_in_page(page: Page) -> None:
    page_public = await in_page(
        page,
        """async () => {
          window.bobIdentity = await e2ee.IdentityKeyPair.generate();
          return hex(bobIdentity.publicKey);
        }""",
    )
    alice = IdentityKeyPair.generate()
    key = SenderKey.generate(kid=12)
    blob = wrap_sender_key(alice, "alice", "bob", bytes.fromhex(page_public), 12, key.base_key)
    result = await in_page(
        page,
        """async ({ alice, blob }) => {
          const { kid, baseKey } = await e2ee.unwrapSenderKey(
            bobIdentity, "bob", "alice", unhex(alice), e2ee.fromBase64Url(blob));
          const wrongSender = await e2ee.unwrapSenderKey(
            bobIdentity, "bob", "mallory", unhex(alice), e2ee.fromBase64Url(blob)
          ).catch((e) => e.code);
          return { kid, baseKey: hex(baseKey), wrongSender };
        }""",
        {"alice": alice.public_key.hex(), "blob": b64encode(blob)},
    )
    assert result == {"kid": 12, "baseKey": key.base_key.hex(), "wrongSender": "unwrap_failed"}


async def test_key_wrapped_in_page_unwraps_in_python(page: Page) -> None:
    bob = IdentityKeyPair.generate()
    result = await in_page(
        page,
        """async (bob) => {
          const alice = await e2ee.IdentityKeyPair.generate();
          const key = await e2ee.SenderKey.generate(7);
          const blob = await e2ee.wrapSenderKey(
            alice, "alice", "bob", unhex(bob), key.kid, key.baseKey);
          return { alice: hex(alice.publicKey), baseKey: hex(key.baseKey),
                   message: e2ee.keyMessage("bob", blob) };
        }""",
        bob.public_key.hex(),
    )
    message = result["message"]
    assert set(message) == {"type", "to", "blob"}
    assert (message["type"], message["to"]) == ("e2ee_key", "bob")
    kid, base_key = unwrap_sender_key(
        bob, "bob", "alice", bytes.fromhex(result["alice"]), b64decode(message["blob"])
    )
    assert (kid, base_key.hex()) == (7, result["baseKey"])


async def test_page_and_python_show_the_same_safety_number(page: Page) -> None:
    other = IdentityKeyPair.generate().public_key
    result = await in_page(
        page,
        """async ({ alicePrivate, bob, other }) => {
          const alice = await e2ee.IdentityKeyPair.fromPrivateBytes(unhex(alicePrivate));
          return {
            alicePublic: hex(alice.publicKey),
            pinned: await e2ee.safetyNumber(unhex(bob), alice.publicKey),
            random: await e2ee.safetyNumber(alice.publicKey, unhex(other)),
          };
        }""",
        {"alicePrivate": X25519_ALICE_PRIVATE, "bob": X25519_BOB_PUBLIC, "other": other.hex()},
    )
    alice_public = bytes.fromhex(X25519_ALICE_PUBLIC)
    assert result == {
        "alicePublic": X25519_ALICE_PUBLIC,
        "pinned": safety_number(alice_public, bytes.fromhex(X25519_BOB_PUBLIC)),
        "random": safety_number(other, alice_public),
    }


async def test_module_encrypts_inside_a_worker(page: Page) -> None:
    # An RTCRtpScriptTransform runs its frames in a Worker: the module must need no DOM.
    base_key = bytes(range(16))
    _, frame, _ = FRAMES[1]
    encrypted = await in_page(
        page,
        """async ({ baseKey, frame }) => {
          const source = `
            import * as e2ee from "${location.origin}/static/e2ee.js";
            onmessage = async ({ data }) => {
              const key = await e2ee.SenderKey.create(2, data.baseKey);
              postMessage(await key.encryptFrame(data.frame, "video/VP8"));
            };`;
          const url = URL.createObjectURL(new Blob([source], { type: "text/javascript" }));
          const worker = new Worker(url, { type: "module" });
          const reply = new Promise((resolve, reject) => {
            worker.onmessage = ({ data }) => resolve(data);
            worker.onerror = (event) => reject(new Error(event.message));
          });
          worker.postMessage({ baseKey: unhex(baseKey), frame: unhex(frame).buffer });
          const result = await reply;
          worker.terminate();
          return hex(result);
        }""",
        {"baseKey": base_key.hex(), "frame": frame.hex()},
    )
    ring = ReceiverKeyring()
    ring.add_key(2, base_key, 0.0)
    assert ring.decrypt_frame(bytes.fromhex(encrypted), "vp8", 0.0) == frame


# ---------------------------------------------------------------- chat and files

SEALED_FILE = bytes(range(256)) * 150  # 38400 bytes: three sealed chunks


async def test_page_derives_the_same_data_key_and_salt(page: Page) -> None:
    base_key = bytes(range(16))
    result = await in_page(
        page,
        """async (base) => {
          const { key, salt } = await e2ee.deriveDataKeySalt(300, unhex(base));
          return { key: hex(key), salt: hex(salt) };
        }""",
        base_key.hex(),
    )
    key, salt = derive_data_key_salt(300, base_key)
    assert result == {"key": key.hex(), "salt": salt.hex()}


async def test_chat_and_a_file_sealed_in_page_open_in_python(page: Page) -> None:
    result = await in_page(
        page,
        """async (data) => {
          const keys = await e2ee.SenderKeys.create(0, { firstKid: 9 });
          const bytes = unhex(data);
          const frame = await keys.encryptFrame(Uint8Array.of(0x01, 2, 3, 4), "vp8", 0);
          const chat = await e2ee.sealChat(keys, "hello from the page ✓", "bob", 0);
          const file = await e2ee.sealFile(keys, {
            name: "plan.pdf", sha256: hex(await crypto.subtle.digest("SHA-256", bytes)),
            plainSize: bytes.length, mime: "application/pdf" }, 0);
          const chunks = [];
          const step = e2ee.SEALED_CHUNK_PLAIN_BYTES;
          for (let i = 0; i < e2ee.sealedChunkCount(bytes.length); i++) {
            chunks.push(hex(await file.sealChunk(i, bytes.subarray(i * step, (i + 1) * step))));
          }
          return { baseKey: hex(keys.current.baseKey), chat: e2ee.toBase64Url(chat),
                   sealed: e2ee.toBase64Url(file.sealed), size: file.size, chunks,
                   frameCtr: keys.current.nextCtr };
        }""",
        SEALED_FILE.hex(),
    )
    keyring = ReceiverKeyring()
    keyring.add_key(9, bytes.fromhex(result["baseKey"]), 0.0)
    assert open_chat(keyring, result["chat"], "bob", 0.0) == "hello from the page ✓"
    incoming = open_file_offer(keyring, result["sealed"], len(SEALED_FILE), "application/pdf", 0.0)
    assert (incoming.name, incoming.sha256) == ("plan.pdf", hashlib.sha256(SEALED_FILE).hexdigest())
    chunks = [bytes.fromhex(c) for c in result["chunks"]]
    assert sum(map(len, chunks)) == result["size"]
    assert b"".join(incoming.open_chunk(i, c) for i, c in enumerate(chunks)) == SEALED_FILE
    # Frames kept their own counter: the one frame took CTR 0, data did not move it.
    assert result["frameCtr"] == 1


async def test_chat_and_a_file_sealed_in_python_open_in_page(page: Page) -> None:
    keys = SenderKeys(0.0, first_kid=4)
    chat = seal_chat(keys, "hello from python ✓", None, 0.0)
    outgoing = seal_file(keys, "notes.txt", SEALED_FILE, "text/plain", 0.0)
    chunks = [c.hex() for c in outgoing.chunks(SEALED_FILE)]
    result = await in_page(
        page,
        """async ({ baseKey, chat, sealed, plainSize, chunks }) => {
          const ring = new e2ee.ReceiverKeyring();
          await ring.addKey(4, unhex(baseKey), 0);
          const text = await e2ee.openChat(ring, chat, undefined, 0);
          const wrongTo = await e2ee.openChat(ring, chat, "bob", 0).catch((e) => e.code);
          const file = await e2ee.openFileOffer(ring, sealed, plainSize, "text/plain", 0);
          const parts = [];
          for (let i = 0; i < chunks.length; i++) {
            parts.push(hex(await file.openChunk(i, unhex(chunks[i]))));
          }
          const swapped = await file.openChunk(0, unhex(chunks[1])).catch((e) => e.code);
          return { text, wrongTo, name: file.name, sha256: file.sha256,
                   data: parts.join(""), swapped };
        }""",
        {
            "baseKey": keys.current.base_key.hex(),
            "chat": chat,
            "sealed": outgoing.sealed,
            "plainSize": len(SEALED_FILE),
            "chunks": chunks,
        },
    )
    assert result == {
        "text": "hello from python ✓",
        "wrongTo": "decrypt_failed",
        "name": "notes.txt",
        "sha256": hashlib.sha256(SEALED_FILE).hexdigest(),
        "data": SEALED_FILE.hex(),
        "swapped": "decrypt_failed",
    }
