"""``make demo``: the whole product on one machine, without weights of your own, Docker or a GPU.

synthetic VIA dataset -> ``car_damage train`` (tiny backbone) -> ``mask_cnn_scratch.h5`` + sidecar -> the real
service (``container/serve``: nginx + gunicorn) on a free localhost port -> JSON answers (polygons, count, area)
and annotated PNGs -> held-out mask mAP@0.5 and count accuracy from ``car_damage evaluate`` -> service stopped.

Training and evaluation run the same command lines a user would type (printed as they run). Their results are
cached under ``.cache/demo/<key>/``, the key hashing every generator and training setting, so a second run
starts the service at once. ``--serve`` skips the demo and keeps the service in the foreground (``make serve``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from car_damage.data import synth
from car_damage.local_service import REPO_ROOT, ServiceProcess, find_free_port, post_image, serve_script
from car_damage.model.card import ModelCard, card_path_for
from car_damage.preflight import ensure_service_tools

logger = logging.getLogger(__name__)

#: Bump when the demo's pipeline changes in a way that invalidates cached models.
DEMO_VERSION = 1
DAMAGE_TYPE = "scratch"
WEIGHTS_NAME = f"mask_cnn_{DAMAGE_TYPE}.h5"
#: The real photos, where the project sits next to ../shared/data (SHARED_DATA_DIR overrides, as in the tests).
SHARED_TEST_IMAGES = Path(os.environ.get("SHARED_DATA_DIR", REPO_ROOT.parent / "shared" / "data")) / "test_images"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
#: The held-out mask mAP@0.5 the demo model is expected to reach on its own synthetic data.
TARGET_MAP = 0.6
#: Config settings of the demo model over the tiny preset (see docs/benchmarks.md for the measurements).
#: Anchors one octave larger than the preset's (the scratches' boxes are 28-86 px, sqrt of area, 5th-95th
#: percentile: with 8..128 only 55% of them have an anchor at IoU >= 0.5, with 16..256 77%), and five times the
#: proposals and twice the ROIs per training image, so the heads see positive ROIs from the first steps.
#: Adam (0.001) with a cosine decay trains the random-weight model far faster than SGD (0.01, constant), whose
#: held-out mAP@0.5 after 20 x 100 steps ranged 0.29-0.67 over runs (docs/benchmarks.md).
DEMO_CONFIG: tuple[str, ...] = (
    "RPN_ANCHOR_SCALES=(16, 32, 64, 128, 256)", "PRE_NMS_LIMIT=2000", "POST_NMS_ROIS_TRAINING=1000",
    "TRAIN_ROIS_PER_IMAGE=64", "OPTIMIZER=ADAM", "LEARNING_RATE_SCHEDULE=cosine",
)


@dataclass(frozen=True)
class TrainingSettings:
    """The ``car_damage train`` arguments of the demo model."""

    backbone: str = "tiny"
    image_size: int = 256
    epochs: int = 20
    steps_per_epoch: int = 100
    #: Adam's usual rate; the cosine schedule (DEMO_CONFIG) takes it to 0 by the last step.
    learning_rate: float = 0.001
    label: str = DAMAGE_TYPE
    #: Seeds initial weights, image order and ROI sampling: the demo model is the same on every machine.
    seed: int = 0

    val_steps: int = 5
    min_confidence: float = 0.5
    #: ``--config KEY=VALUE`` settings over the tiny preset, tuned for the synthetic scratches at 256 px.
    config: tuple[str, ...] = DEMO_CONFIG

    def command(self, dataset: Path, out: Path, logs: Path, attribute: str) -> list[str]:
        # --weights none starts from random weights, so every layer trains (--layers all), not just the heads.
        return [
            sys.executable, "-m", "car_damage", "train", "--dataset", str(dataset), "--weights", "none",
            "--layers", "all", "--backbone", self.backbone, "--image-size", str(self.image_size),
            "--epochs", str(self.epochs), "--steps-per-epoch", str(self.steps_per_epoch),
            "--val-steps", str(self.val_steps), "--learning-rate", str(self.learning_rate),
            "--min-confidence", str(self.min_confidence), "--label", self.label, "--attribute", attribute,
            "--logs", str(logs), "--out", str(out), "--seed", str(self.seed),
        ] + [part for setting in self.config for part in ("--config", setting)]


@dataclass(frozen=True)
class DemoSettings:
    data: synth.SynthSettings = field(default_factory=synth.SynthSettings)
    training: TrainingSettings = field(default_factory=TrainingSettings)

    def cache_key(self) -> str:
        payload = {"demo": DEMO_VERSION, "generator": self.data.fingerprint(), "training": asdict(self.training)}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class DemoModel:
    """A trained and evaluated demo model in the cache."""

    folder: Path
    dataset: Path
    metrics: dict
    cached: bool
    train_seconds: float

    @property
    def weights(self) -> Path:
        return self.folder / WEIGHTS_NAME

    @property
    def map50(self) -> float | None:
        return find_map50(self.metrics)


def find_map50(metrics: dict) -> float | None:
    """mAP@0.5 from ``car_damage evaluate``'s JSON (top level or under "mask"), None if absent."""
    for source in (metrics, metrics.get("mask") or {}):
        for key in ("mAP@0.5", "map50", "mAP50", "mAP_50", "mask_mAP@0.5"):
            value = source.get(key) if isinstance(source, dict) else None
            if isinstance(value, (int, float)):
                return float(value)
    return None


