"""The image users deploy: container/Dockerfile built by `make image`'s script and run by a real Docker engine
the way SageMaker runs it (``docker run IMAGE serve`` / ``train``, /opt/ml mounted, SIGTERM on stop).

A missing engine skips these tests with the reason, or fails them under REQUIRE_TOOLS=1 (CI starts dockerd).
The image is built once per session (scripts/make_image.sh; the layer cache makes an unchanged tree quick), or
taken as it is from CAR_DAMAGE_IMAGE. Every container runs with --network host and is reached on 127.0.0.1.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from PIL import Image, ImageOps

from car_damage.answer.response import validate_response
from tests.conftest import require_tool
from tests.container.docker_run import (
    BUILD_TIMEOUT_S,
    LOCAL_BASE,
    REPO_ROOT,
    Container,
    DockerUnavailable,
    build_image,
    docker_engine,
    free_port,
    image_under_test,
    readable_by_all,
    run_container,
)

BUILD_AND_PUSH = REPO_ROOT / "scripts" / "build_and_push.sh"

HTTP_TIMEOUT_S = 60
#: SageMaker sends SIGKILL this long after SIGTERM.
SAGEMAKER_STOP_S = 30
#: SageMaker's training-contract values for the tiny job (strings, as SageMaker passes them).
TINY_JOB = {"backbone": "tiny", "image_size": "128", "epochs": "1", "steps-per-epoch": "2", "val_steps": "1",
            "weights": "none", "label": "damage", "classes": "scratch,dent"}


@pytest.fixture(scope="session")
def image(tmp_path_factory: pytest.TempPathFactory) -> str:
    try:
        docker_engine()
    except DockerUnavailable as exc:
        if os.environ.get("REQUIRE_TOOLS") == "1":
            pytest.fail(f"{exc} (REQUIRE_TOOLS=1)")
        pytest.skip(str(exc))
    return image_under_test(tmp_path_factory.mktemp("image"))


@pytest.fixture
def containers() -> Iterator[list[Container]]:
    """Containers a test starts; all are removed afterwards, whatever happened."""
    started: list[Container] = []
    yield started
    for container in started:
        container.remove()


def invoke(container: Container, data: bytes, content_type: str = "image/jpeg", **headers: str):
    return requests.post(container.url + "/invocations", data=data, timeout=HTTP_TIMEOUT_S,
                         headers={"Content-Type": content_type, **headers})


@pytest.fixture(scope="module")
def served(image: str, tiny_model_dir: Path) -> Iterator[tuple[Container, list[int]]]:
    """`docker run IMAGE serve` with the tiny model mounted read-only; the /ping statuses on the way up."""
    container = run_container(image, "serve", volumes={readable_by_all(tiny_model_dir): "/opt/ml/model:ro"})
    try:
        yield container, container.wait_ready()
    finally:
        container.remove()


def test_serve_pings_503_while_loading_then_200(served) -> None:
    container, statuses = served
    assert statuses[-1] == 200
    assert 503 in statuses, f"never saw 503 while the model loaded: {statuses}"
    assert statuses.index(503) < len(statuses) - 1
    assert container.ping() == 200


def test_real_photos_answered_from_a_read_only_model(served, test_images_dir: Path) -> None:
    container, _ = served
    photos = sorted(p for p in test_images_dir.iterdir() if p.is_file())
    assert len(photos) >= 10
    for path in photos:
        data = path.read_bytes()
        response = invoke(container, data, "image/png" if path.suffix == ".png" else "image/jpeg")
        assert response.status_code == 200, (path.name, response.text[:500])
        body = response.json()
        validate_response(body)
        width, height = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).size
        assert body["image"] == {"width": width, "height": height}, path.name
    # The mount really is read-only inside the container.
    probe = subprocess.run(["docker", "exec", container.name, "touch", "/opt/ml/model/x"], capture_output=True,
                           text=True, timeout=30)
    assert probe.returncode != 0 and "Read-only file system" in probe.stderr


def test_accept_png_returns_the_annotated_picture(served, test_images_dir: Path) -> None:
    container, _ = served
    data = (test_images_dir / "two_scratch.png").read_bytes()
    response = invoke(container, data, "image/png", Accept="image/png")
    assert response.status_code == 200 and response.headers["Content-Type"] == "image/png"
    assert Image.open(io.BytesIO(response.content)).size == Image.open(io.BytesIO(data)).size


def test_hostile_inputs_get_4xx_json(served, test_images_dir: Path) -> None:
    container, _ = served
    garbage = invoke(container, os.urandom(5000), "application/octet-stream")
    assert garbage.status_code == 400 and garbage.json()["error"] == "invalid_image"
    truncated = invoke(container, (test_images_dir / "a.jpg").read_bytes()[:4000])
    assert truncated.status_code == 400 and truncated.json()["error"] == "invalid_image"
    assert invoke(container, b"hello", "text/plain").status_code == 415
    oversize = invoke(container, os.urandom(7 * 1024 * 1024))  # SageMaker's real-time limit is 6 MiB
    assert oversize.status_code == 413 and oversize.json()["error"] == "payload_too_large"
    assert container.ping() == 200, "the service must survive its hostile inputs"


def sagemaker_model_folder(model_dir: Path, dest: Path) -> Path:
    """/opt/ml/model as SageMaker leaves it: model.tar.gz unpacked in place, the archive itself beside."""
    dest.mkdir()
    archive = dest / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(model_dir.iterdir()):
            tar.add(path, arcname=path.name)
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    return readable_by_all(dest)


def slow_upload(port: int, body: bytes, pause: threading.Event, result: dict) -> None:
    """POST half of the body, wait until told, send the rest: a request in flight when SIGTERM lands."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=HTTP_TIMEOUT_S)
    try:
        head = (f"POST /invocations HTTP/1.1\r\nHost: localhost\r\nContent-Type: image/jpeg\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        sock.sendall(head + body[: len(body) // 2])
        pause.wait(HTTP_TIMEOUT_S)
        sock.sendall(body[len(body) // 2:])
        import http.client

        response = http.client.HTTPResponse(sock)
        response.begin()
        result["status"], result["body"] = response.status, response.read()
    finally:
        sock.close()


def test_sagemaker_style_run_non_root_then_stop_drains_in_flight(image: str, tiny_model_dir: Path, tmp_path: Path,
                                                                 test_images_dir: Path, containers) -> None:
    """No command (CMD serves), --user 1000:1000, SAGEMAKER_BIND_TO_PORT, the model folder as SageMaker unpacks
    model.tar.gz; then `docker stop` while requests are in flight: all complete and the exit is 0 within 30 s."""
    model = sagemaker_model_folder(tiny_model_dir, tmp_path / "model")
    assert sorted(p.name for p in model.iterdir()) == ["mask_cnn_scratch.h5", "mask_cnn_scratch.json",
                                                       "model.tar.gz"]
    container = run_container(image, volumes={model: "/opt/ml/model:ro"}, user="1000:1000")
    containers.append(container)
    container.wait_ready()
    status_line = next(line for line in container.exec("cat", "/proc/1/status").splitlines()
                       if line.startswith("Uid:"))
    assert status_line.split()[1:3] == ["1000", "1000"], status_line
    assert f"serving on 0.0.0.0:{container.port}" in container.logs()  # the image's HOST: every interface
    photo = (test_images_dir / "a.jpg").read_bytes()
    assert invoke(container, photo).status_code == 200

    # Three requests in flight (half their bodies sent) when SIGTERM lands; they finish after it.
    release = threading.Event()
    results: list[dict] = [{} for _ in range(3)]
    uploaders = [threading.Thread(target=slow_upload, args=(container.port, photo, release, result))
                 for result in results]
    for uploader in uploaders:
        uploader.start()
    time.sleep(0.5)
    with ThreadPoolExecutor(max_workers=1) as pool:
        stopper = pool.submit(container.stop, SAGEMAKER_STOP_S)
        time.sleep(1.5)
        assert container.state()[0], "the container quit before its in-flight requests finished"
        release.set()
        for uploader in uploaders:
            uploader.join(HTTP_TIMEOUT_S)
        stop_s = stopper.result()
    assert [result.get("status") for result in results] == [200, 200, 200], results
    for result in results:
        validate_response(json.loads(result["body"]))
    running, exit_code = container.state()
    assert not running and exit_code == 0, container.logs()[-3000:]
    assert stop_s < SAGEMAKER_STOP_S, stop_s
    assert "received SIGTERM: draining" in container.logs()


def opt_ml_folder(root: Path, dataset: Path, hyperparameters: dict[str, str]) -> Path:
    """A host folder laid out as /opt/ml: hyperparameters, one channel per split (copies, not links: the
    container cannot follow links to host paths)."""
    (root / "input" / "config").mkdir(parents=True)
    (root / "input" / "config" / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    for split in ("train", "val"):
        shutil.copytree(dataset / split, root / "input" / "data" / split)
    return root


def docker_train(image: str, root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", "run", "--rm", "--network", "host", "-v", f"{root}:/opt/ml",
                           "-e", "TF_CPP_MIN_LOG_LEVEL=2", image, "train"],
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def synth_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from car_damage.data.synth import SynthSettings, generate

    out = tmp_path_factory.mktemp("synth")
    generate(out, SynthSettings(n=6, height=128, width=128, val_fraction=0.34))
    return out


def test_train_against_an_opt_ml_folder(image: str, tmp_path: Path, synth_dataset: Path) -> None:
    root = opt_ml_folder(tmp_path / "good", synth_dataset, TINY_JOB)
    result = docker_train(image, root)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert sorted(p.name for p in (root / "model").iterdir()) == ["mask_cnn_damage.h5", "mask_cnn_damage.json"]
    card = json.loads((root / "model" / "mask_cnn_damage.json").read_text())
    assert card["class_names"] == ["BG", "scratch", "dent"] and card["metrics"]["epochs"] == 1
    metrics = json.loads((root / "output" / "data" / "evaluation_val.json").read_text())
    assert 0.0 <= metrics["map50"] <= 1.0 and metrics["num_images"] == 2
    assert list((root / "checkpoints").glob("damage*/mask_rcnn_damage_0001.h5"))
    assert not (root / "output" / "failure").exists()

    bad = opt_ml_folder(tmp_path / "bad", synth_dataset, {**TINY_JOB, "epochs": "two"})
    failed = docker_train(image, bad)
    assert failed.returncode == 1
    failure = (bad / "output" / "failure").read_text()
    assert failure.startswith("HyperparameterError: hyperparameter epochs='two': expected an integer"), failure


# --- scripts/build_and_push.sh against a real registry (Debian's docker-registry on 127.0.0.1) ---------------------
REGISTRY_CONFIG = """version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {root}
http:
  addr: 127.0.0.1:{port}
"""
#: The ECR side stays a stub: account, repository present, tag absent, a login password.
AWS_STUB = """#!/usr/bin/env bash
case "$1 $2" in
  "sts get-caller-identity") echo 123456789012 ;;
  "ecr describe-repositories") echo '{"repositories": [{}]}' ;;
  "ecr describe-images")
    echo "An error occurred (ImageNotFoundException) when calling the DescribeImages operation" >&2; exit 254 ;;
  "ecr get-login-password") echo stub-password ;;
  *) echo "unexpected aws call: $*" >&2; exit 99 ;;
esac
"""


@pytest.fixture
def local_registry(tmp_path: Path) -> Iterator[str]:
    binary = require_tool("docker-registry")
    port = free_port()
    config = tmp_path / "registry.yml"
    config.write_text(REGISTRY_CONFIG.format(root=tmp_path / "registry-data", port=port))
    with open(tmp_path / "registry.log", "wb") as log:
        process = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{port}/v2/", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.2)
        else:
            raise AssertionError(f"docker-registry never answered:\n{(tmp_path / 'registry.log').read_text()}")
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_build_and_push_to_a_real_registry_then_pull_and_serve(image: str, local_registry: str, tmp_path: Path,
                                                               tiny_model_dir: Path, test_images_dir: Path,
                                                               containers) -> None:
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    (stubs / "aws").write_text(AWS_STUB)
    (stubs / "aws").chmod(0o755)
    tag = f"test-{uuid.uuid4().hex[:8]}-cpu"
    env = dict(os.environ, PATH=f"{stubs}{os.pathsep}{os.environ['PATH']}")
    pushed = subprocess.run(
        ["bash", str(BUILD_AND_PUSH), "--region", "us-east-1", "--cpu", "--base-image", LOCAL_BASE,
         "--registry", local_registry, "--allow-dirty", "car-damage", tag],
        capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, env=env, cwd=tmp_path)
    assert pushed.returncode == 0, pushed.stderr[-4000:]
    uri = f"{local_registry}/car-damage:{tag}"
    assert pushed.stdout == uri + "\n"
    built_id = docker_output("image", "inspect", "--format", "{{.Id}}", uri)

    # The registry has it; the local copy goes, and the pull brings back the same image.
    listing = requests.get(f"http://{local_registry}/v2/car-damage/tags/list", timeout=10).json()
    assert tag in listing["tags"]
    manifest = requests.head(f"http://{local_registry}/v2/car-damage/manifests/{tag}", timeout=10, headers={
        "Accept": "application/vnd.docker.distribution.manifest.v2+json"})
    digest = manifest.headers["Docker-Content-Digest"]
    docker_output("rmi", uri)
    docker_output("pull", uri)
    assert docker_output("image", "inspect", "--format", "{{.Id}}", uri) == built_id
    assert f"{local_registry}/car-damage@{digest}" in docker_output("image", "inspect", "--format",
                                                                  "{{json .RepoDigests}}", uri)
    try:
        served = run_container(uri, "serve", volumes={readable_by_all(tiny_model_dir): "/opt/ml/model:ro"})
        containers.append(served)
        served.wait_ready()
        assert invoke(served, (test_images_dir / "a.jpg").read_bytes()).status_code == 200
    finally:
        subprocess.run(["docker", "rmi", "-f", uri], capture_output=True, timeout=60)


def docker_output(*argv: str) -> str:
    result = subprocess.run(["docker", *argv], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"docker {' '.join(argv)}: {result.stderr[-2000:]}"
    return result.stdout.strip()


# --- the GPU variant on the Debian base, without a GPU ---------------------------------------------------------------
@pytest.mark.slow
def test_gpu_variant_resolves_imports_and_serves_on_the_cpu(image: str, tmp_path: Path, tiny_model_dir: Path,
                                                            test_images_dir: Path, containers) -> None:
    """TF_VARIANT=gpu from the same Dockerfile: tensorflow[and-cuda] installs and imports (a CUDA build), and with no
    GPU the service says so in one line and answers on the CPU. Its size is printed for docs/benchmarks.md."""
    gpu_image = build_image(tmp_path / "make_image_gpu.log", "--variant", "gpu", "--tag", "car-damage:gpu")
    probe = docker_output("run", "--rm", "--network", "host", "-e", "TF_CPP_MIN_LOG_LEVEL=3", gpu_image, "python3",
                          "-c", "import tensorflow as tf; print(tf.__version__, tf.test.is_built_with_cuda(), "
                          "len(tf.config.list_physical_devices('GPU')))")
    assert probe.splitlines()[-1].split() == ["2.21.0", "True", "0"], probe
    container = run_container(gpu_image, "serve", volumes={readable_by_all(tiny_model_dir): "/opt/ml/model:ro"})
    containers.append(container)
    container.wait_ready()
    assert invoke(container, (test_images_dir / "a.jpg").read_bytes()).status_code == 200
    notices = [line for line in container.logs().splitlines() if "the GPU image serves on the CPU" in line]
    assert len(notices) == 1, container.logs()[-3000:]
    size = int(docker_output("image", "inspect", "--format", "{{.Size}}", gpu_image))
    print(f"car-damage:gpu on the Debian base: {size / 1e9:.2f} GB")
