"""Initial weights for training (``--weights coco|last|imagenet|none|PATH``) and inference models from a file.

Every file is checked before anything is loaded (size where known, then ``mrcnn.weights.inspect_weights``, which
reads the HDF5 layout), so a truncated or foreign file gives a clear error instead of a half-loaded model.
Downloads use the engine's ``mrcnn.utils.download_trained_weights`` (streamed to a temporary file, size and HDF5
signature checked, renamed into place only when intact).

- ``coco``: matterport's ``mask_rcnn_coco.h5`` (v2.0 release, 257,557,808 bytes), downloaded when missing; the four
  class-specific head layers are excluded when NUM_CLASSES != 81 (matterport's fine-tuning recipe).
- ``imagenet``: the Keras ResNet-50 ImageNet file matterport uses (``MaskRCNN.get_imagenet_weights``; names match
  our ResNet backbones).
- ``last``: the newest checkpoint under the model's log folder (``MaskRCNN.find_last``); training resumes at its epoch.
- ``none``: random initialisation.
- a path: any matterport-layout weights file; heads are excluded when its class count differs from the config's.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

WEIGHT_CHOICES = ("coco", "last", "imagenet", "none")
#: Class-specific layers of matterport's heads: excluded when fine-tuning to another class count.
HEAD_LAYERS = ("mrcnn_class_logits", "mrcnn_bbox_fc", "mrcnn_bbox", "mrcnn_mask")
COCO_NUM_CLASSES = 81
COCO_WEIGHTS_NAME = "mask_rcnn_coco.h5"
#: Environment override for where the COCO file lives.
COCO_PATH_ENV = "CAR_DAMAGE_COCO_WEIGHTS"


class WeightsInitError(ValueError):
    """Initial weights that cannot be used; the message says which file and why."""


@dataclass
class InitResult:
    """What was loaded: the spec, the file, the excluded layers and the engine's LoadReport."""

    spec: str
    path: Path | None = None
    excluded: list[str] = field(default_factory=list)
    report: Any = None


def default_coco_path() -> Path:
    """``$CAR_DAMAGE_COCO_WEIGHTS`` or ``./mask_rcnn_coco.h5`` (the old system kept it in the project root)."""
    return Path(os.environ.get(COCO_PATH_ENV, COCO_WEIGHTS_NAME))


def coco_model_url() -> str:
    from mrcnn import utils

    return utils.COCO_MODEL_URL


def coco_model_bytes() -> int:
    from mrcnn import utils

    return utils.COCO_MODEL_BYTES


def download_coco(path: Path) -> None:
    """matterport's COCO file to ``path`` via the engine's checked download (size, HDF5 signature, atomic)."""
    from mrcnn import utils

    try:
        utils.download_trained_weights(str(path), verbose=1, url=coco_model_url(), expected_size=coco_model_bytes())
    except utils.WeightsDownloadError as exc:
        raise WeightsInitError(f"--weights coco: {exc}") from exc


def check_weights_file(path: str | Path, expected_bytes: int | None = None) -> Any:
    """The file's WeightsInfo (backbone, num_classes, layers); WeightsInitError for missing/truncated/foreign files."""
    from mrcnn.weights import WeightsFileError, inspect_weights

    path = Path(path)
    if not path.is_file():
        raise WeightsInitError(f"weights file {path} does not exist")
    size = path.stat().st_size
    if expected_bytes is not None and size != expected_bytes:
        raise WeightsInitError(f"{path} has {size} bytes, expected {expected_bytes}: an interrupted download? "
                               "delete it and run again to download it anew")
    try:
        return inspect_weights(str(path))
    except (WeightsFileError, OSError, KeyError, ValueError) as exc:
        raise WeightsInitError(f"{path} is not a usable Mask R-CNN weights file ({exc}); if it was downloaded, "
                               "delete it and run again") from exc


def resolve_weights_path(spec: str, model: Any = None, coco_path: str | Path | None = None,
                         allow_download: bool = True) -> tuple[Path | None, int | None]:
    """(file, its expected byte size or None) for a ``--weights`` value; downloads coco/imagenet when missing."""
    name = spec.strip().lower()
    if name == "none":
        return None, None
    if name == "coco":
        path = Path(coco_path) if coco_path else default_coco_path()
        if not path.exists():
            if not allow_download:
                raise WeightsInitError(f"{path} is missing and downloads are disabled")
            download_coco(path)
        return path, coco_model_bytes()
    if name == "imagenet":
        if model is None:
            raise WeightsInitError("--weights imagenet needs a model")
        try:  # the engine's Keras get_file download: cached under ~/.keras/models, MD5-checked
            return Path(model.get_imagenet_weights()), None
        except Exception as exc:  # get_file raises bare Exception subclasses for URL/HTTP/checksum errors
            raise WeightsInitError(f"--weights imagenet: download failed ({exc})") from exc
    if name == "last":
        if model is None:
            raise WeightsInitError("--weights last needs a model with a log folder")
        try:
            return Path(model.find_last()), None
        except FileNotFoundError as exc:
            raise WeightsInitError(f"--weights last: no checkpoint found ({exc})") from exc
    return Path(spec).expanduser(), None


