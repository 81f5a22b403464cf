"""The proxy CA certifies only the services' names, whatever the name type.

Each leaf here is built by the test itself with ``cryptography`` and signed with the
project CA's private key, as a thief holding that key would; nothing of the project's
minting code is used. Three independent checks judge each leaf: OpenSSL through Python's
``ssl`` (a real handshake in memory, as a child process would verify the proxy),
``openssl verify``, and ``cryptography``'s own X.509 verifier."""

from __future__ import annotations

import datetime as dt
import ipaddress
import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("cryptography")

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mcp_keys.gateway.interceptor.ca import LocalCA

SERVICE = "api.stripe.test"


@dataclass(frozen=True)
class Leaf:
    """A leaf certificate the test made, and the name a client would ask for."""

    cert: Any
    key: Any
    asked: str  # the host name or address a client connects to


def general_name(text: str) -> Any:
    kind, _, value = text.partition(":")
    if kind == "dns":
        return x509.DNSName(value)
    if kind == "ip":
        return x509.IPAddress(ipaddress.ip_address(value))
    if kind == "uri":
        return x509.UniformResourceIdentifier(value)
    if kind == "email":
        return x509.RFC822Name(value)
    raise AssertionError(kind)


def forge(authority: LocalCA, asked: str, *names: str, cn: str = "test leaf") -> Leaf:
    """A server leaf for ``names`` (``dns:``, ``ip:``, ``uri:``, ``email:``), signed with
    the CA's key as read from its file, carrying what a verifier expects of a leaf."""
    ca_key = load_pem_private_key(authority.key_path.read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate(authority.cert_path.read_bytes())
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=False, crl_sign=False,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False),
                critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            )
    if names:  # none: a leaf named by its common name alone
        cert = cert.add_extension(x509.SubjectAlternativeName(
            [general_name(n) for n in names]), critical=False)
    return Leaf(cert.sign(ca_key, hashes.SHA256()), key, asked)


def pem(value: Any) -> bytes:
    if isinstance(value, x509.Certificate):
        return value.public_bytes(serialization.Encoding.PEM)
    return bytes(value.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))