def _run_logged(command: list[str], log_path: Path, what: str, hide_json: bool = False) -> float:
    """Run a CLI step, its output streamed to the screen (live progress bar) and to ``log_path``.

    The loader's one-warning-per-dent lines ("region dropped": the demo trains scratches only) are counted, not
    shown; with ``hide_json`` so is a JSON document the step prints (``evaluate`` prints its whole report,
    precision-recall curve included, after the summary lines). Raises with the log's tail on failure.
    """
    print(f"$ {' '.join(_shorten(part) for part in command)}", flush=True)
    started = time.perf_counter()
    hidden = 0
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
        pending = b""
        while chunk := os.read(process.stdout.fileno(), 65536):  # type: ignore[union-attr]
            log.write(chunk)
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                if b"region dropped" in line:
                    hidden += 1
                elif hide_json and line.startswith((b"{", b"}", b" ")):
                    continue
                elif not line.startswith((b"WARNING: All log messages", b"E0000", b"I0000", b"W0000")):
                    sys.stdout.buffer.write(line + b"\n")
            if b"\r" in pending or b"\b" in pending:  # a progress bar redrawing itself: show it now
                sys.stdout.buffer.write(pending)
                pending = b""
            sys.stdout.flush()
        code = process.wait()
    if hidden:
        print(f"({hidden} warnings about dent regions, which the scratch model ignores, are in {log_path})")
    if code != 0:
        tail = "".join(log_path.read_text(errors="replace").splitlines(keepends=True)[-20:])
        raise RuntimeError(f"{what} failed (exit {code}); see {log_path}. Last lines:\n{tail}")
    return time.perf_counter() - started


def _shorten(part: str) -> str:
    return "python" if part == sys.executable else part


def prepare_model(settings: DemoSettings, cache_root: Path) -> DemoModel:
    """Generate, train and evaluate into ``cache_root/demo/<key>`` unless that was done before."""
    home = cache_root / "demo" / settings.cache_key()
    dataset, model, metrics_path = home / "data", home / "model", home / "metrics.json"
    if (model / WEIGHTS_NAME).exists() and metrics_path.exists():
        print(f"Using the cached demo model {model} (key {settings.cache_key()})")
        info = json.loads(metrics_path.read_text())
        if not _calibrated_under_current_rules(model / WEIGHTS_NAME):  # cached before calibration or a rule change
            info["metrics"] = _evaluate(model / WEIGHTS_NAME, dataset, home, settings, calibrate=True)
            metrics_path.write_text(json.dumps(info, indent=2) + "\n")
        return DemoModel(model, dataset, info["metrics"], cached=True, train_seconds=info["train_seconds"])
    home.mkdir(parents=True, exist_ok=True)
    if not (dataset / "val" / synth.ANNOTATION_FILE).exists():
        report = synth.generate(dataset, settings.data)
        print(f"Generated {report.images['train']} train + {report.images['val']} val synthetic images "
              f"({report.damages['scratch']} scratches, {report.damages['dent']} dents) in {report.seconds:.1f}s")
    partial = home / "model.partial"
    shutil.rmtree(partial, ignore_errors=True)
    print(f"Training the demo model ({settings.training.backbone} backbone, {settings.training.image_size} px, "
          f"{settings.training.epochs} x {settings.training.steps_per_epoch} steps):")
    train_seconds = _run_logged(
        settings.training.command(dataset, partial, home / "logs", settings.data.attribute), home / "train.log",
        "training")
    if not (partial / WEIGHTS_NAME).exists():
        raise RuntimeError(f"training finished but wrote no {WEIGHTS_NAME} into {partial}")
    print(f"Trained in {train_seconds:.0f}s.")
    metrics = _evaluate(partial / WEIGHTS_NAME, dataset, home, settings, calibrate=False)  # training calibrated
    shutil.rmtree(model, ignore_errors=True)
    partial.rename(model)
    metrics_path.write_text(json.dumps({"metrics": metrics, "train_seconds": train_seconds}, indent=2) + "\n")
    return DemoModel(model, dataset, metrics, cached=False, train_seconds=train_seconds)


