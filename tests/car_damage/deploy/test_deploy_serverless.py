"""create-endpoint --serverless against the moto server: SageMaker Serverless's limits are checked before any call,
the image's size is read from ECR (a manifest pushed into moto's ECR), and the endpoint config has no instances."""

from __future__ import annotations

import json

import boto3
import pytest
from deploy_testlib import REGION, ROLE

from car_damage.deploy.serverless import IMAGE_LIMIT_BYTES

ACCOUNT = "123456789012"
REPOSITORY = "car-damage"
CPU_IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{REPOSITORY}:0123456789ab-cpu"
ARCHIVE = "s3://models-registry/scratch/v1/model.tar.gz"


def serverless_args(*extra: str, image: str = CPU_IMAGE, memory: str = "3072", concurrency: str = "5") -> list[str]:
    return ["create-endpoint", "--name", "car-damage-sls", "--image", image, "--model-data", ARCHIVE,
            "--role", ROLE, "--serverless", "--memory", memory, "--max-concurrency", concurrency,
            "--poll-interval", "0.01", *extra]


def push_manifest(aws, tag: str, layer_bytes: list[int]) -> None:
    """An image manifest in moto's ECR (the layers' sizes are what ECR reports as the image size)."""
    ecr = boto3.client("ecr", region_name=REGION, endpoint_url=aws.url)
    try:
        ecr.create_repository(repositoryName=REPOSITORY)
    except ecr.exceptions.RepositoryAlreadyExistsException:
        pass
    manifest = {
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 7000,
                   "digest": "sha256:" + "c" * 64},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": size,
                    "digest": "sha256:" + f"{index:x}" * 64} for index, size in enumerate(layer_bytes, start=1)],
    }
    ecr.put_image(repositoryName=REPOSITORY, imageManifest=json.dumps(manifest), imageTag=tag)


@pytest.fixture
def registry(aws):
    aws.bucket("models-registry")
    aws.put("models-registry", "scratch/v1/model.tar.gz", b"archive")
    return aws


def test_serverless_endpoint_is_created_with_its_config(registry):
    push_manifest(registry, "0123456789ab-cpu", [30_000_000, 600_000_000])
    result = registry.run(*serverless_args())
    assert result.code == 0, result.err
    summary = result.json
    assert summary["action"] == "created" and summary["status"] == "InService"
    config = registry.sagemaker.describe_endpoint_config(EndpointConfigName=summary["endpoint_config"])
    (variant,) = config["ProductionVariants"]
    assert variant["ServerlessConfig"] == {"MemorySizeInMB": 3072, "MaxConcurrency": 5}
    assert "InstanceType" not in variant and "InitialInstanceCount" not in variant
    model = registry.sagemaker.describe_model(ModelName=summary["model"])
    env = model["PrimaryContainer"]["Environment"]
    assert env["MAX_BODY_MB"] == "4" and env["MODEL_SERVER_WORKERS"] == "1"


@pytest.mark.parametrize(("memory", "concurrency", "message"), [
    ("1000", "5", "--memory must be 1024..6144 MB in steps of 1024"),
    ("7168", "5", "--memory must be 1024..6144"),
    ("1536", "5", "--memory must be 1024..6144"),
    ("2048", "0", "--max-concurrency must be 1..200"),
    ("2048", "201", "--max-concurrency must be 1..200"),
])
def test_limits_are_refused_before_any_call(aws, memory, concurrency, message):
    result = aws.run("--dry-run", *serverless_args(memory=memory, concurrency=concurrency), endpoint=False)
    assert result.code != 0
    assert message in result.err
    assert result.out.strip() == "", "no call may be made (or printed) before the limits are checked"


@pytest.mark.parametrize(("extra", "image", "message"), [
    (["--instance-type", "ml.g4dn.xlarge"], CPU_IMAGE, "serverless endpoints have no instances (and no GPU)"),
    ([], CPU_IMAGE.replace("-cpu", ""), "serverless endpoints have no GPU: deploy the CPU image"),
    ([], "registry.example.com/car-damage:x-cpu", "serverless endpoints pull only from ECR"),
    (["--async-output", "s3://b/out/"], CPU_IMAGE, "cannot be asynchronous"),
])
def test_gpu_and_unsupported_options_are_refused(aws, extra, image, message):
    result = aws.run("--dry-run", *serverless_args(*extra, image=image), endpoint=False)
    assert result.code != 0 and message in result.err
    assert result.out.strip() == ""


def test_missing_memory_or_concurrency_is_named(aws):
    args = [a for a in serverless_args() if a not in ("--memory", "3072")]
    result = aws.run("--dry-run", *args, endpoint=False)
    assert result.code != 0 and "--serverless needs --memory MB and --max-concurrency N" in result.err


def test_image_over_10_gb_in_ecr_is_refused_before_anything_is_created(registry):
    layers = [IMAGE_LIMIT_BYTES // 2, IMAGE_LIMIT_BYTES // 2 + 1]
    push_manifest(registry, "0123456789ab-cpu", layers)
    result = registry.run(*serverless_args())
    assert result.code != 0
    assert "SageMaker Serverless takes at most 10 GB" in result.err
    assert registry.sagemaker.list_models()["Models"] == []
    assert registry.sagemaker.list_endpoint_configs()["EndpointConfigs"] == []


def test_image_not_in_ecr_is_refused(registry):
    no_repository = registry.run(*serverless_args())
    assert no_repository.code != 0 and "RepositoryNotFoundException" in no_repository.err
    push_manifest(registry, "other-cpu", [1000])
    no_tag = registry.run(*serverless_args())
    assert no_tag.code != 0 and "is not in ECR" in no_tag.err
    assert registry.sagemaker.list_models()["Models"] == []


def test_dry_run_prints_the_ecr_size_check_then_the_serverless_config(aws):
    result = aws.run("--dry-run", *serverless_args(), endpoint=False)
    assert result.code == 0, result.err
    operations = [call["operation"] for call in result.calls]
    assert operations.index("batch_get_image") < operations.index("create_model")
    config = next(c for c in result.calls if c["operation"] == "create_endpoint_config")["params"]
    assert config["ProductionVariants"][0]["ServerlessConfig"] == {"MemorySizeInMB": 3072, "MaxConcurrency": 5}
