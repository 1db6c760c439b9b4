"""Driving the page in the browser tests: opening it, sending a photo (picker, drop, paste, a control),
waiting until it has drawn the answer, and the words it must print. The fixtures are in conftest.py."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from tests.container.conftest import MODEL_READY_TIMEOUT_S, LiveServer

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
#: The issue's budget for everything the page loads, uncompressed (a size, not a timing).
PAGE_BUDGET_BYTES = 150 * 1024
#: A real photo on which both seeded random tiny models report damages (checked below: the count is > 0).
PHOTO = "two_scratch.png"
ANSWER_TIMEOUT_MS = 120_000
DENT_THRESHOLD = 0.7
#: Set by the init script: #status texts in order, and Content-Security-Policy violations.
RECORDER = """
window.__statusLog = []; window.__cspViolations = [];
document.addEventListener("securitypolicyviolation",
    (e) => window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`));
document.addEventListener("DOMContentLoaded", () => {
  const status = document.getElementById("status");
  window.__statusLog.push(status.textContent);
  new MutationObserver(() => window.__statusLog.push(status.textContent))
      .observe(status, {childList: true, characterData: true, subtree: true});
});
"""


def plural(word: str, count: int) -> str:
    """English plural of a damage type (the words the page must print)."""
    if count == 1:
        return word
    return word + ("es" if word.endswith(("s", "x", "z", "ch", "sh")) else "s")


def expected_sentence(answer: dict) -> str:
    counts = {t: v["count"] for t, v in answer["totals"]["by_type"].items() if v["count"]}
    if not counts:
        return "No damage found"
    parts = [f"{n} {plural(t, n)}" for t, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    return f"{answer['damage_count']} {plural('damage', answer['damage_count'])}: {', '.join(parts)}"


#: Every URL any page of these tests asked for (the browser's request log), checked last.
REQUESTS: list[str] = []


def new_page(browser: Any, server: LiveServer, width: int = 1280, height: int = 900) -> Any:
    context = browser.new_context(viewport={"width": width, "height": height}, accept_downloads=True)
    context.add_init_script(RECORDER)
    page = context.new_page()
    page.on("request", lambda request: REQUESTS.append(request.url))
    return page


def wait_ready(page: Any) -> None:
    page.wait_for_selector('#status[data-state="ready"]', timeout=MODEL_READY_TIMEOUT_S * 1000)


def is_json_answer(response: Any) -> bool:
    """The page's JSON request to /invocations. The page may also post the photo for the annotated PNG (when the
    browser cannot show the file itself), and that second answer can arrive during the next pick."""
    return response.url.endswith("/invocations") and response.request.headers.get("accept") == "application/json"


def pick(page: Any, path: Path | None = None, **payload: Any) -> dict:
    """Set a file on the labelled input; returns the service's JSON answer once the page has drawn it."""
    drawn_before = page.evaluate("document.body.dataset.drawn || ''")
    with page.expect_response(is_json_answer) as answer:
        page.set_input_files("#file", str(path) if path is not None else payload)
    response = answer.value
    body = response.json()  # before anything else: the inspector does not keep bodies long
    if response.ok:
        page.wait_for_function("(before) => (document.body.dataset.drawn || '') !== before && "
                               "!document.body.dataset.busy", arg=drawn_before, timeout=ANSWER_TIMEOUT_MS)
    else:
        page.wait_for_function("() => document.body.dataset.errorStatus", timeout=ANSWER_TIMEOUT_MS)
    return body


def rows(page: Any) -> int:
    return page.locator("#damages tbody tr").count()


def change_and_answer(page: Any, selector: str, value: str | None = None, check: bool | None = None) -> tuple:
    """Change one control; returns (custom attributes sent, JSON answer) once the page has drawn it."""
    drawn_before = page.evaluate("document.body.dataset.drawn || ''")
    with page.expect_response(is_json_answer) as answered:
        if check is not None:
            page.set_checked(selector, check)
        elif page.locator(selector).evaluate("(e) => e.tagName") == "SELECT":
            page.select_option(selector, value)
        else:
            page.fill(selector, value)
            page.locator(selector).dispatch_event("change")
    response = answered.value
    answer = response.json()
    page.wait_for_function("(before) => (document.body.dataset.drawn || '') !== before && "
                           "!document.body.dataset.busy", arg=drawn_before, timeout=ANSWER_TIMEOUT_MS)
    return response.request.headers["x-amzn-sagemaker-custom-attributes"], answer


def send_by_event(page: Any, path: Path, event: str) -> dict:
    """Drop or paste ``path`` on the page (a real DragEvent / ClipboardEvent carrying a File)."""
    data = base64.b64encode(path.read_bytes()).decode()
    drawn_before = page.evaluate("document.body.dataset.drawn || ''")
    with page.expect_response(is_json_answer) as answered:
        page.evaluate("""([data, event, name]) => {
            const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, {type: "image/png"}));
            const target = document.getElementById("dropzone");
            target.dispatchEvent(event === "drop"
                ? new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true})
                : new ClipboardEvent("paste", {clipboardData: transfer, bubbles: true, cancelable: true}));
        }""", [data, event, path.name])
    answer = answered.value.json()
    page.wait_for_function("(before) => (document.body.dataset.drawn || '') !== before && "
                           "!document.body.dataset.busy", arg=drawn_before, timeout=ANSWER_TIMEOUT_MS)
    return answer