def _calibrated_under_current_rules(weights: Path) -> bool:
    from car_damage.training.calibrate import RULES_VERSION

    card = ModelCard.load(card_path_for(weights))
    return card.operating_point.validation.get("rules") == RULES_VERSION


def _evaluate(weights: Path, dataset: Path, home: Path, settings: DemoSettings, calibrate: bool) -> dict:
    """``car_damage evaluate`` on the held-out split, with ``--calibrate`` when the card's operating point must be
    chosen here (training chose it already; a model cached before calibration or before the current grouping rules
    gets it here), metrics come back."""
    print("Evaluating on the held-out synthetic images (operating point chosen there):")
    evaluation = home / "evaluation.json"
    command = [sys.executable, "-m", "car_damage", "evaluate", "--weights", str(weights), "--dataset", str(dataset),
               "--subset", "val", "--attribute", settings.data.attribute, "--out", str(evaluation)]
    command += ["--calibrate"] if calibrate else []
    _run_logged(command, home / "evaluate.log", "evaluation", hide_json=True)
    print(f"(the whole report: {evaluation})")
    metrics = json.loads(evaluation.read_text())
    _stamp_card(weights, settings, metrics)
    return metrics


def quality_summary(metrics: dict, images: int) -> str:
    """The held-out quality line: mask mAP@0.5 and the count accuracy of the answers, with the targets."""
    map50, counts = find_map50(metrics), metrics.get("counts") or {}
    verdict = "n/a" if map50 is None else ("meets" if map50 >= TARGET_MAP else "BELOW")
    line = f"Held-out synthetic mask mAP@0.5: {'unknown' if map50 is None else f'{map50:.3f}'} " \
           f"({verdict} the {TARGET_MAP} target; {images} images)"
    if counts:
        line += (f"; damage count exact on {counts['exact_images']}/{counts['images']} images "
                 f"({100 * counts['exact_rate']:.0f}%), count MAE {counts['mae']:.2f}, "
                 f"{counts['over_images']} over- and {counts['under_images']} under-counted")
    return line


def _stamp_card(weights: Path, settings: DemoSettings, metrics: dict) -> None:
    """Mark the sidecar as the synthetic demo model, with its held-out metrics, so answers say what served them."""
    card_path = card_path_for(weights)
    card = ModelCard.load(card_path)
    card.version = f"synthetic-demo-{settings.cache_key()}"
    map50 = find_map50(metrics)
    card.metrics = {**card.metrics, "synthetic_val_mask_map50": map50}
    card.save(card_path)


def install_model(model: DemoModel, model_dir: Path) -> None:
    """Copy the demo weights + sidecar into ``model_dir``; never overwrite somebody's own model."""
    model_dir.mkdir(parents=True, exist_ok=True)
    target = model_dir / WEIGHTS_NAME
    card = card_path_for(target)
    if target.exists() and card.exists():
        try:
            version = ModelCard.load(card).version
        except ValueError:
            version = ""
        if not version.startswith("synthetic-demo-"):
            raise RuntimeError(f"{target} exists and is not a demo model; pass another --model-dir "
                               f"(make demo MODEL_DIR=...) rather than overwrite it")
    elif target.exists():
        raise RuntimeError(f"{target} exists without a demo sidecar; pass another --model-dir rather than overwrite it")
    shutil.copy2(model.weights, target)
    shutil.copy2(card_path_for(model.weights), card)


