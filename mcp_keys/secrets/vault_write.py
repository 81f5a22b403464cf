"""Writing one field into a Vault KV v2 secret (``scan --fix --to vault:...``)."""

from __future__ import annotations

from ..errors import SecretError
from .sources import vault_client


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
