"""``create-endpoint``, ``update-endpoint`` (blue/green) and ``delete-endpoint``, plus the InService waiter.

A real-time endpoint is three resources: a model (image + model data + role), an endpoint config (instance
type/count, GPU AMI, timeouts, optional async output) and the endpoint. An update makes a new model and config
(content-named, see ``resources``) and calls ``update_endpoint``: SageMaker starts the new fleet, shifts traffic
once it passes health checks and only then stops the old one; a failed update rolls back, and the waiter
reports the ``FailureReason``.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from car_damage.deploy.api import AwsApi, DeployError, S3Uri, check_name, resolve_role
from car_damage.deploy.resources import (
    DEFAULT_GPU_INSTANCE,
    DEFAULT_INFERENCE_AMI,
    DEFAULT_VARIANT,
    NOT_FOUND,
    ModelData,
    ami_for,
    async_config,
    container_definition,
    content_name,
    endpoint_config_definition,
    ensure_endpoint_config,
    ensure_model,
    model_name,
    parse_env,
    production_variant,
)
from car_damage.deploy.serverless import PAYLOAD_LIMIT_MB, check_image, check_request, serverless_variant

logger = logging.getLogger(__name__)

FAILED_STATUSES = frozenset({"Failed", "UpdateRollbackFailed", "OutOfService"})
DEFAULT_POLL_S = 30.0
DEFAULT_WAIT_TIMEOUT_S = 3600.0
DEFAULT_STARTUP_TIMEOUT_S = 600  # TF import + weights load + warm-up inference on a cold GPU instance
DEFAULT_DOWNLOAD_TIMEOUT_S = 600


def wait_for_endpoint(
    describe: Callable[[], dict[str, Any]],
    expected_config: str,
    *,
    poll_s: float = DEFAULT_POLL_S,
    timeout_s: float = DEFAULT_WAIT_TIMEOUT_S,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    progress: Callable[[str], None] = logger.info,
) -> dict[str, Any]:
    """Poll until the endpoint serves ``expected_config`` InService; DeployError with FailureReason otherwise.

    An update that fails rolls back: the endpoint returns to InService on the *old* config with a
    FailureReason, which counts as a failure here, not a success.
    """
    start = clock()
    last_status = None
    transitioned = False  # a FailureReason seen before any Updating/RollingBack may be from an older update
    while True:
        description = describe()
        status = description.get("EndpointStatus", "?")
        config = description.get("EndpointConfigName")
        reason = description.get("FailureReason")
        elapsed = clock() - start
        if status != last_status:
            progress(f"endpoint {description.get('EndpointName', '')}: {status} ({elapsed:.0f} s)")
            last_status = status
        if status in FAILED_STATUSES:
            raise DeployError(f"endpoint is {status}: {reason or 'no FailureReason given'} (see CloudWatch logs)")
        if status == "InService":
            if config == expected_config:
                return description
            if reason and transitioned:
                raise DeployError(f"update rolled back to {config}: {reason}")
        else:
            transitioned = True
        if elapsed >= timeout_s:
            raise DeployError(f"endpoint still {status} after {elapsed:.0f} s; it keeps going, check the console")
        sleep(poll_s)


def describe_endpoint(api: AwsApi, name: str) -> dict[str, Any] | None:
    return api.lookup("sagemaker", "describe_endpoint", missing=NOT_FOUND, EndpointName=name)


@dataclass
class EndpointPlan:
    """Everything create/update will ask for, computed before any call (names are content hashes)."""

    endpoint: str
    role: str
    model_data: ModelData | None
    container: dict[str, Any]
    model: str
    config: str
    config_definition: dict[str, Any]
    async_output: S3Uri | None
    serverless: bool = False

    def apply(self, api: AwsApi) -> dict[str, Any]:
        """Check the S3 inputs (and a serverless image's size), then create the model and endpoint config unless
        they exist already."""
        if self.serverless:
            check_image(api, self.container["Image"])
        if self.model_data is not None:
            self.model_data.verify(api)
        if self.async_output is not None:
            api.require_bucket(self.async_output.bucket, "async output")
        model_created = ensure_model(api, self.model, self.role, self.container)
        config_created = ensure_endpoint_config(api, self.config, self.config_definition)
        return {"endpoint": self.endpoint, "model": self.model, "endpoint_config": self.config,
                "model_created": model_created, "config_created": config_created}


def plan_endpoint(args: argparse.Namespace) -> EndpointPlan:
    name = check_name(args.name, "endpoint name")
    serverless = check_request(args) if args.serverless else None
    role = resolve_role(args.role)
    model_data = ModelData.parse(args.model_data) if args.model_data else None
    env = parse_env(args.env)
    if serverless is not None:
        # Serverless: 4 MB requests (nginx answers 413 above that itself) and one model copy in its memory.
        env = {"MAX_BODY_MB": str(PAYLOAD_LIMIT_MB), "MODEL_SERVER_WORKERS": "1", **env}
    container = container_definition(args.image, model_data, env)
    async_inference = async_config(
        args.async_output, args.async_failure_path, args.sns_success, args.sns_error, args.max_concurrent_invocations
    )
    model = model_name(name, role, container)
    if serverless is not None:
        variant = serverless_variant(model, serverless, DEFAULT_VARIANT)
    else:
        instance_type = args.instance_type or DEFAULT_GPU_INSTANCE
        variant = production_variant(
            model,
            instance_type,
            args.instance_count,
            ami=ami_for(instance_type, args.ami_version, DEFAULT_INFERENCE_AMI),
            startup_timeout_s=args.startup_timeout,
            download_timeout_s=args.download_timeout,
            volume_gb=args.volume_size,
        )
    definition = endpoint_config_definition(variant, async_inference)
    return EndpointPlan(
        endpoint=name, role=role, model_data=model_data, container=container, model=model,
        config=content_name(name, definition), config_definition=definition,
        async_output=S3Uri.parse(args.async_output) if args.async_output else None, serverless=serverless is not None,
    )


def _finish(args: argparse.Namespace, api: AwsApi, summary: dict[str, Any]) -> dict[str, Any]:
    if api.dry_run or args.no_wait:
        summary["status"] = "not waited for"
        return summary
    final = wait_for_endpoint(
        lambda: api.call("sagemaker", "describe_endpoint", EndpointName=summary["endpoint"]),
        summary["endpoint_config"],
        poll_s=args.poll_interval,
        timeout_s=args.wait_timeout,
    )
    summary["status"] = final.get("EndpointStatus")
    return summary


def run_create(args: argparse.Namespace, api: AwsApi) -> dict[str, Any]:
    plan = plan_endpoint(args)
    existing = describe_endpoint(api, plan.endpoint)
    if existing is not None:
        if existing.get("EndpointConfigName") != plan.config:
            raise DeployError(
                f"endpoint {plan.endpoint} already exists on config {existing.get('EndpointConfigName')}; "
                "use update-endpoint to move it to the new one"
            )
        if existing.get("EndpointStatus") == "Failed":
            raise DeployError(
                f"endpoint {plan.endpoint} exists and is Failed ({existing.get('FailureReason')}); "
                "delete-endpoint it, then create it again"
            )
    summary = plan.apply(api)
    if existing is None:
        api.call("sagemaker", "create_endpoint", EndpointName=plan.endpoint, EndpointConfigName=plan.config)
        summary["action"] = "created"
    else:
        summary["action"] = "unchanged (already on this config)"
    return _finish(args, api, summary)


def _delete_config_and_models(api: AwsApi, config_name: str, keep_models: set[str], delete_models: bool) -> list[str]:
    deleted = []
    config = api.lookup("sagemaker", "describe_endpoint_config", missing=NOT_FOUND, EndpointConfigName=config_name)
    if config is None:
        return deleted
    api.call("sagemaker", "delete_endpoint_config", EndpointConfigName=config_name)
    deleted.append(config_name)
    if delete_models:
        for variant in config.get("ProductionVariants", []):
            model = variant.get("ModelName")
            if model and model not in keep_models:
                if api.lookup("sagemaker", "describe_model", missing=NOT_FOUND, ModelName=model) is not None:
                    api.call("sagemaker", "delete_model", ModelName=model)
                    deleted.append(model)
    return deleted


def run_update(args: argparse.Namespace, api: AwsApi) -> dict[str, Any]:
    plan = plan_endpoint(args)
    existing = describe_endpoint(api, plan.endpoint)
    if existing is None and not api.dry_run:
        raise DeployError(f"endpoint {plan.endpoint} does not exist; use create-endpoint first")
    summary = plan.apply(api)
    old_config = (existing or {}).get("EndpointConfigName")
    if old_config == plan.config:
        summary["action"] = "unchanged (already on this config)"
        return summary
    api.call("sagemaker", "update_endpoint", EndpointName=plan.endpoint, EndpointConfigName=plan.config)
    summary["action"] = "updated"
    summary["previous_config"] = old_config
    summary = _finish(args, api, summary)
    if args.delete_old and old_config and summary.get("status") == "InService":
        summary["deleted"] = _delete_config_and_models(api, old_config, {plan.model}, delete_models=True)
    return summary


def run_delete(args: argparse.Namespace, api: AwsApi) -> dict[str, Any]:
    name = check_name(args.name, "endpoint name")
    existing = describe_endpoint(api, name)
    if existing is None and not api.dry_run:
        return {"endpoint": name, "action": "nothing to delete (no such endpoint)"}
    config_name = (existing or {}).get("EndpointConfigName", f"<config of {name}>")
    api.call("sagemaker", "delete_endpoint", EndpointName=name)
    deleted = [name]
    if not api.dry_run and not args.no_wait:
        start = time.monotonic()
        while describe_endpoint(api, name) is not None:
            if time.monotonic() - start > args.wait_timeout:
                raise DeployError(f"endpoint {name} still deleting after {args.wait_timeout:.0f} s")
            time.sleep(args.poll_interval)
    if not args.keep_config:
        deleted += _delete_config_and_models(api, config_name, set(), delete_models=not args.keep_model)
    return {"endpoint": name, "action": "deleted", "deleted": deleted}


def _add_wait_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-wait", action="store_true", help="return right after the API call")
    parser.add_argument("--poll-interval", type=float, default=DEFAULT_POLL_S, help="seconds between status checks")
    parser.add_argument("--wait-timeout", type=float, default=DEFAULT_WAIT_TIMEOUT_S, help="give up waiting after")


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", required=True, help="endpoint name (also the prefix of the model/config names)")
    parser.add_argument("--image", required=True, help="ECR image URI with tag (build_and_push.sh prints it)")
    parser.add_argument("--model-data", help="s3://.../model.tar.gz, or an s3://.../prefix/ (uncompressed)")
    parser.add_argument("--role", help="SageMaker execution role ARN (default: $SAGEMAKER_ROLE_ARN)")
    parser.add_argument("--instance-type", help=f"default {DEFAULT_GPU_INSTANCE}")
    parser.add_argument("--instance-count", type=int, default=1)
    parser.add_argument("--serverless", action="store_true",
                        help="a Serverless Inference endpoint (CPU image, no instances); needs the two below")
    parser.add_argument("--memory", type=int, metavar="MB", help="serverless memory: 1024..6144 in 1024 steps")
    parser.add_argument("--max-concurrency", type=int, metavar="N", help="serverless concurrent requests: 1..200")
    parser.add_argument("--ami-version", help=f"InferenceAmiVersion; default {DEFAULT_INFERENCE_AMI} on GPU "
                        "instances (driver 550, runs TF 2.21's CUDA 12.5), 'none' to leave SageMaker's default")
    parser.add_argument("--startup-timeout", type=int, default=DEFAULT_STARTUP_TIMEOUT_S,
                        help="ContainerStartupHealthCheckTimeoutInSeconds (60-3600)")
    parser.add_argument("--download-timeout", type=int, default=DEFAULT_DOWNLOAD_TIMEOUT_S,
                        help="ModelDataDownloadTimeoutInSeconds (60-3600)")
    parser.add_argument("--volume-size", type=int, help="VolumeSizeInGB (only for instances without local disk)")
    parser.add_argument("--env", action="append", metavar="KEY=VALUE", help="container environment (repeatable)")
    parser.add_argument("--async-output", help="s3:// path: makes an asynchronous endpoint writing results there")
    parser.add_argument("--async-failure-path", help="s3:// path for failed async requests")
    parser.add_argument("--sns-success", help="SNS topic ARN notified on async success")
    parser.add_argument("--sns-error", help="SNS topic ARN notified on async failure")
    parser.add_argument("--max-concurrent-invocations", type=int, default=1,
                        help="async requests per instance (1 = one GPU inference at a time)")
    _add_wait_options(parser)


def add_parsers(subparsers: Any) -> None:
    create = subparsers.add_parser("create-endpoint", help="model + endpoint config + endpoint, wait for InService")
    _add_model_options(create)
    create.set_defaults(handler=run_create)

    update = subparsers.add_parser("update-endpoint", help="new model/config, then blue/green update_endpoint")
    _add_model_options(update)
    update.add_argument("--delete-old", action="store_true", help="after success, delete the old config and model")
    update.set_defaults(handler=run_update)

    delete = subparsers.add_parser("delete-endpoint", help="delete the endpoint, then its config and model(s)")
    delete.add_argument("--name", required=True)
    delete.add_argument("--keep-config", action="store_true", help="keep the endpoint config (and its models)")
    delete.add_argument("--keep-model", action="store_true", help="keep the model(s)")
    _add_wait_options(delete)
    delete.set_defaults(handler=run_delete)
