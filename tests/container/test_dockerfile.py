"""Lint the Dockerfile with hadolint and check that it agrees with the code (test_image.py builds and runs it).

Every COPY source must exist and survive .dockerignore, every path and name it relies on (serve, train,
wsgi:app, nginx.conf, the pyproject extras, MODEL_DIR, the port label) must match what the code uses.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_tool

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "container" / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
HADOLINT = Path(sys.executable).parent / "hadolint"
PROGRAM_DIR = "/opt/program"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    logical, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        current += " " + stripped[:-1] if stripped.endswith("\\") else " " + stripped
        if not stripped.endswith("\\"):
            logical.append(current.strip())
            current = ""
    return [(item.split(None, 1)[0].upper(), item.split(None, 1)[1] if " " in item else "") for item in logical]


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; a leading ! re-includes. Parents count as matches."""
    excluded = False
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        body = body.strip("/")
        regex = fnmatch.translate(body).replace(".*", "[^/]*").replace("[^/]*[^/]*", ".*")
        if body.startswith("**/"):
            matched = any(fnmatch.fnmatch(p.split("/")[-1], body[3:]) for p in prefixes)
        else:
            matched = any(re.fullmatch(regex, p) for p in prefixes)
        if matched:
            excluded = not negate
    return excluded


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return instructions(DOCKERFILE.read_text())


def args_of(dockerfile, name: str) -> list[str]:
    return [arguments for instruction, arguments in dockerfile if instruction == name]


def test_hadolint_passes_and_every_ignore_is_justified() -> None:
    require_tool("hadolint", HADOLINT)
    result = subprocess.run([str(HADOLINT), "--format", "json", "--failure-threshold", "warning", str(DOCKERFILE)],
                            capture_output=True, text=True, timeout=60)
    findings = json.loads(result.stdout or "[]")
    assert findings == [], findings
    assert result.returncode == 0, result.stderr
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        match = re.match(r"#\s*hadolint ignore=([\w,]+)", line.strip())
        if match:
            comments = " ".join(lines[max(0, number - 4):number])
            for rule in match.group(1).split(","):
                assert rule in comments, f"ignore of {rule} on line {number + 1} has no inline justification"


def test_hadolint_is_really_checking(tmp_path: Path) -> None:
    """The same invocation fails a Dockerfile with known problems (so the test above can fail)."""
    require_tool("hadolint", HADOLINT)
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN cd /tmp && apt-get install nginx\nCMD serve\n")
    result = subprocess.run([str(HADOLINT), "--format", "json", "--failure-threshold", "warning", str(bad)],
                            capture_output=True, text=True, timeout=60)
    codes = {finding["code"] for finding in json.loads(result.stdout)}
    assert result.returncode != 0
    assert {"DL3007", "DL3003", "DL3025"} <= codes, codes


def test_dockerignore_matcher_follows_last_match_rule() -> None:
    patterns = ["*", "!model_code/", "**/__pycache__"]
    assert dockerignore_excludes(".venv/bin/python", patterns)
    assert not dockerignore_excludes("model_code/mrcnn/model.py", patterns)
    assert dockerignore_excludes("model_code/mrcnn/__pycache__/x.pyc", patterns)


def test_every_copy_source_exists_and_is_sent_to_the_daemon(dockerfile) -> None:
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    copies = args_of(dockerfile, "COPY")
    assert copies, "the Dockerfile copies nothing"
    for arguments in copies:
        if arguments.startswith("--from="):
            continue  # from the build stage, not from the context
        words = [w for w in shlex.split(arguments) if not w.startswith("--")]
        for source in words[:-1]:
            assert (REPO_ROOT / source).exists(), f"COPY source {source} does not exist in the build context"
            assert not dockerignore_excludes(source, patterns), f"COPY source {source} is in .dockerignore"
    for heavy in (".venv/bin/python", ".git/HEAD", "tests/conftest.py", "demo_model/mask_cnn_scratch.h5"):
        assert dockerignore_excludes(heavy, patterns), f"{heavy} would be sent to the Docker daemon"


def test_container_scripts_are_where_the_image_runs_them(dockerfile) -> None:
    copies = [shlex.split(a) for a in args_of(dockerfile, "COPY")]
    assert ["container", PROGRAM_DIR] in copies
    env = " ".join(args_of(dockerfile, "ENV"))
    assert re.search(r'PATH="?/opt/program:[^"]*/opt/venv/bin:\$\{PATH\}', env), \
        "serve/train first on PATH, then the venv's python"
    cmd = json.loads(args_of(dockerfile, "CMD")[-1])  # exec form is a JSON array, or this raises
    assert cmd == ["serve"]
    assert not args_of(dockerfile, "ENTRYPOINT"), "no ENTRYPOINT: `docker run IMAGE train` must reach train"
    chmod = args_of(dockerfile, "RUN")[-1]
    for script in ("serve", "train"):
        assert f"{PROGRAM_DIR}/{script}" in chmod
        path = REPO_ROOT / "container" / script
        assert path.is_file(), f"container/{script} is missing: `docker run IMAGE {script}` would fail"
        assert os.access(path, os.X_OK), f"container/{script} is not executable"
        assert path.read_text().startswith("#!"), f"container/{script} needs a shebang to run as PID 1"
    serve = (REPO_ROOT / "container" / "serve").read_text()
    assert '"wsgi:app"' in serve and 'HERE / "nginx.conf"' in serve
    assert re.search(r"^app = create_app\(", (REPO_ROOT / "container" / "wsgi.py").read_text(), re.M)


