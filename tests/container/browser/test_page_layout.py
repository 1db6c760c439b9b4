"""The page in a real browser, continued: TIFF, downloads, phone and desktop widths (screenshots in the test's
tmp folder), page weight, the Content-Security-Policy at work, drop-to-drawn time, the answer's words on
hand-made inputs, and last, the request log of every page: no host but the service.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from tests.container.browser.driving import (
    PAGE_BUDGET_BYTES,
    PHOTO,
    REQUESTS,
    new_page,
    pick,
    rows,
    send_by_event,
    wait_ready,
)


def test_a_tiff_photo_is_answered_and_shown_through_the_annotated_png(page, test_images_dir, tmp_path) -> None:
    from PIL import Image

    tiff = tmp_path / "car.tiff"
    Image.open(test_images_dir / PHOTO).convert("RGB").save(tiff, format="TIFF")
    answer = pick(page, tiff)
    assert rows(page) == answer["damage_count"] > 0
    page.wait_for_selector("#photo-note:not([hidden])")  # chromium cannot show TIFF: the service's PNG instead
    size = page.evaluate("[document.getElementById('photo').naturalWidth, "
                         "document.getElementById('photo').naturalHeight]")
    assert size == [answer["image"]["width"], answer["image"]["height"]]


def test_downloads_are_the_json_and_the_annotated_png(page, test_images_dir) -> None:
    answer = pick(page, test_images_dir / PHOTO)
    with page.expect_download() as json_download:
        page.click("#download-json")
    saved = json.loads(Path(json_download.value.path()).read_text())
    assert saved["damage_count"] == answer["damage_count"] and saved["damages"] == answer["damages"]
    with page.expect_download() as png_download:
        page.click("#download-png")
    assert json_download.value.suggested_filename == "two_scratch.json"
    assert png_download.value.suggested_filename == "two_scratch-annotated.png"
    assert Path(png_download.value.path()).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("width", [375, 1440])
def test_no_horizontal_overflow_at_phone_and_desktop_width(browser, served, test_images_dir, tmp_path, width) -> None:
    page = new_page(browser, served["server"], width=width, height=900)
    try:
        page.goto(served["server"].url + "/")
        wait_ready(page)
        answer = pick(page, test_images_dir / PHOTO)
        assert rows(page) == answer["damage_count"]
        page.screenshot(path=str(tmp_path / f"page-{width}px.png"), full_page=True)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{overflow} px of horizontal overflow at {width} px"
        photo = page.locator("#photo").bounding_box()
        assert photo["x"] >= 0 and photo["x"] + photo["width"] <= width
        assert page.evaluate("window.__cspViolations") == []
    finally:
        page.context.close()


def test_page_weight_policy_and_drop_to_drawn_time(browser, served, test_images_dir, tmp_path) -> None:
    """Bytes of everything the page loads (budget 150 KB) and drop-to-drawn time (printed, not asserted)."""
    page = new_page(browser, served["server"])
    responses: list[Any] = []

    def record(response: Any) -> None:
        responses.append(response)

    page.on("response", record)
    try:
        document = page.goto(served["server"].url + "/")
        assert "'unsafe" not in document.headers["content-security-policy"]
        wait_ready(page)
        page.remove_listener("response", record)
        # Nothing is compressed (no Content-Encoding), so the body bytes on the wire are the uncompressed size.
        assert not any(r.headers.get("content-encoding") for r in responses)
        loaded = [(r.url, r.request.sizes()["responseBodySize"]) for r in responses if r.url.startswith("http")]
        total = sum(size for _, size in loaded)
        assert {urlparse(u).path for u, _ in loaded} >= {"/", "/static/app.js", "/static/answer.js",
                                                         "/static/app.css", "/static/view.js", "/models"}
        assert total <= PAGE_BUDGET_BYTES, loaded
        # The policy is in force: an injected inline script does not run, and the browser reports it.
        assert page.evaluate("""() => { const s = document.createElement("script");
            s.textContent = "window.__inline = 1"; document.head.append(s); return window.__inline; }""") is None
        page.wait_for_function("() => window.__cspViolations.length > 0")
        assert page.evaluate("window.__cspViolations")[0].startswith("script-src")
        measured = []
        for _ in range(5):
            answer = send_by_event(page, test_images_dir / PHOTO, "drop")
            drawn_ms = float(page.get_attribute("body", "data-drop-to-drawn-ms"))
            measured.append((drawn_ms, answer["timings_ms"]["total"], answer["timings_ms"]["inference"]))
        record = {"page_bytes": total, "photo": PHOTO, "damage_count": answer["damage_count"],
                  "drop_to_drawn_ms": [m[0] for m in measured], "service_total_ms": [m[1] for m in measured],
                  "inference_ms": [m[2] for m in measured],
                  "overhead_ms": [round(m[0] - m[1], 1) for m in measured]}
        (tmp_path / "page_timing.json").write_text(json.dumps(record, indent=1))
        print("page timing:", json.dumps(record))
    finally:
        page.context.close()


def test_answer_words_on_hand_made_inputs(page) -> None:
    sentence = "(d) => CarDamageAnswer.countSentence(d.map((type) => ({type})))"
    assert page.evaluate(sentence, []) == "No damage found"
    assert page.evaluate(sentence, ["dent"]) == "1 damage: 1 dent"
    assert page.evaluate(sentence, ["scratch", "dent", "scratch"]) == "3 damages: 2 scratches, 1 dent"
    assert page.evaluate(sentence, ["dent", "scratch"]) == "2 damages: 1 dent, 1 scratch"
    assert page.evaluate(sentence, ["glass", "glass", "body_crack", "body_crack"]) == (
        "4 damages: 2 body cracks, 2 glasses")
    attrs = page.evaluate("CarDamageAnswer.customAttributes({min_score: 0.3, types: ['scratch', 'dent'], "
                          "frame_width: 14, frame_height: null, unit: ''})")
    assert attrs == "min_score=0.3;types=scratch%2Cdent;frame_width=14"
    assert page.evaluate("CarDamageAnswer.polygonPath([[[[2, 1], [6, 1], [6, 4], [2, 4]], [[3, 2], [4, 2], [4, 3]]]])"
                         ) == "M2 1L6 1L6 4L2 4ZM3 2L4 2L4 3Z"
    assert page.evaluate("CarDamageAnswer.typeLetters(['scratch', 'stain', 'dent'])") == {
        "scratch": "S", "stain": "ST", "dent": "D"}
    measure = "([damage, key]) => CarDamageAnswer.measurement(damage, key)"
    box = {"length_px": 40.04, "width_px": 7, "angle_deg": 3}
    assert page.evaluate(measure, [{"oriented_box": box}, "width"]) == "7 px"
    stroke = {"length_px": 52.26, "width_px": 4.5, "length": {"value": 12.5, "unit": "in"}}
    assert page.evaluate(measure, [{"oriented_box": box, "stroke": stroke}, "length"]) == "12.5 in"  # stroke wins
    assert page.evaluate(measure, [{"oriented_box": box, "stroke": {"length_px": 52.26, "width_px": 4.5}},
                                   "length"]) == "52.3 px"
    assert page.evaluate("CarDamageAnswer.measurement({}, 'width')") is None


def test_no_request_went_to_another_host(served: dict) -> None:
    """Runs last: the request log of every page above."""
    origin = urlparse(served["server"].url).netloc
    assert REQUESTS, "no request was logged"
    foreign = [u for u in REQUESTS if urlparse(u).scheme in ("http", "https", "ws", "wss")
               and urlparse(u).netloc != origin]
    assert foreign == []
    assert all(urlparse(u).scheme in ("http", "blob", "data") for u in REQUESTS), set(REQUESTS)
