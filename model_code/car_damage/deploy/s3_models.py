"""``publish-model``: the S3 model registry and the ``model.tar.gz`` SageMaker unpacks into ``/opt/ml/model``.

Registry layout (``ROOT`` = ``segmentation``)::

    s3://<bucket>/segmentation/<type>/<version>/mask_cnn_<type>.h5 (+ mask_cnn_<type>.json)   one per version
    s3://<bucket>/segmentation/<type>/latest/...                                            same files, moving
    s3://<bucket>/segmentation/archives/<name>/<version>/model.tar.gz                       ModelDataUrl / Batch
    s3://<bucket>/segmentation/archives/<name>/latest/model.tar.gz

``<name>`` is the damage types joined by ``-`` (``dent-scratch``) unless ``--archive-name`` says otherwise. The
archive holds the files at its root, so SageMaker extracts them to ``/opt/ml/model/mask_cnn_<type>.h5``, which
is where the service looks. A ``<type>/<version>/`` prefix is also a valid uncompressed ``ModelDataSource``.

Versions are immutable: every object carries its SHA-256 in metadata, and re-publishing a version with different
bytes is refused (same bytes: a harmless no-op re-upload). The archive is byte-reproducible (fixed mtimes,
owners and order), so re-running the same command yields the same SHA-256.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import logging
import re
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from car_damage.deploy.api import AwsApi, DeployError, S3Uri
from car_damage.model.card import ModelCard, card_path_for, damage_type_from_filename

logger = logging.getLogger(__name__)

ROOT = "segmentation"
LATEST = "latest"
ARCHIVE_NAME = "model.tar.gz"
SHA_METADATA_KEY = "sha256"
VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass
class ModelFiles:
    """One damage type's deliverable: the weights and, when present, its sidecar card."""

    damage_type: str
    weights: Path
    card: Path | None
    card_version: str | None = None

    @property
    def paths(self) -> list[Path]:
        return [self.weights] + ([self.card] if self.card else [])


@dataclass
class PublishResult:
    version: str
    types: list[str]
    version_prefixes: dict[str, str] = field(default_factory=dict)
    latest_prefixes: dict[str, str] = field(default_factory=dict)
    model_data_url: str = ""
    latest_model_data_url: str = ""
    archive_sha256: str = ""
    uploaded: list[str] = field(default_factory=list)
    already_present: list[str] = field(default_factory=list)

    def record(self, target: S3Uri, sent: bool) -> None:
        (self.uploaded if sent else self.already_present).append(str(target))

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def collect_model_files(paths: list[Path]) -> list[ModelFiles]:
    """Weights files named or found in the folders given; each with its sidecar validated when present."""
    weights: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if damage_type_from_filename(p))
            if not found:
                raise DeployError(f"{path}: no mask_cnn_<type>.h5 (or mask_rcnn_<type>.h5) file in this folder")
            weights.extend(found)
        elif path.is_file():
            if not damage_type_from_filename(path):
                raise DeployError(f"{path}: weights must be named mask_cnn_<type>.h5 (e.g. mask_cnn_scratch.h5)")
            weights.append(path)
        else:
            raise DeployError(f"{path}: no such file or folder")
    models: dict[str, ModelFiles] = {}
    for path in weights:
        damage_type = damage_type_from_filename(path) or ""
        if damage_type in models:
            first = models[damage_type].weights
            raise DeployError(f"two weights files for damage type {damage_type!r}: {first}, {path}")
        card_path = card_path_for(path)
        version = None
        if card_path.exists():
            try:
                card = ModelCard.load(card_path)
            except ValueError as exc:
                raise DeployError(str(exc)) from exc
            if card.damage_type.lower() != damage_type:
                raise DeployError(
                    f"{card_path}: the card says damage type {card.damage_type!r} "
                    f"but the file name says {damage_type!r}"
                )
            version = card.version if card.version != "unversioned" else None
        else:
            logger.warning("%s has no sidecar %s; the service will infer its config", path, card_path.name)
        models[damage_type] = ModelFiles(damage_type, path, card_path if card_path.exists() else None, version)
    return [models[key] for key in sorted(models)]


def choose_version(explicit: str | None, models: list[ModelFiles]) -> str:
    """--version, else the version all model cards agree on; never a made-up one (re-runs must be idempotent)."""
    if explicit is None:
        versions = {m.card_version for m in models}
        if len(versions) != 1 or None in versions:
            raise DeployError(
                f"pass --version: the model cards give {sorted(str(v) for v in versions)} (need one common version)"
            )
        explicit = versions.pop() or ""
    if explicit == LATEST or not VERSION_PATTERN.match(explicit):
        raise DeployError(f"version {explicit!r} must be 1-64 letters, digits, '.', '_' or '-' and not {LATEST!r}")
    return explicit


