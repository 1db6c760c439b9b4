"""container/train (SageMaker training contract) on the host against temporary /opt/ml-style folders."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from car_damage.training.job import HyperparameterError, JobPaths, parse_hyperparameters, resolve_channels

REPO = Path(__file__).resolve().parents[2]
TRAIN = REPO / "container" / "train"
TINY = {"backbone": "tiny", "image_size": "128", "epochs": "1", "steps-per-epoch": "2", "val_steps": "1",
        "weights": "none", "label": "damage", "classes": "scratch,dent"}


# ------------------------------------------------------------------------------------------- pure parts
def test_hyperparameters_are_parsed_strictly():
    parsed = parse_hyperparameters({**TINY, "lr": "0.01", "augment": "True", "sagemaker_program": "x",
                                    "_tuning_objective_metric": "val_mAP50", "label": '"damage"'})
    assert parsed == {"backbone": "tiny", "image_size": 128, "epochs": 1, "steps_per_epoch": 2,
                      "validation_steps": 1, "weights": "none", "label": "damage", "classes": ["scratch", "dent"],
                      "learning_rate": 0.01, "augment": True}
    for bad, message in [({"epochs": "3.0"}, "expected an integer"), ({"lr": "fast"}, "expected a number"),
                         ({"lr": "nan"}, "finite"), ({"augment": "maybe"}, "true or false"),
                         ({"epoch": "3"}, "unknown hyperparameter 'epoch'"), ({"epochs": 3}, "passes strings"),
                         ({"lr": "0.1", "learning_rate": "0.2"}, "given twice"),
                         ({"backbone": "vgg"}, "expected one of")]:
        with pytest.raises(HyperparameterError, match=message):
            parse_hyperparameters(bad)


def test_channel_layouts(tmp_path):
    for split in ("train", "val"):
        (tmp_path / "a" / split).mkdir(parents=True)
        (tmp_path / "a" / split / "via_region_data.json").write_text("{}")
        (tmp_path / "b" / "training" / split).mkdir(parents=True)
        (tmp_path / "b" / "training" / split / "x.json").write_text("{}")
    assert resolve_channels(tmp_path / "a") == (tmp_path / "a" / "train", tmp_path / "a" / "val")
    assert resolve_channels(tmp_path / "b") == (tmp_path / "b" / "training" / "train",
                                                tmp_path / "b" / "training" / "val")
    with pytest.raises(ValueError, match=r"found \['training'\]"):
        (tmp_path / "b" / "training" / "val" / "x.json").unlink()
        resolve_channels(tmp_path / "b")


def test_paths_follow_the_environment(tmp_path):
    paths = JobPaths.from_env({"SM_ROOT": str(tmp_path), "SM_MODEL_DIR": str(tmp_path / "m")})
    assert paths.hyperparameters == tmp_path / "input" / "config" / "hyperparameters.json"
    assert paths.data == tmp_path / "input" / "data" and paths.model == tmp_path / "m"
    assert paths.failure == tmp_path / "output" / "failure"
    assert JobPaths.from_env({}).checkpoints == Path("/opt/ml/checkpoints")


# ----------------------------------------------------------------------------------------- subprocesses
@pytest.fixture(scope="module")
def synth_dataset(tmp_path_factory) -> Path:
    from car_damage.data.synth import SynthSettings, generate

    out = tmp_path_factory.mktemp("synth")
    generate(out, SynthSettings(n=6, height=128, width=128, val_fraction=0.34))
    return out


def make_root(tmp_path: Path, dataset: Path, hyperparameters: dict[str, str]) -> Path:
    root = tmp_path / "opt_ml"
    (root / "input" / "config").mkdir(parents=True, exist_ok=True)
    (root / "input" / "config" / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    data = root / "input" / "data"
    if not data.exists():
        data.mkdir()
        for split in ("train", "val"):  # one channel per split, as `car-damage deploy train-job` creates them
            (data / split).symlink_to(dataset / split)
    return root


def run_train(root: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(TRAIN)], env=_env(root), capture_output=True, text=True, timeout=timeout)


def _env(root: Path) -> dict[str, str]:
    env = dict(os.environ, SM_ROOT=str(root), TF_CPP_MIN_LOG_LEVEL="2")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def test_bad_hyperparameter_fails_with_a_reason(tmp_path, synth_dataset):
    root = make_root(tmp_path, synth_dataset, {**TINY, "epochs": "two"})
    result = run_train(root, timeout=120)
    assert result.returncode == 1
    failure = (root / "output" / "failure").read_text()
    assert failure.startswith("HyperparameterError: hyperparameter epochs='two': expected an integer")
    assert not (root / "model").exists() or not any((root / "model").iterdir())


def test_multi_device_gpu_count_hyperparameter_sets_the_config():
    from car_damage.training.job import visible_gpu_count
    from car_damage.training.train import TrainOptions

    assert parse_hyperparameters({"gpu_count": "4"}) == {"gpu_count": 4}
    options = TrainOptions(dataset=Path("data"), images_per_gpu=2, gpu_count=4)
    config = options.config()
    assert (config.GPU_COUNT, config.IMAGES_PER_GPU, config.BATCH_SIZE) == (4, 2, 8)
    assert visible_gpu_count() == 1  # no GPU here: one device
    with pytest.raises(ValueError, match="gpu-count"):
        TrainOptions(dataset=Path("data"), gpu_count=0)


def test_multi_device_more_gpus_than_the_instance_has_fails_with_a_reason(tmp_path, synth_dataset):
    root = make_root(tmp_path, synth_dataset, {**TINY, "gpu_count": "4"})
    result = run_train(root, timeout=180)
    assert result.returncode == 1
    failure = (root / "output" / "failure").read_text()
    assert failure.startswith("ValueError: GPU_COUNT=4 but this machine shows 0 GPU(s)"), failure


def test_missing_channels_fail_with_a_reason(tmp_path):
    root = tmp_path / "opt_ml"
    (root / "input" / "data" / "other").mkdir(parents=True)
    result = run_train(root, timeout=120)
    assert result.returncode == 1
    assert "no training data under" in (root / "output" / "failure").read_text()


def test_train_then_resume_from_checkpoint(tmp_path, synth_dataset):
    root = make_root(tmp_path, synth_dataset, TINY)
    first = run_train(root)
    assert first.returncode == 0, first.stderr[-3000:]
    assert not (root / "output" / "failure").exists()
    model_files = sorted(p.name for p in (root / "model").iterdir())
    assert model_files == ["mask_cnn_damage.h5", "mask_cnn_damage.json"]
    card = json.loads((root / "model" / "mask_cnn_damage.json").read_text())
    assert card["class_names"] == ["BG", "scratch", "dent"] and card["metrics"]["epochs"] == 1
    assert card["config_overrides"]["BACKBONE"] == "tiny"
    outputs = {p.name for p in (root / "output" / "data").iterdir()}
    assert {"evaluation_val.json", "evaluation_val_pr.png", "loss_curve.png", "loss_history.json"} <= outputs
    metrics = json.loads((root / "output" / "data" / "evaluation_val.json").read_text())
    assert 0.0 <= metrics["map50"] <= 1.0 and metrics["num_images"] == 2
    assert "val_mAP50=" in first.stdout
    (checkpoint,) = (root / "checkpoints").glob("damage*/mask_rcnn_damage_0001.h5")

    # The same job again with epochs=2 (e.g. after a spot interruption) continues from epoch 1.
    (root / "input" / "config" / "hyperparameters.json").write_text(json.dumps({**TINY, "epochs": "2"}))
    second = run_train(root)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Re-starting from epoch 1" in second.stderr
    assert (checkpoint.parent / "mask_rcnn_damage_0002.h5").is_file()
    card = json.loads((root / "model" / "mask_cnn_damage.json").read_text())
    assert card["metrics"]["epochs"] == 2


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path, synth_dataset):
    root = make_root(tmp_path, synth_dataset, {**TINY, "steps-per-epoch": "500"})
    process = subprocess.Popen([str(TRAIN)], env=_env(root), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    deadline = time.monotonic() + 240
    seen = ""
    try:
        while "Starting at epoch" not in seen and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            seen += line
        assert "Starting at epoch" in seen, seen[-3000:]
        time.sleep(4)  # let a few steps run
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, (seen + rest)[-3000:]
    assert "saved interruption checkpoint" in rest
    assert list((root / "checkpoints").glob("damage*/mask_rcnn_damage_0000.h5"))
    assert not (root / "output" / "failure").exists()
    assert not (root / "model").exists() or not any((root / "model").iterdir())
