"""One function per source: read the secret a reference names, or raise SecretError.

env, dotenv and file need nothing beyond the core; keyring, vault (hvac) and aws-sm
(boto3) are optional extras imported only when a reference uses them. Messages name the
reference and the source's own reason ("vault: secret/data/stripe not found",
"aws-sm: AccessDeniedException"), never a value.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable

from ..errors import SecretError
from .reference import Reference, missing_extra

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: `mcp-keys run` must not import typing
if TYPE_CHECKING:
    from typing import Any


def from_env(ref: Reference) -> str:
    value = os.environ.get(ref.target)
    if value is None:
        raise SecretError(f"env: {ref.target} is not set")
    return value


def from_dotenv(ref: Reference) -> str:
    from dotenv import dotenv_values

    from ..safefs import read_regular

    try:
        found = read_regular(ref.target)
    except OSError as exc:
        raise SecretError(f"dotenv: cannot read {ref.target}: {exc.strerror}") from None
    if found is None:
        raise SecretError(f"dotenv: {ref.target} does not exist")
    import io

    values = dotenv_values(stream=io.StringIO(found[0].decode("utf-8", "replace")),
                           interpolate=False)
    value = values.get(ref.field or "")
    if value is None:
        raise SecretError(f"dotenv: {ref.field} is not set in {ref.target}")
    return value


def from_file(ref: Reference) -> str:
    from ..safefs import read_regular

    try:
        found = read_regular(ref.target, limit=1024 * 1024)
    except OSError as exc:
        raise SecretError(f"file: cannot read {ref.target}: {exc.strerror}") from None
    except Exception as exc:
        raise SecretError(f"file: {exc}") from None
    if found is None:
        raise SecretError(f"file: {ref.target} does not exist")
    data, info = found
    if stat.S_IMODE(info.st_mode) & 0o077:
        raise SecretError(f"file: {ref.target} is readable by group or others (mode "
                          f"{stat.S_IMODE(info.st_mode):04o}); run: chmod 600 {ref.target}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretError(f"file: {ref.target} is not UTF-8 text") from None
    return text[:-1] if text.endswith("\n") else text


def from_keyring(ref: Reference) -> str:
    try:
        import keyring
        import keyring.errors
    except ImportError:
        raise missing_extra("keyring", "keyring") from None
    service, _, user = ref.target.rpartition("/")
    try:
        value = keyring.get_password(service, user)
    except keyring.errors.KeyringError as exc:
        raise SecretError(f"keyring: {service}/{user}: {type(exc).__name__}: {exc}") from None
    if value is None:
        raise SecretError(f"keyring: no entry for service {service!r}, user {user!r}")
    return value


def vault_path(ref: Reference) -> tuple[str, str]:
    """``(mount, path)`` of a KV v2 reference; ``MOUNT/data/PATH`` and ``MOUNT/PATH`` are
    the same secret."""
    mount, _, path = ref.target.partition("/")
    if path.startswith("data/"):
        path = path[len("data/"):]
    return mount, path


def vault_client(where: str) -> Any:
    """An hvac client from ``VAULT_ADDR``, ``VAULT_TOKEN`` and ``VAULT_NAMESPACE``."""
    try:
        import hvac
    except ImportError:
        raise missing_extra("vault", "hvac") from None
    address = os.environ.get("VAULT_ADDR")
    if not address:
        raise SecretError(f"vault: {where}: VAULT_ADDR is not set")
    return hvac.Client(url=address, token=os.environ.get("VAULT_TOKEN"),
                       namespace=os.environ.get("VAULT_NAMESPACE") or None, timeout=10)


def from_vault(ref: Reference) -> str:
    mount, path = vault_path(ref)
    where = f"{mount}/data/{path}"
    client = vault_client(where)
    import hvac.exceptions

    try:
        role_id, secret_id = os.environ.get("VAULT_ROLE_ID"), os.environ.get("VAULT_SECRET_ID")
        if not os.environ.get("VAULT_TOKEN") and role_id and secret_id:
            client.auth.approle.login(role_id=role_id, secret_id=secret_id)
        answer = client.secrets.kv.v2.read_secret_version(
            path=path, mount_point=mount, raise_on_deleted_version=True)
    except hvac.exceptions.InvalidPath:
        raise SecretError(f"vault: {where} not found") from None
    except hvac.exceptions.Forbidden:
        raise SecretError(f"vault: {where}: permission denied (check the token's policy)"
                          ) from None
    except hvac.exceptions.VaultError as exc:
        raise SecretError(f"vault: {where}: {type(exc).__name__}") from None
    except Exception as exc:  # connection errors and the like
        raise SecretError(f"vault: {where}: {type(exc).__name__}") from None
    data = (answer or {}).get("data", {}).get("data", {})
    value = data.get(ref.field) if isinstance(data, dict) else None
    if not isinstance(value, str):
        raise SecretError(f"vault: {where} has no text field {ref.field!r}")
    return value


def from_aws(ref: Reference) -> str:
    try:
        import boto3
        import botocore.exceptions
    except ImportError:
        raise missing_extra("aws-sm", "boto3") from None
    from botocore.config import Config

    try:
        client = boto3.client("secretsmanager", config=Config(
            connect_timeout=5, read_timeout=10, retries={"max_attempts": 2}))
        answer = client.get_secret_value(SecretId=ref.target)
    except botocore.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "ClientError")
        raise SecretError(f"aws-sm: {ref.target}: {code}") from None
    except botocore.exceptions.BotoCoreError as exc:
        raise SecretError(f"aws-sm: {ref.target}: {type(exc).__name__}") from None
    import json

    text = answer.get("SecretString")
    if not isinstance(text, str):
        raise SecretError(f"aws-sm: {ref.target} holds no SecretString")
    if ref.field is None:
        return text
    try:
        data: Any = json.loads(text)
    except ValueError:
        raise SecretError(f"aws-sm: {ref.target} is not JSON, so it has no field "
                          f"{ref.field!r}") from None
    value = data.get(ref.field) if isinstance(data, dict) else None
    if not isinstance(value, str):
        raise SecretError(f"aws-sm: {ref.target} has no text field {ref.field!r}")
    return value


READERS: dict[str, Callable[[Reference], str]] = {
    "env": from_env, "dotenv": from_dotenv, "file": from_file, "keyring": from_keyring,
    "vault": from_vault, "aws-sm": from_aws,
}
