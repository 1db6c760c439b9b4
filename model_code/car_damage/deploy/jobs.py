"""``batch-transform`` (a folder of photos in S3 -> one JSON per photo) and ``train-job`` (SageMaker training).

Batch Transform runs the same image with ``serve``: with ``SplitType=None`` each S3 object is one request
(``BatchStrategy=SingleRecord``), posted as ``image/jpeg`` with ``Accept: application/json``; the answer for
``<prefix>/car.jpg`` lands in ``<output>/car.jpg.out``. Batch needs a model.tar.gz (no ModelDataSource).

Training runs the image with ``train``: channels ``train`` and ``val`` appear under
``/opt/ml/input/data/<channel>/``, hyperparameters arrive as strings, the deliverable written to
``/opt/ml/model`` comes back as ``<output>/<job>/output/model.tar.gz``. With ``--spot`` the job runs on spare
capacity and must survive interruptions: SageMaker syncs ``/opt/ml/checkpoints`` to ``CheckpointConfig.S3Uri``
and copies it back in when the job restarts.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from car_damage.deploy.api import AwsApi, DeployError, S3Uri, check_name, resolve_role
from car_damage.deploy.resources import (
    DEFAULT_BATCH_AMI,
    DEFAULT_GPU_INSTANCE,
    INSTANCE_GPU_COUNT,
    NOT_FOUND,
    ModelData,
    ami_for,
    container_definition,
    ensure_model,
    model_name,
    parse_env,
)

logger = logging.getLogger(__name__)

CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"
JOB_DONE = frozenset({"Completed", "Failed", "Stopped"})
MAX_HYPERPARAMETERS = 100
MAX_HYPERPARAMETER_CHARS = 256


def timestamped(prefix: str) -> str:
    return check_name(f"{prefix[:44].rstrip('-')}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}", "job name")


def wait_for_job(
    describe: Callable[[], dict[str, Any]],
    status_key: str,
    *,
    poll_s: float,
    timeout_s: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Poll a job until Completed; DeployError with its FailureReason when it Failed or Stopped."""
    start = clock()
    last = None
    while True:
        description = describe()
        status = description.get(status_key, "?")
        if status != last:
            secondary = description.get("SecondaryStatus")
            logger.info("job: %s%s (%.0f s)", status, f" / {secondary}" if secondary else "", clock() - start)
            last = status
        if status == "Completed":
            return description
        if status in JOB_DONE:
            raise DeployError(f"job {status}: {description.get('FailureReason') or 'no FailureReason given'}")
        if clock() - start >= timeout_s:
            raise DeployError(f"job still {status} after {timeout_s:.0f} s; it keeps running")
        sleep(poll_s)


def parse_hyperparameters(pairs: list[str] | None) -> dict[str, str]:
    """KEY=VALUE pairs as SageMaker wants them: every value a string (the container casts them back)."""
    result: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise DeployError(f"--hp takes KEY=VALUE, got {pair!r}")
        if len(key) > MAX_HYPERPARAMETER_CHARS or len(value) > MAX_HYPERPARAMETER_CHARS:
            raise DeployError(f"hyperparameter {key[:40]!r}: keys and values are limited to 256 characters")
        result[key] = value
    if len(result) > MAX_HYPERPARAMETERS:
        raise DeployError(f"at most {MAX_HYPERPARAMETERS} hyperparameters, got {len(result)}")
    return result