def demo_images(dataset: Path, photos: Path | None, count: int) -> list[Path]:
    """The first ``count`` held-out synthetic images, then every photo in ``photos`` (if that folder exists)."""
    held_out = sorted(p for p in (dataset / "val").iterdir() if p.suffix == ".png")[:count]
    real = sorted(p for p in photos.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if photos and photos.is_dir() \
        else []
    return held_out + real


def query_service(url: str, images: Sequence[Path], out_dir: Path) -> list[tuple[Path, dict]]:
    """POST every image for JSON and for an annotated PNG (saved in ``out_dir``); print the table."""
    out_dir.mkdir(parents=True, exist_ok=True)
    answers = []
    print(f"\n{'image':34} {'size':>10} {'damages':>8} {'area px':>9} {'area %':>7} {'ms':>6}")
    for path in images:
        data = path.read_bytes()
        started = time.perf_counter()
        answer = json.loads(post_image(url, data, accept="application/json"))
        elapsed_ms = (time.perf_counter() - started) * 1000
        png = post_image(url, data, accept="image/png")
        (out_dir / f"{path.stem}_annotated.png").write_bytes(png)
        totals, image = answer["totals"], answer["image"]  # response_schema.json: union area over all damages
        size = f"{image['width']}x{image['height']}"
        print(f"{path.name[:34]:34} {size:>10} {answer['damage_count']:>8} {totals['area_px']:>9} "
              f"{100 * totals['area_fraction']:>6.2f}% {elapsed_ms:>6.0f}")
        answers.append((path, answer))
    return answers


def run_demo(args: argparse.Namespace) -> int:
    ensure_service_tools()  # before training: a missing nginx must not cost minutes
    settings = settings_from_args(args)
    started = time.perf_counter()
    model = prepare_model(settings, args.cache)
    install_model(model, args.model_dir)
    port = args.port or find_free_port()
    images = demo_images(model.dataset, args.photos, args.held_out)
    print(f"\nStarting the service (container/serve, nginx + gunicorn) on http://127.0.0.1:{port} "
          f"with MODEL_DIR={args.model_dir}")
    log_path = args.out / "service.log"
    args.out.mkdir(parents=True, exist_ok=True)
    with ServiceProcess(args.model_dir, port, log_path) as service:
        ready = service.wait_ready(timeout=args.ready_timeout)
        print(f"/ping answered 200 after {ready:.1f}s; the page (while the demo runs): {service.url}/")
        answers = query_service(service.url, images, args.out)
    print(f"\nService stopped. Annotated images: {args.out}/ (service log: {log_path})")
    if answers:
        name, answer = answers[0]
        print(f"\nThe JSON answer for {name.name}:")
        print(json.dumps(answer, indent=1))
    print(f"\n{quality_summary(model.metrics, settings.data.num_val)} (model trained in {model.train_seconds:.0f}s"
          f"{', taken from the cache' if model.cached else ''})")
    print(f"Demo finished in {time.perf_counter() - started:.0f}s. "
          f"Keep the service running: make serve MODEL_DIR={args.model_dir} (then open the page it prints)")
    return 0


def run_serve(args: argparse.Namespace) -> int:
    """Replace this process with ``container/serve`` for ``args.model_dir`` (Ctrl-C stops it)."""
    weights = sorted(args.model_dir.glob("mask_*cnn_*.h5")) if args.model_dir.is_dir() else []
    if not weights:
        print(f"error: no mask_cnn_<type>.h5 in {args.model_dir}; run `make demo` first or pass "
              f"MODEL_DIR=<folder with your mask_cnn_scratch.h5>")
        return 2
    ensure_service_tools()
    port = args.port or 8080
    print(f"Serving {', '.join(w.name for w in weights)} from {args.model_dir} on http://127.0.0.1:{port}\n"
          f"  the page: http://127.0.0.1:{port}/ (open it in a browser, drop a photo)\n"
          f"  curl -X POST http://127.0.0.1:{port}/invocations -H 'Content-Type: image/jpeg' "
          f"--data-binary @car.jpg", flush=True)
    env = ServiceProcess.environment(args.model_dir, port)
    script = serve_script()
    os.execve(sys.executable, [sys.executable, str(script)], env)
    return 0  # not reached


def settings_from_args(args: argparse.Namespace) -> DemoSettings:
    data = synth.SynthSettings(n=args.n, height=args.size, width=args.size, seed=args.seed)
    training = TrainingSettings(image_size=args.image_size, epochs=args.epochs, steps_per_epoch=args.steps,
                                learning_rate=args.learning_rate, seed=args.seed)
    return DemoSettings(data=data, training=training)


def build_parser() -> argparse.ArgumentParser:
    data, training = synth.SynthSettings(), TrainingSettings()
    parser = argparse.ArgumentParser(prog="python -m car_damage.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", action="store_true", help="only run the service in the foreground")
    parser.add_argument("--model-dir", type=Path, default=Path("demo_model"))
    parser.add_argument("--port", type=int, default=0, help="0: a free port (demo) or 8080 (--serve)")
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="annotated images and the service log")
    parser.add_argument("--cache", type=Path, default=Path(".cache"))
    parser.add_argument("--photos", type=Path, default=SHARED_TEST_IMAGES, help="real photos to send, if present")
    parser.add_argument("--held-out", type=int, default=4, help="held-out synthetic images to send")
    parser.add_argument("--n", type=int, default=data.n, help="synthetic images (train + val)")
    parser.add_argument("--size", type=int, default=data.height, help="synthetic image side in pixels")
    parser.add_argument("--seed", type=int, default=data.seed, help="seeds the synthetic data and the training")
    parser.add_argument("--image-size", type=int, default=training.image_size, help="model input size")
    parser.add_argument("--epochs", type=int, default=training.epochs)
    parser.add_argument("--steps", type=int, default=training.steps_per_epoch, help="steps per epoch")
    parser.add_argument("--learning-rate", type=float, default=training.learning_rate)
    parser.add_argument("--ready-timeout", type=float, default=240.0, help="seconds to wait for /ping 200")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return run_serve(args) if args.serve else run_demo(args)
    except (RuntimeError, ValueError, OSError) as exc:
        print(f"\ndemo failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
