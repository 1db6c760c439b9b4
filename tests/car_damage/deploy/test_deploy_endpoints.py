"""create/update/delete-endpoint against the moto server, and the InService waiter on status sequences."""

from __future__ import annotations

import pytest
from deploy_testlib import GPU_TYPE, IMAGE, ROLE

from car_damage.deploy.api import AwsApi, DeployError
from car_damage.deploy.endpoints import wait_for_endpoint
from car_damage.deploy.resources import DEFAULT_INFERENCE_AMI

ARCHIVE_KEY = "segmentation/archives/scratch/v1/model.tar.gz"


def create_args(*extra: str, name: str = "car-damage", model_data: str | None = None,
                command: str = "create-endpoint") -> list[str]:
    data = model_data or f"s3://models-registry/{ARCHIVE_KEY}"
    return [command, "--name", name, "--image", IMAGE, "--model-data", data, "--role", ROLE,
            "--instance-type", GPU_TYPE, "--poll-interval", "0.01", *extra]


@pytest.fixture
def registry(aws):
    aws.bucket("models-registry")
    aws.put("models-registry", ARCHIVE_KEY, b"archive")
    aws.put("models-registry", "segmentation/scratch/v1/mask_cnn_scratch.h5", b"weights")
    return aws


def test_create_endpoint_from_archive(registry):
    aws = registry
    result = aws.run(*create_args())
    assert result.code == 0, result.err
    summary = result.json
    assert summary["action"] == "created" and summary["status"] == "InService"

    model = aws.sagemaker.describe_model(ModelName=summary["model"])
    assert model["ExecutionRoleArn"] == ROLE
    assert model["PrimaryContainer"]["Image"] == IMAGE
    assert model["PrimaryContainer"]["ModelDataUrl"] == f"s3://models-registry/{ARCHIVE_KEY}"

    config = aws.sagemaker.describe_endpoint_config(EndpointConfigName=summary["endpoint_config"])
    variant = config["ProductionVariants"][0]
    assert variant["ModelName"] == summary["model"]
    assert variant["InstanceType"] == GPU_TYPE and variant["InitialInstanceCount"] == 1
    assert variant["ContainerStartupHealthCheckTimeoutInSeconds"] == 600
    assert variant["ModelDataDownloadTimeoutInSeconds"] == 600
    assert "AsyncInferenceConfig" not in config

    endpoint = aws.sagemaker.describe_endpoint(EndpointName="car-damage")
    assert endpoint["EndpointConfigName"] == summary["endpoint_config"]
    assert endpoint["EndpointStatus"] == "InService"


def test_gpu_ami_and_timeouts_in_the_request(aws):
    """moto does not keep InferenceAmiVersion, so the request itself is checked (dry-run prints it)."""
    data = "s3://some-bucket/model.tar.gz"
    gpu = aws.run("--dry-run", *create_args("--startup-timeout", "900", model_data=data), endpoint=False)
    config = next(c for c in gpu.calls if c["operation"] == "create_endpoint_config")["params"]
    variant = config["ProductionVariants"][0]
    assert variant["InferenceAmiVersion"] == DEFAULT_INFERENCE_AMI == "al2-ami-sagemaker-inference-gpu-3-1"
    assert variant["ContainerStartupHealthCheckTimeoutInSeconds"] == 900

    g5 = aws.run("--dry-run", *create_args("--instance-type", "ml.g5.2xlarge", model_data=data), endpoint=False)
    assert next(c for c in g5.calls if c["operation"] == "create_endpoint_config")["params"][
        "ProductionVariants"][0]["InstanceType"] == "ml.g5.2xlarge"  # the tool accepts what moto would reject

    cpu = aws.run("--dry-run", *create_args("--instance-type", "ml.m5.xlarge", model_data=data), endpoint=False)
    cpu_variant = next(c for c in cpu.calls if c["operation"] == "create_endpoint_config")["params"][
        "ProductionVariants"][0]
    assert "InferenceAmiVersion" not in cpu_variant
    operations = [c["operation"] for c in gpu.calls]
    assert operations == ["describe_endpoint", "head_bucket", "head_object", "describe_model", "create_model",
                          "describe_endpoint_config", "create_endpoint_config", "create_endpoint"]


def test_uncompressed_prefix_and_async_config(registry):
    aws = registry
    aws.bucket("async-results")
    result = aws.run(*create_args("--async-output", "s3://async-results/out/", "--sns-error",
                                  "arn:aws:sns:us-east-1:123456789012:errors",
                                  model_data="s3://models-registry/segmentation/scratch/v1/"))
    assert result.code == 0, result.err
    model = aws.sagemaker.describe_model(ModelName=result.json["model"])
    assert model["PrimaryContainer"]["ModelDataSource"] == {
        "S3DataSource": {"S3Uri": "s3://models-registry/segmentation/scratch/v1/", "S3DataType": "S3Prefix",
                         "CompressionType": "None"}
    }
    config = aws.sagemaker.describe_endpoint_config(EndpointConfigName=result.json["endpoint_config"])
    assert config["AsyncInferenceConfig"]["OutputConfig"]["S3OutputPath"] == "s3://async-results/out/"
    assert config["AsyncInferenceConfig"]["OutputConfig"]["NotificationConfig"] == {
        "ErrorTopic": "arn:aws:sns:us-east-1:123456789012:errors"}
    assert config["AsyncInferenceConfig"]["ClientConfig"] == {"MaxConcurrentInvocationsPerInstance": 1}


