"""``bench.py proxy`` (needs Python 3.12+ with mitmproxy): a child making keep-alive HTTPS
requests through ``mcp-keys run --proxy`` beside the same child through a plain
pass-through instance of the same proxy library (mitmproxy, same CA, no swap, rules or
audit), in the same run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

Row = tuple[str, str, str, str]
ROOT = Path(__file__).resolve().parent.parent
CHILD = r'''
import json, os, sys, time, httpx
url, count = sys.argv[1], int(sys.argv[2])
headers = {"Authorization": "Bearer " + os.environ.get("UPSTREAM_KEY", "")}
samples = []
with httpx.Client(timeout=30) as client:
    for _ in range(20):
        client.get(url, headers=headers)
    started = time.perf_counter()
    for _ in range(count):
        t = time.perf_counter()
        reply = client.get(url, headers=headers)
        samples.append((time.perf_counter() - t) * 1000)
        assert reply.status_code == 200, reply.status_code
    elapsed = time.perf_counter() - started
print(json.dumps({"samples": samples, "rate": count / elapsed}))
'''


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench(count: int = 400, rounds: int = 3) -> list[Row]:
    sys.path.insert(0, str(ROOT))
    from mcp_keys.gateway.interceptor.ca import LocalCA
    from mcp_keys.gateway.interceptor.run import RunningProxy, system_bundle
    from tests.gateway_upstream import SECRET, issue_certificates, running_upstream

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        ca, cert, key = issue_certificates(tmp)
        child = tmp / "child.py"
        child.write_text(CHILD)
        with running_upstream(cert, key) as upstream:
            url = f"{upstream.url}/bearer/v1/charges/ch_1"
            store = tmp / "store" / "keys.json"
            env = dict(os.environ, MCP_KEYS_STORE=str(store), BENCH_SECRET=SECRET)
            env.pop("MCP_KEYS_SERVICES", None)
            cli = [sys.executable, "-m", "mcp_keys"]
            for args in (["init"], ["service", "add", "up", "--base-url",
                                    f"{upstream.url}/bearer", "--auth", "bearer", "--secret",
                                    "env:BENCH_SECRET", "--env", "UPSTREAM_KEY", "--allow",
                                    "GET /**"]):
                subprocess.run([*cli, *args], env=env, check=True, capture_output=True)
            key_text = subprocess.run([*cli, "create", "bench", "--scope", "gateway:up"],
                                      env=env, check=True, capture_output=True,
                                      text=True).stdout.strip()
            authority = LocalCA(store.parent)
            authority.ensure([urlhost(upstream.url)])
            confdir = tmp / "plain"
            confdir.mkdir(mode=0o700)
            (confdir / "mitmproxy-ca.pem").write_bytes(authority.key_path.read_bytes() +
                                                       authority.cert_path.read_bytes())
            bundle = tmp / "bundle.pem"
            bundle.write_bytes(system_bundle() + b"\n" + authority.cert_path.read_bytes())
            plain = RunningProxy(object(), confdir, ca)
            plain.start()
            plain_env = dict(env, HTTPS_PROXY=f"http://127.0.0.1:{plain.port}",
                             SSL_CERT_FILE=str(bundle), UPSTREAM_KEY=SECRET)
            ours_env = dict(env, MCP_API_KEY=key_text)
            b: list[float] = []
            c: list[float] = []
            b_rate = c_rate = 0.0
            try:
                for _ in range(rounds):  # alternating rounds
                    done = subprocess.run([sys.executable, str(child), url, str(count)],
                                          env=plain_env, capture_output=True, text=True,
                                          check=False)
                    if done.returncode:
                        raise RuntimeError(done.stderr[-1500:])
                    found = json.loads(done.stdout)
                    b += found["samples"]
                    b_rate = max(b_rate, found["rate"])
                    done = subprocess.run([*cli, "run", "--proxy", "--service", "up",
                                           "--upstream-ca", ca, "--", sys.executable,
                                           str(child), url, str(count)],
                                          env=ours_env, capture_output=True, text=True,
                                          check=True)
                    found = json.loads(done.stdout)
                    c += found["samples"]
                    c_rate = max(c_rate, found["rate"])
                kill = revoke_latency(cli, ours_env, child_loop(tmp), url, ca, store, key_text)
            finally:
                plain.stop()
    rows: list[Row] = []
    for label, q, target in (("p50", 0.5, " (target <= 1.25)"), ("p99", 0.99, "")):
        rows.append((f"run --proxy, keep-alive HTTPS, {label}", f"{pct(c, q):.2f} ms",
                     f"plain mitmproxy {pct(b, q):.2f} ms",
                     f"{pct(c, q) / pct(b, q):.2f}x{target}"))
    rows.append(("run --proxy, keep-alive HTTPS, sequential", f"{c_rate:,.0f} req/s",
                 f"plain mitmproxy {b_rate:,.0f} req/s", f"{c_rate / b_rate:.2f}x"))
    rows.append(("kill switch: revoke -> proxied request refused", "", f"{kill:.0f} ms",
                 "target <= 1000 ms"))
    return rows


LOOP = r'''
import json, os, sys, time, httpx
url, flag = sys.argv[1], sys.argv[2]
headers = {"Authorization": "Bearer " + os.environ["UPSTREAM_KEY"]}
with httpx.Client(timeout=30) as client:
    client.get(url, headers=headers)
    open(flag, "w").write("ready")
    while not os.path.exists(flag + ".revoked"):
        time.sleep(0.001)
    while client.get(url, headers=headers).status_code != 403:
        pass
    print(json.dumps({"refused_at": time.time()}))
'''


def child_loop(tmp: Path) -> Path:
    path = tmp / "loop.py"
    path.write_text(LOOP)
    return path


def revoke_latency(cli: list[str], env: dict[str, str], loop: Path, url: str, ca: str,
                   store: Path, key: str) -> float:
    """From the revoke's commit to the first 403 a running child sees (the child polls)."""
    import time

    from mcp_keys.manager import KeyManager

    flag = store.parent / "kill-flag"
    child = subprocess.Popen([*cli, "run", "--proxy", "--service", "up", "--upstream-ca", ca,
                              "--", sys.executable, str(loop), url, str(flag)], env=env,
                             stdout=subprocess.PIPE, text=True)
    while not flag.exists():
        time.sleep(0.01)
    KeyManager(store).revoke(key[5:17])
    revoked = time.time()
    Path(str(flag) + ".revoked").write_text("")
    out, _ = child.communicate(timeout=60)
    refused: float = json.loads(out)["refused_at"]
    return (refused - revoked) * 1000


def urlhost(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).hostname or ""


if __name__ == "__main__":
    for row in bench():
        print("  ".join(row))

