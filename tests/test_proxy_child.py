"""``mcp-keys run --proxy``: the child gets nothing it could use. Its environment is an
allow-list; the parent holds no credential in its environment (not in ``os.environ``, not
in the block ``/proc/<pid>/environ`` shows), is not dumpable and writes no core; and with
``--user`` the child runs as another user who cannot read the CA key, the store or the
parent. Real processes, a real proxy, a real user made for the test."""

from __future__ import annotations

import base64
import json
import os
import secrets as random_source
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    FileKeys,
    assert_absent,
    mcp_keys_cmd,
    one_error_line,
    require_proxy_stack,
    run_cli_process,
    shared_dir,
)
from tests.gateway_upstream import SECRET, Upstream
from tests.secret_servers import KvServer
from tests.test_proxy_run import https, proxied_service  # noqa: F401 (a fixture)

require_proxy_stack()

# What the child may see: the documented base, LC_*, what run --proxy sets, the placeholder.
ALLOWED = {"PATH", "HOME", "LANG", "LANGUAGE", "TERM", "TZ", "USER", "LOGNAME", "SHELL",
           "TMPDIR", "HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy",
           "all_proxy", "NO_PROXY", "no_proxy", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE",
           "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "NODE_OPTIONS", "UPSTREAM_KEY"}

# Run by the child: what it can reach of its parent and of the files named on its command
# line, and whether a request through the proxy works (it trusts the proxy's CA). It
# prints one JSON line, then waits for stdin to close (the test looks at the parent then).
READER = r'''
import json, os, sys, urllib.request
parent = os.getppid()

def attempt(action):
    try:
        return action()
    except OSError as exc:
        return type(exc).__name__

def read(path):
    with open(path, "rb") as handle:
        handle.read(1)
    return "read"

def attach():
    import ctypes, errno
    libc = ctypes.CDLL(None, use_errno=True)
    # PTRACE_SEIZE: the same permission check as PTRACE_ATTACH, but it does not stop the
    # parent (an attach from a privileged reader would leave it stopped for good)
    if libc.ptrace(0x4206, parent, None, None) == 0:
        return "attached"  # detached when this process exits
    return errno.errorcode[ctypes.get_errno()]

def request():
    headers = {"Authorization": "Bearer " + os.environ.get("UPSTREAM_KEY", "")}
    with urllib.request.urlopen(urllib.request.Request(sys.argv[1], headers=headers),
                                timeout=15) as reply:
        return reply.status

report = {"uid": os.getuid(), "gid": os.getgid(), "groups": sorted(os.getgroups()),
          "env": dict(os.environ),
          "environ": attempt(lambda: open(f"/proc/{parent}/environ", "rb").read().decode(
              "utf-8", "replace")),
          "maps": attempt(lambda: read(f"/proc/{parent}/maps")),
          "mem": attempt(lambda: read(f"/proc/{parent}/mem")), "ptrace": attach(),
          "files": {path: attempt(lambda: read(path)) for path in sys.argv[2:]},
          "status": attempt(request) if sys.argv[1] != "-" else None}
print(json.dumps(report), flush=True)
sys.stdin.read()
'''


@pytest.fixture
def store_path() -> Iterator[Path]:
    """The store under a directory other users can traverse: only the modes of the store's
    own directory and files keep a --user child out."""
    base = shared_dir()
    yield base / "keys" / "keys.json"
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def proxy(manager: FileKeys, https: tuple[Upstream, str]) -> dict[str, Any]:  # noqa: F811
    """A store with an agent key and the service ``api`` (its secret an env: reference)."""
    return proxied_service(manager, *https)


@pytest.fixture
def reader(store_path: Path) -> str:
    script = store_path.parent.parent / "reader.py"
    script.write_text(READER)
    script.chmod(0o644)
    return str(script)


@pytest.fixture(scope="module")
def other_user() -> Iterator[Any]:
    """A user made for these tests (and removed after): needs root and useradd."""
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("--user needs root and useradd (CI runs as root)")
    import pwd

    name = "mcpkt" + random_source.token_hex(4)
    subprocess.run(["useradd", "--no-create-home", "--home-dir", f"/nonexistent/{name}",
                    "--shell", "/bin/sh", "--user-group", name], check=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], check=False)


