from __future__ import annotations

import re

import pytest

from mcp_keys import tokens

PATTERN = re.compile(r"^mcpk_[a-z0-9]{12}_[A-Za-z0-9]{49,}$")


def test_generated_keys_match_the_published_pattern() -> None:
    for _ in range(200):
        token = tokens.generate()
        assert PATTERN.match(token)
        parsed = tokens.parse(token)
        assert parsed is not None and parsed.key_id == token[5:17]


def test_secret_carries_at_least_256_bits() -> None:
    import math

    assert tokens.SECRET_LENGTH * math.log2(62) >= 256


def test_every_single_character_change_is_rejected() -> None:
    token = tokens.generate()
    alphabet = sorted(set(tokens.BASE62 + "_-. !"))
    changed = 0
    for index, original in enumerate(token):
        for char in alphabet:
            if char == original:
                continue
            mutated = token[:index] + char + token[index + 1:]
            assert tokens.parse(mutated) is None, f"mutation at position {index} accepted"
            changed += 1
    assert changed > 60 * len(token) - 1


def test_truncated_extended_and_foreign_tokens_are_rejected() -> None:
    token = tokens.generate()
    for candidate in (token[:-1], token + "a", token[1:], "", "mcpk_", token.upper(),
                      "sk_live_" + token[5:], "ghp_" + "a" * 36, token + "\n", " " + token,
                      token[:20] + "\x00" + token[21:], "x" * 10_000):
        assert tokens.parse(candidate) is None


def test_ten_thousand_ids_are_unique() -> None:
    ids = {tokens.generate_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(re.fullmatch(r"[a-z0-9]{12}", i) for i in ids)


def test_digest_is_sha256_hex_and_compare_is_constant_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import hmac

    token = tokens.generate()
    digest = tokens.digest(token)
    assert re.fullmatch(r"[0-9a-f]{64}", digest) and token not in digest
    calls: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert tokens.matches(token, digest)
    assert not tokens.matches(tokens.generate(), digest)
    assert len(calls) == 2


def test_parsed_token_repr_hides_the_secret() -> None:
    token = tokens.generate()
    parsed = tokens.parse(token)
    assert parsed is not None
    assert token not in repr(parsed) and token not in str(parsed)