def run_batch_transform(args: argparse.Namespace, api: AwsApi) -> dict[str, Any]:
    source = S3Uri.parse(args.input, what="--input").as_prefix()
    output = S3Uri.parse(args.output, what="--output").as_prefix()
    if not 1 <= args.max_payload_mb <= 100:
        raise DeployError(f"--max-payload-mb must be 1..100 (SageMaker's range), got {args.max_payload_mb}")
    model = args.model
    if model is None:
        if not (args.image and args.model_data):
            raise DeployError("give --model NAME (an existing SageMaker model) or --image and --model-data")
        role = resolve_role(args.role)
        model_data = ModelData.parse(args.model_data)
        if not model_data.compressed:
            raise DeployError("Batch Transform cannot use an uncompressed model prefix: pass the model.tar.gz")
        container = container_definition(args.image, model_data, parse_env(args.env))
        model_data.verify(api)
        model = model_name("car-damage-batch", role, container)
        ensure_model(api, model, role, container)
    elif api.lookup("sagemaker", "describe_model", missing=NOT_FOUND, ModelName=model) is None and not api.dry_run:
        raise DeployError(f"SageMaker model {model!r} not found (create-endpoint prints the model it made)")
    api.require_s3_prefix(source, "batch input")
    api.require_bucket(output.bucket, "batch output")
    job = check_name(args.job_name, "--job-name") if args.job_name else timestamped(f"{model[:30]}-batch")
    resources: dict[str, Any] = {"InstanceType": args.instance_type, "InstanceCount": args.instance_count}
    ami = ami_for(args.instance_type, args.ami_version, DEFAULT_BATCH_AMI)
    if ami:
        resources["TransformAmiVersion"] = ami
    if api.lookup("sagemaker", "describe_transform_job", missing=NOT_FOUND, TransformJobName=job) is not None:
        raise DeployError(f"transform job {job} already exists (job names are single-use): pick another --job-name")
    api.call(
        "sagemaker",
        "create_transform_job",
        TransformJobName=job,
        ModelName=model,
        MaxConcurrentTransforms=args.max_concurrent,
        MaxPayloadInMB=args.max_payload_mb,
        BatchStrategy="SingleRecord",
        ModelClientConfig={"InvocationsTimeoutInSeconds": args.invocation_timeout, "InvocationsMaxRetries": 1},
        TransformInput={
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": str(source)}},
            "ContentType": args.content_type,
            "CompressionType": "None",
            "SplitType": "None",
        },
        TransformOutput={"S3OutputPath": str(output), "Accept": "application/json", "AssembleWith": "None"},
        TransformResources=resources,
    )
    summary: dict[str, Any] = {"job": job, "model": model, "input": str(source), "output": str(output)}
    if not (args.no_wait or api.dry_run):
        final = wait_for_job(
            lambda: api.call("sagemaker", "describe_transform_job", TransformJobName=job),
            "TransformJobStatus", poll_s=args.poll_interval, timeout_s=args.wait_timeout,
        )
        summary["status"] = final.get("TransformJobStatus")
    return summary


def run_train_job(args: argparse.Namespace, api: AwsApi) -> dict[str, Any]:
    role = resolve_role(args.role)
    container_definition(args.image, None, {})  # same image URI validation as the endpoints
    output = S3Uri.parse(args.output, what="--output").as_prefix()
    channels = {"train": S3Uri.parse(args.train, what="--train").as_prefix()}
    if args.val:
        channels["val"] = S3Uri.parse(args.val, what="--val").as_prefix()
    hyperparameters = parse_hyperparameters(args.hp)
    if "gpu_count" not in hyperparameters and args.instance_type in INSTANCE_GPU_COUNT:
        # Train on every GPU of the instance (multi-GPU data parallelism when there are several).
        hyperparameters["gpu_count"] = str(INSTANCE_GPU_COUNT[args.instance_type])
    job = check_name(args.job_name, "--job-name") if args.job_name else timestamped("car-damage-train")
    for name, uri in channels.items():
        api.require_s3_prefix(uri, f"{name} channel")
    api.require_bucket(output.bucket, "training output")
    stopping: dict[str, int] = {"MaxRuntimeInSeconds": args.max_run}
    request: dict[str, Any] = {}
    if args.spot:
        max_wait = args.max_wait or 2 * args.max_run
        if max_wait < args.max_run:
            raise DeployError(f"--max-wait ({max_wait}) must be >= --max-run ({args.max_run}) for spot training")
        stopping["MaxWaitTimeInSeconds"] = max_wait
        request["EnableManagedSpotTraining"] = True
    checkpoint = args.checkpoint_s3 or (str(output.join(job, "checkpoints").as_prefix()) if args.spot else None)
    if checkpoint:
        request["CheckpointConfig"] = {
            "S3Uri": str(S3Uri.parse(checkpoint, what="--checkpoint-s3")),
            "LocalPath": CHECKPOINT_LOCAL_PATH,
        }
    if api.lookup("sagemaker", "describe_training_job", missing=NOT_FOUND, TrainingJobName=job) is not None:
        raise DeployError(f"training job {job} already exists (job names are single-use): pick another --job-name")
    api.call(
        "sagemaker",
        "create_training_job",
        TrainingJobName=job,
        RoleArn=role,
        AlgorithmSpecification={"TrainingImage": args.image, "TrainingInputMode": "File"},
        HyperParameters=hyperparameters,
        InputDataConfig=[
            {
                "ChannelName": name,
                "DataSource": {
                    "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": str(uri),
                                     "S3DataDistributionType": "FullyReplicated"}
                },
                "InputMode": "File",
            }
            for name, uri in channels.items()
        ],
        OutputDataConfig={"S3OutputPath": str(output)},
        ResourceConfig={"InstanceType": args.instance_type, "InstanceCount": 1, "VolumeSizeInGB": args.volume_size},
        StoppingCondition=stopping,
        Environment=parse_env(args.env),
        **request,
    )
    summary: dict[str, Any] = {"job": job, "output": str(output.join(job, "output", "model.tar.gz"))}
    if checkpoint:
        summary["checkpoints"] = request["CheckpointConfig"]["S3Uri"]
    if not (args.no_wait or api.dry_run):
        final = wait_for_job(
            lambda: api.call("sagemaker", "describe_training_job", TrainingJobName=job),
            "TrainingJobStatus", poll_s=args.poll_interval, timeout_s=args.wait_timeout,
        )
        summary["status"] = final.get("TrainingJobStatus")
        summary["output"] = final.get("ModelArtifacts", {}).get("S3ModelArtifacts", summary["output"])
    return summary


