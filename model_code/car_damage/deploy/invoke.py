"""``invoke``: send photos to an endpoint (sync, or async through S3), print the JSON, save annotated images.

``--container-url http://127.0.0.1:8080`` talks to a container running locally (``docker run IMAGE serve`` or
``make serve``) through the very same boto3 ``sagemaker-runtime`` request path: boto3 builds, serialises and
parses the request exactly as for SageMaker; two botocore event hooks make the difference: one rewrites the
URL path ``/endpoints/<name>/invocations`` (the runtime API's) to ``/invocations`` (the container's), the other
turns a container error status into the ``ModelError`` shape the real runtime returns (HTTP 424 with
``OriginalStatusCode`` and ``OriginalMessage``). Requests are unsigned (a container checks no signature).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from car_damage.deploy.api import AwsApi, DeployError, S3Uri, check_name

logger = logging.getLogger(__name__)

#: InvokeEndpoint's body limit; bigger photos go through --async (S3 input, up to 1 GB).
MAX_SYNC_BYTES = 6 * 1024 * 1024
CONTENT_TYPES = {
    ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp",
    ".bmp": "image/bmp", ".tif": "image/tiff", ".tiff": "image/tiff",
}
IMAGE_EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg"}
RUNTIME = "sagemaker-runtime"
GENERIC_TYPES = frozenset({"", "binary/octet-stream", "application/octet-stream"})


def content_type_for(path: Path, explicit: str | None) -> str:
    # The service decodes by content; octet-stream is accepted for anything it can read.
    return explicit or CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")


def _rewrite_to_container_path(request: Any, **_: Any) -> None:
    """before-send hook: the runtime API's /endpoints/<name>/invocations is the container's /invocations."""
    parts = urlsplit(request.url)
    request.url = urlunsplit((parts.scheme, parts.netloc, "/invocations", parts.query, ""))


def _container_error_as_model_error(response_dict: dict[str, Any], customized_response_dict: dict[str, Any],
                                    **_: Any) -> None:
    """before-parse hook: the runtime wraps container 4xx/5xx answers as ModelError; so do we, locally."""
    status = int(response_dict.get("status_code", 200))
    if status < 300:
        return
    body = response_dict.get("body") or b""
    message = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
    customized_response_dict["Error"] = {
        "Code": "ModelError",
        "Message": f"Received server error ({status}) from the container with message \"{message}\"",
    }
    customized_response_dict["OriginalStatusCode"] = status
    customized_response_dict["OriginalMessage"] = message


def container_runtime_client(container_url: str, region: str) -> Any:
    """A sagemaker-runtime client whose InvokeEndpoint reaches a local container's /invocations."""
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    config = Config(signature_version=UNSIGNED, read_timeout=70, retries={"max_attempts": 1})
    client = boto3.client(RUNTIME, region_name=region, endpoint_url=container_url, config=config)
    client.meta.events.register("before-send.sagemaker-runtime.InvokeEndpoint", _rewrite_to_container_path)
    client.meta.events.register("before-parse.sagemaker-runtime.InvokeEndpoint", _container_error_as_model_error)
    return client


def _error_detail(exc: Exception) -> dict[str, Any]:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        raise exc
    error = response.get("Error", {})
    detail = {"error": error.get("Code"), "message": error.get("Message")}
    if "OriginalStatusCode" in response:
        detail["status"] = response["OriginalStatusCode"]
        message = response.get("OriginalMessage", "")
        try:
            detail["body"] = json.loads(message)
        except (TypeError, ValueError):
            detail["body"] = message
    return detail


def _handle_body(body: bytes, content_type: str, photo: Path, out_dir: Path | None) -> Any:
    """JSON is returned (and written to out_dir/<stem>.json); an image is saved to out_dir."""
    if content_type.startswith("application/json"):
        try:
            parsed = json.loads(body)
        except ValueError as exc:
            raise DeployError(f"{photo}: the endpoint answered invalid JSON: {body[:200]!r}") from exc
        if out_dir is not None:
            (out_dir / f"{photo.stem}.json").write_text(json.dumps(parsed, indent=2) + "\n")
        return parsed
    if content_type.startswith("image/"):
        if out_dir is None:
            raise DeployError("the endpoint answered an image: pass --out-dir to save it")
        target = out_dir / f"{photo.stem}.annotated{IMAGE_EXTENSIONS.get(content_type, '.bin')}"
        target.write_bytes(body)
        return {"saved": str(target), "content_type": content_type, "bytes": len(body)}
    return {"content_type": content_type, "body": body.decode("utf-8", "replace")}


def invoke_sync(api: AwsApi, args: argparse.Namespace, photos: list[Path], out_dir: Path | None) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for photo in photos:
        data = photo.read_bytes()
        if len(data) > MAX_SYNC_BYTES:
            raise DeployError(f"{photo}: {len(data)} bytes is over InvokeEndpoint's 6 MiB; use --async")
        params: dict[str, Any] = {
            "EndpointName": args.endpoint, "Body": data,
            "ContentType": content_type_for(photo, args.content_type), "Accept": args.accept,
        }
        if args.custom_attributes:
            params["CustomAttributes"] = args.custom_attributes
        if api.dry_run:
            params["Body"] = f"<{len(data)} bytes of {photo}>"
            api.call(RUNTIME, "invoke_endpoint", **params)
            continue
        try:
            response = api.call(RUNTIME, "invoke_endpoint", **params)
        except DeployError:
            raise
        except Exception as exc:
            results[str(photo)] = _error_detail(exc)
            continue
        body = response["Body"].read()
        results[str(photo)] = _handle_body(body, response.get("ContentType", args.accept), photo, out_dir)
    return results


