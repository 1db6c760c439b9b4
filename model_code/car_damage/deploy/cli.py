"""``python -m car_damage.deploy <subcommand>``: ship the model and the container to SageMaker.

Each subcommand prints one JSON summary on stdout (``--dry-run``: one JSON line per API call instead) and logs
progress on stderr. Exit status: 0 done, 1 a problem the message explains, 2 bad arguments, 3 some photos
failed (``invoke``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from car_damage.deploy import autoscale, endpoints, invoke, jobs, s3_models
from car_damage.deploy.api import AwsApi, DeployError, client_error_message, resolve_region

logger = logging.getLogger("car_damage.deploy")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m car_damage.deploy",
        description="Publish models to S3 and run them on SageMaker (endpoints, autoscaling, batch, training).",
    )
    parser.add_argument("--region", help="AWS region (default: $AWS_REGION, $AWS_DEFAULT_REGION, the profile's)")
    parser.add_argument("--endpoint-url", help="send every AWS call here (e.g. a moto server or a VPC endpoint)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the API calls as JSON lines instead of making them (no credentials needed)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")
    s3_models.add_parser(subparsers)
    endpoints.add_parsers(subparsers)
    autoscale.add_parser(subparsers)
    jobs.add_parsers(subparsers)
    invoke.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(message)s")
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        api = AwsApi(region=resolve_region(args.region), endpoint_url=args.endpoint_url, dry_run=args.dry_run)
        summary = args.handler(args, api)
    except DeployError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # botocore's errors: the AWS message is the useful part, not the traceback
        if type(exc).__name__ == "ParamValidationError":
            print(f"error: invalid request for {args.command}: {exc}", file=sys.stderr)
            return 1
        if getattr(exc, "response", None) is None:
            raise
        print(f"error: AWS refused {args.command}: {client_error_message(exc)}", file=sys.stderr)
        return 1
    if not args.dry_run:
        print(json.dumps(summary, indent=2, sort_keys=True, default=str))
    exit_code = getattr(args, "exit_code", None)
    return exit_code(summary) if exit_code and not args.dry_run else 0
