"""publish-model against the moto server: registry layout, the archive, immutability, errors, dry-run."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

from car_damage.model.card import ModelCard


def make_model(folder: Path, damage_type: str, payload: bytes, version: str | None = "v1") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / f"mask_cnn_{damage_type}.h5"
    weights.write_bytes(payload)
    if version is not None:
        ModelCard(damage_type=damage_type, class_names=["BG", damage_type], version=version).save(
            folder / f"mask_cnn_{damage_type}.json"
        )
    return weights


def keys(aws, bucket: str) -> set[str]:
    return {o["Key"] for o in aws.s3.list_objects_v2(Bucket=bucket).get("Contents", [])}


def test_publish_two_types_layout_and_archive(aws, tmp_path):
    bucket = aws.bucket("models-registry")
    make_model(tmp_path / "m", "scratch", b"scratch-weights")
    make_model(tmp_path / "m", "dent", b"dent-weights")
    result = aws.run("publish-model", "--bucket", bucket, str(tmp_path / "m"))
    assert result.code == 0, result.err
    summary = result.json
    assert summary["version"] == "v1" and summary["types"] == ["dent", "scratch"]
    assert summary["version_prefixes"]["scratch"] == "s3://models-registry/segmentation/scratch/v1/"
    assert summary["model_data_url"] == "s3://models-registry/segmentation/archives/dent-scratch/v1/model.tar.gz"
    expected = set()
    for damage_type in ("dent", "scratch"):
        for where in ("v1", "latest"):
            expected |= {f"segmentation/{damage_type}/{where}/mask_cnn_{damage_type}.{ext}" for ext in ("h5", "json")}
    expected |= {f"segmentation/archives/dent-scratch/{w}/model.tar.gz" for w in ("v1", "latest")}
    assert keys(aws, bucket) == expected

    weights = aws.s3.get_object(Bucket=bucket, Key="segmentation/scratch/v1/mask_cnn_scratch.h5")
    assert weights["Body"].read() == b"scratch-weights"
    assert weights["Metadata"]["sha256"] == hashlib.sha256(b"scratch-weights").hexdigest()

    archive = aws.s3.get_object(Bucket=bucket, Key="segmentation/archives/dent-scratch/v1/model.tar.gz")
    data = archive["Body"].read()
    assert hashlib.sha256(data).hexdigest() == summary["archive_sha256"]
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    # files at the archive root: SageMaker extracts them straight into /opt/ml/model
    assert sorted(members) == ["mask_cnn_dent.h5", "mask_cnn_dent.json", "mask_cnn_scratch.h5", "mask_cnn_scratch.json"]
    assert members["mask_cnn_dent.h5"] == b"dent-weights"
    assert json.loads(members["mask_cnn_scratch.json"])["damage_type"] == "scratch"


def test_rerun_is_idempotent_and_versions_are_immutable(aws, tmp_path):
    bucket = aws.bucket("models-registry")
    weights = make_model(tmp_path, "scratch", b"first")
    first = aws.run("publish-model", "--bucket", bucket, str(weights))
    again = aws.run("publish-model", "--bucket", bucket, str(weights))
    assert first.code == again.code == 0
    assert first.json["archive_sha256"] == again.json["archive_sha256"]  # reproducible archive bytes
    # the immutable version keys are not re-sent; only latest/ is rewritten
    assert sorted(again.json["already_present"]) == [
        "s3://models-registry/segmentation/archives/scratch/v1/model.tar.gz",
        "s3://models-registry/segmentation/scratch/v1/mask_cnn_scratch.h5",
        "s3://models-registry/segmentation/scratch/v1/mask_cnn_scratch.json",
    ]
    assert all("/latest/" in uri for uri in again.json["uploaded"])

    weights.write_bytes(b"retrained")
    refused = aws.run("publish-model", "--bucket", bucket, str(weights))
    assert refused.code == 1 and "immutable" in refused.err
    body = aws.s3.get_object(Bucket=bucket, Key="segmentation/scratch/v1/mask_cnn_scratch.h5")["Body"].read()
    assert body == b"first"

    v2 = aws.run("publish-model", "--bucket", bucket, "--version", "v2", str(weights))
    assert v2.code == 0, v2.err
    latest = aws.s3.get_object(Bucket=bucket, Key="segmentation/scratch/latest/mask_cnn_scratch.h5")["Body"].read()
    assert latest == b"retrained"
    forced = aws.run("publish-model", "--bucket", bucket, "--force", str(weights))
    assert forced.code == 0
    assert aws.s3.get_object(Bucket=bucket, Key="segmentation/scratch/v1/mask_cnn_scratch.h5")["Body"].read() == (
        b"retrained"
    )


def test_no_latest_leaves_latest_alone(aws, tmp_path):
    bucket = aws.bucket("models-registry")
    weights = make_model(tmp_path, "dent", b"w")
    assert aws.run("publish-model", "--bucket", bucket, "--no-latest", str(weights)).code == 0
    assert not any("/latest/" in k for k in keys(aws, bucket))


def test_missing_bucket_is_named(aws, tmp_path):
    weights = make_model(tmp_path, "scratch", b"w")
    result = aws.run("publish-model", "--bucket", "no-such-bucket", str(weights))
    assert result.code == 1
    assert "'no-such-bucket'" in result.err and "does not exist" in result.err


def test_input_errors(aws, tmp_path):
    bucket = aws.bucket("models-registry")
    unversioned = make_model(tmp_path / "a", "scratch", b"w", version=None)
    result = aws.run("publish-model", "--bucket", bucket, str(unversioned))
    assert result.code == 1 and "pass --version" in result.err

    badly_named = tmp_path / "b" / "weights.h5"
    badly_named.parent.mkdir()
    badly_named.write_bytes(b"w")
    result = aws.run("publish-model", "--bucket", bucket, "--version", "v1", str(badly_named))
    assert result.code == 1 and "mask_cnn_<type>.h5" in result.err

    mismatched = make_model(tmp_path / "c", "dent", b"w")
    ModelCard(damage_type="scratch", class_names=["BG", "scratch"], version="v1").save(mismatched.with_suffix(".json"))
    result = aws.run("publish-model", "--bucket", bucket, str(mismatched))
    assert result.code == 1 and "the card says damage type 'scratch'" in result.err

    result = aws.run("publish-model", "--bucket", bucket, "--version", "latest", str(unversioned))
    assert result.code == 1 and "version 'latest'" in result.err
    result = aws.run("publish-model", "--bucket", "s3://models-registry", "--version", "v1", str(unversioned))
    assert result.code == 1 and "bucket name, not a URI" in result.err
    assert not keys(aws, bucket)  # nothing half-uploaded


def test_dry_run_sends_nothing_and_needs_no_endpoint(aws, tmp_path, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    weights = make_model(tmp_path, "scratch", b"w")
    result = aws.run("--dry-run", "publish-model", "--bucket", "some-bucket", str(weights), endpoint=False)
    assert result.code == 0, result.err
    calls = result.calls
    uploads = [c["params"]["Key"] for c in calls if c["operation"] == "upload_file"]
    assert uploads == [
        "segmentation/scratch/v1/mask_cnn_scratch.h5",
        "segmentation/scratch/latest/mask_cnn_scratch.h5",
        "segmentation/scratch/v1/mask_cnn_scratch.json",
        "segmentation/scratch/latest/mask_cnn_scratch.json",
        "segmentation/archives/scratch/v1/model.tar.gz",
        "segmentation/archives/scratch/latest/model.tar.gz",
    ]
    assert calls[0] == {"service": "s3", "operation": "head_bucket", "params": {"Bucket": "some-bucket"}}
    assert {c["service"] for c in calls} == {"s3"}
