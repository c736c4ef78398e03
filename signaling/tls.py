"""TLS for the signaling server: TLS 1.3 only, plus a self-signed development certificate."""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import ipaddress
import logging
import os
import secrets
import ssl
from collections.abc import Iterable, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "certificate_sha256_fingerprint",
    "ensure_dev_certificate",
    "server_ssl_context",
    "spki_sha256_base64",
]

logger = logging.getLogger(__name__)

DEV_CERT_COMMON_NAME = "sfu development certificate"
DEFAULT_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
CERT_VALIDITY = datetime.timedelta(days=365)
MIN_REMAINING_VALIDITY = datetime.timedelta(days=7)
# Backdate the start a little so clients with a slightly slow clock accept it.
CLOCK_SKEW_ALLOWANCE = datetime.timedelta(hours=1)

_IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _general_name(host: str) -> x509.GeneralName:
    """Map a host string to an IP SAN if it parses as an address, else a DNS SAN."""
    host = host.strip()
    if not host:
        raise ValueError("empty host name")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return x509.IPAddress(address)
    # Certificates carry DNS names in their ASCII (IDNA) form, compared case-insensitively.
    try:
        ascii_name = host.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ValueError(f"invalid host name: {host!r}") from exc
    ascii_name = ascii_name.lower().rstrip(".")
    if not ascii_name:
        raise ValueError(f"invalid host name: {host!r}")
    return x509.DNSName(ascii_name)


def _name_key(name: x509.GeneralName) -> tuple[str, str] | None:
    """A comparable identity for a SAN entry (None for kinds we do not issue)."""
    if isinstance(name, x509.IPAddress):
        value = name.value
        if isinstance(value, _IpAddress):
            return ("ip", value.compressed)
        return None
    if isinstance(name, x509.DNSName):
        return ("dns", name.value.lower().rstrip("."))
    return None


def _required_names(extra_hosts: Iterable[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    seen: set[tuple[str, str] | None] = set()
    for host in (*DEFAULT_HOSTS, *extra_hosts):
        name = _general_name(host)
        key = _name_key(name)
        if key not in seen:
            seen.add(key)
            names.append(name)
    return names


def _reuse_problem(
    cert_path: Path, key_path: Path, required: Sequence[x509.GeneralName]
) -> str | None:
    """Return why the existing files cannot be reused, or None if they can."""
    if not cert_path.is_file() or not key_path.is_file():
        return "certificate or key missing"
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (ValueError, TypeError, OSError):
        return "certificate or key unreadable"
    if cert.public_key() != key.public_key():
        return "key does not match certificate"
    now = datetime.datetime.now(datetime.UTC)
    if cert.not_valid_before_utc > now:
        return "certificate not yet valid"
    if cert.not_valid_after_utc - now <= MIN_REMAINING_VALIDITY:
        return "certificate expires soon"
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "certificate has no subject alternative names"
    present = {_name_key(name) for name in san}
    if any(_name_key(name) not in present for name in required):
        return "certificate does not cover every host"
    return None


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` via a temp file created with ``mode`` then renamed."""
    tmp_path = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_path)


def _generate(cert_path: Path, key_path: Path, names: Sequence[x509.GeneralName]) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, DEV_CERT_COMMON_NAME)])
    now = datetime.datetime.now(datetime.UTC)
    public_key = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW_ALLOWANCE)
        .not_valid_after(now + CERT_VALIDITY)
        .add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
        # A leaf, not a CA: pinning clients trust it directly, and it must not
        # be usable to sign other certificates if it ever leaks.
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Key first: a crash in between leaves a mismatched pair, which the next
    # start detects and regenerates.
    _write_atomic(key_path, key_pem, 0o600)
    _write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def ensure_dev_certificate(data_dir: Path, extra_hosts: Sequence[str] = ()) -> tuple[Path, Path]:
    """Return ``(cert.pem, key.pem)`` under ``<data_dir>/tls``, (re)creating them when needed.

    The self-signed certificate covers localhost, 127.0.0.1, ::1 and ``extra_hosts``;
    it is reused while it covers every host and has more than 7 days left.
    """
    tls_dir = Path(data_dir) / "tls"
    tls_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(tls_dir, 0o700)
    cert_path = tls_dir / "cert.pem"
    key_path = tls_dir / "key.pem"
    required = _required_names(extra_hosts)
    problem = _reuse_problem(cert_path, key_path, required)
    if problem is None:
        # Tighten permissions even on reuse in case the file was copied in loosely.
        os.chmod(key_path, 0o600)
        logger.debug("reusing development certificate", extra={"path": str(cert_path)})
        return cert_path, key_path
    _generate(cert_path, key_path, required)
    logger.info(
        "generated development certificate",
        extra={
            "path": str(cert_path),
            "reason": problem,
            "spki_sha256": spki_sha256_base64(cert_path),
        },
    )
    return cert_path, key_path


def server_ssl_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    """A server context that speaks only TLS 1.3 and offers ALPN http/1.1."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(certfile=str(cert_path), keyfile=str(key_path))
    context.set_alpn_protocols(["http/1.1"])
    return context


def _load_certificate(cert_path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(Path(cert_path).read_bytes())


def spki_sha256_base64(cert_path: Path) -> str:
    """Base64 SHA-256 of the certificate's SubjectPublicKeyInfo (Chromium SPKI pin form)."""
    spki = (
        _load_certificate(cert_path)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")


def certificate_sha256_fingerprint(cert_path: Path) -> str:
    """SHA-256 of the DER certificate as upper-case, colon-separated hex."""
    return _load_certificate(cert_path).fingerprint(hashes.SHA256()).hex(":").upper()
