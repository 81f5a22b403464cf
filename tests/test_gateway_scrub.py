"""The gateway's scrubber cannot be sidestepped: an upstream that echoes the credential
in any of the forms below, in a body or a header, at any alignment and across the
``--max-body`` cut, gives the agent ``[redacted]``; a response in an encoding the
gateway did not ask for is refused; the agent cannot choose ``Accept-Encoding``; an exec
command's output and the audit trail get the same treatment."""

from __future__ import annotations

import asyncio
import base64
import gzip
import html
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest

from mcp_keys.gateway.proxy import Caller, Denied, Gateway, GatewayRequest
from mcp_keys.gateway.services import ServiceConfig
from tests.conftest import FileKeys, assert_absent
from tests.gateway_upstream import SECRET, Upstream, running_upstream

CALLER = Caller("abcdefghijkl", frozenset({"gateway:*"}))


def b64(pad: int, value: str, alphabet: Callable[[bytes], bytes] = base64.b64encode) -> str:
    """``value`` inside a larger blob, at alignment ``pad``."""
    return alphabet(b"P" * pad + value.encode() + b"Q" * 7).decode()


def mixed_case(value: str) -> str:
    return "".join(c.upper() if i % 2 else c.lower() for i, c in enumerate(value))


FORMS: dict[str, Callable[[str], str]] = {
    "raw": lambda s: s,
    "upper": str.upper,
    "lower": str.lower,
    "mixed case": mixed_case,
    "hex": lambda s: s.encode().hex(),
    "HEX": lambda s: s.encode().hex().upper(),
    "hex of upper, colons": lambda s: ":".join(f"{b:02x}" for b in s.upper().encode()),
    "hex of lower, spaces": lambda s: " ".join(f"{b:02X}" for b in s.lower().encode()),
    "\\u every char": lambda s: "".join(f"\\u{ord(c):04x}" for c in s),
    "\\u every char, upper": lambda s: "".join(f"\\u{ord(c):04X}" for c in s),
    "\\u mixed": lambda s: "".join(f"\\u{ord(c):04x}" if i % 2 else c
                                   for i, c in enumerate(s)),
    "\\u of upper": lambda s: "".join(f"\\u{ord(c):04x}" for c in s.upper()),
    "\\x escapes": lambda s: "".join(f"\\x{ord(c):02x}" for c in s),
    "percent every char": lambda s: "".join(f"%{ord(c):02X}" for c in s),
    "percent mixed, lower": lambda s: "".join(f"%{ord(c):02x}" if i % 3 == 0 else c
                                              for i, c in enumerate(s)),
    "percent of upper": lambda s: "".join(f"%{ord(c):02x}" for c in s.upper()),
    "html entities": lambda s: "".join(f"&#{ord(c)};" if i % 2 else f"&#x{ord(c):x};"
                                       for i, c in enumerate(s)),
    "every escape at once": lambda s: "".join(
        [c.upper(), f"%{ord(c):02x}", f"\\u{ord(c):04X}", f"&#{ord(c)};", f"\\x{ord(c):02X}"][i % 5]
        for i, c in enumerate(s)),
    "base64, alignment 0": lambda s: b64(0, s),
    "base64, alignment 1": lambda s: b64(1, s),
    "base64, alignment 2": lambda s: b64(2, s),
    "base64url, alignment 1": lambda s: b64(1, s, base64.urlsafe_b64encode),
    "base64url, alignment 2, unpadded": lambda s: b64(2, s, base64.urlsafe_b64encode).rstrip("="),
    "base64 of upper, alignment 1": lambda s: b64(1, s.upper()),
    "base64 of lower, alignment 2": lambda s: b64(2, s.lower()),
    "base64 of upper, alignment 0": lambda s: b64(0, s.upper()),
    "base64, MIME line breaks": lambda s: base64.encodebytes(
        b"x" * 40 + s.encode() + b"y" * 40).decode(),
    "base64 in a JSON string": lambda s: json.dumps(base64.encodebytes(
        b"\xff" * 41 + s.encode()).decode()).replace("/", "\\/"),
    "base64, percent-encoded": lambda s: "".join(
        f"%{ord(c):02X}" if c in "+/=" else c for c in b64(1, s)),
    "percent-encoded twice": lambda s: "".join(f"%25{ord(c):02x}" for c in s),
    "\\u escaped twice": lambda s: "".join(f"\\\\u{ord(c):04x}" for c in s),
    "hex after a stray %": lambda s: "%" + s.encode().hex(),
    "hex after a stray \\u00": lambda s: "\\u00" + s.encode().hex(),
    "hex after a stray \\x and %25": lambda s: "%25\\x" + s.encode().hex().upper(),
    "UTF-16LE": lambda s: s.encode("utf-16-le").decode("latin-1"),
    "UTF-16BE of upper": lambda s: s.upper().encode("utf-16-be").decode("latin-1"),
    "UTF-16 in JSON": lambda s: json.dumps(s.encode("utf-16-le").decode("latin-1")),
    "zero-width spaces between": lambda s: "\u200b".join(s),
    "soft hyphens and joiners": lambda s: "".join(c + "\u00ad\u2060\ufeff"[i % 3]
                                                  for i, c in enumerate(s)),
    "spaces between": lambda s: " ".join(s),
    "folded over lines": lambda s: s[:7] + "\r\n\t" + s[7:],
    "fullwidth": lambda s: "".join(chr(ord(c) + 0xFEE0) for c in s),
    "html entities without ';'": lambda s: "".join(f"&#{ord(c)}" for c in s),
    "html named entities": lambda s: s.replace("_", "&lowbar;").replace(".", "&period;"),
    "quoted-printable": lambda s: "".join(f"={ord(c):02X}" for c in s),
    "quoted-printable soft breaks": lambda s: "=\r\n".join(s[i:i + 5]
                                                            for i in range(0, len(s), 5)),
    "%u escapes": lambda s: "".join(f"%u{ord(c):04X}" for c in s),
    "\\U escapes": lambda s: "".join(f"\\U{ord(c):08x}" for c in s),
    "octal escapes": lambda s: "".join(f"\\{ord(c):03o}" for c in s),
    "hex, 0x and commas": lambda s: ", ".join(f"0x{b:02x}" for b in s.encode()),
    "decimal bytes (a Node Buffer)": lambda s: json.dumps(
        {"type": "Buffer", "data": list(s.encode())}),
    "base32, alignment 3": lambda s: base64.b32encode(b"PPP" + s.encode() + b"Q").decode(),
    "base32 of lower": lambda s: base64.b32encode(s.lower().encode()).decode().lower(),
    "base64 of UTF-16LE": lambda s: b64(1, s.encode("utf-16-le").decode("latin-1")),
    "hex of UTF-16BE": lambda s: s.encode("utf-16-be").hex(),
    "percent escapes between spaces": lambda s: " ".join(f"%{ord(c):02x}" for c in s),
    "\\u escapes on lines of their own": lambda s: "\n".join(f"\\u{ord(c):04x}" for c in s),
    "=XX between zero-width spaces": lambda s: "\u200b".join(f"={ord(c):02X}" for c in s),
}
HEADER_SAFE = [name for name in FORMS if name in (
    "raw", "upper", "mixed case", "hex", "HEX", "hex of upper, colons", "\\u mixed",
    "percent every char", "html entities", "base64, alignment 1", "base64 of upper, alignment 0",
    "base64url, alignment 2, unpadded", "every escape at once")]


