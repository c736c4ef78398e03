"""Tests for signaling.tls: dev certificate generation and the TLS 1.3-only server context."""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import ipaddress
import shutil
import socket
import ssl
import stat
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from signaling.tls import (
    certificate_sha256_fingerprint,
    ensure_dev_certificate,
    server_ssl_context,
    spki_sha256_base64,
)

TIMEOUT_S = 5.0


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def san_of(path: Path) -> x509.SubjectAlternativeName:
    return load_cert(path).extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def ipv6_loopback_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


# --- certificate files ---


def test_cert_has_default_sans_and_properties(tmp_path: Path) -> None:
    cert_path, key_path = ensure_dev_certificate(tmp_path)
    assert cert_path == tmp_path / "tls" / "cert.pem"
    assert key_path == tmp_path / "tls" / "key.pem"

    cert = load_cert(cert_path)
    san = san_of(cert_path)
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert [a.value for a in cn] == ["sfu development certificate"]
    assert cert.issuer == cert.subject

    public_key = cert.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert isinstance(public_key.curve, ec.SECP256R1)

    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert datetime.timedelta(days=364) < lifetime < datetime.timedelta(days=367)
    now = datetime.datetime.now(datetime.UTC)
    assert cert.not_valid_before_utc <= now < cert.not_valid_after_utc

    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert basic.ca is False
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku

    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert key.public_key() == public_key


def test_key_mode_0600(tmp_path: Path) -> None:
    _cert_path, key_path = ensure_dev_certificate(tmp_path)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "tls").stat().st_mode) == 0o700
    assert sorted(p.name for p in (tmp_path / "tls").iterdir()) == ["cert.pem", "key.pem"]


def test_extra_hosts_as_ip_or_dns(tmp_path: Path) -> None:
    cert_path, _ = ensure_dev_certificate(
        tmp_path, ["192.168.1.20", "sfu.example.test", "fd00::5", "Media.Example.Test"]
    )
    san = san_of(cert_path)
    assert set(san.get_values_for_type(x509.DNSName)) == {
        "localhost",
        "sfu.example.test",
        "media.example.test",
    }
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address(a) for a in ("127.0.0.1", "::1", "192.168.1.20", "fd00::5")
    }


def test_reuse_when_hosts_covered(tmp_path: Path) -> None:
    cert_path, key_path = ensure_dev_certificate(tmp_path, ["10.0.0.7"])
    cert_pem, key_pem = cert_path.read_bytes(), key_path.read_bytes()

    # Same hosts, a subset, or a default host given explicitly: nothing changes.
    for hosts in (["10.0.0.7"], [], ["localhost", "127.0.0.1"], ["LOCALHOST"]):
        assert ensure_dev_certificate(tmp_path, hosts) == (cert_path, key_path)
        assert cert_path.read_bytes() == cert_pem
        assert key_path.read_bytes() == key_pem


def test_regenerate_when_extra_host_added(tmp_path: Path) -> None:
    cert_path, key_path = ensure_dev_certificate(tmp_path)
    old_fingerprint = certificate_sha256_fingerprint(cert_path)
    old_key = key_path.read_bytes()

    ensure_dev_certificate(tmp_path, ["sfu.lan"])
    assert certificate_sha256_fingerprint(cert_path) != old_fingerprint
    assert key_path.read_bytes() != old_key
    assert "sfu.lan" in san_of(cert_path).get_values_for_type(x509.DNSName)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600

    # Adding an IP host regenerates again.
    second = certificate_sha256_fingerprint(cert_path)
    ensure_dev_certificate(tmp_path, ["sfu.lan", "10.1.2.3"])
    assert certificate_sha256_fingerprint(cert_path) != second
    assert ipaddress.ip_address("10.1.2.3") in san_of(cert_path).get_values_for_type(x509.IPAddress)