def build_archive(models: list[ModelFiles], destination: Path) -> str:
    """A reproducible model.tar.gz with every file at the archive root; returns its SHA-256."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted((p for m in models for p in m.paths), key=lambda p: p.name):
            info = tarfile.TarInfo(path.name)
            info.size = path.stat().st_size
            info.mtime = 0  # reproducible bytes: same inputs -> same archive -> same SHA-256
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            with open(path, "rb") as handle:
                tar.addfile(info, handle)
    with open(destination, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        gz.write(buffer.getvalue())
    return sha256_of(destination)


def _existing_sha(api: AwsApi, target: S3Uri) -> str | None:
    head = api.lookup(
        "s3", "head_object", missing=("404", "NoSuchKey", "NotFound"), Bucket=target.bucket, Key=target.key
    )
    if head is None:
        return None
    return head.get("Metadata", {}).get(SHA_METADATA_KEY, "")


def upload(api: AwsApi, path: Path, target: S3Uri, sha: str, *, immutable: bool, force: bool) -> bool:
    """Upload with the SHA in metadata; an immutable key holding different bytes is refused unless forced.
    Returns False when the key already held exactly these bytes (nothing sent)."""
    if immutable and not force:
        existing = _existing_sha(api, target)
        if existing == sha:
            logger.info("%s already holds these bytes", target)
            return False
        if existing is not None:
            raise DeployError(
                f"{target} already exists with different content (published versions are immutable); "
                "publish a new --version, or pass --force to overwrite"
            )
    logger.info("%s %s -> %s", "would upload" if api.dry_run else "uploading", path, target)
    api.call(
        "s3",
        "upload_file",
        Filename=str(path),
        Bucket=target.bucket,
        Key=target.key,
        ExtraArgs={"Metadata": {SHA_METADATA_KEY: sha}},
    )
    return True


def publish_model(
    api: AwsApi,
    bucket: str,
    paths: list[Path],
    version: str | None = None,
    archive_name: str | None = None,
    update_latest: bool = True,
    force: bool = False,
) -> PublishResult:
    """Upload weights + cards per type (version and latest) and the combined model.tar.gz."""
    models = collect_model_files(paths)
    version = choose_version(version, models)
    types = [m.damage_type for m in models]
    name = archive_name or "-".join(types)
    if not VERSION_PATTERN.match(name):
        raise DeployError(f"archive name {name!r} must be letters, digits, '.', '_' or '-'")
    api.require_bucket(bucket, "model registry")
    base = S3Uri(bucket, ROOT)
    result = PublishResult(version=version, types=types)
    for model in models:
        for path in model.paths:
            sha = sha256_of(path)
            target = base.join(model.damage_type, version, path.name)
            result.record(target, upload(api, path, target, sha, immutable=True, force=force))
            if update_latest:
                target = base.join(model.damage_type, LATEST, path.name)
                result.record(target, upload(api, path, target, sha, immutable=False, force=force))
        result.version_prefixes[model.damage_type] = str(base.join(model.damage_type, version).as_prefix())
        if update_latest:
            result.latest_prefixes[model.damage_type] = str(base.join(model.damage_type, LATEST).as_prefix())
    with tempfile.TemporaryDirectory(prefix="car-damage-publish-") as scratch:
        archive = Path(scratch) / ARCHIVE_NAME
        sha = build_archive(models, archive)
        target = base.join("archives", name, version, ARCHIVE_NAME)
        result.record(target, upload(api, archive, target, sha, immutable=True, force=force))
        result.model_data_url = str(target)
        result.archive_sha256 = sha
        if update_latest:
            latest = base.join("archives", name, LATEST, ARCHIVE_NAME)
            result.record(latest, upload(api, archive, latest, sha, immutable=False, force=force))
            result.latest_model_data_url = str(latest)
    return result


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "publish-model",
        help="upload mask_cnn_<type>.h5 + sidecar to s3://<bucket>/segmentation/<type>/<version>/ and latest/, "
        "plus a model.tar.gz",
    )
    parser.add_argument("paths", nargs="+", type=Path, help="weights files (mask_cnn_<type>.h5) or folders of them")
    parser.add_argument("--bucket", required=True, help="S3 bucket of the model registry (must exist)")
    parser.add_argument("--version", help="version label (default: the version in the model cards)")
    parser.add_argument("--archive-name", help="name of the model.tar.gz folder (default: the types joined by '-')")
    parser.add_argument("--no-latest", action="store_true", help="do not move latest/ to this version")
    parser.add_argument("--force", action="store_true", help="overwrite an existing version with different bytes")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, api: AwsApi) -> dict[str, Any]:
    if args.bucket.startswith("s3://"):
        raise DeployError(f"--bucket takes a bucket name, not a URI: {args.bucket!r}")
    result = publish_model(
        api,
        args.bucket,
        args.paths,
        version=args.version,
        archive_name=args.archive_name,
        update_latest=not args.no_latest,
        force=args.force,
    )
    return result.to_json()