def test_image_settings_match_the_code(dockerfile) -> None:
    import predictor

    labels = " ".join(args_of(dockerfile, "LABEL"))
    assert "com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true" in labels
    env = " ".join(args_of(dockerfile, "ENV"))
    assert "PYTHONUNBUFFERED=1" in env
    assert "TF_FORCE_GPU_ALLOW_GROWTH=true" in env
    assert f"{predictor.ENV_MODEL_DIR}={predictor.DEFAULT_MODEL_DIR}" in env
    assert "HOST=0.0.0.0" in env.split(), "inside the image nginx must listen on every interface"
    assert args_of(dockerfile, "EXPOSE") == ["8080"]


def test_tensorflow_variants_come_from_pyproject_extras(dockerfile) -> None:
    tomllib = pytest.importorskip("tomllib", reason="Python >= 3.11 reads pyproject.toml")
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    extras = pyproject["project"]["optional-dependencies"]
    build_args = dict(a.split("=", 1) for a in args_of(dockerfile, "ARG") if "=" in a)
    assert build_args["TF_VARIANT"] == "gpu"
    installs = [r for r in args_of(dockerfile, "RUN") if "pip install" in r]
    deps = next(r for r in installs if "-r requirements.txt" in r)
    assert '"constraints-${TF_VARIANT}.txt" > requirements.txt' in deps, "dependencies from the pinned set"
    assert '--no-deps -c "constraints-${TF_VARIANT}.txt" tf_keras' in deps
    project = next(r for r in installs if '".[serve,eval,${TF_VARIANT}]"' in r)
    assert "--no-deps" in project, "the project adds no unpinned dependency"
    assert {"flask", "gunicorn"} <= {re.split(r"[<>=\[ ]", d)[0] for d in extras["serve"]}
    assert "tensorflow[and-cuda]==2.21.*" in extras["gpu"]
    assert "tensorflow-cpu==2.21.*" in extras["cpu"]
    # TF 2.21 wheels are built for CUDA 12.5 / cuDNN 9: a CUDA 12.5 base, and no second cuDNN under pip's.
    base = build_args["BASE_IMAGE"]
    assert re.fullmatch(r"nvidia/cuda:12\.5\.\d+-base-ubuntu2[24]\.04", base), base
    assert args_of(dockerfile, "FROM") == ["${BASE_IMAGE} AS build", "${BASE_IMAGE}"]


def final_stage(dockerfile) -> list[tuple[str, str]]:
    starts = [i for i, (instruction, _) in enumerate(dockerfile) if instruction == "FROM"]
    return dockerfile[starts[-1]:]


def test_final_stage_has_the_venv_but_no_compiler_or_pip_cache(dockerfile) -> None:
    build_runs = " ".join(args_of(dockerfile[: dockerfile.index(final_stage(dockerfile)[0])], "RUN"))
    assert "python3 -m venv /opt/venv" in build_runs and "python3-venv" in build_runs
    final = final_stage(dockerfile)
    final_runs = " ".join(args_of(final, "RUN"))
    for unwanted in ("gcc", "python3-dev", "build-essential", "pip install", "python3-pip"):
        assert unwanted not in final_runs, f"{unwanted} in the final stage"
    assert "rm -rf /var/lib/apt/lists/*" in final_runs
    copies = args_of(final, "COPY")
    assert "--from=build /opt/venv /opt/venv" in copies and "--from=build /opt/project /opt/project" in copies
    assert all("--no-cache-dir" in r for r in args_of(dockerfile, "RUN") if "pip install" in r)


@pytest.mark.parametrize("variant", ["cpu", "gpu"])
def test_constraints_pin_every_runtime_requirement(variant: str) -> None:
    """Every package of the image's extras has exactly one name==version pin, made by the documented script."""
    tomllib = pytest.importorskip("tomllib", reason="Python >= 3.11 reads pyproject.toml")
    text = (REPO_ROOT / "container" / f"constraints-{variant}.txt").read_text()
    assert f"scripts/lock_constraints.sh {variant}" in text.splitlines()[0]
    assert (REPO_ROOT / "scripts" / "lock_constraints.sh").is_file()
    pins = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            assert re.fullmatch(r"[0-9][0-9A-Za-z.+]*", version), line
            key = re.sub(r"[-_.]+", "-", name).lower()
            assert key not in pins, f"{name} pinned twice"
            pins[key] = version
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + [d for extra in ("serve", "eval", variant)
                                        for d in project["optional-dependencies"][extra]]
    for requirement in wanted:
        name = re.sub(r"[-_.]+", "-", re.split(r"[<>=!~\[ ;]", requirement)[0]).lower()
        assert name in pins, f"{requirement} is not pinned in constraints-{variant}.txt"
    assert {"pip", "setuptools", "wheel"} <= pins.keys()
    # The CPU image installs tensorflow-cpu only: "tensorflow" (what tf-keras asks for) is TensorFlow's CUDA build.
    tensorflow = "tensorflow" if variant == "gpu" else "tensorflow-cpu"
    assert pins[tensorflow].startswith("2.21.")
    assert variant == "gpu" or "tensorflow" not in pins