@dataclass
class Echo(Upstream):
    """An upstream that echoes the bearer credential in the form the query names, after
    ``pad`` bytes, in the body, a header value or a header name, in a Content-Encoding."""

    accept_encoding: list[str] = field(default_factory=list)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await receive()
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.accept_encoding.append(headers.get("accept-encoding", ""))
        query = dict(parse_qsl(scope["query_string"].decode()))
        token = headers.get("authorization", "").removeprefix("Bearer ")
        echoed = FORMS[query.get("form", "raw")](token)
        body = b"A" * int(query.get("pad", "0")) + echoed.encode() + b"Z" * int(
            query.get("tail", "0"))
        out = [(b"content-type", b"text/plain")]
        where = query.get("where", "body")
        if where == "header":
            out.append((b"x-echo", echoed.encode()))
            body = b"ok"
        elif where == "name":
            out.append((b"x-" + echoed.encode(), b"1"))
            body = b"ok"
        encoding = query.get("enc")
        if encoding:
            body = gzip.compress(body)
            out.append((b"content-encoding", encoding.encode()))
        await self.reply_raw(send, 200, body, out)


@pytest.fixture(scope="module")
def echo() -> Iterator[Echo]:
    with running_upstream(upstream=Echo()) as server:
        assert isinstance(server, Echo)
        yield server