def _s3_object(api: AwsApi, uri: S3Uri) -> dict[str, Any] | None:
    return api.lookup("s3", "get_object", missing=("NoSuchKey", "404"), Bucket=uri.bucket, Key=uri.key)


def invoke_async(api: AwsApi, args: argparse.Namespace, photos: list[Path], out_dir: Path | None) -> dict[str, Any]:
    inputs: list[tuple[Path, S3Uri]] = [(Path(S3Uri.parse(u).key), S3Uri.parse(u)) for u in args.input_location or []]
    if photos:
        if not args.async_input:
            raise DeployError("--async with local photos needs --async-input s3://bucket/prefix/ to upload them to")
        prefix = S3Uri.parse(args.async_input, what="--async-input").as_prefix()
        api.require_bucket(prefix.bucket, "async input")
        for photo in photos:
            target = prefix.join(photo.name)
            api.call("s3", "upload_file", Filename=str(photo), Bucket=target.bucket, Key=target.key)
            inputs.append((photo, target))
    if not inputs:
        raise DeployError("nothing to send: give photos or --input-location s3://...")
    results: dict[str, Any] = {}
    for photo, location in inputs:
        params: dict[str, Any] = {
            "EndpointName": args.endpoint, "InputLocation": str(location),
            "ContentType": content_type_for(photo, args.content_type), "Accept": args.accept,
            "InvocationTimeoutSeconds": args.invocation_timeout,
        }
        if args.custom_attributes:
            params["CustomAttributes"] = args.custom_attributes
        response = api.call(RUNTIME, "invoke_endpoint_async", **params)
        entry = {k: response.get(k) for k in ("InferenceId", "OutputLocation", "FailureLocation") if response.get(k)}
        if args.wait and not api.dry_run:
            entry["result"] = _wait_for_async(api, args, photo, entry, out_dir)
        results[str(location)] = entry
    return results


def _wait_for_async(api: AwsApi, args: argparse.Namespace, photo: Path, entry: dict[str, Any],
                    out_dir: Path | None) -> Any:
    output = S3Uri.parse(entry["OutputLocation"])
    failure = S3Uri.parse(entry["FailureLocation"]) if entry.get("FailureLocation") else None
    start = time.monotonic()
    while True:
        found = _s3_object(api, output)
        if found is not None:
            body = found["Body"].read()
            stored_type = found.get("ContentType") or ""
            # S3's generic types say nothing about the payload; the Accept we asked for does.
            if stored_type in GENERIC_TYPES:
                stored_type = args.accept
            return _handle_body(body, stored_type, photo, out_dir)
        failed = _s3_object(api, failure) if failure else None
        if failed is not None:
            return {"error": "async inference failed", "body": failed["Body"].read().decode("utf-8", "replace")}
        if time.monotonic() - start > args.wait_timeout:
            raise DeployError(f"no result at {output} after {args.wait_timeout:.0f} s")
        time.sleep(args.poll_interval)


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("invoke", help="send photos to an endpoint; print JSON or save annotated images")
    parser.add_argument("photos", nargs="*", type=Path)
    parser.add_argument("--endpoint", required=True, help="endpoint name (any name with --container-url)")
    parser.add_argument("--accept", default="application/json",
                        help="application/json (default), or image/png / image/jpeg for the annotated photo")
    parser.add_argument("--content-type", help="default: from the file extension")
    parser.add_argument("--custom-attributes", help="service options, e.g. 'min_score=0.8;types=scratch'")
    parser.add_argument("--out-dir", type=Path, help="write <photo>.json / <photo>.annotated.png here")
    parser.add_argument("--container-url", help="a local container's base URL (docker run ... serve), e.g. "
                        "http://127.0.0.1:8080: same boto3 request, sent to its /invocations")
    parser.add_argument("--async", dest="use_async", action="store_true", help="invoke_endpoint_async via S3")
    parser.add_argument("--async-input", help="s3:// prefix to upload local photos to (with --async)")
    parser.add_argument("--input-location", action="append", help="s3:// photo already uploaded (with --async)")
    parser.add_argument("--invocation-timeout", type=int, default=900, help="async: seconds per request")
    parser.add_argument("--wait", action="store_true", help="async: poll S3 until each result is there")
    parser.add_argument("--poll-interval", type=float, default=5.0)
    parser.add_argument("--wait-timeout", type=float, default=1800.0)
    parser.set_defaults(handler=run, exit_code=exit_code)


def exit_code(summary: dict[str, Any]) -> int:
    """3 when any photo got an error answer (the JSON still lists every photo), else 0."""
    for entry in summary.values():
        result = entry.get("result", entry) if isinstance(entry, dict) else None
        if isinstance(result, dict) and "error" in result:
            return 3
    return 0


def run(args: argparse.Namespace, api: AwsApi) -> dict[str, Any]:
    check_name(args.endpoint, "--endpoint")
    if args.container_url:
        if args.use_async:
            raise DeployError("--container-url serves synchronous requests only (async needs SageMaker's queue)")
        if not api.dry_run:
            api.use_client(RUNTIME, container_runtime_client(args.container_url, api.region))
    for photo in args.photos:
        if not photo.is_file():
            raise DeployError(f"{photo}: no such file")
    if not args.photos and not (args.use_async and args.input_location):
        raise DeployError("give one or more photos (or --async --input-location s3://...)")
    out_dir = args.out_dir
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    if args.use_async:
        return invoke_async(api, args, list(args.photos), out_dir)
    return invoke_sync(api, args, list(args.photos), out_dir)
