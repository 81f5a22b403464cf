"""``mcp-keys scan`` against a labelled corpus of real client configs (tests/data/scan_corpus).

Every ``{{S:kind}}`` in a corpus file is a secret: it is replaced at test time by a fresh
value in that provider's real format (nothing secret-shaped is committed), and the line it
sits on is labelled a secret. Every other string is not one: the official MCP servers'
README placeholders, documentation keys, hashes, commit SHAs, UUIDs that are IDs, paths,
URLs without credentials, base64 icons, versions. The scan is compared line by line:
precision must be 1.00 and recall at least 0.95; misses and false alarms are listed by
file, line, JSON path and kind, never by value.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from mcp_keys import KeyManager, tokens
from mcp_keys.scan import scan
from mcp_keys.scan.detectors import classify
from tests.conftest import B62, Cli, assert_absent, rand

CORPUS = Path(__file__).resolve().parent / "data" / "scan_corpus"
URLSAFE = B62 + "_-"
HEX = "0123456789abcdef"
UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
DIGITS = "0123456789"
TEMPLATE = re.compile(r"\{\{S:(\w+)\}\}")


def jwt() -> str:
    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return ".".join([part({"alg": "HS256", "typ": "JWT"}),
                     part({"sub": rand(12), "iat": 1748000000, "scope": "mcp"}), rand(43, URLSAFE)])


# generator name -> (a fresh value in the real format, the kind scan must name)
GENERATORS: dict[str, tuple[Callable[[], str], str]] = {
    "github": (lambda: "ghp_" + rand(36), "github-token"),
    "github_fine": (lambda: "github_pat_" + rand(22) + "_" + rand(59),
                    "github-fine-grained-token"),
    "gitlab": (lambda: "glpat-" + rand(20, URLSAFE), "gitlab-token"),
    "slack": (lambda: f"xoxb-{rand(12, DIGITS)}-{rand(13, DIGITS)}-{rand(24)}", "slack-token"),
    "slack_webhook": (lambda: f"https://hooks.slack.com/services/T{rand(8, UPPER)}/"
                              f"B{rand(10, UPPER)}/{rand(24)}", "slack-webhook"),
    "password": (lambda: rand(18), "*"),
    "brave": (lambda: "BSA" + rand(28), "generic-secret"),
    "stripe_live": (lambda: "sk_live_51" + rand(96), "stripe-secret-key"),
    "stripe_restricted": (lambda: "rk_live_51" + rand(96), "stripe-secret-key"),
    "whsec": (lambda: "whsec_" + rand(32), "stripe-webhook-secret"),
    "sentry": (lambda: "sntrys_" + rand(120, B62 + "+/"), "sentry-token"),
    "google": (lambda: "AIza" + rand(35, URLSAFE), "google-api-key"),
    "gocspx": (lambda: "GOCSPX-" + rand(28, URLSAFE), "google-oauth-client-secret"),
    "aws_id": (lambda: "AKIA" + rand(16, UPPER), "aws-access-key-id"),
    "aws_secret": (lambda: rand(40, B62 + "/+"), "aws-secret-access-key"),
    "anthropic": (lambda: "sk-ant-api03-" + rand(93, URLSAFE) + "AA", "anthropic-api-key"),
    "openai": (lambda: "sk-proj-" + rand(74, URLSAFE) + "T3BlbkFJ" + rand(74, URLSAFE),
               "openai-api-key"),
    "openrouter": (lambda: "sk-or-v1-" + rand(64, HEX), "openrouter-api-key"),
    "sk_hex32": (lambda: "sk-" + rand(32, HEX), "generic-secret"),
    "ctx7": (lambda: "ctx7sk-" + str(uuid.uuid4()), "context7-api-key"),
    "uuid": (lambda: str(uuid.uuid4()), "url-secret"),
    "supabase": (lambda: "sbp_" + rand(40, HEX), "supabase-token"),
    "glsa": (lambda: f"glsa_{rand(32)}_{rand(8, HEX)}", "grafana-token"),
    "firecrawl": (lambda: "fc-" + rand(32, HEX), "firecrawl-api-key"),
    "notion": (lambda: "ntn_" + rand(46), "notion-token"),
    "perplexity": (lambda: "pplx-" + rand(48), "perplexity-api-key"),
    "huggingface": (lambda: "hf_" + rand(34), "huggingface-token"),
    "tavily": (lambda: "tvly-dev-" + rand(32), "tavily-api-key"),
    "figma": (lambda: "figd_" + rand(40, URLSAFE), "figma-token"),
    "shopify": (lambda: "shpat_" + rand(32, HEX), "shopify-token"),
    "groq": (lambda: "gsk_" + rand(52), "groq-api-key"),
    "xai": (lambda: "xai-" + rand(80), "xai-api-key"),
    "zapier": (lambda: "sk-ak-" + rand(32), "zapier-mcp-key"),
    "linear": (lambda: "lin_api_" + rand(40), "linear-api-key"),
    "sendgrid": (lambda: f"SG.{rand(22, URLSAFE)}.{rand(43, URLSAFE)}", "sendgrid-api-key"),
    "telegram": (lambda: f"{rand(10, DIGITS)}:AA{rand(33, URLSAFE)}", "telegram-bot-token"),
    "digitalocean": (lambda: "dop_v1_" + rand(64, HEX), "digitalocean-token"),
    "npm": (lambda: "npm_" + rand(36), "npm-token"),
    "atlassian": (lambda: "ATATT3" + rand(186, URLSAFE), "atlassian-api-token"),
    "jwt": (jwt, "jwt"),
    "basic": (lambda: base64.b64encode(f"svc-report:{rand(20)}".encode()).decode(),
              "basic-auth"),
    "hex40": (lambda: rand(40, HEX), "url-secret"),
    "hex32": (lambda: rand(32, HEX), "url-secret"),
    "b62_40": (lambda: rand(40), "*"),
    "generic": (lambda: rand(32), "generic-secret"),
    "any": (lambda: rand(32), "*"),
    "uuid_key": (lambda: str(uuid.uuid4()), "*"),
    "mcpk": (tokens.generate, "mcp-keys-key"),
}
PLACES = {"dot-env": ".env", "dot-mcp.json": ".mcp.json", "vscode-mcp.jsonc": "mcp.json"}


class Corpus:
    """The corpus written out with fresh secrets; ``labels`` maps (file, line) to the
    generator of the secret on that line."""

    def __init__(self, root: Path) -> None:
        self.files: list[Path] = []
        self.labels: dict[tuple[str, int], str] = {}
        self.values: list[str] = []
        for source in sorted(CORPUS.iterdir()):
            target = root / source.stem.replace(".", "_") / PLACES.get(source.name, source.name)
            target.parent.mkdir(parents=True, exist_ok=True)
            lines = []
            for number, text in enumerate(source.read_text().splitlines(), 1):
                for match in TEMPLATE.finditer(text):
                    self.labels[(str(target), number)] = match.group(1)
                lines.append(TEMPLATE.sub(self._fresh, text))
            target.write_text("\n".join(lines) + "\n")
            self.files.append(target)

    def _fresh(self, match: re.Match[str]) -> str:
        value = GENERATORS[match.group(1)][0]()
        self.values.append(value)
        return value


def test_corpus_precision_is_1_and_recall_at_least_0_95(tmp_path: Path) -> None:
    corpus = Corpus(tmp_path)
    found = {(str(f.file), f.line): f for f in scan(corpus.files, store=tmp_path / "none")}
    hits = found.keys() & corpus.labels.keys()
    false_positives = sorted(f"{Path(k[0]).name}:{k[1]} {found[k].path} ({found[k].kind})"
                             for k in found.keys() - corpus.labels.keys())
    misses = sorted(f"{Path(k[0]).name}:{k[1]} ({corpus.labels[k]})"
                    for k in corpus.labels.keys() - found.keys())
    precision = len(hits) / len(found)
    recall = len(hits) / len(corpus.labels)
    print(f"corpus: {len(corpus.labels)} secrets, {len(found)} findings, "
          f"precision {precision:.2f}, recall {recall:.2f}")
    print("false positives:", false_positives or "none")
    print("false negatives:", misses or "none")
    assert len(corpus.labels) >= 60, len(corpus.labels)
    assert precision == 1.0, false_positives
    assert recall >= 0.95, misses
    wrong = sorted(f"{Path(k[0]).name}:{k[1]} named {found[k].kind}, not "
                   f"{GENERATORS[corpus.labels[k]][1]}" for k in hits
                   if GENERATORS[corpus.labels[k]][1] not in ("*", found[k].kind))
    assert not wrong, wrong


def test_corpus_through_the_cli_shows_no_secret(tmp_path: Path, run: Cli) -> None:
    corpus = Corpus(tmp_path / "corpus")
    result = run("scan", str(tmp_path / "corpus"), "--json")
    assert result.exit_code == 1
    found = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(found) >= len(corpus.labels) * 0.95
    for value in corpus.values:
        assert_absent(value, result.stdout + result.stderr, "scan output")


@pytest.mark.parametrize(("value", "name"), [
    ("xoxb-your-bot-token", "SLACK_BOT_TOKEN"), ("<YOUR_TOKEN>", "GITHUB_TOKEN"),
    ("YOUR_API_KEY_HERE", "BRAVE_API_KEY"), ("your_key_here", "EVERART_API_KEY"),
    ("YOUR_SENTRY_TOKEN", "auth-token"), ("sk_test_xxxxxxxx", "api-key"),
    ("sk_test_4eC39HqLyjWDarjtT1zdp7dc", "STRIPE_SECRET_KEY"),
    ("AKIAIOSFODNN7EXAMPLE", "AWS_ACCESS_KEY_ID"),
    ("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "AWS_SECRET_ACCESS_KEY"),
    ("ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", "GITHUB_TOKEN"),
    ("sk-proj-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", "OPENAI_API_KEY"),
    ("ghp_1234567890abcdefghijklmnopqrstuvwxyz", "GITHUB_TOKEN"),
    ("postgresql://user:password@host:port/db-name", "args"),
    ("https://api.example.com/mcp?api_key=YOUR_API_KEY", "url"),
    ("https://api.example.com/mcp?apiKey=<your-api-key>", "url"),
    ("Bearer ntn_****", "Authorization"), ("your-api-key-here", "API_KEY"),
    ("pk_live_51H8x2LCq9aZ3b7YdQe4Rt6Uv8Wx0Yz2Ab4Cd6Ef8", "STRIPE_PUBLISHABLE_KEY"),
])
def test_known_placeholders_are_not_secrets(value: str, name: str) -> None:
    assert classify(value, name) is None, name


def test_a_provider_is_named_only_when_its_format_says_so() -> None:
    assert classify("ctx7sk-" + str(uuid.uuid4()), "API_KEY") == "context7-api-key"
    assert classify("sk-" + rand(32, HEX), "DEEPSEEK_API_KEY") == "generic-secret"
    assert classify(rand(40), "SOME_TOKEN") == "generic-secret"


def test_a_key_in_a_url_or_a_comment_or_outside_the_servers_is_found(tmp_path: Path) -> None:
    key = "ghp_" + rand(36)
    config = tmp_path / "mcp.json"
    config.write_text('{\n  // "GITHUB_TOKEN": "' + key + '",\n  "servers": {\n'
                      '    "a": {"url": "https://x.example.com/mcp?token=' + str(uuid.uuid4())
                      + '"}\n  },\n  "primaryApiKey": "' + rand(32) + '"\n}\n')
    found = {(f.line, f.path, f.kind) for f in scan([config], store=tmp_path / "none")}
    assert found == {(2, "(comment).GITHUB_TOKEN", "github-token"),
                     (4, "servers.a.url", "url-secret"),
                     (6, "primaryApiKey", "generic-secret")}, found


def test_the_tour_leaves_nothing_scan_calls_a_leak(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """``create --env-file .env`` then ``scan``: the key in that .env is a note, not a leak;
    the same key copied anywhere else (``key.txt``, whatever its name) is a leak."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    run = Cli(tmp_path / ".mcp-keys" / "keys.json", [])
    store = run.store
    done = run("create", "ci-bot", "--env-file", ".env")
    assert done.exit_code == 0
    key = done.stdout.strip()
    scanned = run("scan", ".")
    assert scanned.exit_code == 0, scanned.stdout
    assert scanned.stdout.startswith("note: ") and "expected here" in scanned.stdout
    assert "No leaked secrets in 1 file (1 note above)." in scanned.stderr, scanned.stderr
    sarif = run("scan", ".", "--sarif")
    assert sarif.exit_code == 0
    assert [r["level"] for r in json.loads(sarif.stdout)["runs"][0]["results"]] == ["note"]
    as_json = run("scan", ".", "--json")
    assert as_json.exit_code == 0 and json.loads(as_json.stdout)["level"] == "note"
    (tmp_path / "key.txt").write_text(key + "\n")
    (tmp_path / "settings.py").write_text(  # source code that names the format: not a leak
        f'KEY_PATTERN = "mcpk_[a-z0-9]{{12}}"\nDB_PASSWORD = "{rand(20)}"\n')
    leaked = run("scan", ".")
    assert leaked.exit_code == 1
    key_id = KeyManager(store).list()[0].id
    assert f"key.txt:1: (text): an mcp-keys API key mcpk… ({len(key)} chars); " \
           f"revoke it: mcp-keys revoke {key_id}" in leaked.stdout
    assert "settings.py" not in leaked.stdout, leaked.stdout
    default = run("scan")
    assert default.exit_code == 1 and "key.txt:1" in default.stdout
    for text in (scanned.stdout, scanned.stderr, leaked.stdout, default.stdout, sarif.stdout,
                 as_json.stdout):
        assert_absent(key, text, "scan output")


