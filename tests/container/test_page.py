"""The web page's routes through the Flask test client (the browser tests are in browser/): the files,
their headers (a strict Content-Security-Policy), GET /models, and nothing else reachable through them."""

from __future__ import annotations

import re
import threading

import page
import predictor as service
import pytest

#: The issue's budget for everything the page loads (uncompressed).
PAGE_BUDGET_BYTES = 150 * 1024


@pytest.fixture(scope="module")
def client(real_predictor):
    app = service.create_app(real_predictor, settings=service.ServiceSettings(max_body_bytes=3 * service.MIB))
    return app.test_client()


def test_index_has_a_strict_policy_and_no_inline_code(client) -> None:
    response = client.get("/")
    assert response.status_code == 200 and response.mimetype == "text/html"
    policy = response.headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["connect-src"] == "'self'" and directives["frame-ancestors"] == "'none'"
    assert "unsafe" not in policy
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    html = response.get_data(as_text=True)
    assert re.search(r"<script(?![^>]*\bsrc=)", html) is None, "inline script"
    assert re.search(r"\son[a-z]+\s*=", html) is None, "inline event handler"
    assert re.search(r"\sstyle\s*=", html) is None, "inline style"
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in html
    assert re.search(r'<label for="file">', html) and re.search(r'<input id="file" type="file"', html)


def test_every_file_the_page_names_is_served_and_the_total_is_in_budget(client) -> None:
    html = client.get("/").get_data(as_text=True)
    names = re.findall(r'(?:src|href)="/static/([^"]+)"', html)
    assert sorted(names) == ["answer.js", "app.css", "app.js", "view.js"]
    total = len(html.encode())
    for name in names:
        response = client.get(f"/static/{name}")
        assert response.status_code == 200, name
        assert response.headers["Content-Security-Policy"] == page.CONTENT_SECURITY_POLICY
        assert response.mimetype == ("text/css" if name.endswith(".css") else "text/javascript")
        total += len(response.get_data())
    assert total <= PAGE_BUDGET_BYTES, total


@pytest.mark.parametrize("path", ["/static/../predictor.py", "/static/%2e%2e%2fpage.py", "/static/page.py",
                                  "/static/missing.js", "/static/.hidden.js", "/static/", "/index.html"])
def test_nothing_else_is_reachable_and_misses_are_json_404(client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404, path
    assert response.get_json()["error"] == "not_found"


def test_models_lists_versions_colours_limits_and_option_ranges(client, real_predictor) -> None:
    body = client.get("/models").get_json()
    assert body["models"] == real_predictor.describe()
    assert body["models"][0]["version"] == "test-random" and body["damage_types"] == ["scratch"]
    assert body["colours"] == {"scratch": "#ff3030"}  # render.TYPE_COLOURS["scratch"] = (255, 48, 48)
    assert body["limits"] == {"max_body_bytes": 3 * 1024 * 1024, "max_image_pixels": service.DEFAULT_MAX_PIXELS}
    ranges = body["option_ranges"]
    assert ranges["min_score"] == [0.0, 1.0] and ranges["polygon_tolerance"] == [0.0, 50.0]
    assert ranges["units"] == ["mm", "cm", "m", "in", "ft"] and ranges["default_unit"] == "in"


def test_models_is_503_json_while_loading_and_the_page_still_loads(real_predictor) -> None:
    release = threading.Event()

    def slow_loader():
        release.wait(timeout=30)
        return real_predictor

    app = service.create_app(loader=slow_loader)
    client = app.test_client()
    try:
        loading = client.get("/models")
        assert loading.status_code == 503 and loading.get_json()["error"] == "model_not_ready"
        assert client.get("/").status_code == 200  # the page can say "model loading" itself
    finally:
        release.set()
        app.extensions["model_slot"].thread.join(timeout=30)
    assert client.get("/models").status_code == 200
