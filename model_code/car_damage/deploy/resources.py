"""SageMaker models and endpoint configs, named by a hash of their content so re-runs are idempotent.

``create_model`` and ``create_endpoint_config`` are immutable in SageMaker: a name can hold one definition only.
Naming each one ``<base>-<10 hex of the SHA-256 of its definition>`` means the same command run twice finds
the resource it made the first time (and reuses it), while any change (image, model data, instance type,
timeouts...) gets a new name, which is exactly what a blue/green ``update_endpoint`` needs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from typing import Any

from car_damage.deploy.api import AwsApi, DeployError, S3Uri, check_name

logger = logging.getLogger(__name__)

DEFAULT_VARIANT = "AllTraffic"
#: SageMaker's default driver on g4dn/g5 is 470 (CUDA 11.4); TF 2.21 wheels need CUDA 12.5, which runs on any
#: driver >= 525 through CUDA minor-version compatibility. This AMI brings driver 550 (CUDA 12.4).
DEFAULT_INFERENCE_AMI = "al2-ami-sagemaker-inference-gpu-3-1"
#: Batch Transform's own AMI knob (TransformResources.TransformAmiVersion); 535 >= 525 as above.
DEFAULT_BATCH_AMI = "al2-ami-sagemaker-batch-gpu-535"
DEFAULT_GPU_INSTANCE = "ml.g5.xlarge"
#: NVIDIA GPU families (ml.g4dn, ml.g5, ml.g6, ml.g6e, ml.p3, ml.p4d, ml.p5...); g4ad is AMD and gets no AMI.
GPU_INSTANCE_PATTERN = re.compile(r"^ml\.(?!g4ad\.)(g\d+[a-z]*|p\d+[a-z]*)\.")
HASH_CHARS = 10
#: SageMaker answers a describe_* of a missing resource with ValidationException "Could not find ..." (or, for
#: some jobs, "Requested resource not found"); matching the message keeps other validation errors loud.
NOT_FOUND = ("Could not find", "not found", "ResourceNotFound")


#: GPUs per SageMaker instance type (AWS's published sizes), for the training job's gpu_count hyperparameter.
#: A type not listed gets no hyperparameter: the job then counts the GPUs it sees at run time.
INSTANCE_GPU_COUNT: dict[str, int] = {
    **{f"ml.{family}.{size}": 1 for family in ("g4dn", "g5", "g6", "g6e")
       for size in ("xlarge", "2xlarge", "4xlarge", "8xlarge", "16xlarge")},
    "ml.g4dn.12xlarge": 4, "ml.g5.12xlarge": 4, "ml.g5.24xlarge": 4, "ml.g5.48xlarge": 8,
    "ml.g6.12xlarge": 4, "ml.g6.24xlarge": 4, "ml.g6.48xlarge": 8,
    "ml.g6e.12xlarge": 4, "ml.g6e.24xlarge": 4, "ml.g6e.48xlarge": 8,
    "ml.p3.2xlarge": 1, "ml.p3.8xlarge": 4, "ml.p3.16xlarge": 8, "ml.p3dn.24xlarge": 8,
    "ml.p4d.24xlarge": 8, "ml.p4de.24xlarge": 8, "ml.p5.48xlarge": 8, "ml.p5e.48xlarge": 8,
    "ml.p5en.48xlarge": 8,
}


def is_gpu_instance(instance_type: str) -> bool:
    return bool(GPU_INSTANCE_PATTERN.match(instance_type))


def ami_for(instance_type: str, requested: str | None, default: str) -> str | None:
    """The AMI version to request: explicit, else ``default`` on GPU instances; ``none`` or CPU -> None."""
    if requested is not None:
        return None if requested.lower() == "none" else requested
    return default if is_gpu_instance(instance_type) else None


def content_name(base: str, definition: Any) -> str:
    """``<base>-<hash>`` within SageMaker's 63 characters; the same definition always gives the same name."""
    digest = hashlib.sha256(json.dumps(definition, sort_keys=True, default=str).encode()).hexdigest()[:HASH_CHARS]
    stem = base[: 63 - HASH_CHARS - 1].rstrip("-")
    return check_name(f"{stem}-{digest}", "derived name")


def parse_env(pairs: list[str] | None) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise DeployError(f"--env takes KEY=VALUE, got {pair!r}")
        env[key] = value
    if len(env) > 100:
        raise DeployError("SageMaker allows at most 100 environment variables per container")
    return env


@dataclass(frozen=True)
class ModelData:
    """Where /opt/ml/model comes from: one model.tar.gz (ModelDataUrl) or an uncompressed S3 prefix."""

    uri: S3Uri
    compressed: bool

    @classmethod
    def parse(cls, value: str) -> ModelData:
        uri = S3Uri.parse(value, what="--model-data")
        if uri.key.endswith(".tar.gz"):
            return cls(uri, True)
        if not uri.key or uri.key.endswith("/"):
            return cls(uri.as_prefix(), False)
        raise DeployError(
            f"--model-data {value!r}: give a model.tar.gz object, or a folder prefix ending in '/' "
            "(uncompressed ModelDataSource)"
        )

    def container_fields(self) -> dict[str, Any]:
        if self.compressed:
            return {"ModelDataUrl": str(self.uri)}
        return {
            "ModelDataSource": {
                "S3DataSource": {"S3Uri": str(self.uri), "S3DataType": "S3Prefix", "CompressionType": "None"}
            }
        }

    def verify(self, api: AwsApi) -> None:
        """Fail before SageMaker does: the archive (or at least one object under the prefix) must exist."""
        if not self.compressed:
            api.require_s3_prefix(self.uri, "model data")
            return
        api.require_bucket(self.uri.bucket, "model data")
        head = api.lookup(
            "s3", "head_object", missing=("404", "NoSuchKey", "NotFound"), Bucket=self.uri.bucket, Key=self.uri.key
        )
        if head is None and not api.dry_run:
            raise DeployError(f"model archive {self.uri} not found (run publish-model first?)")


