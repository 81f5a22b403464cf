"""Property tests: the format, durations and the store hold for arbitrary input."""

from __future__ import annotations

import contextlib
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcp_keys import KeyManager, UsageError, tokens
from mcp_keys.durations import UNITS, format_duration, parse_duration

ALPHABET = st.characters(codec="utf-8")


@given(st.none())
def test_parse_generate_round_trips(_: None) -> None:
    token = tokens.generate()
    parsed = tokens.parse(token)
    assert parsed is not None and parsed.key_id == token[5:17] and parsed.token == token


@given(st.data())
def test_any_mutation_is_rejected(data: st.DataObject) -> None:
    token = tokens.generate()
    kind = data.draw(st.sampled_from(["replace", "insert", "delete", "swap"]))
    index = data.draw(st.integers(0, len(token) - 1))
    if kind == "replace":
        char = data.draw(ALPHABET.filter(lambda c: c != token[index]))
        mutated = token[:index] + char + token[index + 1:]
    elif kind == "insert":
        mutated = token[:index] + data.draw(ALPHABET) + token[index:]
    elif kind == "delete":
        mutated = token[:index] + token[index + 1:]
    else:
        other = data.draw(st.integers(0, len(token) - 1).filter(
            lambda j: token[j] != token[index]))
        chars = list(token)
        chars[index], chars[other] = chars[other], chars[index]
        mutated = "".join(chars)
    assert mutated != token
    assert tokens.parse(mutated) is None


@given(st.text(max_size=30))
def test_parse_never_raises_on_garbage(text: str) -> None:
    assert tokens.parse(text) is None


@given(st.integers(1, 2000), st.sampled_from(sorted(UNITS)))
def test_durations_round_trip(count: int, unit: str) -> None:
    delta = parse_duration(f"{count}{unit}")
    assert delta == UNITS[unit] * count
    assert parse_duration(format_duration(delta)) == delta


@given(st.text(max_size=12))
def test_duration_parser_only_raises_usage_errors(text: str) -> None:
    with contextlib.suppress(UsageError):
        parse_duration(text, allow_never=True, allow_zero=True)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(min_size=1, max_size=64), description=st.text(max_size=200))
def test_store_survives_arbitrary_names(tmp_path: Path, name: str, description: str) -> None:
    manager = KeyManager(tmp_path / "props" / "keys.json")
    try:
        issued = manager.create(name, description=description)
    except UsageError:
        assert not (name.isprintable() and description.isprintable() and name.strip())
        return
    again = KeyManager(manager.store.display).get(issued.record.id)
    assert (again.name, again.description) == (name, description)
