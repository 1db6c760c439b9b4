"""``make demo``: its pieces (cache key, model install, image list) and the whole pipeline at a tiny size."""

from __future__ import annotations

import json
import re
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from car_damage import demo
from car_damage.answer.response import validate_response
from car_damage.data import synth
from car_damage.model.card import ModelCard
from car_damage.training.calibrate import RULES_VERSION
from tests.conftest import require_tool

TINY_ARGS = ["--n", "10", "--size", "128", "--image-size", "128", "--epochs", "1", "--steps", "2",
             "--held-out", "2", "--ready-timeout", "180"]


def test_cache_key_follows_every_setting() -> None:
    base = demo.DemoSettings()
    assert base.cache_key() == demo.DemoSettings().cache_key()
    assert base.cache_key() != demo.DemoSettings(data=synth.SynthSettings(seed=1)).cache_key()
    assert base.cache_key() != demo.DemoSettings(training=demo.TrainingSettings(epochs=7)).cache_key()
    assert base.cache_key() != demo.DemoSettings(training=demo.TrainingSettings(learning_rate=0.02)).cache_key()
    assert base.cache_key() != demo.DemoSettings(training=demo.TrainingSettings(seed=3)).cache_key()


def test_training_command_is_the_documented_cli(tmp_path: Path) -> None:
    settings = demo.TrainingSettings(image_size=128, epochs=3, steps_per_epoch=5)
    command = settings.command(tmp_path / "d", tmp_path / "m", tmp_path / "logs", "damage")
    assert command[:4] == [sys.executable, "-m", "car_damage", "train"]
    pairs = dict(zip(command[4::2], command[5::2], strict=False))
    assert pairs["--weights"] == "none" and pairs["--layers"] == "all"  # random start: train every layer
    assert pairs["--backbone"] == "tiny" and pairs["--image-size"] == "128" and pairs["--attribute"] == "damage"
    assert pairs["--epochs"] == "3" and pairs["--steps-per-epoch"] == "5" and pairs["--label"] == "scratch"
    assert pairs["--dataset"] == str(tmp_path / "d") and pairs["--out"] == str(tmp_path / "m")
    assert pairs["--seed"] == "0"  # a repeatable model: the same on every machine
    configs = [command[i + 1] for i, part in enumerate(command) if part == "--config"]
    assert "OPTIMIZER=ADAM" in configs and "LEARNING_RATE_SCHEDULE=cosine" in configs


def test_seed_option_seeds_data_and_training() -> None:
    settings = demo.settings_from_args(demo.build_parser().parse_args(["--seed", "7"]))
    assert settings.data.seed == 7 and settings.training.seed == 7


@pytest.mark.parametrize(
    "metrics, expected",
    [({"mAP@0.5": 0.75}, 0.75), ({"mask": {"mAP@0.5": 0.5}}, 0.5), ({"map50": 1}, 1.0), ({"recall": 0.3}, None)],
)
def test_find_map50(metrics: dict, expected: float | None) -> None:
    assert demo.find_map50(metrics) == expected


def _fake_model(folder: Path, version: str) -> demo.DemoModel:
    folder.mkdir(parents=True)
    (folder / demo.WEIGHTS_NAME).write_bytes(b"weights")
    ModelCard("scratch", ["BG", "scratch"], version=version).save(folder / "mask_cnn_scratch.json")
    return demo.DemoModel(folder, folder, {}, cached=True, train_seconds=1.0)


def test_install_model_copies_a_demo_model_but_never_overwrites_a_users_model(tmp_path: Path) -> None:
    model = _fake_model(tmp_path / "cache", "synthetic-demo-abc")
    target = tmp_path / "models"
    demo.install_model(model, target)
    assert (target / "mask_cnn_scratch.h5").read_bytes() == b"weights"
    demo.install_model(model, target)  # a demo model may be replaced by a newer demo model
    ModelCard("scratch", ["BG", "scratch"], version="v7").save(target / "mask_cnn_scratch.json")
    with pytest.raises(RuntimeError, match="not a demo model"):
        demo.install_model(model, target)
    (target / "mask_cnn_scratch.json").unlink()
    with pytest.raises(RuntimeError, match="without a demo sidecar"):
        demo.install_model(model, target)


def test_demo_images_are_held_out_synthetic_then_real_photos(tmp_path: Path) -> None:
    synth.generate(tmp_path / "data", synth.SynthSettings(n=10, height=64, width=64))
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("b.JPG", "a.png", "notes.txt"):
        (photos / name).write_bytes(b"x")
    images = demo.demo_images(tmp_path / "data", photos, count=3)
    assert [p.name for p in images] == ["synth_val_00000.png", "synth_val_00001.png", "a.png", "b.JPG"]
    without_photos = demo.demo_images(tmp_path / "data", tmp_path / "absent", count=1)
    assert [p.name for p in without_photos] == ["synth_val_00000.png"]


def test_serve_refuses_a_folder_without_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main(["--serve", "--model-dir", str(tmp_path)]) == 2
    assert "no mask_cnn_<type>.h5" in capsys.readouterr().out


def test_serve_prints_the_page_url_then_becomes_container_serve(tmp_path: Path, capsys, monkeypatch) -> None:
    (tmp_path / "mask_cnn_scratch.h5").write_bytes(b"")
    became: list[list[str]] = []
    monkeypatch.setattr(demo.os, "execve", lambda path, argv, env: became.append(argv))
    assert demo.main(["--serve", "--model-dir", str(tmp_path), "--port", "18081"]) == 0
    assert "the page: http://127.0.0.1:18081/ " in capsys.readouterr().out
    assert became and became[0][-1].endswith("container/serve")


