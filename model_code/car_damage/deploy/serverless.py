"""SageMaker Serverless Inference as a target of ``create-endpoint --serverless``: its limits, checked first.

Serverless endpoints have no instances and no GPU, memory 1024-6144 MB in 1024 MB steps, MaxConcurrency 1-200,
a 4 MB payload and an image of at most 10 GB pulled from ECR (no other registry). Everything checkable is
checked before any create call: the request's own values, then the image's size as ECR reports it (its
manifest's config + layers, read with batch_get_image). The CPU image is the one that fits: the GPU image has
nothing to use its CUDA libraries on, so an image tag must end in ``-cpu`` (the tag
``scripts/build_and_push.sh --cpu`` gives).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from car_damage.deploy.api import AwsApi, DeployError

MEMORY_MIN_MB = 1024
MEMORY_MAX_MB = 6144
MEMORY_STEP_MB = 1024
MAX_CONCURRENCY_RANGE = (1, 200)
IMAGE_LIMIT_BYTES = 10 * 1024**3
#: The serverless request limit; the container is told, so nginx answers 413 itself above it.
PAYLOAD_LIMIT_MB = 4
CPU_TAG_SUFFIX = "-cpu"
ECR_IMAGE = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/(?P<repository>[^:@]+)"
    r"(?::(?P<tag>[\w][\w.-]{0,127})|@(?P<digest>sha256:[0-9a-f]{64}))$"
)
MANIFEST_TYPES = ["application/vnd.docker.distribution.manifest.v2+json",
                  "application/vnd.oci.image.manifest.v1+json"]


@dataclass(frozen=True)
class ServerlessSettings:
    memory_mb: int
    max_concurrency: int

    def config(self) -> dict[str, int]:
        return {"MemorySizeInMB": self.memory_mb, "MaxConcurrency": self.max_concurrency}


def check_settings(memory_mb: int | None, max_concurrency: int | None) -> ServerlessSettings:
    if memory_mb is None or max_concurrency is None:
        raise DeployError("--serverless needs --memory MB and --max-concurrency N")
    if not MEMORY_MIN_MB <= memory_mb <= MEMORY_MAX_MB or memory_mb % MEMORY_STEP_MB:
        raise DeployError(f"--memory must be {MEMORY_MIN_MB}..{MEMORY_MAX_MB} MB in steps of {MEMORY_STEP_MB} "
                          f"(SageMaker Serverless), got {memory_mb}")
    low, high = MAX_CONCURRENCY_RANGE
    if not low <= max_concurrency <= high:
        raise DeployError(f"--max-concurrency must be {low}..{high} (SageMaker Serverless), got {max_concurrency}")
    return ServerlessSettings(memory_mb, max_concurrency)


def check_request(args: Any) -> ServerlessSettings:
    """The options that have no meaning (or no support) on a serverless endpoint are refused."""
    settings = check_settings(args.memory, args.max_concurrency)
    if args.instance_type is not None:
        raise DeployError("--instance-type with --serverless: serverless endpoints have no instances (and no GPU)")
    if args.async_output:
        raise DeployError("--async-output with --serverless: a serverless endpoint cannot be asynchronous")
    if args.model_data and args.model_data.endswith("/"):
        raise DeployError("serverless endpoints take --model-data as one model.tar.gz, not an S3 prefix")
    image = parse_image(args.image)
    if image["tag"] is not None and not image["tag"].endswith(CPU_TAG_SUFFIX):
        raise DeployError(f"serverless endpoints have no GPU: deploy the CPU image (tag ending in "
                          f"'{CPU_TAG_SUFFIX}', as scripts/build_and_push.sh --cpu tags it), not {args.image}")
    return settings


def parse_image(image: str) -> dict[str, str | None]:
    match = ECR_IMAGE.match(image)
    if match is None:
        raise DeployError(f"serverless endpoints pull only from ECR (<account>.dkr.ecr.<region>.amazonaws.com/"
                          f"<repository>:<tag>), got {image}")
    return match.groupdict()


def image_size_bytes(api: AwsApi, image: str) -> int | None:
    """The image's size as ECR stores it (config + layers); None in a dry run, which sends nothing."""
    parts = parse_image(image)
    if parts["region"] != api.region:
        raise DeployError(f"image {image} is in {parts['region']}, the endpoint in {api.region}: "
                          "SageMaker pulls from the endpoint's own region")
    image_id = {"imageTag": parts["tag"]} if parts["tag"] else {"imageDigest": parts["digest"]}
    result = api.call("ecr", "batch_get_image", registryId=parts["account"], repositoryName=parts["repository"],
                      imageIds=[image_id], acceptedMediaTypes=MANIFEST_TYPES)
    if api.dry_run:
        return None
    images = result.get("images") or []
    if not images:
        raise DeployError(f"image {image} is not in ECR: {result.get('failures')}")
    manifest = json.loads(images[0]["imageManifest"])
    if "layers" not in manifest:
        raise DeployError(f"image {image} is a multi-platform index; push a single linux/amd64 image")
    return int(manifest["config"]["size"]) + sum(int(layer["size"]) for layer in manifest["layers"])


def check_image(api: AwsApi, image: str) -> None:
    size = image_size_bytes(api, image)
    if size is not None and size > IMAGE_LIMIT_BYTES:
        raise DeployError(f"image {image} is {size / 1024**3:.1f} GiB in ECR; SageMaker Serverless takes at most "
                          f"{IMAGE_LIMIT_BYTES // 1024**3} GB")


def serverless_variant(model_name: str, settings: ServerlessSettings, variant: str) -> dict[str, Any]:
    return {"VariantName": variant, "ModelName": model_name, "ServerlessConfig": settings.config()}
