"""What a hard-coded secret looks like, in any string of a config.

Three kinds of evidence, strongest first:

- a provider's own key format (Stripe ``sk_live_``, GitHub ``ghp_``, Context7 ``ctx7sk-``
  …), found anywhere in a string and named after that provider; mcp-keys keys are
  checked by their checksum;
- a URL carrying a credential: a password in its user info, or a query parameter named
  like a key (``api_key=``, ``apiKey=``, ``token=``, ``key=``, ``access_token=`` …);
- a random-looking value under a secret-sounding name (``*_API_KEY``, ``primaryApiKey``,
  ``Authorization``, ``--auth-token`` …): "a secret", without a guess at whose.

References (``${VAR}``, ``${env:VAR}``, ``${input:…}``, mcp-keys references) and known
placeholders (``your-…``, ``…-here``, ``<…>``, ``xxxx``, ``xoxb-your-bot-token``, the
providers' documentation keys) are never findings. A UUID is a key under a secret name
or in a secret query parameter, and an ID anywhere else.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections import Counter
from collections.abc import Iterator
from functools import cache, lru_cache
from urllib.parse import unquote, unquote_plus, urlsplit

from ..secrets import is_reference

_E = r"(?![A-Za-z0-9])"
# (kind, literal prefixes, format): a format is searched for only in text that holds one
# of its prefixes (a C-speed ``in``), and counts only where no word runs into it.
PROVIDERS: list[tuple[str, tuple[str, ...], str]] = [
    ("anthropic-api-key", ("sk-ant-",), r"sk-ant-(?:api|admin)\d{2}-[A-Za-z0-9_-]{80,}"),
    ("context7-api-key", ("ctx7sk-",), r"ctx7sk-[A-Za-z0-9-]{20,}"),
    ("openrouter-api-key", ("sk-or-v1-",), r"sk-or-v1-[0-9a-f]{64}" + _E),
    ("zapier-mcp-key", ("sk-ak-",), r"sk-ak-[A-Za-z0-9]{20,}"),
    ("openai-api-key", ("sk-",), r"sk-(?:proj|svcacct|admin)-[A-Za-z0-9_-]{40,}"
                                 r"|sk-[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}" + _E),
    ("stripe-secret-key", ("sk_live_", "sk_test_", "rk_live_", "rk_test_"),
     r"[sr]k_(?:live|test)_[0-9A-Za-z]{16,}"),
    ("stripe-webhook-secret", ("whsec_",), r"whsec_[0-9A-Za-z]{24,}"),
    ("github-fine-grained-token", ("github_pat_",), r"github_pat_[A-Za-z0-9_]{60,}"),
    ("github-token", ("ghp_", "gho_", "ghu_", "ghs_", "ghr_"), r"gh[pousr]_[A-Za-z0-9]{36,}"),
    ("gitlab-token", ("glpat-",), r"glpat-[0-9A-Za-z_-]{20,}"),
    ("aws-access-key-id", ("AKIA", "ASIA"), r"(?:AKIA|ASIA)[0-9A-Z]{16}" + _E),
    ("google-api-key", ("AIza",), r"AIza[0-9A-Za-z_-]{35}" + _E),
    ("google-oauth-client-secret", ("GOCSPX-",), r"GOCSPX-[0-9A-Za-z_-]{28}" + _E),
    ("slack-token", ("xox", "xapp-"), r"xox[abposre]-(?:[0-9]+-){1,3}[0-9A-Za-z]{16,}"
                                      r"|xoxe\.xox[bp]-\d-[0-9A-Za-z]{100,}"
                                      r"|xapp-\d-[0-9A-Z]+-\d+-[0-9a-f]{32,}"),
    ("slack-webhook", ("hooks.slack.com/",),
     r"hooks\.slack\.com/services/T[0-9A-Z]+/B[0-9A-Z]+/[0-9A-Za-z]{20,}"),
    ("huggingface-token", ("hf_",), r"hf_[A-Za-z0-9]{34,}" + _E),
    ("groq-api-key", ("gsk_",), r"gsk_[A-Za-z0-9]{48,}" + _E),
    ("perplexity-api-key", ("pplx-",), r"pplx-[A-Za-z0-9]{40,}" + _E),
    ("xai-api-key", ("xai-",), r"xai-[A-Za-z0-9]{60,}" + _E),
    ("tavily-api-key", ("tvly-",), r"tvly-(?:dev-|prod-)?[A-Za-z0-9]{28,}" + _E),
    ("firecrawl-api-key", ("fc-",), r"fc-[0-9a-f]{32}" + _E),
    ("notion-token", ("ntn_", "secret_"), r"ntn_[0-9A-Za-z]{40,}" + _E
                                         + r"|secret_[0-9A-Za-z]{43}" + _E),
    ("linear-api-key", ("lin_api_",), r"lin_api_[0-9A-Za-z]{40}" + _E),
    ("npm-token", ("npm_",), r"npm_[0-9A-Za-z]{36}" + _E),
    ("supabase-token", ("sbp_",), r"sbp_[0-9a-f]{40}" + _E),
    ("sendgrid-api-key", ("SG.",), r"SG\.[0-9A-Za-z_-]{22}\.[0-9A-Za-z_-]{43}" + _E),
    ("digitalocean-token", ("dop_v1_", "doo_v1_", "dor_v1_"), r"do[opr]_v1_[0-9a-f]{64}" + _E),
    ("shopify-token", ("shpat_", "shpca_", "shppa_", "shpss_"),
     r"shp(?:at|ca|pa|ss)_[0-9a-fA-F]{32}" + _E),
    ("atlassian-api-token", ("ATATT3",), r"ATATT3[0-9A-Za-z_=-]{150,}"),
    ("postman-api-key", ("PMAK-",), r"PMAK-[0-9a-f]{24}-[0-9a-f]{34}" + _E),
    ("sentry-token", ("sntry", "sntrs"), r"sntr[ysu]s?_[0-9A-Za-z+/=_]{40,}"),
    ("grafana-token", ("glsa_",), r"glsa_[0-9A-Za-z]{32}_[0-9a-f]{8}" + _E),
    ("figma-token", ("figd_",), r"figd_[0-9A-Za-z_-]{40,}"),
    ("telegram-bot-token", (":AA",), r"(?<![0-9])\d{8,10}:AA[0-9A-Za-z_-]{33}" + _E),
    ("jwt", ("eyJ",), r"eyJ[0-9A-Za-z_-]{10,}\.eyJ[0-9A-Za-z_-]{10,}\.[0-9A-Za-z_-]{20,}"),
    ("private-key", ("-----BEGIN",), r"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY-----"),
    ("mcp-keys-key", ("mcpk_",), ""),  # tokens.TOKEN_SEARCH, imported when first needed
]
def _in_a_run(prefix: str) -> bool:
    return prefix[0].isalnum() and "/" not in prefix


_PREFIXES = tuple(prefix for _, prefixes, _ in PROVIDERS for prefix in prefixes
                  if _in_a_run(prefix))
_BY_HEAD: dict[str, list[tuple[str, int]]] = {}  # a prefix's first two characters: its formats
for _n, (_, _prefixes, _) in enumerate(PROVIDERS):
    for _prefix in _prefixes:
        _BY_HEAD.setdefault(_prefix[:2], []).append((_prefix, _n))
_ANYWHERE = [n for n, (_, prefixes, _) in enumerate(PROVIDERS)
             if not all(_in_a_run(prefix) for prefix in prefixes)]  # ":AA", "hooks.slack…"
# Where a key can be: a run of key characters (any other character becomes a space; a
# translate and a split beat a regex over the runs by 2-4x)
_KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.+/=-")
_KEY_BYTES = bytes(c if chr(c) in _KEY_CHARS else 32 for c in range(256))
MIN_KEY_LENGTH = 16
_SEPARATOR = re.compile(r"[./+=]+")


@cache
def _pattern(n: int) -> re.Pattern[str]:
    """Provider ``n``'s format, compiled when first needed: start-up stays short (and
    ``tokens``, with ``hashlib`` and ``dataclasses``, is imported only for an ``mcpk_``)."""
    if PROVIDERS[n][0] == "mcp-keys-key":
        from .. import tokens

        return tokens.TOKEN_SEARCH
    return re.compile(PROVIDERS[n][2])


# Keys that are public by design (they ship in web pages): never a finding.
PUBLIC_PREFIXES = ("pk_live_", "pk_test_")
# Values published in providers' own documentation: real-shaped, never anyone's key.
DOCUMENTATION_VALUES = frozenset({
    "sk_test_4eC39HqLyjWDarjtT1zdp7dc", "sk_test_BQokikJOvBiI2HlWgH4olfQ2",
    "sk_test_26PHem9AhJZvU623DfE1x4sd", "rk_test_26PHem9AhJZvU623DfE1x4sd",
    "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "AKIAI44QH8DHBEXAMPLE", "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY",
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9l"
    "IiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
})
_STAND_IN = (r"(?:your|here|example|sample|placeholder|dummy|fake|redacted|changeme|replace|"
             r"insert)")
# A stand-in word counts where it stands apart (xoxb-your-bot-token, YOUR_API_KEY_HERE): a
# generated key spells "here" by chance, never "-here" or "here_".
_FAKE_WORDS = re.compile(
    rf"(?i)(?:^|[^a-z0-9]){_STAND_IN}|{_STAND_IN}(?:[^a-z0-9]|$)|xxxx|\*\*\*|\.\.\.|…|<|>|"
    r"\{\{|(.)\1{4}|0123456|123456789|abcdefgh")
_EXPANSION = re.compile(r"^\$\{[^}]+\}$|^\$[A-Za-z_][A-Za-z0-9_]*$|^%[A-Za-z_][A-Za-z0-9_]*%$")
_PLACEHOLDER = re.compile(
    r"(?i)^(|x+|\*+|\.+|-+|<[^>]*>|\[[^\]]*\]|\{\{[^}]*\}\}|your[_ -].*|.*[_ -]here|"
    r"changeme|change[_ -]me|placeholder|example|redacted|todo|tbd|none|null|test|secret|"
    r"password|token|api[_-]?key|sk_(?:live|test)_x+|.*xxxx.*)$")
_WEAK_WORD = (r"(?:password|passwd|passw0rd|p@ssw0rd|p@ssword|pa55w0rd|pa55word|pass|pwd|"
              r"secret|s3cr3t|admin|root|postgres|mysql|mongo|redis|test|example|demo|"
              r"sample|changeme|changeit|letmein|qwerty|default|user|guest|welcome|dbpass)")
# Compiled on first use (by ``re``'s own cache): most scans never test a password, and a
# process that compiles every pattern at import pays for it on every run.
_WEAK_PASSWORD = (  # the passwords docs write: "password", "mysecretpassword"
    rf"(?i)^(?:(?:my|the|db|user|some|your|super)[_-]?)?{_WEAK_WORD}(?:[_-]?{_WEAK_WORD})?"
    r"[_-]?\d{0,6}[!.]?$")

_SECRET_WORDS = frozenset({
    "key", "apikey", "token", "secret", "password", "passwd", "pwd", "pass", "passphrase",
    "credential", "credentials", "auth", "authorization", "bearer", "cookie", "sig",
    "signature", "pat", "jwt", "privatekey", "accesstoken", "authtoken", "refreshtoken",
    "clientsecret", "secretkey", "sessiontoken", "xapikey", "keys", "tokens", "secrets",
    "passwords", "apikeys"})
_SECRET_ENDINGS = ("apikey", "token", "secret", "password", "passwd", "accesskey")
_NOT_SECRET_LAST = frozenset({
    "id", "ids", "name", "names", "url", "uri", "urls", "path", "paths", "file", "files",
    "dir", "prefix", "suffix", "header", "type", "limit", "count", "size", "mode",
    "endpoint", "host", "port", "region", "env", "var", "expiry", "expires", "ttl",
    "length", "len", "format", "version", "provider", "method", "scheme", "location",
    "enabled", "required", "date", "at", "time", "timeout", "field", "param", "hint",
    "help", "label", "description", "kind", "policy", "store", "source", "service",
    "username", "user", "max", "min", "index", "status", "algorithm", "alg", "usage",
    "scope", "scopes", "audience", "issuer", "hash", "digest", "checksum", "sha",
    "fingerprint", "thumbprint", "helper", "command", "cmd", "script", "responses",
    "budget", "window", "rotation", "refresh", "lifetime", "strategy", "domain",
    "realm", "tenant", "class", "base64", "encoding"})
_PUBLIC_WORDS = frozenset({"public", "publishable", "pub", "anon"})
_PASSWORD_WORDS = frozenset({"password", "passwd", "pwd", "pass", "passphrase"})
_NAME_SPLIT = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")
_NOT_RANDOM = (  # compiled on first use, as _WEAK_PASSWORD
    r"(?i)^(?:[a-z][a-z0-9+.-]*:|[/~.\\]|[a-z]:\\)"  # URL, scheme reference, path
    r"|^\d{4}-\d\d-\d\d"  # a date or timestamp
    r"|^v?\d+(?:\.\d+)+"  # a version
    r"|^[^@\s]+@[^@\s]+\.[a-z]{2,}$"  # an e-mail address
    r"|^\d+$|^[a-z]+(?:\.[a-z0-9-]+){2,}$")  # digits only; reverse-DNS names
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>`]+")
_WORD_RUN = re.compile(r"[a-z]{4,}|[A-Z]{4,}")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_SCHEME_VALUE = re.compile(r"(?i)^(bearer|token|basic)\s+(.+)$")
_ASSIGNMENT = re.compile(r"^-{0,2}([A-Za-z_][A-Za-z0-9_.-]*)\s*[=:]\s*(.+)$", re.S)
_AWS_SECRET_NAME = re.compile(r"(?i)aws.*secret")
_AWS_SECRET = re.compile(r"[A-Za-z0-9/+=]{40}")
_HINT_WORDS = ("key", "token", "secret", "passw", "pwd", "auth", "credential", "bearer",
               "cookie", "sig", "jwt")
MIN_GENERIC_LENGTH = 16
MIN_PASSWORD_LENGTH = 8
MIN_ENTROPY = 2.5


def entropy(value: str) -> float:
    """Shannon entropy in bits per character."""
    counts = Counter(value)
    return -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())


def is_placeholder(value: str) -> bool:
    """A reference or a stand-in, as written in docs: ``${VAR}``, ``<token>``, ``your-…``."""
    text = value.strip().strip("\"'")
    return bool(_EXPANSION.match(text) or _PLACEHOLDER.match(text) or is_reference(text))


def is_fake(token: str) -> bool:
    """Whether a value in a key's format is a documentation stand-in: it says so (``your``,
    ``here``, ``example``, ``xxxx``, ``<…>``), counts (``0123456``), repeats a character
    five times, or is a value the provider itself publishes."""
    return token in DOCUMENTATION_VALUES or _FAKE_WORDS.search(token) is not None


@lru_cache(maxsize=4096)
def is_secret_name(name: str) -> bool:
    """Whether a variable, header, flag or field name says it holds a secret:
    ``STRIPE_API_KEY``, ``primaryApiKey``, ``X-Auth-Token``, ``--access-token``, ``apikey``
    (not ``KEY_PREFIX``, ``TOKEN_LIMIT``, ``SLACK_TEAM_ID`` or ``tokenizer``)."""
    if "::" in name:
        return False  # a type name (AWS::KMS::Key), not a field
    words = [w.lower() for w in _NAME_SPLIT.split(name) if w]
    if not words or words[-1] in _NOT_SECRET_LAST or _PUBLIC_WORDS.intersection(words):
        return False
    return any(w in _SECRET_WORDS or w.endswith(_SECRET_ENDINGS) for w in words)


def _is_password_name(name: str) -> bool:
    return any(w.lower() in _PASSWORD_WORDS for w in _NAME_SPLIT.split(name))


def looks_random(value: str, *, password: bool = False) -> bool:
    """Whether ``value`` reads as a generated secret rather than a word, name, path, URL,
    date, version or identifier; ``password`` allows shorter, human-made values."""
    if len(value) < (MIN_PASSWORD_LENGTH if password else MIN_GENERIC_LENGTH):
        return False
    if value.startswith(PUBLIC_PREFIXES):
        return False
    if any(c.isspace() for c in value) or re.match(_NOT_RANDOM, value) or is_placeholder(value):
        return False
    if is_fake(value):
        return False
    if password:
        if re.match(_WEAK_PASSWORD, value) is not None or _classes(value) < 2:
            return False
        return not value.isalpha() or _flips_case(value)
    if _UUID.fullmatch(value):
        return True
    if entropy(value) < MIN_ENTROPY:
        return False
    segments = [s for s in re.split(r"[-_./:]", value) if s]
    if len(segments) >= 2 and all(len(s) <= 3 or s.isdigit()
                                  or (s.isalpha() and (s.islower() or s.isupper()))
                                  for s in segments):
        return False  # production-key-2, MY_SERVICE_TOKEN: words, not randomness
    in_words = sum(len(run) for run in _WORD_RUN.findall(value)) / len(value)
    if in_words >= 0.7:
        return False  # DescribeServerlessV2PlatformVersions, production2024key: words
    if not any(c.isalpha() for c in value):
        return False
    if any(c.isdigit() for c in value):
        return True
    return _flips_case(value)


def _flips_case(value: str) -> bool:
    """Letters only: a name (ListCloudFrontOriginAccessIdentities), unless the case flips
    like a generated key's does."""
    in_words = sum(len(run) for run in _WORD_RUN.findall(value)) / len(value)
    return in_words < 0.35 and any(c.islower() for c in value) \
        and any(c.isupper() for c in value)