def test_service_environment_points_at_the_model_and_port(tmp_path: Path) -> None:
    env = demo.ServiceProcess.environment(tmp_path, 18080)
    assert env["MODEL_DIR"] == str(tmp_path.resolve()) and env["SAGEMAKER_BIND_TO_PORT"] == "18080"
    assert env["PATH"].split(":")[0] == str(Path(sys.executable).parent)


def _port_is_closed(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.slow  # ~1.5-2.5 min on 2 shared cores: four TF processes (train, evaluate, 2 x service)
def test_demo_end_to_end_at_a_tiny_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Generate, train 2 steps, evaluate, serve for real (nginx + gunicorn), query, stop; then again from cache."""
    require_tool("nginx")

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(np.full((90, 120, 3), 128, np.uint8)).save(photos / "grey.jpg")
    args = [*TINY_ARGS, "--model-dir", str(tmp_path / "model"), "--out", str(tmp_path / "out"),
            "--cache", str(tmp_path / "cache"), "--photos", str(photos)]
    assert demo.main(args) == 0
    printed = capsys.readouterr().out

    rows = [line.split() for line in printed.splitlines() if line.startswith(("synth_val_", "grey.jpg"))]
    assert [row[0] for row in rows] == ["synth_val_00000.png", "synth_val_00001.png", "grey.jpg"]
    assert [row[1] for row in rows] == ["128x128", "128x128", "120x90"]
    for name, size in (("synth_val_00000", (128, 128)), ("grey", (120, 90))):
        with Image.open(tmp_path / "out" / f"{name}_annotated.png") as annotated:
            assert annotated.format == "PNG" and annotated.size == size
    answer = json.loads(printed.split("The JSON answer for synth_val_00000.png:\n", 1)[1].split("\n\n", 1)[0])
    validate_response(answer)
    assert answer["damage_count"] == len(answer["damages"]) == int(rows[0][2])

    map50 = float(re.search(r"Held-out synthetic mask mAP@0\.5: ([0-9.]+)", printed).group(1))
    assert 0.0 <= map50 <= 1.0
    assert re.search(r"damage count exact on \d+/\d+ images \(\d+%\), count MAE [0-9.]+", printed)
    port = int(re.search(r"http://127\.0\.0\.1:(\d+)", printed).group(1))
    assert f"the page (while the demo runs): http://127.0.0.1:{port}/" in printed
    assert _port_is_closed(port), "the service still listens after the demo"
    card = ModelCard.load(tmp_path / "model" / "mask_cnn_scratch.json")
    assert card.version.startswith("synthetic-demo-") and card.metrics["synthetic_val_mask_map50"] == map50
    assert card.operating_point.validation["rules"] == RULES_VERSION  # training calibrated it: the demo did not
    assert demo._calibrated_under_current_rules(tmp_path / "model" / "mask_cnn_scratch.h5")

    assert demo.main(args) == 0  # the second run takes the cached model and trains nothing
    again = capsys.readouterr().out
    assert "Using the cached demo model" in again and "Training the demo model" not in again
    assert "Evaluating on the held-out" not in again  # calibrated under the current rules: nothing to redo
    assert f"mAP@0.5: {map50:.3f}" in again

    card.operating_point.validation["rules"] = RULES_VERSION - 1  # as if calibrated before the current rules
    card.save(tmp_path / "model" / "mask_cnn_scratch.json")
    assert not demo._calibrated_under_current_rules(tmp_path / "model" / "mask_cnn_scratch.h5")


def test_quality_summary_prints_the_count_accuracy_next_to_map() -> None:
    metrics = {"map50": 0.8712, "counts": {"exact_images": 34, "images": 40, "exact_rate": 0.85, "mae": 0.2,
                                           "over_images": 3, "under_images": 3}}
    assert demo.quality_summary(metrics, 40) == (
        "Held-out synthetic mask mAP@0.5: 0.871 (meets the 0.6 target; 40 images); damage count exact on 34/40 "
        "images (85%), count MAE 0.20, 3 over- and 3 under-counted")
    assert demo.quality_summary({}, 40) == "Held-out synthetic mask mAP@0.5: unknown (n/a the 0.6 target; 40 images)"


def test_run_logged_keeps_json_and_dent_warnings_off_the_screen_but_in_the_log(tmp_path: Path, capfd) -> None:
    script = ("print('summary line'); print('W: region dropped (dent)'); "
              "import json; print(json.dumps({'map50': 0.9, 'curve': [1, 2]}, indent=2))")
    log = tmp_path / "step.log"
    demo._run_logged([sys.executable, "-c", script], log, "step", hide_json=True)
    shown = capfd.readouterr().out.split("\n", 1)[1]  # after the echoed command line
    assert "summary line" in shown and "map50" not in shown and "region dropped" not in shown
    assert "1 warnings about dent regions" in shown
    logged = log.read_text()
    assert '"map50": 0.9' in logged and "region dropped" in logged
    with pytest.raises(RuntimeError, match="boom failed"):
        demo._run_logged([sys.executable, "-c", "raise SystemExit(3)"], log, "boom")
