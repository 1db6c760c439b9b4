"""Initial weights: downloads against a local HTTP server, file checks, and the choice of excluded layers."""

from __future__ import annotations

import http.server
import threading
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

from car_damage.training import weights as weights_init
from car_damage.training.weights import (
    HEAD_LAYERS,
    WeightsInitError,
    check_weights_file,
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


@pytest.fixture
def coco_server(server, tmp_path, monkeypatch):
    """The local server publishes a small valid weights file as mask_rcnn_coco.h5."""
    base, handler = server
    source = head_file(tmp_path / "source.h5", 81)
    handler.files["/mask_rcnn_coco.h5"] = source.read_bytes()
    monkeypatch.setattr(weights_init, "coco_model_url", lambda: f"{base}/mask_rcnn_coco.h5")
    monkeypatch.setattr(weights_init, "coco_model_bytes", lambda: source.stat().st_size)
    return handler, source


def test_coco_is_downloaded_once_then_reused(coco_server, tmp_path):
    handler, source = coco_server
    target = tmp_path / "cache" / "mask_rcnn_coco.h5"
    assert resolve_weights_path("coco", coco_path=target) == (target, source.stat().st_size)
    assert resolve_weights_path("COCO", coco_path=target)[0] == target
    assert handler.requests == ["/mask_rcnn_coco.h5"]
    assert target.read_bytes() == source.read_bytes()
    assert check_weights_file(target, source.stat().st_size).num_classes == 81
    with pytest.raises(WeightsInitError, match="downloads are disabled"):
        resolve_weights_path("coco", coco_path=tmp_path / "other.h5", allow_download=False)


def test_truncated_or_wrong_downloads_leave_nothing_behind(coco_server, tmp_path, monkeypatch):
    handler, source = coco_server
    target = tmp_path / "mask_rcnn_coco.h5"
    handler.lies["/mask_rcnn_coco.h5"] = source.stat().st_size + 1000  # connection closes early
    with pytest.raises(WeightsInitError, match="--weights coco: .*(cut off|expected|announces)"):
        resolve_weights_path("coco", coco_path=target)
    handler.lies.clear()
    monkeypatch.setattr(weights_init, "coco_model_bytes", lambda: 257_557_808)  # the real file's size
    with pytest.raises(WeightsInitError, match="257557808"):
        resolve_weights_path("coco", coco_path=target)
    handler.files["/mask_rcnn_coco.h5"] = b"<html>rate limited</html>"
    monkeypatch.setattr(weights_init, "coco_model_bytes", lambda: None)
    with pytest.raises(WeightsInitError, match="not an HDF5"):
        resolve_weights_path("coco", coco_path=target)
    del handler.files["/mask_rcnn_coco.h5"]
    with pytest.raises(WeightsInitError, match="404"):
        resolve_weights_path("coco", coco_path=target)
    assert list(tmp_path.iterdir()) == [tmp_path / "source.h5"]


def test_an_existing_short_coco_file_is_refused(coco_server, tmp_path):
    _, source = coco_server
    target = tmp_path / "mask_rcnn_coco.h5"
    target.write_bytes(source.read_bytes()[:100])  # e.g. left by an interrupted matterport download
    model = RecordingModel(num_classes=2)
    with pytest.raises(WeightsInitError, match="interrupted download"):
        initialise_weights(model, "coco", coco_path=target)
    assert model.calls == []  # nothing was loaded


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
