"""``run --mask`` masks what a child prints whatever the read sizes: a multi-line secret
(a ``file:`` PEM) in pieces, raw, JSON-escaped, with CRLF line ends, stripped, URL-encoded
or line by line, on stdout and on stderr."""

from __future__ import annotations

import base64
import json
import os
import secrets as random_source
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, quote_plus

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcp_keys.gateway.scrub import Scrubber
from mcp_keys.launch import MASK, Masker
from tests.conftest import assert_absent, run_cli_process


def pem() -> str:
    body = random_source.token_urlsafe(1200).replace("-", "+").replace("_", "/")
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return "-----BEGIN PRIVATE KEY-----\n" + "\n".join(lines) + "\n-----END PRIVATE KEY-----\n"


def spellings(secret: str) -> list[str]:
    """How a careless server prints a key it read from a file."""
    crlf = secret.replace("\n", "\r\n")
    return [secret, json.dumps(secret)[1:-1], crlf, json.dumps(crlf)[1:-1], secret.strip(),
            quote(secret, safe=""), json.dumps({"key": secret}),
            secret.splitlines()[3]]


def leaks(secret: str, output: bytes) -> list[int]:
    """Which spellings (by index) survive in ``output``, and whether any line of the
    secret's body does: never the secret itself."""
    text = output.decode("utf-8", "replace")
    found = [i for i, form in enumerate(spellings(secret)) if form in text]
    body = [line for line in secret.splitlines() if len(line) >= 16 and "-----" not in line]
    return found + [-1 for line in body if line in text]


CHILD = r"""
import os, sys
secret = open(sys.argv[1]).read()
import json, urllib.parse
crlf = secret.replace("\n", "\r\n")
text = ("config: " + secret + "\n" + "json: " + json.dumps({"key": secret}) + "\n"
        + "crlf: " + crlf + "| escaped crlf: " + json.dumps(crlf) + "\n"
        + "stripped: <" + secret.strip() + ">\n" + "url: " + urllib.parse.quote(secret, safe="")
        + "\nline: " + secret.splitlines()[3] + "\n").encode()
sizes = [int(n) for n in sys.argv[2].split(",") if n] or [1]
for fd in (1, 2):
    at, turn = 0, 0
    while at < len(text):
        size = sizes[turn % len(sizes)]
        at += os.write(fd, text[at:at + size])
        turn += 1
"""


def run_masked_child(tmp_path: Path, sizes: list[int]) -> tuple[str, bytes, bytes]:
    secret = pem()
    key = tmp_path / "key.pem"
    key.write_text(secret)
    key.chmod(0o600)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", "mcp_keys", "run", "--mask", "--env", f"PEM=file:{key}", "--",
         sys.executable, str(script), str(key), ",".join(map(str, sizes))],
        capture_output=True, timeout=60, check=False, env=os.environ.copy())
    assert done.returncode == 0, f"run --mask exited {done.returncode}"
    return secret, done.stdout, done.stderr


def test_a_pem_written_one_byte_at_a_time_never_leaks(tmp_path: Path) -> None:
    secret, out, err = run_masked_child(tmp_path, [1])
    for stream in (out, err):
        assert leaks(secret, stream) == [], "a spelling of the PEM got through"
        assert stream.count(MASK) >= 6 and b"config: ****" in stream


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(min_value=1, max_value=700), min_size=1, max_size=6))
def test_random_write_sizes_never_leak(tmp_path: Path, sizes: list[int]) -> None:
    secret, out, err = run_masked_child(tmp_path, sizes)
    assert leaks(secret, out) == [] and leaks(secret, err) == [], "a spelling got through"


def test_the_cli_masks_a_single_line_value_and_passes_other_output() -> None:
    value = random_source.token_urlsafe(16) + '"\\</&>' + random_source.token_urlsafe(16)
    script = ("import json, os, sys\nv = os.environ['TOKEN']\n"
              "sys.stdout.write('a ' + v[:5]); sys.stdout.flush()\n"
              "sys.stdout.write(v[5:] + ' b ' + json.dumps({'t': v}) + '\\n')\n"
              "go = json.dumps(v).replace('<', '\\\\u003c').replace('>', '\\\\u003e')"
              ".replace('&', '\\\\u0026').replace('/', '\\\\/')\n"
              "print('go', go, 'hex', v.encode().hex())\n")
    done = run_cli_process("run", "--mask", "--env", "TOKEN=env:SOURCE", "--",
                           sys.executable, "-c", script, env={"SOURCE": value})
    assert done.returncode == 0, "run --mask failed"
    assert done.stdout == 'a **** b {"t": "****"}\ngo "****" hex ****\n', \
        "a spelling of the value got through, or other output changed"
    assert_absent(value, done.stdout + done.stderr, "masked output")


def printed(secret: str) -> list[bytes]:
    """How programs print ``secret``: raw, stripped, with CRLF, JSON-escaped, URL-encoded,
    hex, base64 (standard and URL-safe), and each long line of it alone."""
    found = set()
    for base in {secret, secret.strip(), secret.replace("\n", "\r\n")}:
        raw = base.encode()
        found |= {base, json.dumps(base)[1:-1], quote(base, safe=""), quote_plus(base),
                  raw.hex(), raw.hex().upper(), base64.b64encode(raw).decode(),
                  base64.urlsafe_b64encode(raw).decode()}
    found |= {line for line in secret.splitlines() if len(line) >= 16}
    return sorted((form.encode() for form in found), key=len, reverse=True)


STREAM_PIECES = st.lists(st.one_of(
    st.binary(max_size=20), st.sampled_from([b"\n", b"-----", b"\\n", b"\r\n", b'"'])),
    max_size=8)


