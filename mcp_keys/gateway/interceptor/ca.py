"""The proxy's local certificate authority, name-constrained to the services' hosts.

Created on first use in the store directory (key 0600), valid for a chosen span (default
one year), and carrying X.509 Name Constraints that permit only the hosts of the
configured services: a stolen CA key cannot impersonate any other site to a client that
checks them (OpenSSL does). RFC 5280 leaves a name type without a permitted subtree
unconstrained, so every type a TLS client may check is closed: IPv4 and IPv6 addresses
are excluded whole (unless a service is an address: then only those addresses are
permitted), and URIs and e-mail addresses may only name the reserved ``invalid`` host
(RFC 6761), which no real site has. A DNS constraint also permits the names under it, so
those are excluded (``.host``), unless another service's host is one of them. It is
regenerated when its constraints differ from these (the hosts changed, or it was made by
an older version) or it nears expiry. Leaf certificates are minted in memory, never
written.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import McpKeysError

CERT_FILE = "proxy-ca.pem"
KEY_FILE = "proxy-ca.key"
DEFAULT_DAYS = 365
RENEW_BEFORE = _dt.timedelta(days=7)
LEAF_DAYS = 7


def _crypto() -> Any:
    try:
        from cryptography import x509
    except ImportError:
        from ...extras import install_hint

        raise McpKeysError(f"the proxy's CA needs cryptography: {install_hint('proxy')}"
                           ) from None
    return x509


def _host_name(host: str) -> Any:
    x509 = _crypto()
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _constraints(host: str) -> list[Any]:
    """The permitted subtrees for exactly ``host``: the DNS name, or the one address
    (and an IPv4 address's text as a DNS name: OpenSSL checks a leaf's common name
    ``127.0.0.1`` against the DNS subtrees, and mitmproxy names its leaves so; no real
    DNS name is all digits, so it certifies nothing else)."""
    x509 = _crypto()
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return [x509.DNSName(host)]
    exact = x509.IPAddress(ipaddress.ip_network(f"{address}/{address.max_prefixlen}"))
    return [exact, x509.DNSName(str(address))] if address.version == 4 else [exact]


NOWHERE = "invalid"  # RFC 6761: a name that never resolves, for URI and e-mail subtrees


def name_constraints(hosts: list[str]) -> Any:
    """The CA's Name Constraints for ``hosts``: each host permitted; every address family
    no service uses excluded; URIs and e-mail addresses confined to ``invalid``."""
    x509 = _crypto()
    wanted = sorted(set(hosts))
    families = set()
    for host in wanted:
        with contextlib.suppress(ValueError):  # a DNS name
            families.add(ipaddress.ip_address(host).version)
    excluded = [x509.IPAddress(ipaddress.ip_network(everything))
                for version, everything in ((4, "0.0.0.0/0"), (6, "::/0"))
                if version not in families]
    permitted = [name for h in wanted for name in _constraints(h)] + [
        x509.UniformResourceIdentifier(NOWHERE), x509.RFC822Name(NOWHERE)]
    # A DNS constraint permits every name under it too (RFC 5280); ".host" excludes just
    # those (OpenSSL, BoringSSL, Go). Kept when another service's host is under it.
    dns = [n.value for n in permitted if isinstance(n, x509.DNSName)]
    excluded += [x509.DNSName("." + name) for name in dns
                 if not any(other.endswith("." + name) for other in dns)]
    return x509.NameConstraints(permitted_subtrees=permitted,
                                excluded_subtrees=excluded or None)


@dataclass(frozen=True, slots=True)
class CAInfo:
    path: Path
    fingerprint: str  # SHA-256 of the DER certificate, hex with colons
    hosts: tuple[str, ...]
    not_after: _dt.datetime

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "fingerprint": self.fingerprint,
                "hosts": list(self.hosts), "not_after": self.not_after.isoformat()}


class LocalCA:
    """The CA in ``directory`` for ``hosts``."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.cert_path = self.directory / CERT_FILE
        self.key_path = self.directory / KEY_FILE
        self._cert: Any = None
        self._key: Any = None

    def __repr__(self) -> str:
        return f"LocalCA({str(self.directory)!r})"

    # -- on disk ----------------------------------------------------------------------

    def load(self) -> bool:
        """Read the CA if both files are there; ``False`` when there is none yet."""
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        from ...safefs import check_trusted, read_regular

        x509 = _crypto()
        try:
            check_trusted(self.key_path, what="proxy CA key")
            key_found = read_regular(self.key_path, limit=1 << 16)
            cert_found = read_regular(self.cert_path, limit=1 << 16)
        except OSError as exc:
            raise McpKeysError(f"cannot read the proxy CA in {self.directory}: "
                               f"{exc.strerror or exc}") from None
        if key_found is None or cert_found is None:
            return False
        mode = key_found[1].st_mode & 0o777
        if mode & 0o077:
            raise McpKeysError(f"{self.key_path} is mode {mode:04o}: run chmod 600 "
                               f"{self.key_path} (then 'mcp-keys ca rotate', since others "
                               "could read it)")
        try:
            self._key = load_pem_private_key(key_found[0], password=None)
            self._cert = x509.load_pem_x509_certificate(cert_found[0])
        except ValueError as exc:
            raise McpKeysError(f"the proxy CA in {self.directory} is damaged ({exc}); run "
                               "'mcp-keys ca rotate'") from None
        return True

    def info(self) -> CAInfo:
        from cryptography.hazmat.primitives import hashes

        fingerprint = self._cert.fingerprint(hashes.SHA256()).hex(":").upper()
        return CAInfo(self.cert_path, fingerprint, self.hosts(),
                      self._cert.not_valid_after_utc)

    def hosts(self) -> tuple[str, ...]:
        """The hosts the CA's name constraints permit."""
        x509 = _crypto()
        constraints = self._cert.extensions.get_extension_for_class(x509.NameConstraints)
        names = []
        for name in constraints.value.permitted_subtrees or ():
            if isinstance(name, x509.IPAddress):
                names.append(str(name.value.network_address))
            elif isinstance(name, x509.DNSName):
                names.append(name.value)
        return tuple(sorted(set(names)))

    def fits(self, hosts: list[str]) -> bool:
        """Whether the loaded CA's name constraints are exactly those for ``hosts``."""
        x509 = _crypto()
        try:
            current = self._cert.extensions.get_extension_for_class(x509.NameConstraints)
        except x509.ExtensionNotFound:
            return False
        return bool(current.critical and current.value == name_constraints(hosts))

    def ensure(self, hosts: list[str], *, days: int = DEFAULT_DAYS,
               now: _dt.datetime | None = None) -> CAInfo:
        """The CA for exactly ``hosts``: the existing one if it fits and is not near
        expiry, else a new one (the old files are replaced atomically)."""
        wanted = tuple(sorted(set(hosts)))
        now = now or _dt.datetime.now(_dt.UTC)
        if self.load() and self.fits(list(wanted)) and \
                self._cert.not_valid_after_utc - RENEW_BEFORE > now:
            return self.info()
        return self.create(list(wanted), days=days, now=now)

    def create(self, hosts: list[str], *, days: int = DEFAULT_DAYS,
               now: _dt.datetime | None = None) -> CAInfo:
        """A new CA for ``hosts`` (``ca rotate``)."""
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        from ...atomic import write_atomic
        from ...safefs import make_private_dirs

        x509 = _crypto()
        from cryptography.x509.oid import NameOID

        if not hosts:
            raise McpKeysError("no service hosts to constrain the proxy CA to: add a service "
                               "first ('mcp-keys service add')")
        if not 1 <= days <= 3650:
            raise McpKeysError("the CA's validity must be between 1 and 3650 days")
        now = now or _dt.datetime.now(_dt.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mcp-keys local proxy CA"),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mcp-keys")])
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - _dt.timedelta(minutes=5))
                .not_valid_after(now + _dt.timedelta(days=days))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True,
                    content_commitment=False, key_encipherment=False, data_encipherment=False,
                    key_agreement=False, encipher_only=False, decipher_only=False),
                    critical=True)
                .add_extension(name_constraints(hosts), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                               critical=False)
                .sign(key, hashes.SHA256()))
        if not self.directory.exists():
            make_private_dirs(self.directory)
        key_pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        write_atomic(self.key_path, key_pem, mode=0o600)
        write_atomic(self.cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
        self._key, self._cert = key, cert
        return self.info()

    # -- leaves -----------------------------------------------------------------------

    def mint(self, host: str, *, now: _dt.datetime | None = None) -> tuple[bytes, bytes]:
        """A leaf certificate and key (PEM) for ``host``, signed by this CA, in memory.
        Minting for a host outside the constraints succeeds, but no checking client
        accepts the result (that is the point of the constraints)."""
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        x509 = _crypto()
        now = now or _dt.datetime.now(_dt.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
                .issuer_name(self._cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - _dt.timedelta(minutes=5))
                .not_valid_after(min(now + _dt.timedelta(days=LEAF_DAYS),
                                     self._cert.not_valid_after_utc))
                .add_extension(x509.SubjectAlternativeName([_host_name(host)]), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                               critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    self._key.public_key()), critical=False)
                .sign(self._key, hashes.SHA256()))
        return (cert.public_bytes(serialization.Encoding.PEM),
                key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))


def service_hosts(services: dict[str, Any]) -> list[str]:
    """The hostnames (no ports) of the enabled HTTP services."""
    from urllib.parse import urlsplit

    return sorted({urlsplit(s.base_url).hostname or "" for s in services.values()
                   if s.kind == "http" and s.base_url} - {""})
