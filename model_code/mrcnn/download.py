"""Download pretrained weights safely: stream to a .part file, verify size / HDF5 signature / md5, rename atomically.

A truncated transfer, an HTTP error or an HTML page (e.g. a login or error page) raises WeightsDownloadError and
leaves no file behind, so a later run never mistakes a half file for weights (matterport issues #653, #272, #4).
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

logger = logging.getLogger(__name__)

COCO_MODEL_URL = "https://github.com/matterport/Mask_RCNN/releases/download/v2.0/mask_rcnn_coco.h5"
#: Size of the published mask_rcnn_coco.h5 in bytes.
COCO_MODEL_BYTES = 257_557_808

IMAGENET_WEIGHTS_NAME = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
IMAGENET_WEIGHTS_URL = (
    "https://github.com/fchollet/deep-learning-models/releases/download/v0.2/" + IMAGENET_WEIGHTS_NAME
)
IMAGENET_WEIGHTS_MD5 = "a268eb855778b3df3c7506639542a6af"

#: The 8-byte signature that starts an HDF5 superblock (at offset 0, or 512, 1024, ... after a user block).
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_CHUNK_BYTES = 1 << 20
_TIMEOUT_S = 60


class WeightsDownloadError(OSError):
    """The weights could not be downloaded intact; nothing was written at the destination."""


def is_hdf5_file(path: str | os.PathLike) -> bool:
    """True when the file carries an HDF5 signature at offset 0 or at a power-of-two offset from 512 on."""
    size = os.path.getsize(path)
    offset = 0
    with open(path, "rb") as handle:
        while offset + len(HDF5_SIGNATURE) <= size:
            handle.seek(offset)
            if handle.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE:
                return True
            offset = 512 if offset == 0 else offset * 2
    return False


def _fetch(url: str, destination: Path, expected_size: int | None, expected_md5: str | None, verbose: int) -> None:
    """Stream ``url`` to ``destination`` through a .part file, check everything, then rename."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".part")
    digest = hashlib.md5(usedforsecurity=False)
    received = 0
    try:
        try:
            response = urllib.request.urlopen(url, timeout=_TIMEOUT_S)  # noqa: S310 (URL is a parameter by design)
        except urllib.error.HTTPError as error:
            raise WeightsDownloadError(f"downloading {url} failed: HTTP {error.code} {error.reason}") from None
        except (urllib.error.URLError, OSError) as error:
            raise WeightsDownloadError(f"downloading {url} failed: {error}") from None
        with response:
            content_type = response.headers.get("Content-Type", "")
            if "text/html" in content_type.lower():
                raise WeightsDownloadError(
                    f"{url} returned an HTML page ({content_type}), not a weights file; check the URL or access"
                )
            announced = response.headers.get("Content-Length")
            announced_size = int(announced) if announced and announced.isdigit() else None
            if expected_size is not None and announced_size is not None and announced_size != expected_size:
                raise WeightsDownloadError(
                    f"{url} announces {announced_size} bytes but the weights file has {expected_size}"
                )
            total = announced_size if announced_size is not None else expected_size
            with open(partial, "wb") as handle, tqdm(
                total=total, unit="B", unit_scale=True, desc=destination.name, disable=not verbose
            ) as progress:
                while True:
                    try:
                        chunk = response.read(_CHUNK_BYTES)
                    except http.client.IncompleteRead as error:
                        raise WeightsDownloadError(
                            f"download of {url} was cut off after {received + len(error.partial)} bytes"
                        ) from None
                    except OSError as error:
                        raise WeightsDownloadError(
                            f"download of {url} failed after {received} bytes: {error}"
                        ) from None
                    if not chunk:
                        break
                    handle.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    progress.update(len(chunk))
        if announced_size is not None and received != announced_size:
            raise WeightsDownloadError(f"download of {url} was cut off: got {received} of {announced_size} bytes")
        if expected_size is not None and received != expected_size:
            raise WeightsDownloadError(
                f"downloaded {received} bytes from {url}, expected {expected_size}: truncated or wrong file"
            )
        if not is_hdf5_file(partial):
            raise WeightsDownloadError(f"the file downloaded from {url} is not an HDF5 weights file")
        if expected_md5 is not None and digest.hexdigest() != expected_md5:
            raise WeightsDownloadError(
                f"md5 of the file downloaded from {url} is {digest.hexdigest()}, expected {expected_md5}"
            )
        os.replace(partial, destination)
    finally:
        if partial.exists():
            partial.unlink()


def download_trained_weights(
    coco_model_path: str | os.PathLike,
    verbose: int = 1,
    url: str = COCO_MODEL_URL,
    expected_size: int | None = COCO_MODEL_BYTES,
) -> str:
    """Download matterport's COCO weights to ``coco_model_path`` (matterport's signature, safer transfer).

    Raises WeightsDownloadError when the transfer fails or the result is not the expected HDF5 file; the
    destination is then left untouched. Returns the path.
    """
    destination = Path(coco_model_path)
    if verbose:
        logger.info("Downloading pretrained model to %s ...", destination)
    _fetch(url, destination, expected_size, None, verbose)
    if verbose:
        logger.info("... done downloading pretrained model!")
    return str(destination)


def md5_of(path: str | os.PathLike) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_imagenet_weights(
    path: str | os.PathLike | None = None,
    verbose: int = 1,
    url: str = IMAGENET_WEIGHTS_URL,
    expected_md5: str | None = IMAGENET_WEIGHTS_MD5,
) -> str:
    """ResNet-50 ImageNet (no top) weights as matterport's get_imagenet_weights uses; md5-checked, cached.

    Default location: ~/.keras/models/<file name> (where Keras' get_file caches it). An existing file with the
    right md5 is reused; one with a wrong md5 is downloaded again.
    """
    destination = Path(path) if path is not None else Path.home() / ".keras" / "models" / IMAGENET_WEIGHTS_NAME
    if destination.exists() and (expected_md5 is None or md5_of(destination) == expected_md5):
        return str(destination)
    if destination.exists():
        logger.warning("%s has the wrong md5; downloading it again", destination)
    _fetch(url, destination, None, expected_md5, verbose)
    return str(destination)
