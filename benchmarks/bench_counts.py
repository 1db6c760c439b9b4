"""Issue 11's targets: damage counts with the card's operating point, and what post-processing costs.

    PYTHONPATH=$PWD/model_code .venv/bin/python benchmarks/bench_counts.py --model-dir demo_model \\
        [--photos ../shared/data/test_images] [--seeds 1 2] [--seed-images 1000] [--repeats 5] [--photos-only]

1. The demo model on its own held-out split (``--dataset``, default: the cached demo data) and on the val images of
   synthetic sets drawn with other seeds (``--seed-images`` each, a fifth of them val: 200 val images by default,
   so one image is half a point): exact-count rate, count MAE, mask mAP@0.5 at the card's defaults
   (``car_damage.training.evaluate.evaluate_weights``, no calibration: the card's operating point is used as is).
2. The real photos: the damage count before (the old defaults: the card's DETECTION_MIN_CONFIDENCE, no grouping)
   and after (the card's operating point, grouping on), and post-processing time (grouping, measurements,
   polygons) against model time, summed over the photos.
Targets: exact >= 85 %, MAE <= 0.2, mAP@0.5 >= 0.85 on the held-out split; post-processing < 10 % of model time.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "model_code"))

from car_damage.answer.options import InferenceOptions  # noqa: E402
from car_damage.answer.predictor import DamagePredictor  # noqa: E402
from car_damage.data import images, synth  # noqa: E402
from car_damage.demo import DemoSettings  # noqa: E402
from car_damage.training.evaluate import evaluate_weights  # noqa: E402

logger = logging.getLogger("bench_counts")
WEIGHTS = "mask_cnn_scratch.h5"


def synthetic_counts(weights: Path, datasets: list[tuple[str, Path]]) -> None:
    print(f"\n{'split':28} {'images':>6} {'exact':>7} {'MAE':>6} {'mAP@0.5':>8}")
    for name, folder in datasets:
        with tempfile.TemporaryDirectory() as tmp:
            run = evaluate_weights(weights, folder / "val", Path(tmp) / "eval.json", attributes=["damage"])
        counts = run.report.counts
        print(f"{name:28} {counts['images']:>6} {100 * counts['exact_rate']:>6.1f}% {counts['mae']:>6.3f} "
              f"{run.report.map50:>8.3f}", flush=True)


def real_photos(model_dir: Path, photos: Path, repeats: int) -> None:
    predictor = DamagePredictor.from_model_dir(model_dir)
    model = predictor.models[0]
    before = InferenceOptions(min_score=float(model.model.config.DETECTION_MIN_CONFIDENCE), merge="none")
    print(f"\nreal photos, demo model: before = min_score {before.min_score} without grouping (the old card), "
          f"after = the card's operating point (min_score {model.default_min_score}, merge "
          f"{model.grouping.mode} {model.grouping.containment})")
    print(f"times: the median of {repeats} requests per photo (a shared VM's stolen time lands on single runs)")
    print(f"{'photo':28} {'size':>10} {'before':>6} {'after':>6} {'parts':>10} {'model ms':>9} {'post ms':>8}")
    model_ms = post_ms = 0.0
    for path in sorted(p for p in photos.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg")):
        rgb = images.decode_image(path.read_bytes())
        old = predictor.predict(rgb, before)
        answers = [predictor.predict(rgb) for _ in range(repeats)]
        new = answers[0]
        photo_model = statistics.median(a["timings_ms"]["inference"] for a in answers)
        photo_post = statistics.median(a["timings_ms"]["postprocess"] for a in answers)
        model_ms += photo_model
        post_ms += photo_post
        parts = ",".join(str(d["parts"]) for d in new["damages"]) or "-"
        print(f"{path.name[:28]:28} {rgb.shape[1]:>4}x{rgb.shape[0]:<5} {old['damage_count']:>6} "
              f"{new['damage_count']:>6} {parts[:10]:>10} {photo_model:>9.1f} {photo_post:>8.1f}", flush=True)
    print(f"post-processing / model time over the photos: {post_ms:.0f} / {model_ms:.0f} ms = "
          f"{100 * post_ms / model_ms:.1f}% (target < 10%)")


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=REPO / "demo_model")
    parser.add_argument("--dataset", type=Path, help="the demo's data folder (default: make demo's own)")
    parser.add_argument("--photos", type=Path, default=REPO.parent / "shared" / "data" / "test_images")
    parser.add_argument("--seeds", type=int, nargs="*", default=[1, 2], help="other synthetic seeds to draw")
    parser.add_argument("--seed-images", type=int, default=1000, help="images per other seed (train + val)")
    parser.add_argument("--repeats", type=int, default=5, help="requests per photo for its times (the median)")
    parser.add_argument("--photos-only", action="store_true", help="skip the synthetic splits (part 1)")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    weights = args.model_dir / WEIGHTS
    dataset = args.dataset or REPO / ".cache" / "demo" / DemoSettings().cache_key() / "data"  # make demo's own
    if args.photos_only:
        pass
    elif not (dataset / "val").is_dir():
        print(f"{dataset}/val not found: run `make demo` first (or pass --dataset)")
        return 2
    else:
        synthetic_splits(weights, dataset, args.seeds, args.seed_images)
    if args.photos.is_dir():
        real_photos(args.model_dir, args.photos, args.repeats)
    else:
        print(f"\n{args.photos} not found: real-photo table skipped")
    return 0


def synthetic_splits(weights: Path, dataset: Path, seeds: list[int], seed_images: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        datasets = [("held-out (demo data)", dataset)]
        for seed in seeds:
            folder = Path(tmp) / f"seed{seed}"
            synth.generate(folder, synth.SynthSettings(seed=seed, n=seed_images))
            datasets.append((f"synthetic seed {seed} (val)", folder))
        synthetic_counts(weights, datasets)


if __name__ == "__main__":
    raise SystemExit(main())
