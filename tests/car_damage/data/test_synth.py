"""The synthetic dataset generator: determinism, VIA 2.x layout, and polygons that are exactly the damage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from car_damage.data.synth import SynthSettings, generate, polygon_mask, render_sample, sample_rng

SMALL = SynthSettings(n=6, val_fraction=0.34, height=96, width=128, seed=7)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path: Path) -> None:
    generate(tmp_path / "a", SMALL)
    generate(tmp_path / "b", SMALL)
    generate(tmp_path / "c", SynthSettings(**{**SMALL.__dict__, "seed": 8}))
    first, second, other = (_files(tmp_path / name) for name in "abc")
    assert sorted(first) == [
        "train/synth_train_00000.png", "train/synth_train_00001.png", "train/synth_train_00002.png",
        "train/synth_train_00003.png", "train/via_region_data.json",
        "val/synth_val_00000.png", "val/synth_val_00001.png", "val/via_region_data.json",
    ]
    assert first == second
    assert sorted(other) == sorted(first)
    assert all(other[name] != first[name] for name in first)


def test_an_image_does_not_depend_on_the_dataset_size() -> None:
    small = render_sample(sample_rng(3, "train", 1), SMALL)
    again = render_sample(sample_rng(3, "train", 1), SMALL)
    val = render_sample(sample_rng(3, "val", 1), SMALL)
    assert np.array_equal(small.image, again.image)
    assert not np.array_equal(small.image, val.image)


def test_via_2x_export_layout_with_polygons_inside_the_image(tmp_path: Path) -> None:
    report = generate(tmp_path, SMALL)
    assert report.images == {"train": 4, "val": 2}
    total = 0
    for split in ("train", "val"):
        annotations = json.loads((tmp_path / split / "via_region_data.json").read_text())
        for key, entry in annotations.items():
            path = tmp_path / split / entry["filename"]
            assert key == entry["filename"] + str(path.stat().st_size)  # VIA 2.x key: filename + byte size
            assert entry["size"] == path.stat().st_size and entry["file_attributes"] == {}
            assert isinstance(entry["regions"], list) and entry["regions"]
            with Image.open(path) as image:
                assert image.size == (128, 96) and image.mode == "RGB"
            for region in entry["regions"]:
                shape = region["shape_attributes"]
                assert shape["name"] == "polygon"
                xs, ys = shape["all_points_x"], shape["all_points_y"]
                assert len(xs) == len(ys) >= 3
                assert all(isinstance(v, int) for v in xs + ys)
                assert 0 <= min(xs) and max(xs) <= 127 and 0 <= min(ys) and max(ys) <= 95
                assert region["region_attributes"]["damage"] in ("scratch", "dent")
                assert polygon_mask(xs, ys, 96, 128).sum() > 0
                total += 1
    assert total == report.damages["scratch"] + report.damages["dent"]


def test_polygon_mask_is_skimage_fill_of_a_hand_drawn_square() -> None:
    mask = polygon_mask([2, 5, 5, 2], [1, 1, 3, 3], 6, 8)  # x 2..5, y 1..3 inclusive
    expected = np.zeros((6, 8), bool)
    expected[1:4, 2:6] = True
    assert np.array_equal(mask, expected)


def test_the_polygon_mask_is_exactly_the_drawn_damage() -> None:
    """Pixels outside every polygon are untouched; inside, a scratch changes (nearly) every pixel clearly."""
    settings = SynthSettings(height=128, width=160, dents=(0, 2))
    changed_fraction: dict[str, list[float]] = {"scratch": [], "dent": []}
    for index in range(40):
        sample = render_sample(sample_rng(0, "train", index), settings)
        diff = np.abs(sample.image.astype(int) - sample.background.astype(int)).max(axis=-1)
        union = np.zeros(diff.shape, bool)
        for damage in sample.damages:
            union |= damage.mask
            assert np.array_equal(damage.mask, polygon_mask(damage.xs, damage.ys, 128, 160))
        assert not (diff[~union] > 0).any(), "the generator changed pixels outside every polygon"
        for damage in sample.damages:
            alone = damage.mask.copy()  # pixels that belong to this damage only
            for other in sample.damages:
                if other is not damage:
                    alone &= ~other.mask
            if alone.sum() >= 20:
                threshold = 20 if damage.kind == "scratch" else 3  # 20 of 255 levels: clearly visible
                changed_fraction[damage.kind].append(float((diff[alone] >= threshold).mean()))
    scratches, dents = np.array(changed_fraction["scratch"]), np.array(changed_fraction["dent"])
    assert len(scratches) >= 40 and len(dents) >= 10
    assert scratches.min() >= 0.9 and scratches.mean() >= 0.99
    # A dent's shading crosses zero along one line (between the lit and the shadowed wall).
    assert dents.min() >= 0.6 and dents.mean() >= 0.85


def test_damage_counts_follow_the_settings() -> None:
    settings = SynthSettings(height=96, width=96, scratches=(2, 2), dents=(0, 0))
    kinds = [d.kind for i in range(10) for d in render_sample(sample_rng(1, "train", i), settings).damages]
    assert kinds == ["scratch"] * 20


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"n": 1}, "n must be"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"height": 32}, "image size"),
        ({"scratches": (3, 1)}, "scratches"),
        ({"scratches": (0, 0), "dents": (0, 0)}, "at least one"),
        ({"attribute": ""}, "attribute"),
    ],
)
def test_bad_settings_are_refused(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SynthSettings(**overrides)


def test_fingerprint_changes_with_any_setting() -> None:
    assert SynthSettings().fingerprint() == SynthSettings().fingerprint()
    assert SynthSettings().fingerprint() != SynthSettings(seed=1).fingerprint()
    assert SynthSettings().fingerprint() != SynthSettings(scratch_bend=0.2).fingerprint()


def test_the_project_via_loader_rebuilds_exactly_the_generated_masks(tmp_path: Path) -> None:
    """What training sees (car_damage.data.via) is what the generator drew."""
    from car_damage.data.via import load_via, region_mask

    settings = SynthSettings(n=4, val_fraction=0.25, height=96, width=112, seed=5, dents=(1, 1))
    generate(tmp_path, settings)
    parsed = load_via(tmp_path / "train" / "via_region_data.json")
    assert parsed.format == "via2" and len(parsed.images) == 3
    for index, entry in enumerate(parsed.images):
        sample = render_sample(sample_rng(5, "train", index), settings)
        assert entry.filename == f"synth_train_{index:05d}.png"
        assert [r.attributes["damage"] for r in entry.regions] == [d.kind for d in sample.damages]
        for region, damage in zip(entry.regions, sample.damages, strict=True):
            assert np.array_equal(region_mask(region, 96, 112), damage.mask)