def test_rerun_is_idempotent_and_a_changed_spec_needs_update(registry):
    aws = registry
    first = aws.run(*create_args())
    again = aws.run(*create_args())
    assert again.code == 0, again.err
    assert again.json["action"] == "unchanged (already on this config)"
    assert (again.json["model"], again.json["endpoint_config"]) == (first.json["model"], first.json["endpoint_config"])
    assert again.json["model_created"] is False and again.json["config_created"] is False
    assert len(aws.sagemaker.list_models()["Models"]) == 1

    changed = aws.run(*create_args("--instance-count", "2"))
    assert changed.code == 1 and "use update-endpoint" in changed.err
    assert len(aws.sagemaker.list_endpoint_configs()["EndpointConfigs"]) == 1  # nothing orphaned


def test_create_errors(registry, monkeypatch):
    aws = registry
    no_role = aws.run("create-endpoint", "--name", "e", "--image", IMAGE, "--model-data",
                      f"s3://models-registry/{ARCHIVE_KEY}")
    assert no_role.code == 1 and "SAGEMAKER_ROLE_ARN" in no_role.err
    monkeypatch.setenv("SAGEMAKER_ROLE_ARN", "arn:aws:iam::123:user/bob")
    bad_role = aws.run("create-endpoint", "--name", "e", "--image", IMAGE)
    assert bad_role.code == 1 and "not an IAM role ARN" in bad_role.err

    missing_archive = aws.run(*create_args(model_data="s3://models-registry/nope/model.tar.gz"))
    assert missing_archive.code == 1 and "not found" in missing_archive.err
    missing_bucket = aws.run(*create_args(model_data="s3://absent-bucket/model.tar.gz"))
    assert missing_bucket.code == 1 and "'absent-bucket'" in missing_bucket.err
    empty_prefix = aws.run(*create_args(model_data="s3://models-registry/empty/"))
    assert empty_prefix.code == 1 and "nothing in S3 under" in empty_prefix.err
    bad_data = aws.run(*create_args(model_data="s3://models-registry/weights.h5"))
    assert bad_data.code == 1 and "model.tar.gz" in bad_data.err
    bad_image = aws.run("create-endpoint", "--name", "e", "--image", "car-damage", "--role", ROLE)
    assert bad_image.code == 1 and "full image URI" in bad_image.err
    bad_name = aws.run(*create_args(name="bad_name"))
    assert bad_name.code == 1 and "not a valid SageMaker name" in bad_name.err
    bad_timeout = aws.run(*create_args("--startup-timeout", "30"))
    assert bad_timeout.code == 1 and "60..3600" in bad_timeout.err
    assert aws.sagemaker.list_models()["Models"] == []


def test_no_region_is_an_error(aws):
    result = aws.run("create-endpoint", "--name", "e", "--image", IMAGE, region=False)
    assert result.code == 1 and "no AWS region" in result.err


@pytest.fixture
def emulated_update(aws, monkeypatch):
    """moto 5 lacks UpdateEndpoint: answer it by re-pointing the moto endpoint at the new config (delete +
    create with the same name), every other call still goes to the server. Returns the recorded updates."""
    updates = []
    real_call = AwsApi.call

    def call(self, service, operation, **params):
        if operation != "update_endpoint":
            return real_call(self, service, operation, **params)
        updates.append(params)
        real_call(self, "sagemaker", "delete_endpoint", EndpointName=params["EndpointName"])
        return real_call(self, "sagemaker", "create_endpoint", **params)

    monkeypatch.setattr(AwsApi, "call", call)
    return updates


def test_update_endpoint_blue_green(registry, emulated_update):
    aws = registry
    first = aws.run(*create_args()).json
    aws.put("models-registry", "segmentation/archives/scratch/v2/model.tar.gz", b"archive v2")
    v2 = "s3://models-registry/segmentation/archives/scratch/v2/model.tar.gz"
    result = aws.run(*create_args("--delete-old", model_data=v2, command="update-endpoint"))
    assert result.code == 0, result.err
    summary = result.json
    assert summary["action"] == "updated" and summary["status"] == "InService"
    assert summary["previous_config"] == first["endpoint_config"]
    assert emulated_update == [{"EndpointName": "car-damage", "EndpointConfigName": summary["endpoint_config"]}]
    assert aws.sagemaker.describe_endpoint(EndpointName="car-damage")["EndpointConfigName"] == (
        summary["endpoint_config"])
    assert aws.sagemaker.describe_model(ModelName=summary["model"])["PrimaryContainer"]["ModelDataUrl"] == v2
    # --delete-old removed the blue side
    assert summary["deleted"] == [first["endpoint_config"], first["model"]]
    assert [m["ModelName"] for m in aws.sagemaker.list_models()["Models"]] == [summary["model"]]

    same = aws.run(*create_args(model_data=v2, command="update-endpoint"))
    assert same.json["action"] == "unchanged (already on this config)"
    assert len(emulated_update) == 1


