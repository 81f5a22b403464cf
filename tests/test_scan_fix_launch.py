"""A fixed config still launches: for every client's shape, secrets in ``env``, ``args``,
``headers`` and the URL are moved by ``scan --fix``, then the client is started the way
the printed ``next:`` line says (``mcp-keys run --env VAR=REF -- <client>``), and a
stand-in client reads its config, expands its own variable syntax as that client does,
and starts each server: a stdio server that reports (as SHA-256 digests) the argv and
environment it received, and a loopback HTTP server that records the URL and headers."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import assert_absent, rand

REPORTER = r'''
import hashlib, json, os, sys
def h(text): return hashlib.sha256(text.encode()).hexdigest()
print(json.dumps({"argv": [h(a) for a in sys.argv[1:]],
                  "env": {k: h(v) for k, v in os.environ.items()}}))
'''

# A stand-in for each client: its table of servers, its variable syntax, how it starts them.
CLIENT = r'''
import json, os, re, subprocess, sys, urllib.request
client, config = sys.argv[1], sys.argv[2]
data = json.load(open(config))
table = data.get("mcpServers") or data.get("servers") or data["mcp"]["servers"]

def expand(text):
    if client == "claude-code":   # ${VAR} and ${VAR:-default}; unset stays as written
        def one(m):
            name, _, default = m.group(1).partition(":-")
            return os.environ.get(name, default if ":-" in m.group(1) else m.group(0))
        return re.sub(r"\$\{([^}]+)\}", one, text)
    if client in ("cursor", "vscode", "windsurf"):
        return re.sub(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}",
                      lambda m: os.environ.get(m.group(1), ""), text)
    return text                    # Claude Desktop expands nothing

report = {}
for name, entry in table.items():
    if "command" in entry:
        env = {**os.environ, **{k: expand(v) for k, v in entry.get("env", {}).items()}}
        done = subprocess.run([expand(entry["command"]), *map(expand, entry.get("args", []))],
                              env=env, capture_output=True, text=True, timeout=60)
        report[name] = json.loads(done.stdout) if done.returncode == 0 else done.returncode
    else:
        url = expand(entry.get("url") or entry["serverUrl"])
        headers = {k: expand(v) for k, v in entry.get("headers", {}).items()}
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30):
            report[name] = "sent"
print(json.dumps(report))
'''

SHAPES = {  # client: (where its file is, relative to home, the table's path)
    "claude-desktop": (".config/Claude/claude_desktop_config.json", ("mcpServers",)),
    "claude-code": ("project/.mcp.json", ("mcpServers",)),
    "claude-code-user": (".claude.json", ("mcpServers",)),
    "cursor": ("project/.cursor/mcp.json", ("mcpServers",)),
    "vscode": ("project/.vscode/mcp.json", ("servers",)),
    "vscode-settings": (".config/Code/User/settings.json", ("mcp", "servers")),
    "windsurf": (".codeium/windsurf/mcp_config.json", ("mcpServers",)),
}


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Recorder:
    """A loopback HTTP server that keeps the path and headers of each request."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                recorder.requests.append((self.path, dict(self.headers.items())))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    server = Recorder()
    yield server
    server.close()


@pytest.mark.parametrize("shape", list(SHAPES))
def test_a_fixed_config_still_launches(shape: str, tmp_path: Path, store_path: Path,
                                       recorder: Recorder) -> None:
    client = shape.partition("-user")[0].partition("-settings")[0]
    home = tmp_path / "home"
    project = home / "project"
    project.mkdir(parents=True)
    reporter = tmp_path / "reporter.py"
    reporter.write_text(REPORTER)
    stand_in = tmp_path / "client.py"
    stand_in.write_text(CLIENT)
    env_secret, arg_secret = "sk_live_" + rand(24), "sk-proj-" + rand(40)
    header_secret, url_secret = "ghp_" + rand(36), "sk_test_" + rand(24)
    secrets = [env_secret, arg_secret, header_secret, url_secret]
    servers: dict[str, Any] = {"local": {
        "command": sys.executable,
        "args": [str(reporter), f"--api-key={arg_secret}", "--mode", "${LITERAL}"],
        "env": {"STRIPE_SECRET_KEY": env_secret, "LOG_LEVEL": "debug"}}}
    if client != "claude-desktop":  # Desktop runs stdio servers only
        url_key = "serverUrl" if client == "windsurf" else "url"
        servers["remote"] = {url_key: f"http://127.0.0.1:{recorder.port}/mcp?api_key="
                                      f"{url_secret}&team=7",
                             "headers": {"Authorization": f"Bearer {header_secret}"}}
        if client in ("claude-code", "vscode"):
            servers["remote"] = {"type": "http", **servers["remote"]}
    relative, table = SHAPES[shape]
    document: dict[str, Any] = servers
    for key in reversed(table):
        document = {key: document}
    config = home / relative
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(json.dumps(document, indent=2) + "\n")

    env = {**os.environ, "HOME": str(home), "MCP_KEYS_STORE": str(store_path),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "XDG_DATA_HOME": str(tmp_path / "keyring"),
           "PYTHON_KEYRING_BACKEND": "keyrings.alt.file.PlaintextKeyring"}
    for name in ("STRIPE_SECRET_KEY", "LITERAL"):
        env.pop(name, None)
    fixed = subprocess.run([sys.executable, "-m", "mcp_keys", "scan", str(config), "--fix",
                            "--yes", "--allow-plaintext-keyring"], cwd=project, env=env,
                           capture_output=True, text=True, timeout=120, check=False)
    assert fixed.returncode == 0, "scan --fix left something"
    outputs = [fixed.stdout, fixed.stderr, config.read_text()]

    # the client, started the way the printed line says (or as it is, when none is needed)
    starts = [line.partition("start it with: ")[2] for line in fixed.stderr.splitlines()
              if "start it with: " in line]
    launcher = [sys.executable, str(stand_in), client, str(config)]
    if client == "claude-desktop":
        assert starts == []
        command = launcher
    else:
        (start,) = starts
        words = shlex.split(start)
        assert words[0] == "mcp-keys" and words[-2] == "--"
        command = [str(Path(sys.executable).parent / "mcp-keys"), *words[1:-1], *launcher]
    launched = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True,
                              timeout=120, check=False)
    outputs += [launched.stdout, launched.stderr]
    for text in outputs:
        for value in secrets:
            assert_absent(value, text, f"{shape}: output, config or client")
    assert launched.returncode == 0, f"{shape}: the client failed to start its servers"
    report = json.loads(launched.stdout)

    local = report["local"]
    assert local["argv"] == [digest(f"--api-key={arg_secret}"), digest("--mode"),
                             digest("${LITERAL}")], \
        f"{shape}: the stdio server got other arguments"
    assert local["env"].get("STRIPE_SECRET_KEY") == digest(env_secret), \
        f"{shape}: the stdio server did not get STRIPE_SECRET_KEY"
    assert local["env"].get("LOG_LEVEL") == digest("debug")
    if client != "claude-desktop":
        assert report["remote"] == "sent"
        ((path, headers),) = recorder.requests
        assert path == f"/mcp?api_key={url_secret}&team=7", f"{shape}: URL differs"
        assert headers.get("Authorization") == f"Bearer {header_secret}", \
            f"{shape}: Authorization differs"
