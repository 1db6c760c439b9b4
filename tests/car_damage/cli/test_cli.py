"""``python -m car_damage`` train / evaluate / detect / splash, and the old ``maskR_CNN.py`` command line."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from car_damage.cli import build_parser, main
from car_damage.training.train import TrainOptions

REPO = Path(__file__).resolve().parents[3]


def run_cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([str(a) for a in argv])
    return code, out.getvalue()


def test_train_defaults_are_the_old_system():
    args = build_parser().parse_args(["train", "--dataset", "data", "--weights", "coco"])
    assert (args.epochs, args.steps_per_epoch, args.layers, args.backbone, args.image_size) == (
        30, 100, "heads", "resnet101", 1024)
    assert (args.min_confidence, args.images_per_gpu, args.learning_rate, args.augment) == (0.9, 1, 0.001, False)
    config = TrainOptions(dataset=Path("data")).config()
    assert (config.NUM_CLASSES, config.BACKBONE, config.IMAGE_MIN_DIM, config.IMAGE_MAX_DIM) == (
        2, "resnet101", 800, 1024)
    assert (config.DETECTION_MIN_CONFIDENCE, config.BATCH_SIZE, config.STEPS_PER_EPOCH) == (0.9, 1, 100)
    two = TrainOptions(dataset=Path("data"), classes=["scratch", "dent"], backbone="tiny", image_size=128).config()
    assert (two.NUM_CLASSES, two.IMAGE_MIN_DIM, two.IMAGE_MAX_DIM, two.TOP_DOWN_PYRAMID_SIZE) == (3, 128, 128, 32)


def test_config_overrides_reach_the_config_last():
    args = build_parser().parse_args([
        "train", "--dataset", "data", "--weights", "none", "--backbone", "tiny", "--image-size", "128",
        "--config", "TRAIN_ROIS_PER_IMAGE=64", "--config", "RPN_ANCHOR_RATIOS=(0.25, 1, 4)",
        "--config", " DETECTION_MIN_CONFIDENCE = 0.3", "--config", "NAME=other"])
    assert args.config_overrides == [("TRAIN_ROIS_PER_IMAGE", 64), ("RPN_ANCHOR_RATIOS", (0.25, 1, 4)),
                                     ("DETECTION_MIN_CONFIDENCE", 0.3), ("NAME", "other")]
    config = TrainOptions(dataset=Path("data"), backbone="tiny", image_size=128, min_confidence=0.9,
                          config_overrides=dict(args.config_overrides)).config()
    # Over the tiny preset (32 ROIs) and over the --min-confidence option; untouched keys keep their values.
    assert (config.TRAIN_ROIS_PER_IMAGE, tuple(config.RPN_ANCHOR_RATIOS), config.DETECTION_MIN_CONFIDENCE) == (
        64, (0.25, 1, 4), 0.3)
    assert (config.NAME, config.IMAGE_MAX_DIM) == ("other", 128)


@pytest.mark.parametrize(("extra", "message"), [
    (["--config", "NOT_A_SETTING=3"], "unknown Mask R-CNN config attribute 'NOT_A_SETTING'"),
])
def test_unknown_config_key_is_a_one_line_error(tmp_path, capsys, extra, message):
    code = main(["train", "--dataset", str(tmp_path), "--weights", "none", "--backbone", "tiny",
                 "--image-size", "128", *extra])
    assert code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["TRAIN_ROIS_PER_IMAGE", "=3", "TRAIN_ROIS_PER_IMAGE=", "two words=1"])
def test_malformed_config_option_is_rejected_by_the_parser(bad, capsys):
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(["train", "--dataset", "data", "--weights", "none", "--config", bad])
    assert stopped.value.code == 2 and "KEY=VALUE" in capsys.readouterr().err


@pytest.mark.parametrize(("extra", "message"), [
    (["--image-size", "100"], "multiple of 64"),
    (["--label", "a b"], "letters, digits"),
    (["--epochs", "0"], "epochs must be >= 1"),
])
def test_bad_train_arguments_are_one_line_errors(tmp_path, capsys, extra, message):
    code = main(["train", "--dataset", str(tmp_path), "--weights", "none", *extra])
    assert code == 2 and message in capsys.readouterr().err


def test_missing_dataset_is_a_clear_error(tmp_path, capsys):
    code = main(["train", "--dataset", str(tmp_path / "nowhere"), "--weights", "none", "--backbone", "tiny",
                 "--image-size", "128"])
    assert code == 2 and "does not exist" in capsys.readouterr().err


def test_leaked_val_images_can_be_left_out(seed_scratch_dir, caplog):
    from car_damage.training.train import load_training_data

    options = TrainOptions(dataset=seed_scratch_dir, drop_leaked_val=True)
    train_set, val_set, report, leaked = load_training_data(options)
    assert leaked == ["image52.jpeg", "image54.jpg", "image56.jpg"]
    assert train_set.num_images == 49
    assert sorted(info["id"] for info in val_set.image_info) == ["image51.png", "image53.jpeg", "image55.jpg"]
    assert "leak across train/val: train/image4.jpg = val/image54.jpg" in caplog.text
    _, kept_val, _, none_left_out = load_training_data(TrainOptions(dataset=seed_scratch_dir))
    assert none_left_out == [] and kept_val.num_images == 6


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny training run (1 epoch of 2 steps) through the old ``maskR_CNN.py`` command line, shared below."""
    from car_damage.data.synth import SynthSettings, generate

    root = tmp_path_factory.mktemp("cli")
    generate(root / "data", SynthSettings(n=6, height=128, width=128, val_fraction=0.34))
    command = [sys.executable, str(REPO / "maskR_CNN.py"), "train", f"--dataset={root / 'data'}", "--weights=none",
               "--backbone=tiny", "--image-size=128", "--epochs=1", "--steps-per-epoch=2", "--val-steps=1",
               "--label=damage", "--classes=scratch,dent", f"--logs={root / 'logs'}", f"--out={root / 'out'}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root, result.stdout


def test_train_writes_a_deliverable_that_loads_back(trained):
    from car_damage.model.card import ModelCard
    from car_damage.training.weights import inference_model
    from mrcnn.weights import inspect_weights

    root, out = trained
    weights, card_path = root / "out" / "mask_cnn_damage.h5", root / "out" / "mask_cnn_damage.json"
    assert f"weights: {weights}" in out and f"model card: {card_path}" in out
    card = ModelCard.load(card_path)
    assert card.class_names == ["BG", "scratch", "dent"] and card.damage_type == "damage"
    assert card.metrics["epochs"] == 1 and card.metrics["train_images"] == 4
    info = inspect_weights(weights)
    assert (info.backbone, info.num_classes) == ("tiny", 3)
    assert list((root / "logs").glob("damage*/mask_rcnn_damage_0001.h5"))
    model, _ = inference_model(weights, model_dir=root / "logs")  # raises if any layer were missing
    image = np.asarray(Image.open(next((root / "data" / "val").glob("*.png"))).convert("RGB"))
    result = model.detect([image])[0]
    assert result["masks"].shape[:2] == image.shape[:2]


def test_evaluate_prints_and_writes_json_and_plot(trained):
    root, _ = trained
    target = root / "eval" / "val.json"
    code, out = run_cli("evaluate", "--weights", root / "out" / "mask_cnn_damage.h5", "--dataset", root / "data",
                        "--subset", "val", "--out", target, "--min-confidence", "0.5")
    assert code == 0
    printed = json.loads(out)
    assert printed == json.loads(target.read_text())
    assert printed["num_images"] == 2 and printed["class_names"] == ["BG", "scratch", "dent"]
    for key in ("map50", "map50_95", "mean_recall", "precision", "recall", "f1"):
        assert 0.0 <= printed[key] <= 1.0
    with Image.open(root / "eval" / "val_pr.png") as plot:
        assert plot.format == "PNG"


@pytest.fixture
def count_inspections(monkeypatch):
    """Every ``mrcnn.weights.inspect_weights`` call's path, in order (the real function still runs)."""
    import mrcnn.weights

    inspected = []
    real_inspect = mrcnn.weights.inspect_weights
    monkeypatch.setattr(mrcnn.weights, "inspect_weights",
                        lambda path: inspected.append(str(path)) or real_inspect(path))
    return inspected


def test_evaluate_inspects_the_weights_file_once(trained, tmp_path, count_inspections):
    from car_damage.training.evaluate import evaluate_weights

    root, _ = trained
    weights = root / "out" / "mask_cnn_damage.h5"
    run = evaluate_weights(weights, root / "data" / "val", tmp_path / "eval.json", limit=1)
    assert count_inspections == [str(weights)]
    assert run.class_names == ["BG", "scratch", "dent"]


def test_a_card_inferred_from_the_file_reuses_the_inspection(trained, tmp_path, count_inspections):
    import shutil

    from car_damage.training.weights import card_for_weights, check_weights_file, inference_model

    root, _ = trained
    weights = tmp_path / "mask_cnn_damage.h5"
    shutil.copy2(root / "out" / "mask_cnn_damage.h5", weights)  # no .json beside it: the card is inferred
    card = card_for_weights(weights, info=check_weights_file(weights))
    assert count_inspections == [str(weights)]
    assert card.class_names == ["BG", "damage_1", "damage_2"] and card.config_overrides == {"BACKBONE": "tiny"}
    count_inspections.clear()
    inference_model(root / "out" / "mask_cnn_damage.h5", model_dir=tmp_path / "logs")  # its sidecar gives the card
    assert count_inspections == [str(root / "out" / "mask_cnn_damage.h5")]


def test_detect_prints_the_service_response(trained):
    from car_damage.answer.response import validate_response

    root, _ = trained
    image = next((root / "data" / "val").glob("*.png"))
    code, out = run_cli("detect", "--weights", root / "out" / "mask_cnn_damage.h5", "--image", image,
                        "--option", "min_score=0.5")
    assert code == 0
    response = json.loads(out)
    validate_response(response)
    assert response["image"] == {"width": 128, "height": 128}
    assert response["options"]["min_score"] == 0.5


def test_splash_writes_splash_and_outlines(trained):
    root, _ = trained
    image = next((root / "data" / "val").glob("*.png"))
    code, out = run_cli("splash", "--weights", root / "out" / "mask_cnn_damage.h5", "--image", image,
                        "--out", root / "splash")
    assert code == 0
    splash, outlines = root / "splash" / f"{image.stem}_splash.png", root / "splash" / f"{image.stem}_outlines.png"
    assert f"splash: {splash}" in out and f"outlines: {outlines}" in out
    original = np.asarray(Image.open(image).convert("RGB")).astype(int)
    splashed = np.asarray(Image.open(splash)).astype(int)
    assert splashed.shape == original.shape == np.asarray(Image.open(outlines)).shape
    grey = (splashed[..., 0] == splashed[..., 1]) & (splashed[..., 1] == splashed[..., 2])
    kept = np.all(splashed == original, axis=2)
    assert np.all(grey | kept)  # every pixel is either greyed or left in colour


def test_old_command_line_is_kept():
    script = [sys.executable, str(REPO / "maskR_CNN.py")]
    unknown = subprocess.run([*script, "fly"], capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 1 and "'fly' is not recognized. Use 'train' or 'splash'" in unknown.stderr
    helped = subprocess.run([*script, "train", "--help"], capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and "--dataset" in helped.stdout and "--weights" in helped.stdout
    video = subprocess.run([*script, "splash", "--weights=x.h5", "--video=v.mp4"], capture_output=True, text=True,
                           timeout=60)
    assert video.returncode == 1 and "--video is not supported" in video.stderr
