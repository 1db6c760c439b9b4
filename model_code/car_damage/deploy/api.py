"""The one door every AWS request of the deploy tool goes through, so ``--dry-run`` can print instead of send.

boto3 is imported lazily (inside :meth:`AwsApi.client`): ``car_damage`` works without the ``aws`` extra, and
``--dry-run`` needs neither credentials nor a network.

Dry-run semantics: nothing is sent. Every call is printed as one JSON line
``{"service": ..., "operation": ..., "params": ...}`` (``operation`` is the boto3 method name); look-ups
(``describe_*``) answer "absent" and existence checks (``head_bucket``) answer "present", i.e. the plan shown is
the one for a fresh account whose buckets exist.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TextIO

logger = logging.getLogger(__name__)

ENV_REGION = ("AWS_REGION", "AWS_DEFAULT_REGION")
ENV_ROLE = "SAGEMAKER_ROLE_ARN"
ROLE_ARN_PATTERN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")
S3_URI_PATTERN = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(?P<key>.*))?$")
#: SageMaker resource names (models, endpoint configs, endpoints, jobs).
SAGEMAKER_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
#: Real-time calls may take the container's full 60 s; botocore's default read timeout is also 60 s.
RUNTIME_READ_TIMEOUT_S = 70


class DeployError(Exception):
    """A problem the user can fix (missing bucket, role, model file...); the CLI prints it without a traceback."""


@dataclass(frozen=True)
class S3Uri:
    bucket: str
    key: str = ""

    @classmethod
    def parse(cls, uri: str, *, what: str = "S3 URI") -> S3Uri:
        match = S3_URI_PATTERN.match(uri or "")
        if not match:
            raise DeployError(f"{what} must look like s3://bucket/key, got {uri!r}")
        return cls(match.group("bucket"), match.group("key") or "")

    def join(self, *parts: str) -> S3Uri:
        key = "/".join(p.strip("/") for p in (self.key, *parts) if p.strip("/"))
        return S3Uri(self.bucket, key)

    def as_prefix(self) -> S3Uri:
        """The same location with exactly one trailing slash (what S3Prefix data sources need)."""
        return S3Uri(self.bucket, self.key.rstrip("/") + "/" if self.key.strip("/") else "")

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def resolve_region(explicit: str | None) -> str:
    """--region, then AWS_REGION / AWS_DEFAULT_REGION, then the profile's region; never a silent default."""
    if explicit:
        return explicit
    for name in ENV_REGION:
        if os.environ.get(name):
            return os.environ[name]
    try:
        import boto3
    except ImportError:
        boto3 = None
    if boto3 is not None:
        region = boto3.session.Session().region_name
        if region:
            return region
    raise DeployError("no AWS region: pass --region, set AWS_REGION, or run `aws configure set region ...`")


def resolve_role(explicit: str | None) -> str:
    """--role, then SAGEMAKER_ROLE_ARN; validated so a typo fails here rather than deep inside SageMaker."""
    role = explicit or os.environ.get(ENV_ROLE)
    if not role:
        raise DeployError(
            f"no SageMaker execution role: pass --role arn:aws:iam::<account>:role/<name> or set {ENV_ROLE}"
        )
    if not ROLE_ARN_PATTERN.match(role):
        raise DeployError(f"not an IAM role ARN: {role!r} (expected arn:aws:iam::<12 digits>:role/<name>)")
    return role


def check_name(name: str, what: str) -> str:
    if not SAGEMAKER_NAME_PATTERN.match(name or ""):
        raise DeployError(
            f"{what} {name!r} is not a valid SageMaker name (1-63 letters, digits and hyphens, "
            "starting with a letter or digit)"
        )
    return name


def _client_error_code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code"))
    return None