def environment(proxy: dict[str, Any], **extra: str) -> dict[str, str]:
    return {**os.environ, "GW_SECRET": SECRET, "MCP_KEYS_STORE": proxy["store"],
            "MCP_API_KEY": proxy["key"].key, **extra}


def start(proxy: dict[str, Any], env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(mcp_keys_cmd("run", "--proxy", "--service", "api",
                                         "--upstream-ca", proxy["ca"], *args),
                            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def report_of(child: subprocess.Popen[str]) -> tuple[dict[str, Any], str]:
    """The reader's report (the child still waits on stdin) and its raw line."""
    assert child.stdout is not None
    line = child.stdout.readline()
    if not line:
        _, err = child.communicate(timeout=30)
        pytest.fail(f"the child printed nothing: {err[-800:]}")
    return json.loads(line), line


def finish(child: subprocess.Popen[str], secrets: list[str]) -> None:
    out, err = child.communicate("", timeout=30)
    assert child.returncode == 0, err[-800:]
    for secret in secrets:
        assert_absent(secret, out + err, "run --proxy's output")


def test_the_child_environment_is_an_allow_list(proxy: dict[str, Any], reader: str) -> None:
    """Source credentials, mcp-keys' own variables, a reference's variable and a copy of
    the credential under any name stay out; --pass-env adds a harmless variable."""
    planted = {"VAULT_TOKEN": "hvs." + random_source.token_hex(12),
               "VAULT_SECRET_ID": random_source.token_hex(12),
               "AWS_SECRET_ACCESS_KEY": random_source.token_hex(20),
               "AWS_SESSION_TOKEN": random_source.token_hex(20),
               "MCP_KEYS_SOMETHING": random_source.token_hex(12),
               "DATABASE_URL": "postgresql://u:" + random_source.token_hex(8) + "@db/x",
               "COPY_OF_IT": f"x{SECRET}x"}
    env = environment(proxy, **planted, LC_ALL="C.UTF-8", EXTRA_OK="fine")
    child = start(proxy, env, "--pass-env", "EXTRA_OK", "--", sys.executable, reader, "-")
    report, line = report_of(child)
    secrets = [SECRET, proxy["key"].key, *planted.values()]
    try:
        for secret in secrets:
            assert_absent(secret, line, "the child's environment or its parent's")
        names = set(report["env"])
        assert names <= ALLOWED | {"LC_ALL", "EXTRA_OK"}, sorted(names - ALLOWED)
        assert report["env"]["EXTRA_OK"] == "fine" and report["env"]["LC_ALL"] == "C.UTF-8"
        assert report["env"]["UPSTREAM_KEY"].startswith("sk_test_")
    finally:
        finish(child, secrets)


VAULT_COPY = "hvs.vaultcopy0123456789"  # a source credential also held under another name
ENCODED = {"B64_OF_IT": base64.b64encode(f"user:{SECRET}".encode()).decode(),
           "B64URL_OF_IT": base64.urlsafe_b64encode(f"ab{SECRET}".encode()).decode(),
           "URL_OF_IT": "https://u:" + "".join(f"%{b:02X}" for b in SECRET.encode()) + "@h/",
           "HEX_OF_IT": SECRET.encode().hex().upper(), "PLUS_OF_IT": f"a+{SECRET}",
           "TOKEN_COPY": f"Bearer {VAULT_COPY}"}


@pytest.mark.parametrize(("name", "code"), [
    ("VAULT_TOKEN", 2), ("vault_token", 2), ("AWS_SECRET_ACCESS_KEY", 2), ("MCP_API_KEY", 2),
    ("MCP_KEYS_STORE", 2), ("GW_SECRET", 2), ("COPY_OF_IT", 1), ("1BAD", 2),
    ("PGPASSWORD", 2), ("pgpassfile", 2), *((name, 1) for name in ENCODED)])
def test_pass_env_never_passes_a_credential(proxy: dict[str, Any], name: str,
                                            code: int, tmp_path: Path) -> None:
    """A credential's variable is refused by name (2); a variable whose value holds a
    credential, raw or encoded (base64, URL, hex), or a copy of a source credential, by
    value (1)."""
    marker = tmp_path / "started"
    done = subprocess.run(
        mcp_keys_cmd("run", "--proxy", "--service", "api", "--pass-env", name, "--",
                     "touch", str(marker)),
        env=environment(proxy, VAULT_TOKEN=VAULT_COPY, AWS_SECRET_ACCESS_KEY="y",
                        PGPASSWORD="pg-password-1", pgpassfile="/x",
                        COPY_OF_IT=f"x{SECRET}x", **ENCODED),
        capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == code, done.stderr[-500:]
    assert name in one_error_line(done.stderr) and not marker.exists()
    assert_absent(SECRET, done.stdout + done.stderr, "the refusal")


def test_allow_listed_variables_carry_no_credential(proxy: dict[str, Any],
                                                    reader: str) -> None:
    """A base variable is passed only in its shape and never with a credential in it:
    an ``LC_`` name that is no locale category (``LC_*`` is what sshd forwards), a locale
    variable holding a token, a copy of a source credential or an encoded credential
    under an allowed name all stay out; well-formed values pass."""
    vault_token = "hvs." + random_source.token_hex(12)
    token = "ghp_" + random_source.token_hex(12)
    planted = {"LC_VAULT_TOKEN": token, "LC_MESSAGES": token, "LANGUAGE": f"en:{token}",
               "TZ": vault_token, "TERM": f"xterm {token}",
               "HOME": "/srv/" + base64.b64encode(f"user:{SECRET}".encode()).decode(),
               "TMPDIR": "/tmp/" + SECRET.encode().hex(), "USER": token + "!"}
    env = environment(proxy, VAULT_TOKEN=vault_token, **planted, LANG="C.UTF-8",
                      LC_TIME="en_GB.UTF-8")
    child = start(proxy, env, "--", sys.executable, reader, "-")
    report, line = report_of(child)
    secrets = [SECRET, proxy["key"].key, vault_token, token,
               *(base64.b64encode(f"user:{SECRET}".encode()).decode()[:12],
                 SECRET.encode().hex())]
    try:
        for secret in secrets:
            assert_absent(secret, line.lower(), "the child's environment")
        assert not set(planted) & set(report["env"]), sorted(set(planted) & set(report["env"]))
        assert (report["env"]["LANG"], report["env"]["LC_TIME"]) == ("C.UTF-8", "en_GB.UTF-8")
    finally:
        finish(child, [SECRET, proxy["key"].key, vault_token, token])


def test_pass_env_refuses_every_services_variable(proxy: dict[str, Any],
                                                  tmp_path: Path) -> None:
    """The variable of another service's ``env:`` reference is refused too, however the
    reference is spaced in services.toml (``env: NAME``)."""
    added = run_cli_process("--store", proxy["store"], "service", "add", "other",
                            "--base-url", "https://other.example", "--auth", "bearer",
                            "--secret", "env: OTHER_SECRET", env={"OTHER_SECRET": "o"})
    assert added.returncode == 0, added.stderr
    marker = tmp_path / "started"
    other = "other-" + random_source.token_hex(12)
    done = subprocess.run(
        mcp_keys_cmd("run", "--proxy", "--service", "api", "--pass-env", "OTHER_SECRET",
                     "--", "touch", str(marker)),
        env=environment(proxy, OTHER_SECRET=other), capture_output=True, text=True,
        timeout=60, check=False)
    assert done.returncode == 2, done.stderr[-300:]
    assert "OTHER_SECRET" in one_error_line(done.stderr) and not marker.exists()
    assert_absent(other, done.stdout + done.stderr, "the refusal")


def test_referenced_variables_cover_every_kind_of_service(proxy: dict[str, Any]) -> None:
    """The names ``run --proxy`` must keep from the child: every ``env:`` reference, of an
    HTTP service's secret and of an exec service's ``secret_env``, however spaced."""
    from mcp_keys.gateway.interceptor.childenv import referenced_variables
    from mcp_keys.gateway.serve import make_gateway

    added = run_cli_process("--store", proxy["store"], "service", "add", "tool", "--exec",
                            "--command", "/bin/true", "--secret-env", "TOOL_TOKEN=env:TOOL_TOKEN",
                            "--secret-env", "OTHER=keyring:mcp-keys/other")
    assert added.returncode == 0, added.stderr
    gateway, _ = make_gateway(proxy["store"])
    services = gateway.config.current().services.values()
    assert sorted(referenced_variables(services)) == ["GW_SECRET", "TOOL_TOKEN"]


def test_pass_env_refuses_an_exec_services_variable(proxy: dict[str, Any],
                                                    tmp_path: Path) -> None:
    """An exec service's ``secret_env`` reference names a credential's variable as well:
    ``--pass-env`` of it is refused (exit 2), though that service is not proxied."""
    added = run_cli_process("--store", proxy["store"], "service", "add", "tool", "--exec",
                            "--command", "/bin/true", "--secret-env", "TOOL_TOKEN=env:TOOL_TOKEN")
    assert added.returncode == 0, added.stderr
    marker = tmp_path / "started"
    token = "tool-" + random_source.token_hex(12)
    done = subprocess.run(
        mcp_keys_cmd("run", "--proxy", "--service", "api", "--pass-env", "TOOL_TOKEN", "--",
                     "touch", str(marker)),
        env=environment(proxy, TOOL_TOKEN=token), capture_output=True, text=True,
        timeout=60, check=False)
    assert_absent(token, done.stdout + done.stderr, "run --proxy's output")
    assert done.returncode == 2 and not marker.exists(), done.stderr[-300:]


def test_the_parents_command_line_shows_no_password(tmp_path: Path) -> None:
    """``/proc/<pid>/cmdline`` is world-readable (even for a non-dumpable process): the
    parent overwrites a URL's password (``--store postgresql://user:password@...``), a
    ``password=`` parameter and each credential it holds, in place."""
    password, parameter, held = (random_source.token_hex(8) for _ in range(3))
    code = ("import os, sys\n"
            "from mcp_keys.secrets import held\n"
            "from mcp_keys.gateway.interceptor.harden import scrub_arguments\n"
            "held.hold(['HELD_ONE'])\n"
            "scrub_arguments(held.held_values())\n"
            "print(len(sys.argv), flush=True)\n"
            "sys.stdin.read()\n")
    url = f"postgresql://user:{password}@127.0.0.1:5432/db?sslmode=disable&password={parameter}"
    process = subprocess.Popen([sys.executable, "-c", code, "--store", url, f"x{held}x"],
                               env={**os.environ, "HELD_ONE": held}, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "4"
        shown = Path(f"/proc/{process.pid}/cmdline").read_bytes()
        for secret in (password, parameter, held):
            assert_absent(secret, shown, "the parent's /proc cmdline")
        assert b"postgresql://user:" in shown and b"@127.0.0.1:5432/db" in shown
    finally:
        process.communicate("", timeout=30)


def test_pass_env_and_user_go_with_proxy() -> None:
    for option in (["--pass-env", "X"], ["--user", "nobody"]):
        done = subprocess.run(mcp_keys_cmd("run", *option, "--", "true"), capture_output=True,
                              text=True, timeout=60, check=False)
        assert done.returncode == 2 and "go with --proxy" in one_error_line(done.stderr)


def test_a_same_user_process_cannot_read_the_parent(proxy: dict[str, Any],
                                                    reader: str) -> None:
    """The child, as the same user without CAP_SYS_PTRACE (as root: its capabilities
    dropped by setpriv), cannot read the parent's environment, maps or memory, nor attach
    to it with ptrace; even root
    finds no credential in the parent's /proc environ (the block is overwritten), and the
    parent's core size limit is 0."""
    command = [sys.executable, reader, "-"]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("no setpriv to drop root's capabilities")
        command = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--", *command]
    vault_token = "hvs." + random_source.token_hex(12)
    child = start(proxy, environment(proxy, VAULT_TOKEN=vault_token), "--", *command)
    secrets = [SECRET, proxy["key"].key, vault_token]
    try:
        report, line = report_of(child)
        for secret in secrets:
            assert_absent(secret, line, "what a same-user child read of its parent")
        assert (report["environ"], report["maps"], report["mem"], report["ptrace"]) == (
            "PermissionError", "PermissionError", "PermissionError", "EPERM"), \
            (report["environ"][:40], report["maps"], report["mem"], report["ptrace"])
        if os.geteuid() == 0:  # what root (CAP_SYS_PTRACE) sees of the parent
            block = Path(f"/proc/{child.pid}/environ").read_bytes()
            for secret in secrets:
                assert_absent(secret, block, "the parent's /proc environ")
            assert not block.strip(b"\0"), "the initial environment block is wiped"
            limits = Path(f"/proc/{child.pid}/limits").read_text()
            (core,) = [row for row in limits.splitlines() if row.startswith("Max core")]
            assert core.split()[4] == "0", core
    finally:
        finish(child, secrets)


def test_user_runs_the_child_as_another_user(proxy: dict[str, Any], reader: str,
                                             other_user: Any) -> None:
    """--user NAME: the child has NAME's uid, gid, groups and HOME, trusts the proxy's CA
    (its request is swapped and answered), and cannot read the CA key, the store, the
    services file or its parent."""
    system_python = shutil.which("python3", path="/usr/bin:/bin")
    if system_python is None:
        pytest.skip("no system python3 another user can run")
    store = Path(proxy["store"])
    private = [str(store.parent / "proxy-ca.key"), str(store), str(store.parent /
                                                                   "services.toml")]
    upstream: Upstream = proxy["upstream"]
    child = start(proxy, environment(proxy), "--user", other_user.pw_name, "--",
                  system_python, reader, f"{upstream.url}/bearer/things/u", *private)
    try:
        report, line = report_of(child)
        assert_absent(SECRET, line, "what the other user's child read")
        assert all(Path(p).exists() for p in private), "the test names files that exist"
        assert (report["uid"], report["gid"]) == (other_user.pw_uid, other_user.pw_gid)
        assert report["groups"] == [other_user.pw_gid], report["groups"]
        assert report["env"]["HOME"] == other_user.pw_dir
        assert report["env"]["USER"] == report["env"]["LOGNAME"] == other_user.pw_name
        assert report["files"] == dict.fromkeys(private, "PermissionError"), report["files"]
        assert (report["environ"], report["mem"], report["ptrace"]) == (
            "PermissionError", "PermissionError", "EPERM")
        assert report["status"] == 200, report["status"]
        assert upstream.authorised("bearer", upstream.seen[-1]), "the credential was swapped"
    finally:
        finish(child, [SECRET, proxy["key"].key])


@pytest.mark.parametrize(("user", "words"), [("mcpk-no-such-user", "no such user"),
                                             ("root", "is root")])
def test_user_refusals(proxy: dict[str, Any], user: str, words: str,
                       tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("as non-root every --user is refused for that first (next test)")
    marker = tmp_path / "started"
    done = subprocess.run(mcp_keys_cmd("run", "--proxy", "--service", "api", "--user", user,
                                       "--", "touch", str(marker)),
                          env=environment(proxy), capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 1 and words in one_error_line(done.stderr)
    assert not marker.exists()


def test_user_needs_root(proxy: dict[str, Any], request: pytest.FixtureRequest) -> None:
    """Not root: --user is refused before anything starts. As root, the test drops to the
    test user first, keeping only the capability to read root's venv (CAP_DAC_READ_SEARCH)."""
    command = mcp_keys_cmd("run", "--proxy", "--service", "api", "--user", "nobody", "--",
                           "true")
    if os.geteuid() == 0:
        account = request.getfixturevalue("other_user")
        if shutil.which("setpriv") is None:
            pytest.skip("no setpriv to drop to the test user")
        command = ["setpriv", f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}",
                   "--clear-groups", "--inh-caps=+dac_read_search",
                   "--ambient-caps=+dac_read_search", "--", *command]
    env = environment(proxy)
    del env["MCP_KEYS_STORE"]  # refused before any store is opened
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 1 and "needs root" in one_error_line(done.stderr), \
        done.stderr[-300:]


def test_withdrawn_credentials_still_refresh(vault: KvServer,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The parent takes VAULT_TOKEN and an env: reference's variable out of os.environ, yet
    a later refresh of either secret still works (the sources read them from memory)."""
    from mcp_keys.secrets import held, resolve

    value, raw = "v-" + random_source.token_hex(8), "r-" + random_source.token_hex(8)
    vault.secrets["secret/stripe"] = {"api_key": value}
    monkeypatch.setenv("RAW_KEY", raw)
    monkeypatch.setattr(held, "_held", {})
    assert held.hold(["VAULT_TOKEN", "VAULT_ADDR", "RAW_KEY", "NOT_SET"]) == [
        "VAULT_TOKEN", "VAULT_ADDR", "RAW_KEY"]
    assert "VAULT_TOKEN" not in os.environ and "RAW_KEY" not in os.environ
    assert resolve("vault:secret/stripe#api_key").reveal() == value
    assert resolve("env:RAW_KEY").reveal() == raw


# Run by a --user child on the operator's terminal: can it type into it (TIOCSTI), and
# signal its parent?
TYPIST = r'''
import fcntl, os, termios
try:
    fcntl.ioctl(0, termios.TIOCSTI, b"#")
    typed = "typed"
except OSError as exc:
    typed = "refused-" + str(exc.errno)
try:
    os.kill(os.getppid(), 0)
    signal = "signalled"
except OSError:
    signal = "no-signal"
print("report", typed, signal, flush=True)
'''


def test_a_user_child_cannot_type_into_the_operators_terminal(
        proxy: dict[str, Any], other_user: Any, store_path: Path) -> None:
    """Started from a terminal, a --user child shares the operator's controlling tty
    unless it gets a session of its own: then TIOCSTI pushes keystrokes into the
    (root) shell's input, run after mcp-keys exits. It must be refused; the child cannot
    signal its root parent either."""
    import fcntl
    import pty
    import termios

    system_python = shutil.which("python3", path="/usr/bin:/bin")
    if system_python is None:
        pytest.skip("no system python3 another user can run")
    script = store_path.parent.parent / "typist.py"
    script.write_text(TYPIST)
    script.chmod(0o644)
    master, slave = pty.openpty()

    def own_terminal() -> None:  # the operator's shell: a session whose tty is the pty
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    command = mcp_keys_cmd("run", "--proxy", "--service", "api", "--upstream-ca", proxy["ca"],
                           "--user", other_user.pw_name, "--", system_python, str(script))
    process = subprocess.Popen(command, env=environment(proxy), stdin=slave, stdout=slave,
                               stderr=slave, start_new_session=True, preexec_fn=own_terminal)
    os.close(slave)
    seen = b""
    try:
        while b"report" not in seen or not seen.endswith(b"\n"):
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the terminal closed: every process on it is gone
                break
            if not chunk:
                break
            seen += chunk
        process.wait(30)
    finally:
        os.close(master)
    assert_absent(SECRET, seen, "the terminal")
    words = seen[seen.find(b"report"):].split()
    assert words[1:3] == [b"refused-1", b"no-signal"], seen[-200:]