def write_cert(
    cert_path: Path,
    key_path: Path,
    *,
    not_after: datetime.datetime,
    hosts: list[x509.GeneralName],
) -> None:
    """Write a hand-made certificate, e.g. one that is about to expire."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "handmade")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=300))
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(hosts), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


ALL_DEFAULT_NAMES: list[x509.GeneralName] = [
    x509.DNSName("localhost"),
    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    x509.IPAddress(ipaddress.ip_address("::1")),
]


def test_regenerate_when_expiring_soon(tmp_path: Path) -> None:
    cert_path, key_path = ensure_dev_certificate(tmp_path)
    now = datetime.datetime.now(datetime.UTC)
    write_cert(
        cert_path, key_path, not_after=now + datetime.timedelta(days=3), hosts=ALL_DEFAULT_NAMES
    )
    handmade = certificate_sha256_fingerprint(cert_path)
    ensure_dev_certificate(tmp_path)
    assert certificate_sha256_fingerprint(cert_path) != handmade
    assert load_cert(cert_path).not_valid_after_utc > now + datetime.timedelta(days=300)


def test_reuse_handmade_cert_with_enough_time_left(tmp_path: Path) -> None:
    cert_path, key_path = ensure_dev_certificate(tmp_path)
    now = datetime.datetime.now(datetime.UTC)
    write_cert(
        cert_path, key_path, not_after=now + datetime.timedelta(days=30), hosts=ALL_DEFAULT_NAMES
    )
    handmade = certificate_sha256_fingerprint(cert_path)
    ensure_dev_certificate(tmp_path)
    assert certificate_sha256_fingerprint(cert_path) == handmade
    # Reuse also repairs loose key permissions.
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600


def test_regenerate_when_files_broken(tmp_path: Path) -> None:
    cert_path, key_path = ensure_dev_certificate(tmp_path)

    cert_path.write_text("not a certificate")
    ensure_dev_certificate(tmp_path)
    load_cert(cert_path)

    # A key that does not belong to the certificate.
    other = ec.generate_private_key(ec.SECP256R1())
    key_path.write_bytes(
        other.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ensure_dev_certificate(tmp_path)
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert key.public_key() == load_cert(cert_path).public_key()

    key_path.unlink()
    ensure_dev_certificate(tmp_path)
    assert key_path.is_file()


def test_invalid_extra_host_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        ensure_dev_certificate(tmp_path, [""])
    with pytest.raises(ValueError):
        ensure_dev_certificate(tmp_path, ["a" * 64 + ".example"])


# --- hashes ---


def test_spki_hash_matches_independent_computation(tmp_path: Path) -> None:
    cert_path, key_path = ensure_dev_certificate(tmp_path)
    # Independently: from the private key file's public half, not the certificate.
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    expected = base64.b64encode(hashlib.sha256(spki).digest()).decode()
    assert spki_sha256_base64(cert_path) == expected
    assert len(base64.b64decode(expected)) == 32


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed")
def test_spki_hash_matches_openssl_cli(tmp_path: Path) -> None:
    cert_path, _ = ensure_dev_certificate(tmp_path)
    pubkey_pem = subprocess.run(
        ["openssl", "x509", "-in", str(cert_path), "-noout", "-pubkey"],
        check=True,
        capture_output=True,
        timeout=TIMEOUT_S,
    ).stdout
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-outform", "DER"],
        input=pubkey_pem,
        check=True,
        capture_output=True,
        timeout=TIMEOUT_S,
    ).stdout
    assert spki_sha256_base64(cert_path) == base64.b64encode(hashlib.sha256(der).digest()).decode()


def test_certificate_fingerprint(tmp_path: Path) -> None:
    cert_path, _ = ensure_dev_certificate(tmp_path)
    der = ssl.PEM_cert_to_DER_cert(cert_path.read_text())
    digest = hashlib.sha256(der).hexdigest().upper()
    expected = ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))
    assert certificate_sha256_fingerprint(cert_path) == expected
    assert len(expected) == 32 * 3 - 1


# --- live TLS server ---


@pytest.fixture
async def tls_server(tmp_path: Path) -> AsyncIterator[tuple[int, Path]]:
    """A real TLS server on 127.0.0.1 that sends one line and closes."""
    cert_path, key_path = ensure_dev_certificate(tmp_path)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(b"hello\n")
            await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(
        handle, "127.0.0.1", 0, ssl=server_ssl_context(cert_path, key_path)
    )
    port = server.sockets[0].getsockname()[1]
    try:
        yield port, cert_path
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), TIMEOUT_S)


def pinned_client_context(cert_path: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(cert_path))
    ctx.set_alpn_protocols(["http/1.1"])
    assert ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED
    return ctx


async def handshake(
    host: str, port: int, ctx: ssl.SSLContext, server_hostname: str
) -> tuple[str | None, str | None, bytes]:
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, ssl=ctx, server_hostname=server_hostname),
        TIMEOUT_S,
    )
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        assert isinstance(ssl_object, ssl.SSLObject)
        line = await asyncio.wait_for(reader.readline(), TIMEOUT_S)
        return ssl_object.version(), ssl_object.selected_alpn_protocol(), line
    finally:
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), TIMEOUT_S)
        except (ssl.SSLError, ConnectionError):
            pass


def tls12_client_context(cert_path: Path) -> ssl.SSLContext:
    ctx = pinned_client_context(cert_path)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def blocking_handshake(port: int, ctx: ssl.SSLContext) -> str | None:
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S) as sock:
        with ctx.wrap_socket(sock, server_hostname="localhost") as tls:
            return tls.version()


async def test_tls12_client_refused(tls_server: tuple[int, Path]) -> None:
    port, cert_path = tls_server
    ctx = tls12_client_context(cert_path)
    # A plain blocking client sees the failed handshake as an SSLError. asyncio's
    # server drops the connection without flushing OpenSSL's protocol_version alert,
    # so it surfaces as SSLEOFError here; the alert itself is checked in memory below.
    with pytest.raises(ssl.SSLError):
        await asyncio.wait_for(asyncio.to_thread(blocking_handshake, port, ctx), TIMEOUT_S * 2)
    # asyncio's client maps that same unexpected EOF to ConnectionResetError.
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        await handshake("127.0.0.1", port, tls12_client_context(cert_path), "localhost")
    # The server is still healthy for TLS 1.3 clients afterwards.
    assert (
        await asyncio.wait_for(
            asyncio.to_thread(blocking_handshake, port, pinned_client_context(cert_path)),
            TIMEOUT_S * 2,
        )
        == "TLSv1.3"
    )


def test_tls12_refused_with_protocol_version_alert(tmp_path: Path) -> None:
    """Run the handshake over memory BIOs to see exactly why each side fails."""
    cert_path, key_path = ensure_dev_certificate(tmp_path)
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = tls12_client_context(cert_path).wrap_bio(c_in, c_out, server_hostname="localhost")
    server = server_ssl_context(cert_path, key_path).wrap_bio(s_in, s_out, server_side=True)
    errors: dict[str, ssl.SSLError] = {}
    for _ in range(10):
        for side, obj in (("client", client), ("server", server)):
            if side in errors:
                continue
            try:
                obj.do_handshake()
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as exc:
                errors[side] = exc
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    assert errors["server"].reason == "UNSUPPORTED_PROTOCOL"
    assert errors["client"].reason == "TLSV1_ALERT_PROTOCOL_VERSION"


async def test_tls13_client_by_dns_name(tls_server: tuple[int, Path]) -> None:
    port, cert_path = tls_server
    version, alpn, line = await handshake(
        "127.0.0.1", port, pinned_client_context(cert_path), "localhost"
    )
    assert version == "TLSv1.3"
    assert alpn == "http/1.1"
    assert line == b"hello\n"


async def test_tls13_client_by_ip(tls_server: tuple[int, Path]) -> None:
    port, cert_path = tls_server
    ctx = pinned_client_context(cert_path)
    version, _alpn, line = await handshake("127.0.0.1", port, ctx, "127.0.0.1")
    assert version == "TLSv1.3"
    assert line == b"hello\n"


async def test_tls13_client_with_strict_x509_checks(tls_server: tuple[int, Path]) -> None:
    # Newer Pythons turn on X509 strict mode by default; the dev cert must pass it.
    port, cert_path = tls_server
    ctx = pinned_client_context(cert_path)
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    version, _alpn, _line = await handshake("127.0.0.1", port, ctx, "localhost")
    assert version == "TLSv1.3"


async def test_wrong_hostname_refused(tls_server: tuple[int, Path]) -> None:
    port, cert_path = tls_server
    with pytest.raises(ssl.SSLCertVerificationError):
        await handshake("127.0.0.1", port, pinned_client_context(cert_path), "example.com")
    with pytest.raises(ssl.SSLCertVerificationError):
        await handshake("127.0.0.1", port, pinned_client_context(cert_path), "10.9.9.9")


async def test_untrusted_client_refused(tls_server: tuple[int, Path]) -> None:
    port, _cert_path = tls_server
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # trusts nothing
    with pytest.raises(ssl.SSLCertVerificationError):
        await handshake("127.0.0.1", port, ctx, "localhost")


async def test_other_dev_cert_not_trusted(tls_server: tuple[int, Path], tmp_path: Path) -> None:
    port, _cert_path = tls_server
    other_cert, _ = ensure_dev_certificate(tmp_path / "other")
    with pytest.raises(ssl.SSLCertVerificationError):
        await handshake("127.0.0.1", port, pinned_client_context(other_cert), "localhost")


@pytest.mark.skipif(not ipv6_loopback_available(), reason="no IPv6 loopback")
async def test_tls13_client_over_ipv6_loopback(tmp_path: Path) -> None:
    cert_path, key_path = ensure_dev_certificate(tmp_path)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(
        handle, "::1", 0, ssl=server_ssl_context(cert_path, key_path)
    )
    try:
        port = server.sockets[0].getsockname()[1]
        version, _alpn, line = await handshake("::1", port, pinned_client_context(cert_path), "::1")
        assert version == "TLSv1.3"
        assert line == b"hello\n"
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), TIMEOUT_S)


def test_server_context_settings(tmp_path: Path) -> None:
    ctx = server_ssl_context(*ensure_dev_certificate(tmp_path))
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3
    assert ctx.maximum_version == ssl.TLSVersion.TLSv1_3
    assert ctx.protocol == ssl.PROTOCOL_TLS_SERVER
