"""The proxy's local CA: name-constrained to the services' hosts (a leaf for any other
host is refused by Python's ssl, i.e. OpenSSL), key 0600, renewed when the hosts change,
and shown, rotated and checked by the CLI."""

from __future__ import annotations

import datetime as dt
import json
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest

from mcp_keys.gateway.interceptor.ca import LocalCA
from tests.conftest import Cli, one_error_line

pytest.importorskip("cryptography")


def handshake(authority: LocalCA, leaf_host: str, server_hostname: str,
              tmp_path: Path) -> None:
    """A TLS server on loopback with a leaf minted for ``leaf_host``; a client trusting
    only the CA connects asking for ``server_hostname``. Raises what the client raises."""
    cert, key = authority.mint(leaf_host)
    (tmp_path / "leaf.pem").write_bytes(cert)
    (tmp_path / "leaf.key").write_bytes(key)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp_path / "leaf.pem", tmp_path / "leaf.key")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def serve() -> None:
        connection, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(connection, server_side=True) as tls:
                tls.recv(1)
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client_ctx = ssl.create_default_context(cafile=str(authority.cert_path))
    try:
        with socket.create_connection(listener.getsockname(), timeout=10) as raw, \
                client_ctx.wrap_socket(raw, server_hostname=server_hostname) as tls:
            tls.sendall(b"x")
    finally:
        thread.join(10)
        listener.close()


def test_only_the_services_hosts_can_be_certified(tmp_path: Path) -> None:
    authority = LocalCA(tmp_path / "store")
    info = authority.create(["api.stripe.test", "127.0.0.1"])
    assert info.hosts == ("127.0.0.1", "api.stripe.test")
    handshake(authority, "api.stripe.test", "api.stripe.test", tmp_path)  # accepted
    with pytest.raises(ssl.SSLCertVerificationError) as refused:
        handshake(authority, "bank.example", "bank.example", tmp_path)
    assert "permitted" in str(refused.value) or "constraint" in str(refused.value), \
        f"refused for another reason: {refused.value}"


def test_files_and_renewal(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    authority = LocalCA(directory)
    first = authority.ensure(["api.stripe.test"])
    assert stat.S_IMODE(authority.key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    again = LocalCA(directory).ensure(["api.stripe.test"])
    assert again.fingerprint == first.fingerprint, "the same hosts keep the same CA"
    changed = LocalCA(directory).ensure(["api.stripe.test", "api.github.test"])
    assert changed.fingerprint != first.fingerprint and \
        changed.hosts == ("api.github.test", "api.stripe.test"), "new hosts, new CA"
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=360)
    renewed = LocalCA(directory).ensure(["api.stripe.test", "api.github.test"], now=later)
    assert renewed.fingerprint != changed.fingerprint, "renewed a week before expiry"


def test_a_readable_key_is_refused(tmp_path: Path) -> None:
    authority = LocalCA(tmp_path / "store")
    authority.create(["api.stripe.test"])
    authority.key_path.chmod(0o644)
    with pytest.raises(Exception, match="chmod 600"):
        LocalCA(tmp_path / "store").load()


def test_cli_show_rotate_and_doctor(run: Cli) -> None:
    assert run("init").exit_code == 0
    assert run("service", "add", "stripe", "--base-url", "https://api.stripe.test",
               "--auth", "bearer", "--secret", "env:X", "--allow", "GET /**").exit_code == 0
    missing = run("ca", "show")
    assert missing.exit_code == 1 and "mcp-keys ca rotate" in one_error_line(missing.stderr)
    rotated = run("ca", "rotate", "--days", "20")
    assert rotated.exit_code == 0 and "api.stripe.test" in rotated.stdout
    shown = json.loads(run("ca", "show", "--json").stdout)
    assert shown["hosts"] == ["api.stripe.test"] and shown["current"] is True
    assert shown["fingerprint"] in rotated.stdout
    doctor = run("doctor")
    assert "proxy CA" in doctor.stdout and "expires in" in doctor.stdout, \
        "a CA expiring within 30 days is a doctor warning"
    assert run("ca", "rotate", "--days", "0").exit_code == 2