def initialise_weights(model: Any, spec: str, coco_path: str | Path | None = None,
                       allow_download: bool = True) -> InitResult:
    """Load the weights named by ``spec`` into ``model`` (a MaskRCNN), by layer name, all-or-error."""
    num_classes = model.config.NUM_CLASSES
    backbone = model.config.BACKBONE
    if spec.strip().lower() == "imagenet" and backbone not in ("resnet50", "resnet101"):
        raise WeightsInitError(f"imagenet weights are ResNet weights; the model's backbone is {backbone!r}")
    path, expected_bytes = resolve_weights_path(spec, model, coco_path, allow_download)
    if path is None:
        logger.info("weights: random initialisation")
        return InitResult(spec="none")
    info = check_weights_file(path, expected_bytes)
    file_classes = getattr(info, "num_classes", None)
    excluded = list(HEAD_LAYERS) if file_classes not in (None, num_classes) else []
    if excluded:
        logger.info("weights: %s has %s classes, the model %d: heads %s start random",
                    path, file_classes, num_classes, ", ".join(excluded))
    report = model.load_weights(str(path), by_name=True, exclude=excluded or None)
    mismatched = list(getattr(report, "mismatched", []) or [])
    if mismatched:
        raise WeightsInitError(f"{path}: layers with other shapes than the model's: {mismatched[:10]}")
    loaded = getattr(report, "loaded", None)
    if loaded is not None and not loaded:
        raise WeightsInitError(f"{path}: no layer name matches this model (backbone {backbone!r})")
    logger.info("weights: loaded %s layers from %s", len(loaded) if loaded is not None else "all", path)
    return InitResult(spec=spec, path=path, excluded=excluded, report=report)


def card_for_weights(weights_path: str | Path, class_names: list[str] | None = None,
                     damage_type: str | None = None, info: Any = None) -> Any:
    """The sidecar ModelCard next to ``weights_path``, or one inferred from the file (backbone, class count).

    ``info`` is the file's WeightsInfo when the caller has already inspected it (the file is read once per load).
    """
    from car_damage.model.card import ModelCard, card_path_for, damage_type_from_filename

    weights_path = Path(weights_path)
    card_path = card_path_for(weights_path)
    if card_path.is_file():
        return ModelCard.load(card_path)
    info = info if info is not None else check_weights_file(weights_path)
    damage_type = damage_type or damage_type_from_filename(weights_path) or "damage"
    if class_names is None:
        count = int(info.num_classes) - 1
        class_names = [damage_type] if count == 1 else [f"{damage_type}_{k}" for k in range(1, count + 1)]
    logger.info("no sidecar %s: backbone %s, classes %s taken from the weights file", card_path, info.backbone,
                class_names)
    return ModelCard(damage_type=damage_type, class_names=["BG", *class_names],
                     config_overrides={"BACKBONE": info.backbone})


def inference_model(weights_path: str | Path, model_dir: str | Path = "logs", card: Any = None, info: Any = None,
                    **config_overrides: Any) -> tuple[Any, Any]:
    """(MaskRCNN in inference mode with the file's weights, its ModelCard); config overrides go on top of the card.

    ``info``: the file's WeightsInfo when the caller has inspected it already; otherwise it is inspected here, once.
    """
    from mrcnn.model import MaskRCNN

    info = info if info is not None else check_weights_file(weights_path)
    card = card or card_for_weights(weights_path, info=info)
    config = card.to_config(**config_overrides)
    model = MaskRCNN(mode="inference", config=config, model_dir=str(model_dir))
    if getattr(info, "num_classes", None) not in (None, config.NUM_CLASSES):
        raise WeightsInitError(f"{weights_path} has {info.num_classes} classes, its card {config.NUM_CLASSES}")
    report = model.load_weights(str(weights_path), by_name=True)
    if list(getattr(report, "mismatched", []) or []):
        raise WeightsInitError(f"{weights_path}: layers with other shapes than the model's: {report.mismatched}")
    missing = list(getattr(report, "missing", []) or [])
    if missing:  # an inference model with random layers would give silent nonsense
        raise WeightsInitError(f"{weights_path} lacks layers of the inference model: {missing[:10]}")
    return model, card
