"""``autoscale``: Application Auto Scaling target tracking on invocations per instance.

``SageMakerVariantInvocationsPerInstance`` is the average number of requests *per minute* per instance. Sizing
rule from the SageMaker guide: target = sustainable requests/s of one instance x 60 x safety factor (0.5 to
start). Both calls are upserts, so re-running the command just rewrites the same target and policy.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from car_damage.deploy.api import AwsApi, DeployError, check_name
from car_damage.deploy.resources import DEFAULT_VARIANT, NOT_FOUND

logger = logging.getLogger(__name__)

SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
METRIC = "SageMakerVariantInvocationsPerInstance"


def resource_id(endpoint: str, variant: str) -> str:
    return f"endpoint/{endpoint}/variant/{variant}"


def configure_autoscaling(
    api: AwsApi,
    endpoint: str,
    variant: str = DEFAULT_VARIANT,
    *,
    min_capacity: int = 1,
    max_capacity: int = 4,
    target_invocations_per_minute: float = 30.0,
    scale_in_cooldown_s: int = 600,
    scale_out_cooldown_s: int = 300,
    policy_name: str | None = None,
) -> dict[str, Any]:
    check_name(endpoint, "endpoint name")
    if not 0 <= min_capacity <= max_capacity or max_capacity < 1:
        raise DeployError(f"need 0 <= --min <= --max and --max >= 1, got min={min_capacity} max={max_capacity}")
    if target_invocations_per_minute <= 0:
        raise DeployError("--target must be > 0 invocations per instance per minute")
    if min(scale_in_cooldown_s, scale_out_cooldown_s) < 0:
        raise DeployError("cooldowns must be >= 0 seconds")
    # Application Auto Scaling accepts a target on an endpoint that does not exist; check it ourselves.
    described = api.lookup("sagemaker", "describe_endpoint", missing=NOT_FOUND, EndpointName=endpoint)
    if described is None and not api.dry_run:
        raise DeployError(f"endpoint {endpoint} does not exist (create-endpoint first)")
    variants = [v.get("VariantName") for v in (described or {}).get("ProductionVariants", [])]
    if variants and variant not in variants:
        raise DeployError(f"endpoint {endpoint} has no variant {variant!r} (it has {variants})")
    rid = resource_id(endpoint, variant)
    api.call(
        "application-autoscaling",
        "register_scalable_target",
        ServiceNamespace="sagemaker",
        ResourceId=rid,
        ScalableDimension=SCALABLE_DIMENSION,
        MinCapacity=min_capacity,
        MaxCapacity=max_capacity,
    )
    name = policy_name or f"{endpoint}-invocations-per-instance"
    api.call(
        "application-autoscaling",
        "put_scaling_policy",
        PolicyName=name,
        ServiceNamespace="sagemaker",
        ResourceId=rid,
        ScalableDimension=SCALABLE_DIMENSION,
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": float(target_invocations_per_minute),
            "PredefinedMetricSpecification": {"PredefinedMetricType": METRIC},
            "ScaleInCooldown": scale_in_cooldown_s,
            "ScaleOutCooldown": scale_out_cooldown_s,
        },
    )
    return {"resource_id": rid, "policy": name, "min": min_capacity, "max": max_capacity,
            "target_invocations_per_instance_per_minute": target_invocations_per_minute}


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("autoscale", help="target-tracking autoscaling on invocations per instance")
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--variant", default=DEFAULT_VARIANT)
    parser.add_argument("--min", type=int, default=1, dest="min_capacity")
    parser.add_argument("--max", type=int, default=4, dest="max_capacity")
    parser.add_argument("--target", type=float, default=30.0,
                        help="invocations per instance per minute to hold (default %(default)s: "
                        "~1 req/s per GPU instance x 60 x 0.5 safety)")
    parser.add_argument("--scale-in-cooldown", type=int, default=600)
    parser.add_argument("--scale-out-cooldown", type=int, default=300)
    parser.add_argument("--policy-name")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, api: AwsApi) -> dict[str, Any]:
    return configure_autoscaling(
        api,
        args.endpoint,
        args.variant,
        min_capacity=args.min_capacity,
        max_capacity=args.max_capacity,
        target_invocations_per_minute=args.target,
        scale_in_cooldown_s=args.scale_in_cooldown,
        scale_out_cooldown_s=args.scale_out_cooldown,
        policy_name=args.policy_name,
    )
