"""``aws-sm:NAME[#FIELD]``: AWS Secrets Manager through boto3's standard chain."""

from __future__ import annotations

from typing import Any

from ...errors import SecretError
from ..held import getenv
from ..reference import Reference, missing_extra


def from_aws(ref: Reference) -> str:
    try:
        import boto3
        import botocore.exceptions
    except ImportError:
        raise missing_extra("aws-sm", "boto3") from None
    from botocore.config import Config

    try:
        keys = {"aws_access_key_id": getenv("AWS_ACCESS_KEY_ID"),  # held by run --proxy
                "aws_secret_access_key": getenv("AWS_SECRET_ACCESS_KEY"),
                "aws_session_token": getenv("AWS_SESSION_TOKEN")}
        client = boto3.client("secretsmanager", **keys, config=Config(
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
