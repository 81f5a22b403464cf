"""``mcp-keys run --proxy``: launch an unmodified MCP server with placeholders instead of
its keys, its traffic routed through a loopback intercepting proxy (mitmproxy) that
swaps in the real credential on the services' own hosts only.

The server is a child process (the proxy must outlive nothing and be outlived by
nothing): stdin, stdout and stderr are passed through untouched, SIGINT, SIGTERM and
SIGHUP are forwarded, and the child's exit code is ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

from ...errors import McpKeysError, UsageError

PROXY_VARS = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy",
              "all_proxy")
TRUST_VARS = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS")


def _mitmproxy() -> Any:
    try:
        from mitmproxy import options
        from mitmproxy.tools.dump import DumpMaster
    except ImportError:
        from ...extras import install_hint, proxy_unsupported

        raise proxy_unsupported() or McpKeysError(
            f"run --proxy needs mitmproxy 12: {install_hint('proxy')}") from None
    return options, DumpMaster


def placeholder_for(template: str | None) -> str:
    """A fresh placeholder for one run (``{random}`` in a template is replaced)."""
    token = secrets.token_hex(16)
    if template:
        return template.replace("{random}", token)
    return f"mcpk-placeholder-{token}"


def system_bundle() -> bytes:
    """The system's CA certificates (certifi's when mitmproxy brought it, else OpenSSL's)."""
    import ssl

    candidates = []
    with contextlib.suppress(ImportError):
        import certifi

        candidates.append(certifi.where())
    paths = ssl.get_default_verify_paths()
    candidates += [p for p in (paths.cafile, paths.openssl_cafile) if p]
    for candidate in candidates:
        with contextlib.suppress(OSError):
            return Path(candidate).read_bytes()
    return b""


class RunningProxy:
    """mitmproxy on 127.0.0.1 (an ephemeral port) in a thread of its own."""

    def __init__(self, addon: Any, confdir: Path, upstream_ca: str | None) -> None:
        self.addon, self.confdir, self.upstream_ca = addon, confdir, upstream_ca
        self.port = 0
        self._ready = threading.Event()
        self._master: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="mcp-keys-proxy", daemon=True)

    def start(self, timeout: float = 30) -> None:
        self._thread.start()
        if not self._ready.wait(timeout) or not self.port:
            raise McpKeysError(f"the proxy did not start ({self._error or 'timed out'})")

    def _run(self) -> None:
        options, DumpMaster = _mitmproxy()
        loop = asyncio.new_event_loop()
        self._loop = loop

        async def main() -> None:
            settings = options.Options(listen_host="127.0.0.1", listen_port=0,
                                       confdir=str(self.confdir))
            master = DumpMaster(settings, loop=loop, with_termlog=False, with_dumper=False)
            if self.upstream_ca:
                master.options.update(ssl_verify_upstream_trusted_ca=self.upstream_ca)
            # the leaf names only what the child asked for (never the upstream's other
            # names, which the CA's name constraints would make the child refuse)
            master.options.update(upstream_cert=False)
            master.addons.add(self.addon)
            self._master = master
            runner = asyncio.ensure_future(master.run())
            server = master.addons.get("proxyserver")
            for _ in range(600):
                addresses = server.listen_addrs()
                if addresses:
                    self.port = int(addresses[0][1])
                    break
                await asyncio.sleep(0.01)
            self._ready.set()
            await runner

        try:
            loop.run_until_complete(main())
        except BaseException as exc:  # reported by start()
            self._error = exc
            self._ready.set()
        finally:
            loop.close()

    def stop(self) -> None:
        if self._master is not None and self._loop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._master.shutdown)
        self._thread.join(10)


WITHDRAWN = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
             "AWS_SECURITY_TOKEN", "MCP_KEYS_STORE")  # what the parent never keeps in its env