def test_update_missing_endpoint_is_an_error(registry):
    result = registry.run(*create_args(command="update-endpoint"))
    assert result.code == 1 and "use create-endpoint first" in result.err


def test_delete_endpoint_and_rerun(registry):
    aws = registry
    created = aws.run(*create_args()).json
    result = aws.run("delete-endpoint", "--name", "car-damage", "--poll-interval", "0.01")
    assert result.code == 0, result.err
    assert result.json["deleted"] == ["car-damage", created["endpoint_config"], created["model"]]
    assert aws.sagemaker.list_endpoints()["Endpoints"] == []
    assert aws.sagemaker.list_endpoint_configs()["EndpointConfigs"] == []
    assert aws.sagemaker.list_models()["Models"] == []
    again = aws.run("delete-endpoint", "--name", "car-damage")
    assert again.code == 0 and again.json["action"] == "nothing to delete (no such endpoint)"


def test_delete_keeping_the_model(registry):
    aws = registry
    created = aws.run(*create_args()).json
    result = aws.run("delete-endpoint", "--name", "car-damage", "--keep-model", "--poll-interval", "0.01")
    assert result.json["deleted"] == ["car-damage", created["endpoint_config"]]
    assert [m["ModelName"] for m in aws.sagemaker.list_models()["Models"]] == [created["model"]]


class Statuses:
    """A describe_endpoint double walking through a fixed sequence, with a fake clock."""

    def __init__(self, *states: dict) -> None:
        self.states = list(states)
        self.now = 0.0
        self.calls = 0

    def describe(self) -> dict:
        self.calls += 1
        return {"EndpointName": "e", **(self.states.pop(0) if len(self.states) > 1 else self.states[0])}

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def wait(statuses: Statuses, expected: str = "cfg-new", timeout: float = 3600) -> dict:
    lines: list[str] = []
    return wait_for_endpoint(statuses.describe, expected, poll_s=30, timeout_s=timeout, sleep=statuses.sleep,
                             clock=lambda: statuses.now, progress=lines.append), lines


def test_waiter_reaches_in_service_with_progress():
    statuses = Statuses({"EndpointStatus": "Creating", "EndpointConfigName": "cfg-new"},
                        {"EndpointStatus": "Creating", "EndpointConfigName": "cfg-new"},
                        {"EndpointStatus": "InService", "EndpointConfigName": "cfg-new"})
    final, lines = wait(statuses)
    assert final["EndpointStatus"] == "InService" and statuses.calls == 3
    assert lines == ["endpoint e: Creating (0 s)", "endpoint e: InService (60 s)"]


def test_waiter_reports_failure_reason():
    reason = "The primary container for production variant AllTraffic did not pass the ping health check."
    statuses = Statuses({"EndpointStatus": "Creating", "EndpointConfigName": "cfg-new"},
                        {"EndpointStatus": "Failed", "EndpointConfigName": "cfg-new", "FailureReason": reason})
    with pytest.raises(DeployError, match="endpoint is Failed: The primary container .* ping health check"):
        wait(statuses)


def test_waiter_treats_a_rollback_as_failure():
    statuses = Statuses({"EndpointStatus": "Updating", "EndpointConfigName": "cfg-old"},
                        {"EndpointStatus": "RollingBack", "EndpointConfigName": "cfg-old"},
                        {"EndpointStatus": "InService", "EndpointConfigName": "cfg-old",
                         "FailureReason": "CannotStartContainerError"})
    with pytest.raises(DeployError, match="update rolled back to cfg-old: CannotStartContainerError"):
        wait(statuses)


def test_waiter_ignores_a_stale_failure_reason_before_the_update_starts():
    statuses = Statuses({"EndpointStatus": "InService", "EndpointConfigName": "cfg-old",
                         "FailureReason": "an earlier update failed"},
                        {"EndpointStatus": "Updating", "EndpointConfigName": "cfg-old"},
                        {"EndpointStatus": "InService", "EndpointConfigName": "cfg-new"})
    final, _ = wait(statuses)
    assert final["EndpointConfigName"] == "cfg-new" and statuses.calls == 3


def test_waiter_times_out():
    statuses = Statuses({"EndpointStatus": "Creating", "EndpointConfigName": "cfg-new"})
    with pytest.raises(DeployError, match="still Creating after 120 s"):
        wait(statuses, timeout=120)
    assert statuses.calls == 5  # 0, 30, 60, 90, 120 s