def _classes(value: str) -> int:
    return sum((any(c.islower() for c in value), any(c.isupper() for c in value),
                any(c.isdigit() for c in value), any(not c.isalnum() for c in value)))


def find_formats(text: str) -> Iterator[tuple[str, str]]:
    """``(kind, token)`` for every real provider key in ``text`` (not a stand-in): keys
    start a run of key characters with a provider's prefix (found with C-speed string
    methods, no whole-text alternation)."""
    data = text.encode("ascii", "replace").translate(_KEY_BYTES)
    for chunk in data.split():
        if len(chunk) < MIN_KEY_LENGTH:
            continue
        piece = chunk.decode("ascii")
        # several keys in one run: "key=sk_live_…", a path, a JWT
        for start in (0, *[m.end() for m in _SEPARATOR.finditer(piece)]):
            if piece.startswith(_PREFIXES, start):
                yield from _formats_at(piece, start)
    for n in _ANYWHERE:
        if any(prefix in text for prefix in PROVIDERS[n][1]):
            for found in _pattern(n).finditer(text):
                yield from _real(PROVIDERS[n][0], found.group(0))


def _formats_at(text: str, start: int) -> Iterator[tuple[str, str]]:
    for prefix, n in _BY_HEAD.get(text[start:start + 2], ()):
        if text.startswith(prefix, start):
            found = _pattern(n).match(text, start)
            if found:
                yield from _real(PROVIDERS[n][0], found.group(0))
                return


