"""``vault:MOUNT/PATH#FIELD``: HashiCorp Vault KV v2 through hvac (token or AppRole,
namespaces); also the write ``scan --fix --to vault:`` needs."""

from __future__ import annotations

from typing import Any

from ...errors import SecretError
from ..held import getenv
from ..reference import Reference, missing_extra


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
    address = getenv("VAULT_ADDR")
    if not address:
        raise SecretError(f"vault: {where}: VAULT_ADDR is not set")
    return hvac.Client(url=address, token=getenv("VAULT_TOKEN"),
                       namespace=getenv("VAULT_NAMESPACE") or None, timeout=10)


def from_vault(ref: Reference) -> str:
    mount, path = vault_path(ref)
    where = f"{mount}/data/{path}"
    client = vault_client(where)
    import hvac.exceptions

    try:
        role_id, secret_id = getenv("VAULT_ROLE_ID"), getenv("VAULT_SECRET_ID")
        if not getenv("VAULT_TOKEN") and role_id and secret_id:
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


def write(mount: str, path: str, field: str, value: str) -> None:
    """Set ``field`` in ``mount/data/path``, keeping the secret's other fields."""
    client = vault_client(f"{mount}/data/{path}")
    import hvac.exceptions

    try:
        try:
            current = client.secrets.kv.v2.read_secret_version(
                path=path, mount_point=mount, raise_on_deleted_version=True)["data"]["data"]
        except hvac.exceptions.InvalidPath:
            current = {}
        client.secrets.kv.v2.create_or_update_secret(
            path=path, mount_point=mount, secret={**current, field: value})
    except hvac.exceptions.VaultError as exc:
        raise SecretError(f"vault: {mount}/data/{path}: {type(exc).__name__}") from None