def make_gateway(tmp_path: Path, echo: Echo, manager: FileKeys, monkeypatch: pytest.MonkeyPatch,
                 **options: Any) -> Gateway:
    monkeypatch.setenv("GW_SECRET", SECRET)
    manager.init()
    path = tmp_path / "services.toml"
    path.write_text(f'[services.echo]\nbase_url = "{echo.url}"\nauth = "bearer"\n'
                    'secret = "env:GW_SECRET"\nallow = ["GET /**"]\n')
    path.chmod(0o600)
    echo.accept_encoding.clear()
    return Gateway(ServiceConfig(path), audit=manager.audit, **options)


@pytest.fixture
def gateway(tmp_path: Path, echo: Echo, manager: FileKeys,
            monkeypatch: pytest.MonkeyPatch) -> Gateway:
    return make_gateway(tmp_path, echo, manager, monkeypatch, max_body=4000)


def call(gateway: Gateway, **request: Any) -> Any:
    async def go() -> Any:
        try:
            return await gateway.execute(CALLER, GatewayRequest(
                "echo", request.pop("method", "GET"), request.pop("path", "/e"), **request))
        finally:
            await gateway.aclose()

    return asyncio.run(go())


def refused(gateway: Gateway, **request: Any) -> Denied:
    try:
        call(gateway, **request)
    except Denied as exc:
        return exc
    pytest.fail(f"{request} was not refused", pytrace=False)


def assert_scrubbed(form: str, shown: str, where: str) -> None:
    echoed = FORMS[form](SECRET)
    assert echoed not in shown and echoed.lower() not in shown.lower(), \
        f"{form}: the echoed credential is in {where}"
    for text in (shown.lower(), shown.lower().replace("\x00", "").replace("\\u0000", "")):
        assert_absent(SECRET.lower(), text, where)
    assert "[redacted]" in shown, f"{form}: nothing was redacted in {where}"


@pytest.mark.parametrize("form", list(FORMS))
def test_every_form_in_a_body_is_redacted(gateway: Gateway, manager: FileKeys,
                                          form: str) -> None:
    response = call(gateway, query={"form": form, "pad": "5"})
    assert response.status == 200
    assert_scrubbed(form, response.body, "a response body")
    assert_scrubbed(form, json.dumps(response.to_dict()), "a tool result")
    raw = b"".join(line for _, _, line in manager.audit.lines()).decode()
    assert_absent(SECRET, raw, "the audit log")


@pytest.mark.parametrize("form", HEADER_SAFE)
def test_every_form_in_a_header_value_or_name_is_redacted(gateway: Gateway, form: str) -> None:
    for where in ("header", "name"):
        if where == "name" and not FORMS[form](SECRET).replace("-", "").replace("_", "")\
                .replace(".", "").isalnum():
            continue  # not a valid header name
        response = call(gateway, query={"form": form, "where": where})
        assert_scrubbed(form, json.dumps(response.headers), f"a response header {where}")


@pytest.mark.parametrize("form", ["raw", "hex", "\\u every char", "base64, alignment 1",
                                  "percent every char", "upper", "spaces between",
                                  "zero-width spaces between", "quoted-printable"])
