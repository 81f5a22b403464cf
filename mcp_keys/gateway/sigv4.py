"""AWS Signature Version 4, as one more auth kind: botocore signs the final request (S3
with its payload-hash header). The query is put into the URL here, encoded once, so what
is signed is exactly what is sent."""

from __future__ import annotations

from ..errors import SecretError
from ..secrets.value import Secret
from .injection import Outgoing


def sign(request: Outgoing, secret: Secret, target: str) -> None:
    """Sign ``request`` in place for ``REGION:SERVICE``; the secret is
    ``ACCESS_KEY_ID:SECRET_ACCESS_KEY``."""
    try:
        from botocore.auth import S3SigV4Auth, SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials
    except ImportError:
        from ..extras import install_hint

        raise SecretError(f"sigv4 signing needs botocore: {install_hint('aws')}") from None
    from urllib.parse import quote, urlencode

    access, sep, key = secret.reveal().partition(":")
    if not sep or not access or not key:
        raise SecretError(f"{secret.reference}: sigv4 needs 'ACCESS_KEY_ID:SECRET_ACCESS_KEY'")
    region, _, service = target.partition(":")
    # The query goes into the URL here, encoded once, so what is signed is what is sent.
    url = request.url + ("?" + urlencode(request.query, quote_via=quote)
                         if request.query else "")
    request.url, request.query = url, []
    aws = AWSRequest(method=request.method, url=url, data=request.body,
                     headers=dict(request.headers))
    signer = S3SigV4Auth if service == "s3" else SigV4Auth  # S3 wants x-amz-content-sha256
    signer(Credentials(access, key), service, region).add_auth(aws)
    request.headers = {k: str(v) for k, v in aws.headers.items()}