def python_ssl_accepts(authority: LocalCA, leaf: Leaf, tmp_path: Path) -> bool:
    """A TLS handshake, in memory, between a server presenting ``leaf`` and a client that
    trusts only the CA and asks for ``leaf.asked`` (OpenSSL, as Python children use)."""
    (tmp_path / "leaf.pem").write_bytes(pem(leaf.cert))
    (tmp_path / "leaf.key").write_bytes(pem(leaf.key))
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp_path / "leaf.pem", tmp_path / "leaf.key")
    client_ctx = ssl.create_default_context(cafile=str(authority.cert_path))
    wires = [ssl.MemoryBIO() for _ in range(4)]  # client in/out, server in/out
    client = client_ctx.wrap_bio(wires[0], wires[1], server_hostname=leaf.asked)
    server = server_ctx.wrap_bio(wires[2], wires[3], server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, end in (("client", client), ("server", server)):
            if done[name]:
                continue
            try:
                end.do_handshake()
                done[name] = True
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                pass
            except ssl.SSLCertVerificationError as refused:
                assert "subtree" in str(refused) or "constraint" in str(refused), \
                    f"refused for another reason than the name constraints: {refused}"
                return False
            except ssl.SSLError:
                if name == "server":  # the client's alert after it refused
                    done[name] = True
                else:
                    raise
        wires[2].write(wires[1].read())
        wires[0].write(wires[3].read())
        if done["client"]:
            return True
    raise AssertionError("the in-memory handshake did not finish")


def openssl_accepts(authority: LocalCA, leaf: Leaf, tmp_path: Path) -> bool:
    """``openssl verify`` of the leaf against the CA alone (it checks name constraints)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl command")
    (tmp_path / "verify.pem").write_bytes(pem(leaf.cert))
    done = subprocess.run([openssl, "verify", "-CAfile", str(authority.cert_path),
                           str(tmp_path / "verify.pem")], capture_output=True, text=True,
                          timeout=30, check=False)
    if done.returncode == 0:
        return True
    assert "subtree" in done.stdout + done.stderr, \
        f"openssl refused for another reason: {done.stdout} {done.stderr}"
    return False


def cryptography_accepts(authority: LocalCA, leaf: Leaf) -> bool:
    """``cryptography``'s own verifier (not OpenSSL), as a TLS server for ``leaf.asked``.
    It holds the CA's ``.host`` exclusions (the names under a service's host, which
    OpenSSL, BoringSSL, Go and webpki read as such) malformed, so it accepts no leaf of
    this CA: it can only confirm refusals."""
    from cryptography.x509 import verification

    ca_cert = x509.load_pem_x509_certificate(authority.cert_path.read_bytes())
    try:
        subject: Any = x509.IPAddress(ipaddress.ip_address(leaf.asked))
    except ValueError:
        subject = x509.DNSName(leaf.asked)
    verifier = (verification.PolicyBuilder().store(verification.Store([ca_cert]))
                .build_server_verifier(subject))
    try:
        verifier.verify(leaf.cert, [])
    except verification.VerificationError:
        return False
    return True


def verdicts(authority: LocalCA, leaf: Leaf, tmp_path: Path) -> set[bool]:
    return {python_ssl_accepts(authority, leaf, tmp_path),
            openssl_accepts(authority, leaf, tmp_path),
            cryptography_accepts(authority, leaf)}


def accepted(authority: LocalCA, leaf: Leaf, tmp_path: Path) -> bool:
    """Whether the OpenSSL verifiers (what children use) both accept ``leaf``."""
    return {python_ssl_accepts(authority, leaf, tmp_path),
            openssl_accepts(authority, leaf, tmp_path)} == {True}


FORGED = {
    "another DNS name": ("bank.example", "dns:bank.example"),
    "an IPv4 address": ("203.0.113.7", "ip:203.0.113.7"),
    "the loopback address": ("127.0.0.1", "ip:127.0.0.1"),
    "an IPv6 address": ("2001:db8::7", "ip:2001:db8::7"),
    "a URI beside the service's name": (SERVICE, f"dns:{SERVICE}",
                                        "uri:https://bank.example/login"),
    "an e-mail address beside the service's name": (SERVICE, f"dns:{SERVICE}",
                                                    "email:ceo@bank.example"),
    # RFC 5280: a DNS name constraint permits the name and every name under it
    "a name under the service's": (f"login.{SERVICE}", f"dns:login.{SERVICE}"),
    "a wildcard under the service's": (f"login.{SERVICE}", f"dns:*.{SERVICE}"),
    "an IPv4-mapped IPv6 address": ("::ffff:203.0.113.7", "ip:::ffff:203.0.113.7"),
    "a common name alone (no SAN)": ("bank.example",),
    "a common name alone under the service's": (f"login.{SERVICE}",),
}


@pytest.mark.parametrize("what", sorted(FORGED))
def test_a_stolen_ca_key_certifies_no_other_name(tmp_path: Path, what: str) -> None:
    authority = LocalCA(tmp_path / "store")
    authority.create([SERVICE])
    asked, *names = FORGED[what]
    cn = asked if not names else "test leaf"
    assert verdicts(authority, forge(authority, asked, *names, cn=cn), tmp_path) == {False}, \
        f"a leaf for {what} signed with the CA's key was accepted by some verifier"
    assert accepted(authority, forge(authority, SERVICE, f"dns:{SERVICE}"), tmp_path), \
        "the service's own name must still pass"


def test_a_service_given_as_an_address_keeps_only_that_address(tmp_path: Path) -> None:
    authority = LocalCA(tmp_path / "store")
    authority.create([SERVICE, "127.0.0.1", "::1"])
    for asked in ("127.0.0.1", "::1"):
        assert accepted(authority, forge(authority, asked, f"ip:{asked}"), tmp_path), \
            f"the service address {asked} must pass"
        assert python_ssl_accepts(authority, forge(authority, asked, f"ip:{asked}",
                                                   cn=asked), tmp_path), \
            "a leaf named as mitmproxy names it (common name = the address) must pass"
    for asked in ("127.0.0.2", "10.0.0.1", "::2"):
        assert verdicts(authority, forge(authority, asked, f"ip:{asked}"),
                        tmp_path) == {False}, f"{asked} is no service's address"
    assert accepted(authority, forge(authority, SERVICE, f"dns:{SERVICE}"), tmp_path)
    only_v4 = LocalCA(tmp_path / "v4")
    only_v4.create(["127.0.0.1"])
    assert verdicts(only_v4, forge(only_v4, "::1", "ip:::1"), tmp_path) == {False}, \
        "an IPv4 service opens no IPv6 address"


def test_a_service_under_another_services_host(tmp_path: Path) -> None:
    """Two services, one host under the other's: both names pass, and the names under the
    inner host stay excluded (the outer host's other names cannot be: documented)."""
    authority = LocalCA(tmp_path / "store")
    authority.create(["stripe.test", SERVICE])
    for asked in ("stripe.test", SERVICE):
        assert accepted(authority, forge(authority, asked, f"dns:{asked}"), tmp_path), asked
    assert verdicts(authority, forge(authority, f"login.{SERVICE}", f"dns:login.{SERVICE}"),
                    tmp_path) == {False}


def test_a_ca_made_with_the_old_constraints_is_replaced(tmp_path: Path) -> None:
    """A CA from before (DNS names permitted, nothing excluded) for the same hosts is not
    kept: ``ensure`` makes a new one whose constraints close the other name types."""
    authority = LocalCA(tmp_path / "store")
    authority.create([SERVICE])
    key = load_pem_private_key(authority.key_path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mcp-keys local proxy CA")])
    now = dt.datetime.now(dt.UTC)
    old = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
           .public_key(key.public_key()).serial_number(x509.random_serial_number())
           .not_valid_before(now - dt.timedelta(minutes=5))
           .not_valid_after(now + dt.timedelta(days=300))
           .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
           .add_extension(x509.NameConstraints(permitted_subtrees=[x509.DNSName(SERVICE)],
                                               excluded_subtrees=None), critical=True)
           .sign(key, hashes.SHA256()))
    authority.cert_path.write_bytes(pem(old))
    stale = LocalCA(tmp_path / "store")
    assert stale.load() and stale.hosts() == (SERVICE,) and not stale.fits([SERVICE])
    renewed = LocalCA(tmp_path / "store").ensure([SERVICE])
    assert renewed.fingerprint != old.fingerprint(hashes.SHA256()).hex(":").upper(), \
        "a CA without the new exclusions must be replaced"
    fresh = LocalCA(tmp_path / "store")
    assert verdicts(fresh, forge(fresh, "203.0.113.7", "ip:203.0.113.7"),
                    tmp_path) == {False}
    again = LocalCA(tmp_path / "store").ensure([SERVICE])
    assert again.fingerprint == renewed.fingerprint, "a current CA is kept"