def container_definition(image: str, model_data: ModelData | None, env: dict[str, str]) -> dict[str, Any]:
    last_part = image.rsplit("/", 1)[-1] if image else ""
    if not image or "/" not in image or (":" not in last_part and "@" not in last_part):
        raise DeployError(
            f"--image {image!r}: give a full image URI with a tag, e.g. "
            "123456789012.dkr.ecr.us-east-1.amazonaws.com/car-damage:<tag> (build_and_push.sh prints it)"
        )
    container: dict[str, Any] = {"Image": image, "Mode": "SingleModel"}
    if model_data is not None:
        container.update(model_data.container_fields())
    if env:
        container["Environment"] = dict(env)
    return container


def model_name(base: str, role: str, container: dict[str, Any]) -> str:
    return content_name(base, {"role": role, "container": container})


def ensure_model(api: AwsApi, name: str, role: str, container: dict[str, Any]) -> bool:
    """Create the model unless it exists (same name = same definition). Returns whether it was created."""
    if api.lookup("sagemaker", "describe_model", missing=NOT_FOUND, ModelName=name) is not None:
        logger.info("model %s already exists; reusing it", name)
        return False
    api.call("sagemaker", "create_model", ModelName=name, ExecutionRoleArn=role, PrimaryContainer=container)
    logger.info("%s model %s", "would create" if api.dry_run else "created", name)
    return True


def production_variant(
    model_name: str,
    instance_type: str,
    instance_count: int,
    *,
    ami: str | None,
    startup_timeout_s: int,
    download_timeout_s: int,
    volume_gb: int | None = None,
    variant: str = DEFAULT_VARIANT,
) -> dict[str, Any]:
    for label, seconds in (("--startup-timeout", startup_timeout_s), ("--download-timeout", download_timeout_s)):
        if not 60 <= seconds <= 3600:
            raise DeployError(f"{label} must be 60..3600 s (SageMaker's range), got {seconds}")
    if instance_count < 1:
        raise DeployError(f"--instance-count must be >= 1, got {instance_count}")
    spec: dict[str, Any] = {
        "VariantName": variant,
        "ModelName": model_name,
        "InstanceType": instance_type,
        "InitialInstanceCount": instance_count,
        "InitialVariantWeight": 1.0,
        "ContainerStartupHealthCheckTimeoutInSeconds": startup_timeout_s,
        "ModelDataDownloadTimeoutInSeconds": download_timeout_s,
        # A whole-image GPU inference takes seconds: send each request to the least busy instance.
        "RoutingConfig": {"RoutingStrategy": "LEAST_OUTSTANDING_REQUESTS"},
    }
    if ami:
        spec["InferenceAmiVersion"] = ami
    if volume_gb is not None:
        spec["VolumeSizeInGB"] = volume_gb
    return spec


def async_config(
    output: str | None,
    failure: str | None,
    success_topic: str | None,
    error_topic: str | None,
    max_concurrent: int,
) -> dict[str, Any] | None:
    if output is None:
        if failure or success_topic or error_topic:
            raise DeployError("--async-failure-path and SNS topics need --async-output (the async S3 output path)")
        return None
    output_config: dict[str, Any] = {"S3OutputPath": str(S3Uri.parse(output, what="--async-output"))}
    if failure:
        output_config["S3FailurePath"] = str(S3Uri.parse(failure, what="--async-failure-path"))
    notification = {}
    if success_topic:
        notification["SuccessTopic"] = success_topic
    if error_topic:
        notification["ErrorTopic"] = error_topic
    if notification:
        output_config["NotificationConfig"] = notification
    return {"OutputConfig": output_config, "ClientConfig": {"MaxConcurrentInvocationsPerInstance": max_concurrent}}


def endpoint_config_definition(variant: dict[str, Any], async_inference: dict[str, Any] | None) -> dict[str, Any]:
    definition: dict[str, Any] = {"ProductionVariants": [variant]}
    if async_inference:
        definition["AsyncInferenceConfig"] = async_inference
    return definition


def ensure_endpoint_config(api: AwsApi, name: str, definition: dict[str, Any]) -> bool:
    """Create the endpoint config unless it exists (same name = same definition). Returns whether created."""
    if api.lookup("sagemaker", "describe_endpoint_config", missing=NOT_FOUND, EndpointConfigName=name) is not None:
        logger.info("endpoint config %s already exists; reusing it", name)
        return False
    api.call("sagemaker", "create_endpoint_config", EndpointConfigName=name, **definition)
    logger.info("%s endpoint config %s", "would create" if api.dry_run else "created", name)
    return True
