"""autoscale, batch-transform and train-job against the moto server; dry-run and the module entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from deploy_testlib import GPU_TYPE, IMAGE, REGION, ROLE

from car_damage.deploy.api import DeployError
from car_damage.deploy.autoscale import METRIC, SCALABLE_DIMENSION
from car_damage.deploy.jobs import parse_hyperparameters, wait_for_job

ARCHIVE = "s3://models-registry/segmentation/archives/scratch/v1/model.tar.gz"


@pytest.fixture
def endpoint(aws):
    aws.bucket("models-registry")
    aws.put("models-registry", "segmentation/archives/scratch/v1/model.tar.gz", b"archive")
    result = aws.run("create-endpoint", "--name", "car-damage", "--image", IMAGE, "--model-data", ARCHIVE,
                     "--role", ROLE, "--instance-type", GPU_TYPE, "--poll-interval", "0.01")
    assert result.code == 0, result.err
    return result.json


def test_autoscale_target_and_policy(aws, endpoint):
    args = ["autoscale", "--endpoint", "car-damage", "--min", "1", "--max", "6", "--target", "45",
            "--scale-in-cooldown", "900", "--scale-out-cooldown", "120"]
    result = aws.run(*args)
    assert result.code == 0, result.err
    targets = aws.autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert len(targets) == 1
    target = targets[0]
    assert target["ResourceId"] == "endpoint/car-damage/variant/AllTraffic"
    assert target["ScalableDimension"] == SCALABLE_DIMENSION == "sagemaker:variant:DesiredInstanceCount"
    assert (target["MinCapacity"], target["MaxCapacity"]) == (1, 6)
    policies = aws.autoscaling.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
    assert len(policies) == 1
    tracking = policies[0]["TargetTrackingScalingPolicyConfiguration"]
    assert policies[0]["PolicyType"] == "TargetTrackingScaling"
    assert tracking["TargetValue"] == 45.0
    assert tracking["PredefinedMetricSpecification"]["PredefinedMetricType"] == METRIC
    assert (tracking["ScaleInCooldown"], tracking["ScaleOutCooldown"]) == (900, 120)

    assert aws.run(*args[:-2], "--scale-out-cooldown", "60").code == 0  # a re-run updates in place
    policies = aws.autoscaling.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
    assert len(policies) == 1
    assert policies[0]["TargetTrackingScalingPolicyConfiguration"]["ScaleOutCooldown"] == 60


def test_autoscale_errors(aws, endpoint):
    missing = aws.run("autoscale", "--endpoint", "nope")
    assert missing.code == 1 and "endpoint nope does not exist" in missing.err
    bad_range = aws.run("autoscale", "--endpoint", "car-damage", "--min", "5", "--max", "2")
    assert bad_range.code == 1 and "--min <= --max" in bad_range.err
    bad_variant = aws.run("autoscale", "--endpoint", "car-damage", "--variant", "Blue")
    assert bad_variant.code == 1 and "no variant 'Blue'" in bad_variant.err
    assert aws.autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []


def test_batch_transform_over_a_prefix(aws, endpoint):
    aws.bucket("photos")
    aws.put("photos", "claims/2024/car1.jpg", b"\xff\xd8jpeg")
    aws.put("photos", "claims/2024/car2.jpg", b"\xff\xd8jpeg")
    result = aws.run("batch-transform", "--model", endpoint["model"], "--input", "s3://photos/claims/2024",
                     "--output", "s3://photos/results/", "--instance-type", GPU_TYPE, "--job-name", "batch-1",
                     "--poll-interval", "0.01")
    assert result.code == 0, result.err
    assert result.json["status"] == "Completed"
    job = aws.sagemaker.describe_transform_job(TransformJobName="batch-1")
    assert job["ModelName"] == endpoint["model"]
    assert job["BatchStrategy"] == "SingleRecord"
    assert job["TransformInput"]["DataSource"]["S3DataSource"] == {"S3DataType": "S3Prefix",
                                                                   "S3Uri": "s3://photos/claims/2024/"}
    assert job["TransformInput"]["ContentType"] == "image/jpeg"
    assert job["TransformInput"]["SplitType"] == "None"
    assert job["TransformOutput"]["Accept"] == "application/json"
    assert job["TransformOutput"]["S3OutputPath"] == "s3://photos/results/"
    assert job["TransformResources"]["InstanceType"] == GPU_TYPE
    assert job["ModelClientConfig"] == {"InvocationsTimeoutInSeconds": 600, "InvocationsMaxRetries": 1}

    again = aws.run("batch-transform", "--model", endpoint["model"], "--input", "s3://photos/claims/2024",
                    "--output", "s3://photos/results/", "--job-name", "batch-1")
    assert again.code == 1 and "already exists" in again.err


def test_batch_transform_request_and_errors(aws):
    aws.bucket("photos")
    plan = aws.run("--dry-run", "batch-transform", "--image", IMAGE, "--model-data", ARCHIVE, "--role", ROLE,
                   "--input", "s3://photos/in/", "--output", "s3://photos/out/", endpoint=False)
    create = next(c for c in plan.calls if c["operation"] == "create_transform_job")["params"]
    assert create["TransformResources"]["TransformAmiVersion"] == "al2-ami-sagemaker-batch-gpu-535"
    assert create["MaxPayloadInMB"] == 6 and create["MaxConcurrentTransforms"] == 1
    assert [c["operation"] for c in plan.calls][:4] == ["head_bucket", "head_object", "describe_model",
                                                        "create_model"]

    unknown = aws.run("batch-transform", "--model", "m", "--input", "s3://photos/in/", "--output", "s3://photos/o/")
    assert unknown.code == 1 and "SageMaker model 'm' not found" in unknown.err
    aws.bucket("models-registry")
    aws.put("models-registry", "segmentation/archives/scratch/v1/model.tar.gz", b"archive")
    no_photos = aws.run("batch-transform", "--image", IMAGE, "--model-data", ARCHIVE, "--role", ROLE,
                        "--input", "s3://photos/in/", "--output", "s3://photos/out/", "--instance-type", GPU_TYPE)
    assert no_photos.code == 1 and "nothing in S3 under s3://photos/in/" in no_photos.err
    prefix = aws.run("batch-transform", "--image", IMAGE, "--model-data", "s3://models-registry/segmentation/",
                     "--role", ROLE, "--input", "s3://photos/in/", "--output", "s3://photos/out/")
    assert prefix.code == 1 and "uncompressed" in prefix.err
    neither = aws.run("batch-transform", "--input", "s3://photos/in/", "--output", "s3://photos/out/")
    assert neither.code == 1 and "--model NAME" in neither.err


def test_spot_training_job(aws):
    aws.bucket("training")
    aws.put("training", "data/train/via_region_data.json", b"{}")
    aws.put("training", "data/val/via_region_data.json", b"{}")
    result = aws.run("train-job", "--image", IMAGE, "--role", ROLE, "--train", "s3://training/data/train",
                     "--val", "s3://training/data/val/", "--output", "s3://training/jobs", "--job-name", "scratch-1",
                     "--hp", "epochs=30", "--hp", "layers=heads", "--hp", "learning_rate=0.001", "--spot",
                     "--max-run", "7200", "--instance-type", "ml.g5.xlarge", "--poll-interval", "0.01")
    assert result.code == 0, result.err
    summary = result.json
    assert summary["status"] == "Completed"
    assert summary["output"] == "s3://training/jobs/scratch-1/output/model.tar.gz"
    job = aws.sagemaker.describe_training_job(TrainingJobName="scratch-1")
    assert job["AlgorithmSpecification"]["TrainingImage"] == IMAGE
    assert job["RoleArn"] == ROLE
    # ml.g5.xlarge has one GPU (deploy's instance table), so the job trains on one.
    assert job["HyperParameters"] == {"epochs": "30", "layers": "heads", "learning_rate": "0.001",
                                      "gpu_count": "1"}
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in job["InputDataConfig"]}
    assert channels == {"train": "s3://training/data/train/", "val": "s3://training/data/val/"}
    assert job["EnableManagedSpotTraining"] is True
    assert job["StoppingCondition"] == {"MaxRuntimeInSeconds": 7200, "MaxWaitTimeInSeconds": 14400}
    assert job["CheckpointConfig"] == {"S3Uri": "s3://training/jobs/scratch-1/checkpoints/",
                                       "LocalPath": "/opt/ml/checkpoints"}
    assert job["ResourceConfig"]["InstanceType"] == "ml.g5.xlarge"

    again = aws.run("train-job", "--image", IMAGE, "--role", ROLE, "--train", "s3://training/data/train",
                    "--output", "s3://training/jobs", "--job-name", "scratch-1")
    assert again.code == 1 and "already exists" in again.err


def test_multi_device_training_job_gets_the_instance_gpu_count(aws):
    aws.bucket("training")
    aws.put("training", "data/train/via_region_data.json", b"{}")
    base = ["train-job", "--image", IMAGE, "--role", ROLE, "--train", "s3://training/data/train",
            "--output", "s3://training/jobs", "--no-wait"]
    for name, instance, extra, expected in (("four", "ml.g5.12xlarge", [], "4"),
                                            ("eight", "ml.p4d.24xlarge", [], "8"),
                                            ("chosen", "ml.p4d.24xlarge", ["--hp", "gpu_count=2"], "2"),
                                            ("unknown", "ml.g7.99xlarge", [], None)):
        result = aws.run(*base, "--job-name", name, "--instance-type", instance, *extra)
        assert result.code == 0, result.err
        hyperparameters = aws.sagemaker.describe_training_job(TrainingJobName=name)["HyperParameters"]
        # An instance type missing from the table: the job counts the GPUs it sees at run time.
        assert hyperparameters.get("gpu_count") == expected, name


def test_training_errors(aws):
    aws.bucket("training")
    base = ["train-job", "--image", IMAGE, "--train", "s3://training/data/train", "--output", "s3://training/j"]
    assert "SAGEMAKER_ROLE_ARN" in aws.run(*base).err
    no_data = aws.run(*base, "--role", ROLE)
    assert no_data.code == 1 and "nothing in S3 under s3://training/data/train/ (train channel)" in no_data.err
    aws.put("training", "data/train/a.json", b"{}")
    bad_wait = aws.run(*base, "--role", ROLE, "--spot", "--max-run", "7200", "--max-wait", "3600")
    assert bad_wait.code == 1 and "--max-wait" in bad_wait.err
    missing_output = aws.run("train-job", "--image", IMAGE, "--role", ROLE, "--train", "s3://training/data/train",
                             "--output", "s3://no-such-output/j")
    assert missing_output.code == 1 and "'no-such-output'" in missing_output.err
    assert aws.sagemaker.list_training_jobs()["TrainingJobSummaries"] == []


def test_hyperparameters_are_strings_within_limits():
    assert parse_hyperparameters(["a=1", "b=x=y", "c="]) == {"a": "1", "b": "x=y", "c": ""}
    for bad in (["novalue"], ["=1"], ["k=" + "v" * 257]):
        with pytest.raises(DeployError):
            parse_hyperparameters(bad)


def test_job_waiter_reports_failure_reason():
    states = iter([{"TrainingJobStatus": "InProgress", "SecondaryStatus": "Downloading"},
                   {"TrainingJobStatus": "Failed", "FailureReason": "AlgorithmError: loss is NaN"}])
    with pytest.raises(DeployError, match="job Failed: AlgorithmError: loss is NaN"):
        wait_for_job(lambda: next(states), "TrainingJobStatus", poll_s=1, timeout_s=10, sleep=lambda s: None)


def test_module_entry_point_dry_run_needs_neither_boto3_nor_credentials(tmp_path):
    """`python -m car_damage.deploy --dry-run ...` with boto3 made unimportable and no AWS settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["SAGEMAKER_ROLE_ARN"] = ROLE
    env["AWS_CONFIG_FILE"] = str(tmp_path / "none")
    argv = ["car_damage.deploy", "--region", REGION, "--dry-run", "train-job", "--image", IMAGE,
            "--train", "s3://training/train/", "--output", "s3://training/out/", "--job-name", "j1"]
    script = (
        "import runpy, sys\n"
        "sys.modules['boto3'] = None  # any import of boto3 now raises ImportError\n"
        f"sys.argv = {argv!r}\n"
        "runpy.run_module('car_damage.deploy', run_name='__main__')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    calls = [json.loads(line) for line in result.stdout.splitlines()]
    assert [c["operation"] for c in calls] == ["head_bucket", "list_objects_v2", "head_bucket",
                                               "describe_training_job", "create_training_job"]
    assert calls[-1]["params"]["RoleArn"] == ROLE
    assert calls[-1]["params"]["InputDataConfig"][0]["ChannelName"] == "train"


def test_missing_boto3_is_explained(monkeypatch):
    import builtins

    from car_damage.deploy.api import AwsApi

    real_import = builtins.__import__

    def no_boto3(name, *args, **kwargs):
        if name.split(".")[0] in ("boto3", "botocore"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_boto3)
    with pytest.raises(DeployError, match=r"pip install 'car-damage-maskrcnn\[aws\]'"):
        AwsApi(region=REGION).call("s3", "head_bucket", Bucket="b")
