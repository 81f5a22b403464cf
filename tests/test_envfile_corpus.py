"""A .env rewrite never breaks the file: a generated corpus of odd bindings (quoted names,
``export``, spaces around ``=``, duplicates, comments, CRLF, quoted values with ``#`` and
escapes, no final newline, empty files) round-trips through python-dotenv with the one
variable set to the new key and every other variable, and line, as it was."""

from __future__ import annotations

import io
import stat
from pathlib import Path

import pytest
from dotenv import dotenv_values
from dotenv.parser import parse_stream
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcp_keys import tokens
from mcp_keys.envfile import rewrite, set_variable
from mcp_keys.errors import EnvFileError
from tests.conftest import Cli

TARGET = "MCP_API_KEY"
NAMES = st.sampled_from([TARGET, TARGET, "A", "B_2", "OTHER_KEY", "MCP_API_KEY_OLD"])
BARE = st.text("abcXYZ019_./:-", max_size=12)
SINGLE = st.text(st.characters(blacklist_characters="'\\\r\n", codec="utf-8",
                               blacklist_categories=["Cs", "Cc"]), max_size=12)
DOUBLE_PARTS = st.lists(st.one_of(
    st.text(st.characters(blacklist_characters='"\\\r\n', codec="utf-8",
                          blacklist_categories=["Cs", "Cc"]), min_size=1, max_size=6),
    st.sampled_from(['\\"', "\\\\", "\\n", "\\t", "#", " # not a comment"])), max_size=4)


@st.composite
def binding(draw: st.DrawFn) -> str:
    name = draw(NAMES)
    key = draw(st.sampled_from([name, f"'{name}'"]))
    head = draw(st.sampled_from(["", "export ", "  ", "\t", "export  "]))
    kind = draw(st.sampled_from(["bare", "single", "double", "empty", "none"]))
    if kind == "none":
        return head + key + draw(st.sampled_from(["", "  "]))
    equals = draw(st.sampled_from(["=", " =", "= ", " = "]))
    if kind == "bare":
        value = draw(BARE)
    elif kind == "single":
        value = f"'{draw(SINGLE)}'"
    elif kind == "double":
        value = '"' + "".join(draw(DOUBLE_PARTS)) + '"'
    else:
        value = ""
    comment = draw(st.sampled_from(["", " # a comment", "  #MCP_API_KEY=in-a-comment"]))
    if kind == "empty" and comment and equals.endswith(" "):
        comment = ""  # "K= # c" is K="" and a comment; covered, but keep values simple
    return f"{head}{key}{equals}{value}{comment}"


LINE = st.one_of(binding(), st.sampled_from([
    "", "   ", "# a comment", f"# {TARGET}=commented-out", f'"{TARGET}"=a-different-variable',
    "#", 'MULTI="line one\nline two"']))


@st.composite
def env_text(draw: st.DrawFn) -> str:
    lines = draw(st.lists(LINE, max_size=10))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    body = newline.join(line.replace("\n", newline) for line in lines)
    final: bool = draw(st.booleans())
    return body + (newline if lines and final else "")


def others(text: str) -> list[str]:
    """Every piece of the file that is not a binding of the target, in order."""
    return [b.original.string for b in parse_stream(io.StringIO(text, newline=""))
            if b.key != TARGET]


def read(text: str) -> dict[str, str | None]:
    return dict(dotenv_values(stream=io.StringIO(text), interpolate=False))


@settings(max_examples=600, deadline=None)
@given(env_text())
def test_every_generated_env_file_round_trips_with_only_the_key_changed(text: str) -> None:
    key = tokens.generate()
    before = read(text)
    after_text = rewrite(text, TARGET, key)
    after = read(after_text)
    assert after == {**before, TARGET: key}, "dotenv reads another variable differently"
    assert after_text.count(key) == 1, "the key is written once"
    rest = after_text
    for piece in others(text):  # every other binding and comment, byte for byte, in order
        stripped = piece.lstrip()  # blank lines before a dropped duplicate may go with it
        found = rest.find(stripped)
        assert found >= 0, "another line was changed"
        rest = rest[found + len(stripped):]


@pytest.mark.parametrize(("text", "expected"), [
    (f"'{TARGET}'=old\n", f"'{TARGET}'=old"),
    (f"export '{TARGET}' = old # note\r\nA=1\r\n", f"export '{TARGET}' = old # note"),
    (f"{TARGET}=first\nA=1\n{TARGET}=last", f"{TARGET}=last"),
    (f"  {TARGET}  =  'padded'  \n", f"{TARGET}  =  'padded'  "),
])
def test_odd_bindings_are_replaced_whole(tmp_path: Path, text: str, expected: str) -> None:
    env = tmp_path / ".env"
    env.write_bytes(text.encode())
    key = tokens.generate()
    assert set_variable(env, TARGET, key)
    written = env.read_bytes().decode()
    assert read(written)[TARGET] == key, "the new key is not what dotenv reads"
    assert expected not in written and "'MCP_API_KEY=" not in written
    assert stat.S_IMODE(env.stat().st_mode) == 0o600


def test_the_last_duplicate_is_the_one_made_effective() -> None:
    text = f"{TARGET}=one\nA=1\n{TARGET}=two\nB=2\n"
    key = tokens.generate()
    written = rewrite(text, TARGET, key)
    assert read(written) == {TARGET: key, "A": "1", "B": "2"}
    assert written.endswith(f"{TARGET}={key}\nB=2\n") and "one" not in written


def test_a_byte_order_mark_and_a_missing_final_newline_are_kept() -> None:
    key = tokens.generate()
    assert rewrite(f"\ufeffA=1\n{TARGET}=x", TARGET, key) == f"\ufeffA=1\n{TARGET}={key}"
    assert rewrite("", TARGET, key) == f"{TARGET}={key}\n"


GARBAGE = st.lists(st.one_of(LINE, st.sampled_from([
    'I="unterminated', "J='unterminated", "=novalue", "K=\\$literal", "'Q=x", "=", "\\"])),
    max_size=8)


@settings(max_examples=400, deadline=None)
@given(GARBAGE, st.sampled_from(["\n", "\r\n"]))
def test_a_broken_file_is_rewritten_correctly_or_refused(lines: list[str],
                                                         newline: str) -> None:
    text = newline.join(lines)
    key = tokens.generate()
    try:
        written = rewrite(text, TARGET, key)
    except EnvFileError as exc:
        assert key not in str(exc)
        return
    assert read(written) == {**read(text), TARGET: key}


@settings(max_examples=50, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(env_text())
def test_the_file_on_disk_round_trips_too(tmp_path: Path, text: str) -> None:
    env = tmp_path / ".env"
    env.write_bytes(text.encode())
    before = dotenv_values(env, interpolate=False)  # read as a server reads the file
    key = tokens.generate()
    set_variable(env, TARGET, key)
    assert dotenv_values(env, interpolate=False) == {**before, TARGET: key}


def test_create_into_a_quoted_name_env_gives_a_server_the_key(run: Cli, tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_bytes(b"export 'MCP_API_KEY' = old # rotated\r\nOTHER='x # y'\r\n")
    done = run("create", "svc", "--env-file", str(env))
    assert done.exit_code == 0, "create failed"
    key = done.stdout.strip()
    assert dotenv_values(env) == {"MCP_API_KEY": key, "OTHER": "x # y"}
    assert env.read_bytes().endswith(b"\r\nOTHER='x # y'\r\n")
    assert "could not parse" not in done.stderr