def run_proxied(command: list[str], service_names: list[str], *,
                store: str | None = None, upstream_ca: str | None = None,
                pass_env: list[str] | None = None, user: str | None = None,
                allow_workspace_policy: bool = False) -> int:
    """Run ``command`` behind the proxy; the child's exit code."""
    from ..serve import make_gateway
    from ..server import KEY_VAR, CallerSource, key_from_environment
    from .addon import SwapAddon
    from .ca import LocalCA, service_hosts
    from .childenv import check_pass_env, child_environment, referenced_variables
    from .harden import withdraw

    if not command:
        raise UsageError("run --proxy needs a command after '--'")
    if not service_names:
        raise UsageError("run --proxy needs --service NAME (repeatable)")
    account = _account(user) if user is not None else None
    _mitmproxy()
    gateway, validator = make_gateway(store, front="proxy",
                                      allow_workspace_policy=allow_workspace_policy)
    callers = CallerSource(validator, key_from_environment())
    result = callers.check_start()
    if not result or result.key_id is None:
        raise McpKeysError(f"run --proxy needs a valid mcp-keys key in {KEY_VAR} "
                           f"({result.reason.value})")
    services = gateway.config.current().services
    named = referenced_variables(services.values())
    passed = check_pass_env(pass_env or [], named)
    placeholders: dict[str, str] = {}
    values: list[str] = []
    for name in service_names:
        service = services.get(name)
        if service is None or service.kind != "http":
            raise McpKeysError(f"no HTTP service {name!r}: add it with 'mcp-keys service add'")
        if not (f"gateway:{name}" in result.scopes or "gateway:*" in result.scopes):
            raise McpKeysError(f"the key in {KEY_VAR} lacks scope gateway:{name}")
        if service.auth.startswith("sigv4"):
            raise McpKeysError(f"service {name} signs its requests (sigv4): a placeholder "
                               "cannot be swapped into a signature; use the gateway")
        if not service.env:
            raise McpKeysError(f"service {name} has no --env VAR: set the variable its MCP "
                               f"server reads with 'mcp-keys service edit {name} --env VAR'")
        placeholders[name] = placeholder_for(service.placeholder)
        try:  # resolve now: a reference that fails stops the server from starting
            values.append(gateway.secrets.get(service.secret).reveal())
        except McpKeysError as exc:
            raise McpKeysError(f"the credential of service {name} could not be read: "
                               f"{exc}") from None
    source = dict(os.environ)
    env = child_environment(source, passed, values, named)
    held = [n for n in passed if n in source and n not in env]
    if held:
        raise McpKeysError(f"--pass-env {held[0]}: its value holds a service's credential, "
                           "so it is not passed to the command")
    withdraw([KEY_VAR, *WITHDRAWN, *named,
              *(n for n in source if n.startswith("VAULT_")),
              *(n for n, text in source.items() if any(v and v in text for v in values))])
    if account is not None:
        env.pop("TMPDIR", None)
        env.update(HOME=account.pw_dir, USER=account.pw_name, LOGNAME=account.pw_name,
                   SHELL=account.pw_shell)
    env.update({str(services[name].env): placeholders[name] for name in service_names})
    authority = LocalCA(gateway.config.path.parent)
    authority.ensure(service_hosts(services))
    private = Path(tempfile.mkdtemp(prefix="mcp-keys-proxy-"))
    public = Path(tempfile.mkdtemp(prefix="mcp-keys-proxy-ca-"))
    try:
        confdir = private / "mitmproxy"
        confdir.mkdir(mode=0o700)
        key_pem = authority.key_path.read_bytes()
        cert_pem = authority.cert_path.read_bytes()
        ca_file = confdir / "mitmproxy-ca.pem"
        ca_file.touch(mode=0o600)
        ca_file.write_bytes(key_pem + cert_pem)
        public.chmod(0o755)  # the certificates only: readable by a --user child
        bundle = public / "ca-bundle.pem"
        bundle.write_bytes(system_bundle() + b"\n" + cert_pem)
        bundle.chmod(0o644)
        proxy = RunningProxy(SwapAddon(gateway, callers, placeholders), confdir, upstream_ca)
        proxy.start()
        url = f"http://127.0.0.1:{proxy.port}"
        env.update(dict.fromkeys(PROXY_VARS, url))
        env.update(dict.fromkeys(TRUST_VARS, str(bundle)))
        env["NO_PROXY"] = env["no_proxy"] = ""
        preload = Path(__file__).with_name("node_preload.js")
        env["NODE_OPTIONS"] = (env.get("NODE_OPTIONS", "") +
                               f' --require "{preload}"').strip()
        try:
            return _run_child(command, env, account)
        finally:
            proxy.stop()
    finally:
        shutil.rmtree(private, ignore_errors=True)
        shutil.rmtree(public, ignore_errors=True)


def _account(name: str) -> Any:
    """The passwd entry of ``--user NAME``: only root can start a command as another user."""
    if not hasattr(os, "geteuid"):
        raise McpKeysError("run --proxy --user needs a POSIX system")
    import pwd

    if os.geteuid() != 0:
        raise McpKeysError(f"run --proxy --user {name} needs root (it starts the command as "
                           "that user): run it with sudo, or leave --user out")
    try:
        account = pwd.getpwnam(name)
    except KeyError:
        raise McpKeysError(f"--user {name}: no such user (create it, or name another)"
                           ) from None
    if account.pw_uid == 0:
        raise McpKeysError(f"--user {name} is root: name an unprivileged user, whose files "
                           "and processes are not ours")
    return account


def _run_child(command: list[str], env: dict[str, str], account: Any = None) -> int:
    drop: dict[str, Any] = {}
    if account is not None:  # done by subprocess in the child, between fork and exec
        drop = {"user": account.pw_uid, "group": account.pw_gid,
                "extra_groups": os.getgrouplist(account.pw_name, account.pw_gid),
                # a session of its own: no controlling terminal, so no TIOCSTI into the
                # operator's (root) shell
                "start_new_session": True}
    try:
        child = subprocess.Popen(command, env=env, **drop)
    except OSError as exc:
        raise McpKeysError(f"cannot start {command[0]}: {exc.strerror or exc}") from None
    forwarded = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, lambda s, _f: child.send_signal(s))
                for sig in forwarded}
    try:
        code = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - code if code < 0 else code


