"""The page in a real browser (Debian's chromium, driven by Playwright) against the real ``container/serve``
(nginx + gunicorn) serving two real tiny models (scratch and dent, seeded random weights): what a person
does with an answer. Open the page while the model loads, pick / drop / paste a real photo, read the table,
the outlines and the count sentence, calibrate, filter, and get words for bad files.
"""

from __future__ import annotations

import pytest

from tests.container.browser.driving import (
    DENT_THRESHOLD,
    PHOTO,
    change_and_answer,
    expected_sentence,
    is_json_answer,
    pick,
    rows,
    send_by_event,
)


def test_page_says_model_loading_while_ping_is_503_then_ready(served: dict) -> None:
    log = served["status_log"]
    assert any(text.startswith("Model loading") for text in log), log
    assert log[-1].startswith("Ready: dent, scratch"), log


def test_a_picked_photo_gives_one_row_and_outline_per_damage_and_the_count_sentence(page, test_images_dir) -> None:
    answer = pick(page, test_images_dir / PHOTO)
    count = answer["damage_count"]
    assert count > 0, "the fixture photo must exercise a non-zero count"
    assert rows(page) == count
    assert page.locator("#overlay path.outline").count() >= count
    assert page.locator("#overlay path.outline[tabindex='0']").count() == count
    assert page.inner_text("#summary") == expected_sentence(answer)
    first = answer["damages"][0]
    cells = page.locator("#damages tbody tr").first.locator("td").all_inner_texts()
    assert cells[0] == str(first["id"]) and cells[1].endswith(first["type"])
    assert float(cells[2]) == pytest.approx(first["score"], abs=1e-4)
    assert int(cells[3].replace(",", "")) == first["area_px"]
    # The models served and their versions, from the answer.
    models = page.inner_text("#models")
    assert all(f"{m['name']}, version {m['version']}" in models for m in answer["models"])
    # Type is carried by a letter and a dash pattern too, not by colour alone.
    types = {d["type"] for d in answer["damages"]}
    tags = set(page.locator("#overlay text.tag").all_text_contents())
    assert {t[0] for t in tags} == {t[0].upper() for t in types}
    if len(types) > 1:
        dashes = {page.locator(f"#overlay path[data-damage='{d['id']}']").get_attribute("stroke-dasharray")
                  for d in answer["damages"]}
        assert len(dashes) > 1


def test_outline_and_row_highlight_each_other(page, test_images_dir) -> None:
    pick(page, test_images_dir / PHOTO)
    outline = "#overlay path[data-damage='0']"
    resting = page.eval_on_selector(outline, "(p) => getComputedStyle(p).strokeWidth")
    page.keyboard.press("Tab")  # keyboard focus, as a person moves through the page
    page.focus(outline)
    assert "hot" in page.get_attribute("#damages tbody tr[data-damage='0']", "class")
    focused = page.eval_on_selector(outline, "(p) => getComputedStyle(p).strokeWidth")
    assert float(focused.rstrip("px")) > float(resting.rstrip("px")), (resting, focused)  # visible focus
    row = page.locator("#damages tbody tr").last
    row.hover()
    last = row.get_attribute("data-damage")
    assert "hot" in page.get_attribute(f"#overlay path[data-damage='{last}']", "class")


def test_calibration_shows_calibrated_areas(page, test_images_dir) -> None:
    pick(page, test_images_dir / PHOTO)
    assert page.locator("#damages td.calibrated").count() == 0
    assert page.locator("#frame-width").is_hidden() and page.locator("#pixels-per-unit").is_hidden()
    page.select_option("#calibration", "frame")
    assert page.locator("#frame-width").is_visible() and page.locator("#pixels-per-unit").is_hidden()
    page.fill("#frame-width", "14")
    with page.expect_response(is_json_answer) as answered:
        page.fill("#frame-height", "18")
        page.locator("#frame-height").dispatch_event("change")
    answer = answered.value.json()
    page.wait_for_function("() => !document.body.dataset.busy && document.querySelectorAll('td.calibrated').length")
    assert answer["calibration"]["frame_width"] == 14.0 and answer["calibration"]["unit"] == "in"
    cells = page.locator("#damages td.calibrated").all_inner_texts()
    assert len(cells) == answer["damage_count"] > 0
    for cell, damage in zip(cells, answer["damages"], strict=True):
        value, unit = cell.split(" ")
        assert unit == "in²" and float(value.replace(",", "")) == pytest.approx(damage["area"]["value"], abs=5e-4)
    assert "Area (in²)" in page.inner_text("#damages thead")
    lengths = page.locator("#damages tbody tr td:nth-child(7)").all_inner_texts()  # ID, type, score, px, %, area
    for cell, damage in zip(lengths, answer["damages"], strict=True):
        measured = (damage.get("stroke") or damage["oriented_box"])["length"]
        value, unit = cell.split(" ")
        assert unit == measured["unit"] == "in" and float(value.replace(",", "")) == pytest.approx(
            measured["value"], abs=5e-4)


