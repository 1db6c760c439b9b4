"""Initial weights: downloads against a local HTTP server, file checks, and the choice of excluded layers."""

from __future__ import annotations

import hashlib
import http.server
import threading
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

from car_damage import weights_init
from car_damage.weights_init import (
    HEAD_LAYERS,
    WeightsInitError,
    check_weights_file,
    download,
    initialise_weights,
    resolve_weights_path,
)


def write_weights(path, layers: dict[str, list[np.ndarray]]) -> None:
    """A Keras-2 / matterport layout HDF5 file (root layer_names, per-layer weight_names)."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [name.encode() for name in layers]
        f.attrs["keras_version"] = b"2.21.0"
        for name, tensors in layers.items():
            group = f.create_group(name)
            names = [f"{name}/w{i}:0" for i in range(len(tensors))]
            group.attrs["weight_names"] = [n.encode() for n in names]
            for weight_name, tensor in zip(names, tensors, strict=True):
                group.create_dataset(weight_name, data=tensor)


def head_file(path, num_classes: int):
    write_weights(path, {
        "fpn_c5p5": [np.ones((1, 1, 8, 4), np.float32), np.zeros(4, np.float32)],
        "mrcnn_class_logits": [np.ones((16, num_classes), np.float32), np.zeros(num_classes, np.float32)],
    })
    return path


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    lies: dict[str, int] = {}  # path -> Content-Length announced although fewer bytes are sent
    requests: list[str] = []

    def do_GET(self):  # noqa: N802 - http.server's naming
        self.requests.append(self.path)
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(self.lies.get(self.path, len(body))))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    _Handler.files, _Handler.lies, _Handler.requests = {}, {}, []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", _Handler
    httpd.shutdown()
    httpd.server_close()


def test_download_writes_atomically_and_checks_size_and_md5(server, tmp_path):
    base, handler = server
    payload = bytes(range(256)) * 40
    handler.files["/w.h5"] = payload
    dest = download(f"{base}/w.h5", tmp_path / "sub" / "w.h5", expected_bytes=len(payload),
                    md5=hashlib.md5(payload).hexdigest(), progress=False)
    assert dest.read_bytes() == payload
    with pytest.raises(WeightsInitError, match=f"gave {len(payload)} bytes, expected 5"):
        download(f"{base}/w.h5", tmp_path / "x.h5", expected_bytes=5, progress=False)
    with pytest.raises(WeightsInitError, match="MD5"):
        download(f"{base}/w.h5", tmp_path / "x.h5", md5="0" * 32, progress=False)
    with pytest.raises(WeightsInitError, match="404"):
        download(f"{base}/missing.h5", tmp_path / "x.h5", progress=False)
    assert not list(tmp_path.glob("x.h5*"))  # neither the file nor a .partial stays behind


def test_truncated_transfer_is_an_error(server, tmp_path):
    base, handler = server
    handler.files["/cut.h5"] = b"x" * 100
    handler.lies["/cut.h5"] = 1000
    with pytest.raises(WeightsInitError, match="(100 of 1000 bytes)|(failed)"):
        download(f"{base}/cut.h5", tmp_path / "cut.h5", progress=False)
    assert not list(tmp_path.glob("cut.h5*"))


def test_coco_is_downloaded_once_then_reused(server, tmp_path, monkeypatch):
    base, handler = server
    real = head_file(tmp_path / "source.h5", 81)
    handler.files["/mask_rcnn_coco.h5"] = real.read_bytes()
    monkeypatch.setattr(weights_init, "coco_model_url", lambda: f"{base}/mask_rcnn_coco.h5")
    monkeypatch.setattr(weights_init, "COCO_WEIGHTS_BYTES", real.stat().st_size)
    target = tmp_path / "cache" / "mask_rcnn_coco.h5"
    assert resolve_weights_path("coco", coco_path=target) == (target, real.stat().st_size)
    assert resolve_weights_path("COCO", coco_path=target)[0] == target
    assert handler.requests == ["/mask_rcnn_coco.h5"]
    assert target.read_bytes() == real.read_bytes()
    with pytest.raises(WeightsInitError, match="downloads are disabled"):
        resolve_weights_path("coco", coco_path=tmp_path / "other.h5", allow_download=False)


def test_check_weights_file_rejects_truncated_and_foreign_files(tmp_path):
    good = head_file(tmp_path / "good.h5", 3)
    info = check_weights_file(good)
    assert info.num_classes == 3
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(WeightsInitError, match="delete it"):
        check_weights_file(truncated)
    with pytest.raises(WeightsInitError, match="expected 999"):
        check_weights_file(good, expected_bytes=999)
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    with pytest.raises(WeightsInitError, match="not a usable"):
        check_weights_file(text)
    with pytest.raises(WeightsInitError, match="does not exist"):
        check_weights_file(tmp_path / "absent.h5")


class RecordingModel:
    """Stands in for MaskRCNN: records load_weights calls (the engine's loader has its own tests)."""

    def __init__(self, num_classes, backbone="resnet101", loaded=("fpn_c5p5",)):
        self.config = SimpleNamespace(NUM_CLASSES=num_classes, BACKBONE=backbone)
        self.calls = []
        self.loaded = list(loaded)

    def load_weights(self, path, by_name=False, exclude=None):
        self.calls.append((path, by_name, exclude))
        return SimpleNamespace(loaded=self.loaded, mismatched=[], missing=[])

    def find_last(self):
        raise FileNotFoundError(2, "Could not find model directory under logs")


def test_heads_are_excluded_only_when_the_class_count_differs(tmp_path):
    coco_like = head_file(tmp_path / "coco_like.h5", 81)
    model = RecordingModel(num_classes=2)
    result = initialise_weights(model, str(coco_like))
    assert model.calls == [(str(coco_like), True, list(HEAD_LAYERS))] and result.excluded == list(HEAD_LAYERS)
    same = RecordingModel(num_classes=81)
    initialise_weights(same, str(coco_like))
    assert same.calls == [(str(coco_like), True, None)]


def test_none_last_imagenet_and_empty_loads(tmp_path):
    model = RecordingModel(num_classes=2)
    assert initialise_weights(model, "none").path is None and model.calls == []
    with pytest.raises(WeightsInitError, match="no checkpoint found"):
        initialise_weights(model, "last")
    with pytest.raises(WeightsInitError, match="backbone is 'tiny'"):
        initialise_weights(RecordingModel(2, backbone="tiny"), "imagenet")
    with pytest.raises(WeightsInitError, match="no layer name matches"):
        initialise_weights(RecordingModel(2, loaded=()), str(head_file(tmp_path / "h.h5", 2)))
    with pytest.raises(WeightsInitError, match="does not exist"):
        initialise_weights(model, str(tmp_path / "nope.h5"))
