"""scripts/build_and_push.sh with stub `aws` and `docker` executables on PATH that log their arguments.

The script runs from a copy inside a throw-away git repository (so "clean" and "dirty" are under the test's
control); PATH holds only the stubs and links to the few system tools the script uses (a real docker may live in
/usr/bin: the Docker tests install docker.io, so PATH must not simply include it).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "build_and_push.sh"
ACCOUNT = "123456789012"
#: What the script and the stubs run besides aws and docker.
SYSTEM_TOOLS = ("bash", "cat", "date", "dirname", "git", "sed")

# Canned answers keyed on the aws sub-command; STUB_* variables flip the branches under test.
AWS_STUB = r"""#!/usr/bin/env bash
echo "aws $*" >> "$STUB_LOG"
case "$1 $2" in
  "sts get-caller-identity")
    [ -z "${STUB_STS_FAIL:-}" ] || { echo "Unable to locate credentials" >&2; exit 253; }
    echo "$STUB_ACCOUNT" ;;
  "configure get")
    [ -n "${STUB_PROFILE_REGION:-}" ] || exit 1
    echo "$STUB_PROFILE_REGION" ;;
  "ecr describe-repositories")
    if [ -n "${STUB_DESCRIBE_DENIED:-}" ]; then
      echo "An error occurred (AccessDeniedException) when calling DescribeRepositories" >&2; exit 254
    fi
    if [ -n "${STUB_REPO_EXISTS:-}" ]; then echo '{"repositories": [{}]}'; exit 0; fi
    echo "An error occurred (RepositoryNotFoundException) when calling the DescribeRepositories operation" >&2
    exit 254 ;;
  "ecr create-repository") echo '{"repository": {}}' ;;
  "ecr describe-images")
    if [ -n "${STUB_TAG_EXISTS:-}" ]; then echo '{"imageDetails": [{}]}'; exit 0; fi
    echo "An error occurred (ImageNotFoundException) when calling the DescribeImages operation" >&2
    exit 254 ;;
  "ecr get-login-password") echo "stub-password" ;;
  *) echo "unexpected aws call: $*" >&2; exit 99 ;;
esac
"""

# `get-login-password | docker login` starts both stubs at once: docker login reads its stdin BEFORE logging,
# so its line always follows the aws line (which is written before the password is printed).
DOCKER_STUB = r"""#!/usr/bin/env bash
if [ "$1" = "login" ]; then
  password="$(cat)"
  echo "docker $*" >> "$STUB_LOG"
  echo "docker login stdin: $password" >> "$STUB_LOG"
  exit 0
