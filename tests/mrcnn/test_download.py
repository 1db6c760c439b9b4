"""mrcnn.download against a local threaded HTTP server: success, truncation, 404, wrong size, HTML, md5."""

from __future__ import annotations

import hashlib
import http.server
import threading

import pytest

from mrcnn import utils
from mrcnn.download import HDF5_SIGNATURE, WeightsDownloadError, download_imagenet_weights, is_hdf5_file

PAYLOAD = HDF5_SIGNATURE + bytes(range(256)) * 40  # 10,248 bytes that look like HDF5


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass

    def _send(self, body: bytes, length: int | None = None, content_type: str = "application/octet-stream"):
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802 (http.server's naming)
        if self.path == "/ok.h5":
            self._send(PAYLOAD, len(PAYLOAD))
        elif self.path == "/no-length.h5":
            self.close_connection = True
            self._send(PAYLOAD)
        elif self.path == "/truncated.h5":
            self.close_connection = True
            self._send(PAYLOAD[:4000], len(PAYLOAD))  # promises everything, sends 4000 bytes, hangs up
        elif self.path == "/page.html":
            self._send(b"<html>sign in</html>", 20, "text/html; charset=utf-8")
        elif self.path == "/not-hdf5.bin":
            self._send(b"x" * len(PAYLOAD), len(PAYLOAD))
        else:
            self.send_error(404, "Not Found")


@pytest.fixture(scope="module")
def server_url():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir())


def test_success_writes_file_atomically(server_url, tmp_path):
    target = tmp_path / "sub" / "mask_rcnn_coco.h5"
    result = utils.download_trained_weights(target, verbose=0, url=f"{server_url}/ok.h5", expected_size=len(PAYLOAD))
    assert result == str(target)
    assert target.read_bytes() == PAYLOAD
    assert _leftovers(target.parent) == ["mask_rcnn_coco.h5"]
    assert is_hdf5_file(target)


def test_success_without_content_length(server_url, tmp_path):
    target = tmp_path / "w.h5"
    utils.download_trained_weights(target, verbose=0, url=f"{server_url}/no-length.h5", expected_size=len(PAYLOAD))
    assert target.read_bytes() == PAYLOAD


@pytest.mark.parametrize(
    ("path", "size", "message"),
    [
        ("/truncated.h5", len(PAYLOAD), "cut off"),
        ("/missing.h5", len(PAYLOAD), "HTTP 404"),
        ("/ok.h5", len(PAYLOAD) + 1, "announces"),
        ("/no-length.h5", len(PAYLOAD) - 1, "expected"),
        ("/page.html", 20, "HTML page"),
        ("/not-hdf5.bin", len(PAYLOAD), "not an HDF5"),
    ],
)
def test_failures_raise_and_leave_nothing(server_url, tmp_path, path, size, message):
    target = tmp_path / "mask_rcnn_coco.h5"
    with pytest.raises(WeightsDownloadError, match=message):
        utils.download_trained_weights(target, verbose=0, url=server_url + path, expected_size=size)
    assert _leftovers(tmp_path) == []


def test_failure_keeps_an_existing_file(server_url, tmp_path):
    target = tmp_path / "mask_rcnn_coco.h5"
    target.write_bytes(b"previous")
    with pytest.raises(WeightsDownloadError):
        utils.download_trained_weights(target, verbose=0, url=f"{server_url}/truncated.h5",
                                       expected_size=len(PAYLOAD))
    assert target.read_bytes() == b"previous" and _leftovers(tmp_path) == ["mask_rcnn_coco.h5"]


def test_unreachable_server_raises_download_error(tmp_path):
    with pytest.raises(WeightsDownloadError, match="failed"):
        utils.download_trained_weights(tmp_path / "w.h5", verbose=0, url="http://127.0.0.1:9/none.h5")


def test_imagenet_md5_checked_and_cached(server_url, tmp_path):
    target = tmp_path / "resnet50_notop.h5"
    good_md5 = hashlib.md5(PAYLOAD).hexdigest()
    with pytest.raises(WeightsDownloadError, match="md5"):
        download_imagenet_weights(target, verbose=0, url=f"{server_url}/ok.h5", expected_md5="0" * 32)
    assert not target.exists()
    assert download_imagenet_weights(target, verbose=0, url=f"{server_url}/ok.h5", expected_md5=good_md5) == str(target)
    # Cached: a second call with a dead URL returns the existing, md5-valid file.
    assert download_imagenet_weights(target, verbose=0, url="http://127.0.0.1:9/x", expected_md5=good_md5)


def test_defaults_are_matterports():
    assert utils.COCO_MODEL_URL == "https://github.com/matterport/Mask_RCNN/releases/download/v2.0/mask_rcnn_coco.h5"
    assert utils.COCO_MODEL_BYTES == 257_557_808
    assert utils.IMAGENET_WEIGHTS_MD5 == "a268eb855778b3df3c7506639542a6af"
    assert utils.IMAGENET_WEIGHTS_URL.endswith("v0.2/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5")