def test_a_secret_at_the_max_body_cut_is_redacted_whole(gateway: Gateway, form: str) -> None:
    echoed = FORMS[form](SECRET)
    lead = 2 if form.startswith("base64") else 0  # 'P' and its partial character
    core = echoed[lead:]
    for before_cut in (1, 2, 3, 5, 9, len(echoed) // 2, len(echoed) - 1, len(echoed),
                       len(echoed) + 3):
        response = call(gateway, query={"form": form, "pad": str(4000 - before_cut),
                                        "tail": "500"})
        body = response.body
        assert response.truncated and len(body.encode()) <= 4000, f"{form}: not capped"
        lowered = body.lower()
        for size in range(1, len(core) + 1):
            assert not lowered.endswith(core[:size].lower()), \
                f"{form}: {size} characters of it survive at the cut ({before_cut} before it)"
        assert_absent(SECRET, lowered, "a truncated body")
        assert before_cut <= lead or "[redacted]" in lowered, \
            f"{form}: no redaction ({before_cut} before the cut)"


@pytest.mark.parametrize("encoding", ["br", "zstd", "compress", "x-gzip", "gzip, br",
                                      "identity, x-custom"])
def test_an_encoding_the_gateway_did_not_ask_for_is_refused(
        gateway: Gateway, manager: FileKeys, encoding: str) -> None:
    denial = refused(gateway, query={"enc": encoding})
    assert denial.decision == "upstream_error" and "Content-Encoding" in str(denial), \
        str(denial)
    (line,) = manager.audit.read(event="gateway_call").events
    assert line.detail["decision"] == "upstream_error" and "Content-Encoding" in \
        line.detail["why"]


def test_gzip_is_decoded_then_scrubbed_and_the_agent_cannot_pick_the_encoding(
        gateway: Gateway, echo: Echo) -> None:
    response = call(gateway, query={"enc": "gzip", "form": "hex"})
    assert "content-encoding" not in {k.lower() for k in response.headers}, \
        "the body was decoded: the header would lie"
    assert_scrubbed("hex", response.body, "a gzip body")
    assert echo.accept_encoding == ["gzip, deflate"], echo.accept_encoding
    for value in ("br", "identity", "gzip;q=0, br"):
        denial = refused(gateway, headers={"Accept-Encoding": value})
        assert denial.decision == "bad_request" and "set by the gateway" in str(denial)
    assert len(echo.accept_encoding) == 1, "a refused call reached the upstream"


def test_logged_bodies_are_scrubbed_in_every_form(
        tmp_path: Path, echo: Echo, manager: FileKeys, monkeypatch: pytest.MonkeyPatch) -> None:
    gateway = make_gateway(tmp_path, echo, manager, monkeypatch, log_bodies=True)
    for form in ("hex", "base64, alignment 2", "\\u mixed", "upper"):
        call(gateway, query={"form": form, "pad": "10"})
        call(gateway, query={"form": form, "pad": str(2048 - 7), "tail": "100"})
    raw = b"".join(line for _, _, line in manager.audit.lines()).decode()
    for form in ("hex", "base64, alignment 2", "\\u mixed", "upper"):
        echoed = FORMS[form](SECRET)
        assert echoed[:7].lower() not in raw.lower(), f"{form}: the audit log holds it"
    assert_absent(SECRET, raw.lower(), "the audit log")


EXEC_SCRIPT = r'''#!/usr/bin/env python3
import os, sys
token = os.environ["TOKEN"]
pad, form = int(sys.argv[1]), sys.argv[2]
shown = {"raw": token, "hex": token.encode().hex(), "upper": token.upper()}[form]
sys.stdout.write("A" * pad + shown + "Z" * 500)
'''


