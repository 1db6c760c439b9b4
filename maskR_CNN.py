#!/usr/bin/env python3
"""The old system's command line, kept working by delegating to ``car_damage.cli``.

    python maskR_CNN.py train --dataset=data/ --weights=coco
    python maskR_CNN.py splash --weights=mask_cnn_scratch.h5 --image=car.jpg
    python maskR_CNN.py evaluate|detect ...  (new commands pass through unchanged)

Differences from the old script: splash writes ``<image>_splash.png`` and ``<image>_outlines.png`` into the current
folder (``--out`` to change) and needs a trained weights file (not ``coco``/``last``); videos (``--video``) are not
supported.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run from a checkout without installing: make model_code importable.
sys.path.insert(0, str(Path(__file__).resolve().parent / "model_code"))

from car_damage.cli import main  # noqa: E402

OLD_COMMANDS = ("train", "splash")


def translate(argv: list[str]) -> list[str]:
    """Old-style arguments -> the CLI's; refuses ``--video`` with a clear message."""
    if any(arg == "--video" or arg.startswith("--video=") for arg in argv):
        raise SystemExit("error: --video is not supported any more; splash takes --image")
    return list(argv)


if __name__ == "__main__":
    arguments = sys.argv[1:]
    if arguments and not arguments[0].startswith("-") and arguments[0] not in (*OLD_COMMANDS, "evaluate", "detect"):
        raise SystemExit(f"'{arguments[0]}' is not recognized. Use 'train' or 'splash'")
    raise SystemExit(main(translate(arguments)))