def test_an_unknown_key_says_where_to_revoke_it(tmp_path: Path, run: Cli) -> None:
    key = tokens.generate()
    config = tmp_path / ".env"
    config.write_text(f"MCP_API_KEY={key}\n")
    key_id = key[5:17]
    KeyManager(run.store).create("other")
    elsewhere = run("scan", str(config))
    assert f"key {key_id} is not in the local store; revoke it where it was issued" \
        in elsewhere.stdout
    assert elsewhere.stdout.count("local store") == 1
    nowhere = Cli(tmp_path / "none" / "keys.json", [])("scan", str(config))
    assert f"no local store found; revoke key {key_id} where it was issued" in nowhere.stdout
    for text in (elsewhere.stdout, nowhere.stdout):
        assert_absent(key, text, "scan output")


@pytest.mark.parametrize("shape", ["global", "after"])
def test_scan_json_fast_path_prints_what_click_prints(tmp_path: Path, shape: str) -> None:
    """``mcp-keys scan PATH --json`` skips Click (start-up is most of a CI gate's time) and
    must answer byte for byte as the Click command does, notes and exit code included."""
    from click.testing import CliRunner

    from mcp_keys.cli import cli
    from tests.conftest import run_cli_process

    corpus = Corpus(tmp_path / "corpus")
    store = tmp_path / "store" / "keys.json"
    KeyManager(store).create("other")
    where = str(tmp_path / "corpus")
    args = {"global": ["--store", str(store), "scan", where, "--json"],
            "after": ["scan", where, "--json", "--store", str(store)]}[shape]
    fast = run_cli_process(*args)
    slow = CliRunner().invoke(cli, args)
    assert (fast.returncode, fast.stdout) == (slow.exit_code, slow.stdout), shape
    assert fast.returncode == 1 and len(fast.stdout.splitlines()) >= 0.95 * len(corpus.labels)
    for value in corpus.values:
        assert_absent(value, fast.stdout + fast.stderr, "scan output")