def test_exec_output_is_scrubbed_before_it_is_capped(
        tmp_path: Path, manager: FileKeys, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "echo-token"
    script.write_text(EXEC_SCRIPT)
    script.chmod(0o755)
    monkeypatch.setenv("GW_SECRET", SECRET)
    manager.init()
    path = tmp_path / "services.toml"
    path.write_text(f'[services.tool]\nkind = "exec"\ncommand = "{script}"\n'
                    'allow_args = ["* *"]\nsecret_env = { TOKEN = "env:GW_SECRET" }\n')
    path.chmod(0o600)
    gateway = Gateway(ServiceConfig(path), audit=manager.audit, max_body=1000)
    for form in ("raw", "hex", "upper"):
        echoed = FORMS[form](SECRET)
        for before_cut in (1, 4, len(echoed) // 2, len(echoed) - 1):
            result = asyncio.run(gateway.run_exec(CALLER, "tool",
                                                  [str(1000 - before_cut), form]))
            assert result.truncated and len(result.stdout.encode()) <= 1000
            for size in range(1, len(echoed) + 1):
                assert not result.stdout.lower().endswith(echoed[:size].lower()), \
                    f"{form}: {size} characters survive at the cut"
        whole = asyncio.run(gateway.run_exec(CALLER, "tool", ["3", form]))
        assert echoed.lower() not in whole.stdout.lower() and "[redacted]" in whole.stdout


@pytest.mark.parametrize("encode", [
    lambda p: p, json.dumps, lambda p: p.replace(" ", "+"), lambda p: html.escape(p),
    lambda p: "".join(f"%{b:02x}" for b in p.encode()), lambda p: json.dumps(json.dumps(p)),
    lambda p: p.upper(), lambda p: base64.b64encode(p.encode()).decode()],
    ids=["raw", "json", "form", "html", "percent", "json twice", "upper", "base64"])
def test_a_password_with_quotes_backslashes_and_escapes_is_redacted(
        encode: Callable[[str], str]) -> None:
    from mcp_keys.gateway.scrub import Scrubber

    password = 'pa ss"w\\o&r<d>%41x'
    scrub = Scrubber([f"svc-user:{password}"])
    shown = scrub.text(f"before {encode(password)} after")
    assert shown.startswith("before ") and shown.endswith(" after")
    assert "[redacted]" in shown and encode(password) not in shown, "the password survived"
    assert_absent("w\\o&r", shown, "a scrubbed text")


def test_an_odd_service_name_is_refused_and_audited_not_a_crash(
        gateway: Gateway, manager: FileKeys) -> None:
    call(gateway)  # the gateway now holds a scrubber, which every audit line goes through
    denial = None
    try:
        asyncio.run(gateway.execute(CALLER, GatewayRequest("\ud800x", "GET", "/e")))
    except Denied as exc:
        denial = exc
    assert denial is not None and denial.decision == "denied"
    assert manager.audit.read(event="gateway_call").events[-1].detail["decision"] == "denied"


KEY_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.+/="
ENCODERS: dict[str, Callable[[str], str]] = {
    "raw": lambda s: s, "upper": str.upper, "lower": str.lower,
    "hex": lambda s: s.encode().hex(), "HEX": lambda s: s.encode().hex().upper(),
    "\\u": lambda s: "".join(f"\\u{ord(c):04x}" for c in s),
    "percent": lambda s: "".join(f"%{ord(c):02X}" for c in s),
    "html": lambda s: "".join(f"&#{ord(c)};" for c in s),
    "json": json.dumps, "utf-16": lambda s: s.encode("utf-16-le").decode("latin-1"),
}


def test_any_key_in_any_form_amid_any_text_is_redacted() -> None:
    """Hypothesis: a key of API-key characters, spelled one of the ways above or as
    base64 inside a blob at any alignment, between arbitrary printable text (which may
    end in half an escape), never survives."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from mcp_keys.gateway.scrub import Scrubber

    printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12)
    stray = st.sampled_from(["%", "%4", "%2", "\\u00", "\\u004", "\\", "&#", "&#x", "\\x",
                             "%25", "\\\\", "\x00"])
    printable = st.one_of(printable, st.tuples(printable, stray).map("".join))

    @settings(max_examples=int(os.environ.get('SCRUB_EXAMPLES', '300')), deadline=None)
    @given(key=st.text(st.sampled_from(KEY_CHARS), min_size=8, max_size=40),
           before=printable, after=printable, how=st.sampled_from([*ENCODERS, "base64"]),
           pad=st.binary(max_size=5))
    def check(key: str, before: str, after: str, how: str, pad: bytes) -> None:
        scrub = Scrubber([key])
        if how == "base64":
            blob = base64.b64encode(pad + key.encode() + b"tail")
            core = blob[-(-8 * len(pad) // 6):8 * (len(pad) + len(key)) // 6].decode()
            shown = scrub.text(before + blob.decode() + after)
            assert core not in shown, "a base64 core survived"
            return
        shown = scrub.text(before + ENCODERS[how](key) + after)
        assert ENCODERS[how](key) not in shown, f"the {how} form survived"
        assert key.lower() not in shown.lower().replace("\x00", ""), "the key survived"

    check()


def test_a_pem_printed_line_by_line_stripped_or_as_crlf_hex_is_redacted() -> None:
    """A multi-line secret (a PEM): each long line on its own, and the hex and base64 of
    the value stripped or with CRLF line ends, are redacted like the whole of it (base64
    but for its last characters, which depend on what follows)."""
    from mcp_keys.gateway.scrub import REDACTED, Scrubber

    body = base64.b64encode(os.urandom(240)).decode()
    pem = ("-----BEGIN PRIVATE KEY-----\n" + "\n".join(body[i:i + 64] for i in range(
        0, len(body), 64)) + "\n-----END PRIVATE KEY-----\n")
    crlf = pem.replace("\n", "\r\n")
    shown = {f"line {i}": line for i, line in enumerate(pem.splitlines())}
    shown |= {"hex of CRLF": crlf.encode().hex(), "hex stripped": pem.strip().encode().hex(),
              "base64 of CRLF": base64.b64encode(crlf.encode()).decode()}
    scrub = Scrubber([pem])
    for name, form in shown.items():
        out = scrub.text(f"<{form}>")
        assert form not in out and out.startswith(f"<{REDACTED}"), f"{name} survived"


def test_a_url_secret_redacts_its_password_not_its_scheme() -> None:
    """A secret that is a URL with a password (a database URL run --mask hides) is not
    split at its first ':': its scheme stays readable everywhere, its password does not."""
    from mcp_keys.gateway.scrub import REDACTED, Scrubber

    password = os.urandom(12).hex()
    scrub = Scrubber([f"postgres://app:{password}@db.internal/prod"])
    shown = scrub.text(f"postgres driver, see https://x; auth failed for {password}!")
    assert shown == f"postgres driver, see https://x; auth failed for {REDACTED}!", \
        "the scheme was redacted or the password was not"
    assert Scrubber(["alice:" + password]).text(f"alice {password}") == \
        f"{REDACTED} {REDACTED}", "user:password halves are no longer redacted"


@pytest.mark.parametrize("gap", [" " * 300, "\x00" * 1000, "\u200b" * 2000])
def test_a_secret_spread_out_across_the_cut_leaves_no_prefix(gap: str) -> None:
    """Runs of blanks between its characters put the start of a secret further before the
    cut than the look-ahead reaches in bytes: the tail is measured without blanks."""
    from mcp_keys.gateway.scrub import Scrubber

    scrub = Scrubber([SECRET])
    spread = gap.join(SECRET).encode()
    limit = 50_000
    for before in range(1, len(SECRET)):  # characters of the secret before the cut
        data = b"A" * (limit - before * len(gap.encode()) - before) + spread + b"Z" * 9
        read = data[:limit + scrub.lookahead]
        out, _ = scrub.cut(read, limit, len(data) > len(read))
        assert len(out) <= limit
        kept = out.replace(gap.encode(), b"").lower()
        assert SECRET[:4].lower().encode() not in kept, \
            f"the start of the secret survives the cut ({before} characters before it)"
