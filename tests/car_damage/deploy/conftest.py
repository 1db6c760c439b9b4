"""A real moto server (``moto.server.ThreadedMotoServer``) on a free localhost port, reset before each test.

The deploy tool talks to it over real HTTP through boto3 (``--endpoint-url``), exactly as it would to AWS;
nothing is patched in-process. Credentials are fake, the region is us-east-1.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from deploy_testlib import REGION, free_port

pytest.importorskip("boto3")
pytest.importorskip("moto.server")


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        return json.loads(self.out)

    @property
    def calls(self) -> list[dict[str, Any]]:
        """--dry-run output: one JSON object per line."""
        return [json.loads(line) for line in self.out.splitlines() if line.strip()]


class Aws:
    """boto3 clients on the moto server plus a runner for the deploy CLI (in-process, real HTTP)."""

    def __init__(self, url: str, capsys: pytest.CaptureFixture[str]) -> None:
        import boto3

        self.url = url
        self._capsys = capsys
        self.s3 = boto3.client("s3", region_name=REGION, endpoint_url=url)
        self.sagemaker = boto3.client("sagemaker", region_name=REGION, endpoint_url=url)
        self.autoscaling = boto3.client("application-autoscaling", region_name=REGION, endpoint_url=url)

    def run(self, *args: str, region: bool = True, endpoint: bool = True) -> CliResult:
        from car_damage.deploy.cli import main

        prefix = (["--region", REGION] if region else []) + (["--endpoint-url", self.url] if endpoint else [])
        self._capsys.readouterr()
        code = main([*prefix, *args])
        captured = self._capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    def bucket(self, name: str) -> str:
        self.s3.create_bucket(Bucket=name)
        return name

    def put(self, bucket: str, key: str, data: bytes = b"x") -> str:
        self.s3.put_object(Bucket=bucket, Key=key, Body=data)
        return f"s3://{bucket}/{key}"


@pytest.fixture
def aws(moto_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Aws:
    import requests

    for name in ("AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "SAGEMAKER_ROLE_ARN", "AWS_ENDPOINT_URL",
                 "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    requests.post(f"{moto_url}/moto-api/reset", timeout=10).raise_for_status()
    return Aws(moto_url, capsys)
