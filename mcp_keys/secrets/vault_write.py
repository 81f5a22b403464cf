"""Writing one field into a Vault KV v2 secret (``scan --fix --to vault:...``)."""

from __future__ import annotations

import os

from ..errors import SecretError
from .reference import missing_extra


def write(mount: str, path: str, field: str, value: str) -> None:
    """Set ``field`` in ``mount/data/path``, keeping the secret's other fields."""
    try:
        import hvac
        import hvac.exceptions
    except ImportError:
        raise missing_extra("vault", "hvac") from None
    address = os.environ.get("VAULT_ADDR")
    if not address:
        raise SecretError(f"vault: {mount}/data/{path}: VAULT_ADDR is not set")
    client = hvac.Client(url=address, token=os.environ.get("VAULT_TOKEN"),
                         namespace=os.environ.get("VAULT_NAMESPACE") or None, timeout=10)
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