def client_error_message(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error", {})
        return f"{error.get('Code')}: {error.get('Message')}"
    return str(exc)


@dataclass
class AwsApi:
    """Creates boto3 clients on first use and sends (or, in dry-run, prints) every call."""

    region: str
    endpoint_url: str | None = None
    dry_run: bool = False
    out: TextIO = field(default_factory=lambda: sys.stdout)
    _clients: dict[str, Any] = field(default_factory=dict, repr=False)

    def client(self, service: str) -> Any:
        if service not in self._clients:
            try:
                import boto3
                from botocore.config import Config
            except ImportError as exc:
                raise DeployError(
                    "boto3 is not installed: pip install 'car-damage-maskrcnn[aws]' (or pip install boto3)"
                ) from exc
            config = Config(
                read_timeout=RUNTIME_READ_TIMEOUT_S, retries={"max_attempts": 5, "mode": "standard"}
            )
            self._clients[service] = boto3.client(
                service, region_name=self.region, endpoint_url=self.endpoint_url, config=config
            )
        return self._clients[service]

    def use_client(self, service: str, client: Any) -> None:
        """Route ``service`` through a client made elsewhere (invoke's local-container client)."""
        self._clients[service] = client

    def _print_call(self, service: str, operation: str, params: dict[str, Any]) -> None:
        line = {"service": service, "operation": operation, "params": params}
        self.out.write(json.dumps(line, sort_keys=True, default=str) + "\n")
        self.out.flush()

    def call(self, service: str, operation: str, **params: Any) -> dict[str, Any]:
        """Send one request (boto3 method ``operation``); dry-run prints it and returns {}."""
        if self.dry_run:
            self._print_call(service, operation, params)
            return {}
        logger.debug("%s.%s %s", service, operation, params)
        method = getattr(self.client(service), operation)
        try:
            result = method(**params)
        except Exception as exc:
            if type(exc).__name__ in ("NoCredentialsError", "PartialCredentialsError"):
                raise DeployError(
                    "no AWS credentials found: configure a profile (aws configure), set AWS_PROFILE, "
                    "or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
                ) from exc
            if type(exc).__name__ == "EndpointConnectionError":
                raise DeployError(f"cannot reach the {service} API: {exc}") from exc
            raise
        return result if isinstance(result, dict) else {}

    def lookup(
        self, service: str, operation: str, *, missing: Iterable[str], **params: Any
    ) -> dict[str, Any] | None:
        """A describe/get call that answers None when the error says "not found" (codes or message parts in
        ``missing``). Dry-run prints it and answers None: the plan assumes nothing exists yet."""
        if self.dry_run:
            self._print_call(service, operation, params)
            return None
        markers = tuple(missing)
        try:
            return self.call(service, operation, **params)
        except DeployError:
            raise
        except Exception as exc:
            code = _client_error_code(exc)
            if code is None:
                raise
            text = client_error_message(exc)
            if code in markers or any(marker in text for marker in markers):
                return None
            raise

    def require_bucket(self, bucket: str, purpose: str) -> None:
        """A clear error for a missing or forbidden bucket, before any upload or job refers to it."""
        try:
            self.call("s3", "head_bucket", Bucket=bucket)
        except DeployError:
            raise
        except Exception as exc:
            code = _client_error_code(exc)
            if code in ("404", "NoSuchBucket", "NotFound"):
                raise DeployError(
                    f"S3 bucket {bucket!r} ({purpose}) does not exist in this account/region; "
                    f"create it first: aws s3 mb s3://{bucket} --region {self.region}"
                ) from exc
            if code in ("403", "AccessDenied", "Forbidden"):
                raise DeployError(f"S3 bucket {bucket!r} ({purpose}): access denied") from exc
            raise

    def require_s3_prefix(self, uri: S3Uri, purpose: str) -> int:
        """The bucket exists and at least one object lies under ``uri``; returns how many (first page)."""
        self.require_bucket(uri.bucket, purpose)
        listing = self.call("s3", "list_objects_v2", Bucket=uri.bucket, Prefix=uri.key, MaxKeys=1000)
        if self.dry_run:
            return 0
        count = int(listing.get("KeyCount", 0))
        if count == 0:
            raise DeployError(f"nothing in S3 under {uri} ({purpose})")
        return count