CHUNKED = "-----BEGIN K-----\n" + random_source.token_hex(20) + "\nabc\n-----END K-----\n"


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_any_chunking_masks_as_the_whole_stream_does(data: st.DataObject) -> None:
    secret = CHUNKED  # one per run: its scrubber is compiled once, not per example
    needles = printed(secret) + [spell(secret).encode("latin-1")
                                 for spell in GATEWAY_SPELLINGS.values()]
    pieces = data.draw(st.lists(st.one_of(
        STREAM_PIECES.map(b"".join), st.sampled_from(needles),
        st.sampled_from(needles).map(lambda n: n[: len(n) // 2])), max_size=8))
    stream = b"".join(pieces)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    masker = Masker([secret])
    out = b""
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        out += masker.feed(stream[start:end])
    out += masker.close()
    whole = Scrubber([secret], marker=MASK.decode()).data(stream)
    assert out == whole, "the output depends on how it was split"
    for needle in needles:
        assert needle not in whole, "a spelling survived masking"


def test_a_finished_line_is_not_held_back() -> None:
    secret = random_source.token_hex(24)
    masker = Masker([secret])
    assert masker.feed(b'{"jsonrpc": "2.0", "id": 1}\n') == b'{"jsonrpc": "2.0", "id": 1}\n'
    held = masker.feed(b"prefix " + secret[:10].encode())
    assert held == b"prefix ", "only what could start the secret waits"
    assert masker.feed(secret[10:].encode() + b"!") == MASK + b"!"


# what the gateway's scrubber finds and the old list of needles did not
GATEWAY_SPELLINGS: dict[str, Callable[[str], str]] = {
    "upper": str.upper, "HEX": lambda s: s.encode().hex().upper(),
    "hex-colons": lambda s: ":".join(f"{b:02x}" for b in s.encode()),
    "html": lambda s: "".join(f"&#{ord(c)};" for c in s),
    "\\x": lambda s: "".join(f"\\x{ord(c):02x}" for c in s),
    "%25": lambda s: "".join(f"%25{ord(c):02X}" for c in s),
    "base64 after a byte": lambda s: base64.b64encode(b"x" + s.encode()).decode(),
    "utf-16": lambda s: s.encode("utf-16-le").decode("latin-1"),
}


def test_run_mask_masks_every_spelling_the_gateway_scrubs_written_byte_by_byte() -> None:
    """The child prints the value in each spelling the gateway decodes, one byte per
    write: none gets through, and the text around them does."""
    value = random_source.token_urlsafe(24)
    shown = {name: spell(value) for name, spell in GATEWAY_SPELLINGS.items()}
    script = ("import os, sys\ntext = sys.stdin.read().encode('latin-1')\n"
              "for i in range(len(text)):\n    os.write(1, text[i:i + 1])\n")
    text = "".join(f"<{name}: {form} |>\n" for name, form in shown.items())
    done = run_cli_process("run", "--mask", "--env", "TOKEN=env:SOURCE", "--",
                           sys.executable, "-c", script, env={"SOURCE": value}, input=text)
    assert done.returncode == 0, "run --mask failed"
    for name, form in shown.items():
        assert form not in done.stdout, f"the {name} spelling got through"
        assert f"<{name}: " in done.stdout, f"the text around the {name} spelling was lost"
    assert_absent(value, done.stdout + done.stderr, "masked output")


def test_each_long_line_of_a_pem_printed_alone_is_masked_in_every_spelling() -> None:
    secret = pem()
    masker = Masker([secret])
    lines = [line for line in secret.splitlines() if len(line) >= 16]
    stream = "".join(f"{i}: {line.lower()} {json.dumps(line)}\n" for i, line in enumerate(lines))
    out = b"".join(masker.feed(bytes([b])) for b in stream.encode()) + masker.close()
    assert all(line.lower().encode() not in out.lower() for line in lines), "a line survived"
    assert out.count(MASK) == 2 * len(lines), "a line was not masked in both spellings"


def test_the_hold_back_stays_bounded_and_a_line_after_it_goes_out() -> None:
    """However many starts of the secret arrive, at most twice the scrubber's lookahead
    waits; once what follows shows it is no secret, all of it goes out."""
    secret = random_source.token_hex(24)
    masker = Masker([secret])
    bound = 2 * masker.scrubber.lookahead
    fed, written = 0, 0
    for _ in range(3000):
        piece = secret[:40].encode()
        fed += len(piece)
        written += len(masker.feed(piece))
        assert fed - written <= bound, "the hold-back grew past its bound"
    rest = masker.feed(b' {"id": 2}\n')
    assert rest == secret[:40].encode() + b' {"id": 2}\n', "the held tail was not written"
    assert masker.close() == b"", "something was still held"


def test_a_read_that_ends_inside_an_escape_masks_as_the_whole_stream_does() -> None:
    """A read that ends inside an escape (``\\xab`` | ``c``, or ``%25`` | ``AB`` of an
    escape of an escape) does not change how the rest decodes: a secret that repeats
    itself is masked where masking the whole stream masks it."""
    secret = "abc" * 4 + "ab"
    escaped = "".join(f"\\x{ord(c):02x}" for c in secret).encode()
    cases = [(b"\\xabc" + escaped + b"!", [1, 2, 5, 8]),
             (b"%25ABCABCABC\x00" + secret.encode() + b"!", [3, 4, 6, 9])]
    whole = Scrubber([secret], marker=MASK.decode())
    for stream, cuts in cases:
        masker = Masker([secret])
        out = b"".join(masker.feed(stream[start:end]) for start, end in zip(
            [0, *cuts], [*cuts, len(stream)], strict=True)) + masker.close()
        assert out == whole.data(stream), "the output depends on where a read ended"
