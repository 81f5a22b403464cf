"""One module per source: each reads the secret a reference names, or raises SecretError.

``env``, ``dotenv`` and ``file`` need nothing beyond the core; ``keyring``, ``vault``
(hvac) and ``aws-sm`` (boto3) are optional extras, imported only when a reference uses
them. Messages name the reference and the source's own reason, never a value.
"""

from __future__ import annotations

from importlib import import_module

from ..reference import Reference

MODULES = {"env": ("env", "from_env"), "dotenv": ("dotenvfile", "from_dotenv"),
           "file": ("file", "from_file"), "keyring": ("keyring", "from_keyring"),
           "vault": ("vault", "from_vault"), "aws-sm": ("aws", "from_aws")}


def read(ref: Reference) -> str:
    """The value ``ref`` names (the source's module is imported on first use)."""
    module, function = MODULES[ref.scheme]
    reader = getattr(import_module(f".{module}", __name__), function)
    value: str = reader(ref)
    return value
