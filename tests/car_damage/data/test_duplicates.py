"""Byte-identical duplicates and train/val leakage, on hand-made files and the real seed data."""

from __future__ import annotations

from car_damage.data.duplicates import find_duplicates, sha256_file


def test_hand_made_groups(tmp_path):
    for split, name, content in [("train", "a.jpg", b"A"), ("train", "b.jpg", b"A"), ("train", "c.jpg", b"C"),
                                 ("val", "x.jpg", b"C"), ("val", "y.jpg", b"Y")]:
        (tmp_path / split).mkdir(exist_ok=True)
        (tmp_path / split / name).write_bytes(content)
    report = find_duplicates({s: sorted((tmp_path / s).iterdir()) for s in ("train", "val")})
    assert report.lines() == [
        "duplicate in train: train/a.jpg = train/b.jpg",
        "leak across train/val: train/c.jpg = val/x.jpg",
    ]
    assert report.leaked("val") == ["x.jpg"] and report.leaked("train") == ["c.jpg"]
    assert [g.files[0].name for g in report.within("train")] == ["a.jpg"]
    # sha256(b"Y"), from coreutils sha256sum
    assert sha256_file(tmp_path / "val" / "y.jpg") == "18f5384d58bcb1bba0bcd9e6a6781d1a6ac2cc280c330ecbab6cb7931b721552"


def test_no_duplicates_is_falsy(tmp_path):
    (tmp_path / "a").write_bytes(b"1")
    (tmp_path / "b").write_bytes(b"2")
    assert not find_duplicates({"train": [tmp_path / "a", tmp_path / "b"]})


def test_real_seed_data_leak_report(seed_scratch_dir):
    splits = {s: sorted(p for p in (seed_scratch_dir / s).iterdir() if p.suffix != ".json") for s in ("train", "val")}
    report = find_duplicates(splits)
    assert report.lines() == [
        "duplicate in train: train/image11.jpeg = train/image16.jpg",
        "leak across train/val: train/image18.jpg = train/images44.jpg = val/image52.jpeg",
        "leak across train/val: train/image39.jpg = train/image49.jpg = val/image56.jpg",
        "leak across train/val: train/image4.jpg = val/image54.jpg",
    ]
    assert report.leaked("val") == ["image52.jpeg", "image54.jpg", "image56.jpg"]
    assert len(report.within("train")) == 3
