"""cli.synth: ``car-damage synth`` and ``python -m car_damage.cli.synth`` write the dataset they were asked for."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from PIL import Image

from car_damage.cli import synth


def test_command_line_and_subparser(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = synth.main(["--out", str(tmp_path / "d"), "--n", "3", "--size", "80x64", "--scratches", "1",
                       "--dents", "0", "--attribute", "Scratch", "--seed", "2"])
    assert code == 0
    assert "wrote 2 train + 1 val images (3 scratches, 0 dents)" in capsys.readouterr().out
    entry = next(iter(json.loads((tmp_path / "d/val/via_region_data.json").read_text()).values()))
    assert entry["regions"][0]["region_attributes"] == {"Scratch": "scratch"}
    with Image.open(tmp_path / "d/val" / entry["filename"]) as image:
        assert image.size == (80, 64)

    parser = argparse.ArgumentParser()
    synth.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["synth", "--out", str(tmp_path / "e"), "--n", "2", "--size", "64"])
    assert args.func is synth.run and args.size == (64, 64)
    assert args.func(args) == 0
    assert (tmp_path / "e/train/via_region_data.json").exists()

    assert synth.main(["--out", str(tmp_path / "f"), "--n", "1"]) == 2  # refused with a message
    assert "n must be >= 2" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        synth.main(["--out", str(tmp_path / "g"), "--scratches", "many"])