def _add_common(parser: argparse.ArgumentParser, default_timeout: float) -> None:
    parser.add_argument("--job-name", help="default: a timestamped name")
    parser.add_argument("--instance-type", default=DEFAULT_GPU_INSTANCE, help="default %(default)s")
    parser.add_argument("--env", action="append", metavar="KEY=VALUE", help="container environment (repeatable)")
    parser.add_argument("--role", help="SageMaker execution role ARN (default: $SAGEMAKER_ROLE_ARN)")
    parser.add_argument("--no-wait", action="store_true", help="return right after the job is created")
    parser.add_argument("--poll-interval", type=float, default=60.0)
    parser.add_argument("--wait-timeout", type=float, default=default_timeout)


def add_parsers(subparsers: Any) -> None:
    batch = subparsers.add_parser("batch-transform", help="one JSON per photo for an S3 prefix of photos")
    batch.add_argument("--input", required=True, help="s3:// prefix holding the photos")
    batch.add_argument("--output", required=True, help="s3:// prefix for the <photo>.out JSON files")
    batch.add_argument("--model", help="existing SageMaker model name (or give --image and --model-data)")
    batch.add_argument("--image", help="image URI, to create a model")
    batch.add_argument("--model-data", help="s3://.../model.tar.gz, to create a model")
    batch.add_argument("--instance-count", type=int, default=1)
    batch.add_argument("--ami-version", help=f"TransformAmiVersion; default {DEFAULT_BATCH_AMI} on GPU, 'none'")
    batch.add_argument("--content-type", default="image/jpeg")
    batch.add_argument("--max-payload-mb", type=int, default=6, help="largest photo in MB (1-100)")
    batch.add_argument("--max-concurrent", type=int, default=1, help="requests in flight per instance")
    batch.add_argument("--invocation-timeout", type=int, default=600, help="seconds per photo (1-3600)")
    _add_common(batch, 6 * 3600.0)
    batch.set_defaults(handler=run_batch_transform)

    train = subparsers.add_parser("train-job", help="a SageMaker training job on this image (spot optional)")
    train.add_argument("--image", required=True, help="image URI with tag")
    train.add_argument("--train", required=True, help="s3:// prefix of the train channel (VIA folder)")
    train.add_argument("--val", help="s3:// prefix of the val channel")
    train.add_argument("--output", required=True, help="s3:// prefix for <job>/output/model.tar.gz")
    train.add_argument("--hp", action="append", metavar="KEY=VALUE", help="hyperparameter (repeatable)")
    train.add_argument("--spot", action="store_true", help="managed spot training (checkpoints on)")
    train.add_argument("--max-run", type=int, default=24 * 3600, help="MaxRuntimeInSeconds")
    train.add_argument("--max-wait", type=int, help="MaxWaitTimeInSeconds with --spot (default 2 x --max-run)")
    train.add_argument("--checkpoint-s3",
                       help="s3:// checkpoint prefix (default with --spot: <output>/<job>/checkpoints/)")
    train.add_argument("--volume-size", type=int, default=50, help="VolumeSizeInGB")
    _add_common(train, 5 * 24 * 3600.0)
    train.set_defaults(handler=run_train_job)