def _real(kind: str, token: str) -> Iterator[tuple[str, str]]:
    if kind == "mcp-keys-key":
        from .. import tokens

        if tokens.parse(token) is not None:
            yield kind, token
    elif kind in ("private-key", "slack-webhook") or not is_fake(token):
        yield kind, token


def known_format(value: str) -> str | None:
    """The provider whose key format occurs in ``value`` (a real one, not a stand-in)."""
    return next((kind for kind, _ in find_formats(value)), None)


def url_secret(value: str) -> str | None:
    """A credential carried by a URL in ``value``: a password in the user info, or a key in
    a query parameter named like one."""
    for match in _URL.finditer(value):
        for kind, _, _ in url_credentials(match.group(0), named=True):
            return kind
    return None


def url_credentials(url: str, *, named: bool = False) -> Iterator[tuple[str, str, str]]:
    """``(kind, name, text as written)`` for each credential ``url`` carries, in order: the
    password of its user info (name ``password``), a key format in a path segment (name
    ``""``), a query value that is a key format or, under a secret-sounding name, random.
    ``named``: only the password and the secret-named query values (what makes a URL a
    secret when no key format is in it); ``scan --fix`` takes all, to move the part."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return
    userinfo, at, _ = parts.netloc.rpartition("@")
    if at and ":" in userinfo:
        written = userinfo.split(":", 1)[1]
        password = unquote(written)
        if password and not is_placeholder(password) and not is_fake(password) \
                and re.match(_WEAK_PASSWORD, password) is None:
            yield "url-password", "password", written
    if not named:
        for segment in parts.path.split("/"):
            for kind, token in find_formats(segment):
                yield kind, "", token
    for pair in parts.query.split("&"):
        field, equals, written = pair.partition("=")
        if not equals or not written:
            continue
        name, param = unquote_plus(field), unquote_plus(written)
        secret_name = is_secret_name(name)
        if (named and not secret_name) or is_placeholder(param):
            continue
        found = next(find_formats(written), None)
        if found is not None:
            yield found[0], name, found[1]
        elif (provider := known_format(param)) is not None:
            yield provider, name, written
        elif secret_name and looks_random(param):
            yield "url-secret", name, written


def classify(value: str, name: str = "") -> str | None:
    """The kind of secret ``value`` is, or ``None``. ``name`` is the variable, header, flag
    or field it sits under (it decides whether a random-looking value counts)."""
    if not isinstance(value, str) or len(value) < MIN_PASSWORD_LENGTH or is_placeholder(value):
        return None
    text = value.strip()
    kind = known_format(text)
    if kind:
        return kind
    if "://" in text:
        return url_secret(text)
    scheme = _SCHEME_VALUE.match(text)
    if scheme:
        inner = scheme.group(2).strip()
        if scheme.group(1).lower() == "basic":
            return "basic-auth" if _basic_password(inner) else None
        return "generic-bearer" if looks_random(inner) else None
    assignment = _ASSIGNMENT.match(text)
    if assignment and is_secret_name(assignment.group(1)):
        kind = classify(assignment.group(2), assignment.group(1))
        if kind:
            return kind
    if "=" in text and " " in text:  # a shell line: "export API_KEY=… && npx server"
        for word in text.split():
            name, equals, inner = word.partition("=")
            if equals and is_secret_name(name.lstrip("-")) \
                    and (kind := classify(inner.strip("\"';"), name.lstrip("-"))):
                return kind
    if not name or not is_secret_name(name):
        return None
    if _AWS_SECRET_NAME.search(name) and _AWS_SECRET.fullmatch(text) and not is_fake(text):
        return "aws-secret-access-key"
    if looks_random(text, password=_is_password_name(name)):
        return "generic-secret"
    return None


def _basic_password(encoded: str) -> bool:
    try:
        decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return False
    _, colon, password = decoded.partition(":")
    return bool(colon and password) and not is_placeholder(password) \
        and re.match(_WEAK_PASSWORD, password) is None


def worth_a_look(text: str) -> bool:
    """False when no detector could report anything in ``text`` (no secret-sounding word,
    no key prefix, no URL user info): the file need not be parsed."""
    lower = text.lower()
    if any(word in lower for word in _HINT_WORDS) or ("://" in text and "@" in text):
        return True
    return any(True for _ in find_formats(text))


def may_hold_a_known_format(text: str) -> bool:
    """False when no provider key, mcp-keys key or AWS secret name occurs in ``text``: a
    cheap test that lets a scanner skip a file where only those would count."""
    return any(True for _ in find_formats(text)) or _AWS_SECRET_NAME.search(text) is not None


def mcp_key_ids(value: str) -> list[str]:
    """The IDs of well-formed mcp-keys keys in ``value`` (checksum verified)."""
    from .. import tokens

    return [parsed.key_id for match in tokens.TOKEN_SEARCH.finditer(value)
            if (parsed := tokens.parse(match.group(0))) is not None]


def preview(value: str) -> str:
    """What a finding may show of a secret: its first 4 characters and its length."""
    return f"{value.strip()[:4]}… ({len(value.strip())} chars)"
