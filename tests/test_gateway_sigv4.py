"""AWS SigV4 as one more auth kind: botocore signs, a real moto server (with IAM-style
signature checking on) verifies; the agent never sees the access key."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mcp_keys.gateway.proxy import Caller, Gateway, GatewayRequest
from mcp_keys.gateway.services import ServiceConfig
from tests.conftest import FileKeys, accepting, assert_absent, free_port, wait_for

boto3 = pytest.importorskip("boto3")
pytest.importorskip("moto")
CALLER = Caller("abcdefghijkl", frozenset({"gateway:s3"}))


@pytest.fixture(scope="module")
def moto() -> Iterator[dict[str, str]]:
    port = free_port()
    # The first 3 requests are not checked (to create the IAM user, key and policy);
    # every later request must carry a valid signature.
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="3")
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-p", str(port)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: accepting(port) or process.poll() is not None, 30, "moto's server")
        assert process.poll() is None, "moto's server exited"
        url = f"http://127.0.0.1:{port}"
        iam = boto3.client("iam", endpoint_url=url, region_name="us-east-1",
                           aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
        iam.create_user(UserName="gateway")
        key = iam.create_access_key(UserName="gateway")["AccessKey"]
        iam.put_user_policy(UserName="gateway", PolicyName="all", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                          aws_access_key_id=key["AccessKeyId"],
                          aws_secret_access_key=key["SecretAccessKey"])
        s3.create_bucket(Bucket="gateway-test")
        s3.put_object(Bucket="gateway-test", Key="a b.txt", Body=b"hello")
        yield {"url": url, "id": key["AccessKeyId"], "secret": key["SecretAccessKey"]}
    finally:
        process.terminate()
        process.wait(10)


def gateway(tmp_path: Path, moto: dict[str, str], manager: FileKeys) -> Gateway:
    path = tmp_path / "services.toml"
    path.write_text(f'[services.s3]\nbase_url = "{moto["url"]}"\nauth = "sigv4:us-east-1:s3"\n'
                    'secret = "env:AWS_PAIR"\nallow = ["GET /**"]\n')
    path.chmod(0o600)
    manager.init()
    return Gateway(ServiceConfig(path), audit=manager.audit)


def call(gw: Gateway, **request: Any) -> Any:
    async def go() -> Any:
        try:
            return await gw.execute(CALLER, GatewayRequest("s3", "GET", **request))
        finally:
            await gw.aclose()

    return asyncio.run(go())


def test_sigv4_requests_are_accepted_by_moto(tmp_path: Path, moto: dict[str, str],
                                             manager: FileKeys,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_PAIR", f"{moto['id']}:{moto['secret']}")
    gw = gateway(tmp_path, moto, manager)
    listed = call(gw, path="/")
    assert listed.status == 200 and "gateway-test" in listed.body, listed.body[:300]
    queried = call(gw, path="/gateway-test", query={"list-type": "2", "prefix": "a b"})
    assert queried.status == 200 and "a b.txt" in queried.body, queried.body[:300]
    for response in (listed, queried):
        text = json.dumps(response.to_dict())
        assert_absent(moto["secret"], text, "a SigV4 response")
        assert_absent(moto["id"], text, "a SigV4 response")


def test_a_wrong_secret_is_refused_by_moto(tmp_path: Path, moto: dict[str, str],
                                           manager: FileKeys,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_PAIR", f"{moto['id']}:not-the-secret-key")
    response = call(gateway(tmp_path, moto, manager), path="/")
    assert response.status == 403 and "SignatureDoesNotMatch" in response.body