fi
echo "docker $*" >> "$STUB_LOG"
exit 0
"""


def _write_executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def sandbox(tmp_path: Path):
    tools = tmp_path / "tools"
    tools.mkdir()
    for tool in SYSTEM_TOOLS:
        found = shutil.which(tool)
        if found is None:
            pytest.skip(f"{tool} is not installed")
        (tools / tool).symlink_to(found)
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    (repo / "container").mkdir()
    shutil.copy2(SCRIPT, repo / "scripts" / "build_and_push.sh")
    (repo / "container" / "Dockerfile").write_text("FROM scratch\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "init")
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    _write_executable(stubs / "aws", AWS_STUB)
    _write_executable(stubs / "docker", DOCKER_STUB)
    log = tmp_path / "calls.log"
    log.touch()

    class Sandbox:
        root = repo
        stub_dir = stubs
        commit = _git(repo, "rev-parse", "--short=12", "HEAD").strip()

        def run(self, *args: str, **env: str) -> subprocess.CompletedProcess:
            full_env = {"PATH": f"{stubs}:{tools}", "HOME": str(tmp_path), "STUB_LOG": str(log),
                        "STUB_ACCOUNT": ACCOUNT, **env}
            return subprocess.run(["bash", str(repo / "scripts" / "build_and_push.sh"), *args], cwd=tmp_path,
                                  env=full_env, capture_output=True, text=True, timeout=60)

        def calls(self) -> list[str]:
            return log.read_text().splitlines()

    return Sandbox()


def test_fresh_repository_full_sequence(sandbox):
    result = sandbox.run("--region", "eu-west-1", "car-damage")
    assert result.returncode == 0, result.stderr
    registry = f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com"
    uri = f"{registry}/car-damage:{sandbox.commit}"
    assert result.stdout == uri + "\n"  # only the URI on stdout
    assert re.fullmatch(r"[0-9a-f]{12}", sandbox.commit)
    assert sandbox.calls() == [
        "aws sts get-caller-identity --query Account --output text",
        "aws ecr describe-repositories --region eu-west-1 --repository-names car-damage",
        "aws ecr create-repository --region eu-west-1 --repository-name car-damage "
        "--image-scanning-configuration scanOnPush=true",
        "aws ecr describe-images --region eu-west-1 --repository-name car-damage "
        f"--image-ids imageTag={sandbox.commit}",
        "aws ecr get-login-password --region eu-west-1",
        f"docker login --username AWS --password-stdin {registry}",
        "docker login stdin: stub-password",
        f"docker build --network host --platform linux/amd64 -f container/Dockerfile -t {uri} .",
        f"docker push {uri}",
    ]


def test_existing_repository_cpu_latest_region_from_env(sandbox):
    result = sandbox.run("--cpu", "--latest", "car-damage", AWS_REGION="us-east-2", STUB_REPO_EXISTS="1")
    assert result.returncode == 0, result.stderr
    registry = f"{ACCOUNT}.dkr.ecr.us-east-2.amazonaws.com"
    uri = f"{registry}/car-damage:{sandbox.commit}-cpu"
    assert result.stdout.strip() == uri
    calls = sandbox.calls()
    assert not any("create-repository" in c for c in calls)
    assert not any("configure get" in c for c in calls)  # the env region wins over the profile
    assert (
        f"docker build --network host --platform linux/amd64 -f container/Dockerfile --build-arg TF_VARIANT=cpu "
        f"--build-arg BASE_IMAGE=ubuntu:22.04 -t {uri} -t {registry}/car-damage:latest ." in calls
    )
    assert calls[-2:] == [f"docker push {uri}", f"docker push {registry}/car-damage:latest"]


def test_region_from_profile_and_explicit_tag(sandbox):
    result = sandbox.run("car-damage", "v1.2.0", STUB_PROFILE_REGION="ap-south-1", STUB_REPO_EXISTS="1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{ACCOUNT}.dkr.ecr.ap-south-1.amazonaws.com/car-damage:v1.2.0"
    assert sandbox.calls()[0] == "aws configure get region"


def test_no_region_anywhere_fails_before_any_docker_call(sandbox):
    result = sandbox.run("car-damage")
    assert result.returncode == 1
    assert "no AWS region" in result.stderr
    assert not any(c.startswith("docker") for c in sandbox.calls())
    assert not any("sts" in c for c in sandbox.calls())


@pytest.mark.parametrize("missing", ["docker", "aws"])
def test_missing_tool_is_named(sandbox, missing):
    (sandbox.stub_dir / missing).unlink()
    result = sandbox.run("--region", "us-east-1", "car-damage")
    assert result.returncode == 1
    expected = "the aws CLI is not installed" if missing == "aws" else "docker is not installed"
    assert expected in result.stderr
    assert sandbox.calls() == []


def test_dirty_tree_refused_unless_allowed(sandbox):
    (sandbox.root / "container" / "Dockerfile").write_text("FROM scratch\nLABEL x=1\n")
    refused = sandbox.run("--region", "us-east-1", "car-damage")
    assert refused.returncode == 1 and "uncommitted changes" in refused.stderr
    assert not any(c.startswith("docker") for c in sandbox.calls())
    allowed = sandbox.run("--region", "us-east-1", "--allow-dirty", "car-damage", STUB_REPO_EXISTS="1")
    assert allowed.returncode == 0, allowed.stderr
    assert re.fullmatch(
        rf"{ACCOUNT}\.dkr\.ecr\.us-east-1\.amazonaws\.com/car-damage:{sandbox.commit}-dirty-\d{{8}}T\d{{6}}Z\n",
        allowed.stdout,
    )


def test_commit_already_pushed_is_not_rebuilt(sandbox):
    result = sandbox.run("--region", "us-east-1", "car-damage", STUB_REPO_EXISTS="1", STUB_TAG_EXISTS="1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(f"/car-damage:{sandbox.commit}")
    assert not any(c.startswith("docker") for c in sandbox.calls())


def test_explicit_tag_already_pushed_is_refused(sandbox):
    result = sandbox.run("--region", "us-east-1", "car-damage", "v1", STUB_REPO_EXISTS="1", STUB_TAG_EXISTS="1")
    assert result.returncode == 1
    assert "immutable" in result.stderr
    assert not any(c.startswith("docker") for c in sandbox.calls())


def test_describe_error_other_than_not_found_stops(sandbox):
    result = sandbox.run("--region", "us-east-1", "car-damage", STUB_DESCRIBE_DENIED="1")
    assert result.returncode == 1
    assert "AccessDeniedException" in result.stderr
    assert not any("create-repository" in c for c in sandbox.calls())


def test_credentials_failure_is_explained(sandbox):
    result = sandbox.run("--region", "us-east-1", "car-damage", STUB_STS_FAIL="1")
    assert result.returncode == 1
    assert "are credentials configured" in result.stderr


@pytest.mark.parametrize("args", [[], ["a", "b", "c"], ["Bad_Name"], ["car-damage", "latest"], ["--bogus", "x"]])
def test_bad_arguments(sandbox, args):
    result = sandbox.run("--region", "us-east-1", *args)
    assert result.returncode == 1
    assert "error:" in result.stderr
    assert sandbox.calls() == []


def test_base_image_and_registry_options(sandbox):
    result = sandbox.run("--region", "us-east-1", "--cpu", "--base-image", "car-damage-base:bookworm",
                         "--registry", "127.0.0.1:5000", "car-damage", STUB_REPO_EXISTS="1")
    assert result.returncode == 0, result.stderr
    uri = f"127.0.0.1:5000/car-damage:{sandbox.commit}-cpu"
    assert result.stdout == uri + "\n"
    calls = sandbox.calls()
    assert "docker login --username AWS --password-stdin 127.0.0.1:5000" in calls
    assert (f"docker build --network host --platform linux/amd64 -f container/Dockerfile --build-arg TF_VARIANT=cpu "
            f"--build-arg BASE_IMAGE=car-damage-base:bookworm -t {uri} .") in calls
    assert calls[-1] == f"docker push {uri}"
    gpu = sandbox.run("--region", "us-east-1", "--base-image", "my/cuda:1", "car-damage", "v2", STUB_REPO_EXISTS="1")
    assert gpu.returncode == 0, gpu.stderr
    assert any("--build-arg BASE_IMAGE=my/cuda:1 -t" in c and "TF_VARIANT" not in c for c in sandbox.calls())