def test_types_tolerance_and_pixels_per_unit_travel_in_the_custom_attributes(page, test_images_dir) -> None:
    pick(page, test_images_dir / PHOTO)
    sent, answer = change_and_answer(page, "#types input[value='dent']", check=False)
    assert sent == "types=scratch" and answer["options"]["types"] == ["scratch"]
    assert set(page.locator("#damages tbody td:nth-child(2)").all_inner_texts()) == {"S scratch"}
    assert rows(page) == answer["damage_count"] > 0
    sent, answer = change_and_answer(page, "#tolerance", "0")
    assert sent == "polygon_tolerance=0;types=scratch" and answer["options"]["polygon_tolerance"] == 0.0
    page.select_option("#calibration", "pixels_per_unit")
    page.select_option("#unit", "cm")
    sent, answer = change_and_answer(page, "#pixels-per-unit", "10")
    assert sent == "polygon_tolerance=0;types=scratch;pixels_per_unit=10;unit=cm"
    assert answer["calibration"]["method"] == "pixels_per_unit"
    cells = page.locator("#damages td.calibrated").all_inner_texts()
    assert cells[0] == f"{answer['damages'][0]['area_px'] / 100:g} cm²"  # 1 px = 0.01 cm²


def test_a_higher_min_score_filters_in_the_page_without_a_request(page, test_images_dir) -> None:
    answer = pick(page, test_images_dir / PHOTO)
    scores = [d["score"] for d in answer["damages"]]
    threshold = round((max(scores) + min(scores)) / 2, 4) if len(scores) > 1 else round(scores[0] + 1e-4, 4)
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if r.url.endswith("/invocations") else None)
    page.fill("#min-score", str(threshold))
    page.locator("#min-score").dispatch_event("change")
    kept = [d for d in answer["damages"] if d["score"] >= threshold]
    page.wait_for_function("(n) => document.querySelectorAll('#damages tbody tr').length === n", arg=len(kept))
    assert sent == [], "a stricter threshold than the answer's must not re-query"
    assert len(kept) < len(scores)
    assert page.locator("#overlay path.outline").count() == len(kept)
    assert page.inner_text("#summary") == expected_sentence({
        "damage_count": len(kept),
        "totals": {"by_type": {t: {"count": sum(d["type"] == t for d in kept)} for t in {d["type"] for d in kept}}}})


def test_a_lower_min_score_than_the_answers_threshold_asks_the_service_again(page, test_images_dir) -> None:
    answer = pick(page, test_images_dir / PHOTO)
    assert max(m["min_score"] for m in answer["models"]) == DENT_THRESHOLD
    with page.expect_request(lambda r: r.url.endswith("/invocations")) as sent:
        page.fill("#min-score", "0.5")
        page.locator("#min-score").dispatch_event("change")
    assert "min_score=0.5" in sent.value.headers["x-amzn-sagemaker-custom-attributes"]
    page.wait_for_function("() => !document.body.dataset.busy")


def test_drop_and_paste_work_like_the_picker(page, test_images_dir) -> None:
    for event in ("drop", "paste"):
        answer = send_by_event(page, test_images_dir / PHOTO, event)
        assert rows(page) == answer["damage_count"] > 0, event
        assert page.inner_text("#summary") == expected_sentence(answer), event
    answer = pick(page, test_images_dir / PHOTO)  # picking the same photo twice sends it twice
    assert rows(page) == answer["damage_count"]
    answer = pick(page, test_images_dir / PHOTO)
    assert page.inner_text("#photo-name").startswith(PHOTO)


def test_bad_files_are_explained_in_words(page, test_images_dir) -> None:
    garbage = bytes(range(256)) * 4  # 1 KiB
    answer = pick(page, name="notes.txt", mimeType="text/plain", buffer=garbage)
    assert answer["error"] == "unsupported_media_type"
    page.wait_for_selector("#message:not([hidden])")
    assert page.inner_text("#message").startswith("Not an image: the service reads JPEG, PNG, WebP, BMP and TIFF")
    assert rows(page) == 0 and page.get_attribute("body", "data-error-status") == "415"
    answer = pick(page, name="garbage.bin", mimeType="", buffer=garbage)
    assert answer["error"] == "invalid_image"
    assert page.inner_text("#message").startswith("Not an image")
    too_big = b"\xff\xd8" + b"\0" * (7 * 1024 * 1024)  # over the default 6 MiB
    answer = pick(page, name="huge.jpg", mimeType="image/jpeg", buffer=too_big)
    assert answer["error"] == "payload_too_large"
    assert page.inner_text("#message") == ("Too big: this photo is 7 MiB; the service takes at most 6 MiB "
                                           "per photo.")
    pick(page, test_images_dir / PHOTO)  # a good photo clears the message
    assert page.locator("#message").is_hidden() and rows(page) > 0
