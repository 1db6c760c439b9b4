"""DamagePredictor with small REAL models (tiny backbone, random weights) saved to a temp model folder."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from car_damage.answer.options import InferenceOptions
from car_damage.answer.predictor import DamagePredictor, _card_or_inferred, _weights_files
from car_damage.answer.response import validate_response
from car_damage.data.rle import rle_to_mask
from car_damage.errors import BadOption, ImageDecodeError, ModelLoadError
from car_damage.model.card import ModelCard
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def weights_source(tiny_model_dir) -> Path:
    """The session's seeded random tiny model (tests/conftest.py), reused as every test model's weights."""
    return tiny_model_dir / "mask_cnn_scratch.h5"


def _card(damage_type: str, **overrides) -> ModelCard:
    card = ModelCard.from_config(tiny_config(**overrides), ["BG", damage_type], damage_type, version="test-1")
    return card


def _install(folder: Path, weights: Path, damage_type: str, card: ModelCard | None = None,
             prefix: str = "mask_cnn") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{prefix}_{damage_type}.h5"
    shutil.copy(weights, target)
    if card is not False:
        (card or _card(damage_type)).save(target.with_suffix(".json"))
    return target


@pytest.fixture(scope="module")
def two_model_dir(weights_source, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("model")
    _install(folder, weights_source, "scratch")
    _install(folder, weights_source, "dent", prefix="mask_rcnn")
    return folder


@pytest.fixture(scope="module")
def predictor(two_model_dir) -> DamagePredictor:
    return DamagePredictor.from_model_dir(two_model_dir, warmup=True)


def _image(height: int = 96, width: int = 128, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_loads_every_model_in_the_folder(predictor):
    assert predictor.damage_types == ("dent", "scratch")  # sorted by type
    described = {m["type"]: m for m in predictor.describe()}
    assert described["scratch"]["name"] == "mask_cnn_scratch.h5"
    assert described["dent"]["name"] == "mask_rcnn_dent.h5"
    assert described["scratch"]["backbone"] == "tiny" and described["scratch"]["version"] == "test-1"


def test_predict_matches_the_raw_model_output(predictor):
    image = _image()
    response = predictor.predict(image, InferenceOptions(types=("scratch",), polygon_tolerance=0, merge="none"),
                                 decode_ms=2.5)
    validate_response(response)
    assert response["image"] == {"width": 128, "height": 96}
    assert [m["type"] for m in response["models"]] == ["scratch"]

    scratch = next(m for m in predictor.models if m.damage_type == "scratch")
    raw = scratch.model.detect([image])[0]  # deterministic: same weights, same image
    areas = raw["masks"].reshape(-1, raw["masks"].shape[2]).sum(axis=0)
    expected = sorted(((float(s), int(a)) for s, a in zip(raw["scores"], areas, strict=True) if a > 0),
                      key=lambda item: -item[0])
    assert expected, "the seeded random model should find something on noise"
    assert [(d["score"], d["area_px"]) for d in response["damages"]] == [
        (round(s, 4), a) for s, a in expected]
    union = raw["masks"][:, :, areas > 0].any(axis=2).sum() if expected else 0
    assert response["totals"]["area_px"] == union
    timings = response["timings_ms"]
    assert timings["decode"] == 2.5 and timings["inference"] > 0
    assert timings["queue"] >= 0
    assert timings["total"] >= timings["queue"] + timings["inference"] + timings["postprocess"] + 2.5 - 0.01
    assert response["models"][0]["merge"]["mode"] == "none" and response["options"]["merge"] == "none"

    grouped = predictor.predict(image, InferenceOptions(types=("scratch",)))  # the card's default: overlap
    validate_response(grouped)
    assert grouped["models"][0]["merge"]["mode"] == "overlap" and grouped["options"]["merge"] is None
    assert all(d["parts"] >= 1 for d in grouped["damages"])
    # Grouping joins detections, groups a detection blob by blob, or drops one spanning others: never a new pixel.
    assert 0 < grouped["totals"]["area_px"] <= union


def test_options_are_applied(predictor):
    image = _image(seed=1)
    everything = predictor.predict(image)
    validate_response(everything)
    assert {m["type"] for m in everything["models"]} == {"dent", "scratch"}
    assert set(everything["totals"]["by_type"]) == {"dent", "scratch"}
    assert everything["damage_count"] > 0, "the seeded random model finds damages on this image"
    top_score = everything["damages"][0]["score"]
    limited = predictor.predict(image, InferenceOptions(max_instances=1, masks="rle", min_score=top_score - 1e-3))
    validate_response(limited)
    assert limited["damage_count"] == 1 and limited["damages"][0]["score"] == top_score
    assert rle_to_mask(limited["damages"][0]["mask"]).sum() == limited["damages"][0]["area_px"]
    assert all(m["min_score"] == pytest.approx(top_score - 1e-3) for m in limited["models"])
    none = predictor.predict(image, InferenceOptions(min_score=1.0))
    assert none["damage_count"] == 0 or all(d["score"] == 1.0 for d in none["damages"])


def test_unknown_type_is_a_bad_option(predictor):
    with pytest.raises(BadOption, match="rust.*dent, scratch"):
        predictor.predict(_image(), InferenceOptions(types=("rust",)))


def test_bad_image_arrays_are_rejected(predictor):
    with pytest.raises(ValueError):
        predictor.predict(np.zeros((10, 10), dtype=np.uint8))
    with pytest.raises(ValueError):
        predictor.predict(np.zeros((10, 10, 3), dtype=np.float32))


@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 500, 3), (3, 900, 3), (900, 3, 3)])
def test_degenerate_images_are_a_400_not_a_crash(predictor, shape):
    with pytest.raises(ImageDecodeError, match="aspect ratio") as info:
        predictor.predict(np.zeros(shape, dtype=np.uint8))
    assert info.value.status == 400


def test_smallest_accepted_images(predictor):
    for shape in [(2, 2, 3), (2, 40, 3), (5, 5, 3)]:
        response = predictor.predict(_image(*shape[:2]))
        validate_response(response)
        assert response["image"] == {"width": shape[1], "height": shape[0]}


def test_concurrent_requests_give_identical_results(predictor):
    image = _image(seed=2)
    expected = predictor.predict(image, InferenceOptions(types=("scratch",)))["damages"]
    results, errors = [], []

    def worker() -> None:
        try:
            results.append(predictor.predict(image, InferenceOptions(types=("scratch",)))["damages"])
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors and len(results) == 4
    assert all(result == expected for result in results)


def test_annotate(predictor):
    image = _image()
    response = predictor.predict(image)
    out = predictor.annotate(image, response)
    assert out.shape == image.shape and out.dtype == np.uint8


# ---------------------------------------------------------------------------------------------- errors
def test_missing_or_empty_folder(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        DamagePredictor.from_model_dir(tmp_path / "nope")
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "model.h5").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match=r"no weights in .*notes.txt"):
        DamagePredictor.from_model_dir(tmp_path)


def test_two_files_for_one_type(tmp_path, weights_source):
    _install(tmp_path, weights_source, "scratch")
    _install(tmp_path, weights_source, "scratch", prefix="mask_rcnn")
    with pytest.raises(ModelLoadError, match="two weights files for damage type 'scratch'"):
        _weights_files(tmp_path)


def test_corrupt_weights_file(tmp_path):
    (tmp_path / "mask_cnn_scratch.h5").write_bytes(b"\x89HDF\r\n garbage, not a real file")
    with pytest.raises(ModelLoadError, match=r"mask_cnn_scratch.h5: unreadable weights file"):
        DamagePredictor.from_model_dir(tmp_path)


@pytest.mark.parametrize(
    "card_text, message",
    [
        ("{not json", "invalid model card"),
        ('{"format": "car-damage-model/1", "damage_type": "dent", "class_names": ["BG", "dent"]}',
         "card says damage type 'dent'"),
        ('{"format": "car-damage-model/1", "damage_type": "scratch", "class_names": ["BG", "a", "b"], '
         '"config_overrides": {"BACKBONE": "tiny"}}', "3 classes"),
        ('{"format": "car-damage-model/1", "damage_type": "scratch", "class_names": ["BG", "scratch"], '
         '"config_overrides": {"BACKBONE": "resnet50"}}', "BACKBONE='resnet50' but .* holds tiny"),
    ],
)
def test_sidecar_contradicting_the_weights(tmp_path, weights_source, card_text, message):
    weights = _install(tmp_path, weights_source, "scratch", card=False)
    weights.with_suffix(".json").write_text(card_text)
    with pytest.raises(ModelLoadError, match=message):
        DamagePredictor.from_model_dir(tmp_path, warmup=False)


def test_config_mismatch_found_when_loading(tmp_path, weights_source):
    # Same backbone and classes, but another FPN width: only loading the tensors can tell.
    _install(tmp_path, weights_source, "scratch", card=_card("scratch", TOP_DOWN_PYRAMID_SIZE=64))
    with pytest.raises(ModelLoadError, match=r"mask_cnn_scratch.h5: weights do not fit"):
        DamagePredictor.from_model_dir(tmp_path, warmup=False)


def test_without_sidecar_the_config_is_inferred_from_the_file(tmp_path, weights_source):
    weights = _install(tmp_path, weights_source, "scratch", card=False)
    card, info = _card_or_inferred(weights, "scratch")
    assert card.config_overrides == {"BACKBONE": "tiny", "NUM_CLASSES": 2}
    assert card.class_names == ["BG", "scratch"] and info.num_classes == 2


def test_damage_type_must_be_a_plain_name(tmp_path, weights_source):
    weights = tmp_path / "anything.h5"
    shutil.copy(weights_source, weights)
    with pytest.raises(ModelLoadError, match="paint chip"):
        DamagePredictor.from_weights(weights, card=_card("paint chip"), warmup=False)


def test_from_weights_with_an_explicit_card(tmp_path, weights_source):
    weights = tmp_path / "anything.h5"
    shutil.copy(weights_source, weights)
    predictor = DamagePredictor.from_weights(weights, card=_card("glass"), warmup=False)
    assert predictor.damage_types == ("glass",)
    assert predictor.describe()[0]["name"] == "anything.h5"  # predict itself is covered above


def test_the_cards_operating_point_is_the_default(tmp_path, weights_source):
    from car_damage.model.card import OperatingPoint

    card = _card("scratch", DETECTION_MIN_CONFIDENCE=0.6)
    card.operating_point = OperatingPoint(min_score=0.55, merge="none", merge_containment=0.4, chosen_by="test")
    _install(tmp_path, weights_source, "scratch", card)
    predictor = DamagePredictor.from_model_dir(tmp_path, warmup=False)
    loaded = predictor.models[0]
    assert loaded.default_min_score == 0.55 and loaded.graph_min_score == 0.55  # built low enough for it
    assert predictor.describe()[0]["min_score"] == 0.55
    response = predictor.predict(_image())
    validate_response(response)
    assert response["models"][0]["min_score"] == 0.55
    assert response["models"][0]["merge"] == {"mode": "none", "containment": 0.4, "gap_px": 12.0, "angle_deg": 15.0,
                                           "branch_widths": 2.0, "spanning_cover": 0.8}
    assert all(d["score"] >= 0.55 and d["parts"] == 1 for d in response["damages"])
    asked = predictor.predict(_image(), InferenceOptions(merge="overlap"))
    assert asked["models"][0]["merge"]["mode"] == "overlap"


def test_real_photos_give_valid_polygons_and_measurements(predictor):
    """The real photos through the random tiny model (speckled masks: many small parts, holes, corner contacts)."""
    import shapely

    from car_damage.data.images import decode_image
    from tests.conftest import require_shared

    photos = sorted(require_shared("test_images").glob("*.*"))
    assert photos
    for path in photos:
        response = predictor.predict(decode_image(path.read_bytes()), InferenceOptions(polygon_tolerance=2))
        validate_response(response)
        for damage in response["damages"]:
            parts = [shapely.Polygon(p[0], p[1:]) for p in damage["polygons"]]
            assert all(shapely.is_valid(p) for p in parts), path.name
            assert shapely.is_valid(shapely.MultiPolygon(parts)), path.name
            assert damage["oriented_box"]["length_px"] >= damage["oriented_box"]["width_px"] > 0
            if damage["type"] == "scratch":
                assert damage["stroke"]["length_px"] > 0
