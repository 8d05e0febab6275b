"""The Web UI in real headless Chromium (Playwright) against the real server started as a subprocess.

Screenshots go to test-results/ui/ (gitignored). Chromium comes from Debian (`apt-get install chromium`);
scripts/test.sh installs it when missing and running as root, so these tests run in CI.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter
from playwright.sync_api import Browser, Page, Playwright, Request, Route, expect, sync_playwright

import chromium
from classifier_images import colour_image
from imagegen import encode
from liveserver import running_server

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "test-results" / "ui"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not chromium.CHROMIUM.exists(), reason=chromium.MISSING),
]


# ---------- images ----------


def scene(seed: int, width: int = 800, height: int = 600) -> bytes:
    """A photo-like landscape (sky, sun, hills, lake), different for each seed, so screenshots look like a product."""
    rng = np.random.default_rng(seed)
    top, bottom = rng.integers(60, 200, 3), rng.integers(150, 255, 3)
    t = np.linspace(0, 1, height)[:, None, None]
    sky = (top * (1 - t) + bottom * t).astype(np.uint8).repeat(width, axis=1)
    image = Image.fromarray(sky, "RGB")
    draw = ImageDraw.Draw(image)
    sx, sy, r = int(rng.integers(100, width - 100)), int(rng.integers(60, height // 3)), int(rng.integers(30, 60))
    draw.ellipse((sx - r, sy - r, sx + r, sy + r), fill=(255, 236, 170))
    for layer in range(3):
        base = height * (0.45 + 0.12 * layer)
        xs = np.linspace(0, width, 12)
        ys = base + rng.normal(0, 40, 12)
        palette = [(96, 120, 150), (70, 96, 84), (38, 60, 46)]  # far hills are hazy blue, near ones dark green
        colour = tuple(int(c + rng.integers(-15, 16)) for c in palette[layer])
        draw.polygon([(0, height), *zip(xs.tolist(), ys.tolist(), strict=True), (width, height)], fill=colour)
    lake = int(height * 0.82)
    draw.rectangle((0, lake, width, height), fill=tuple(int(c) for c in bottom // 2 + 40))
    image = image.filter(ImageFilter.GaussianBlur(1.2))
    noise = rng.normal(0, 6, (height, width, 3))
    pixels = np.clip(np.asarray(image, dtype=np.float64) + noise, 0, 255).astype(np.uint8)
    return encode(Image.fromarray(pixels, "RGB"), "JPEG", quality=88)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("ui-images")
    paths = []
    for i in range(6):
        path = folder / f"landscape-{i + 1}.jpg"
        path.write_bytes(scene(i))
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def not_an_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ui-other") / "notes.txt"
    path.write_text("shopping list: milk, eggs\n")
    return path


# ---------- the real server and the browser ----------


def _serve(weights: Path | str, log_name: str) -> Iterator[str]:
    """`python -m resnet_api serve` on a free loopback port until the generator is closed; yields its URL."""
    OUT.mkdir(parents=True, exist_ok=True)
    with running_server(weights, OUT / log_name, log_level="warning") as live:
        yield live.base_url + "/"


@pytest.fixture(scope="module")
def server(weights_file: Path) -> Iterator[str]:
    """The server on the test weights file (loaded from a path, so it reports itself as trained)."""
    yield from _serve(weights_file, "server.log")


@pytest.fixture(scope="module")
def untrained_server() -> Iterator[str]:
    """The server on `random` weights: it reports `untrained` and the page must say so loudly."""
    yield from _serve("random", "server-untrained.log")


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = chromium.launch(playwright, *chromium.FAKE_CAMERA)
    yield browser
    browser.close()


@dataclass
class Watch:
    """What a page did: uncaught errors, requests to other hosts, API calls and how many were in flight at once."""

    host: str
    errors: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0

    def request(self, request: Request) -> None:
        parts = urlsplit(request.url)
        if parts.scheme in ("http", "https", "ws", "wss") and parts.netloc != self.host:
            self.foreign.append(request.url)
        if parts.path.startswith("/v1/predict"):
            self.calls.append(parts.path)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def done(self, request: Request) -> None:
        if urlsplit(request.url).path.startswith("/v1/predict"):
            self.in_flight -= 1


def open_page(browser: Browser, url: str, watch: Watch, **context: Any) -> Page:
    ctx = browser.new_context(**{"viewport": {"width": 1280, "height": 900}, "locale": "en-US", **context})
    page = ctx.new_page()
    page.on("pageerror", lambda exc: watch.errors.append(str(exc)))
    page.on("request", watch.request)
    page.on("requestfinished", watch.done)
    page.on("requestfailed", watch.done)
    page.goto(url)
    page.wait_for_selector("body[data-ready=true]")
    return page


@pytest.fixture
def watch(server: str) -> Watch:
    return Watch(host=urlsplit(server).netloc)


@pytest.fixture
def page(browser: Browser, server: str, watch: Watch) -> Iterator[Page]:
    page = open_page(browser, server, watch)
    yield page
    page.context.close()
    assert watch.errors == [], "uncaught errors in the page"
    assert watch.foreign == [], "the page must work offline: it fetched from another host"


def shot(page: Page, name: str) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def api_labels(server: str, path: Path, top_k: int = 3) -> list[str]:
    response = httpx.post(
        f"{server}v1/predict", params={"top_k": top_k}, files={"file": (path.name, path.read_bytes())}
    )
    return [p["label"] for p in response.json()["predictions"]]


# ---------- tests ----------


def test_one_image_shows_its_predictions_timings_and_round_trip(page: Page, server: str, images: list[Path]) -> None:
    page.set_input_files("#file", str(images[0]))
    result = page.wait_for_selector(".result[data-status=done]")
    assert result is not None
    labels = page.locator(".result .pred-label").all_inner_texts()
    assert labels == api_labels(server, images[0])
    scores = page.locator(".result .pred-score").all_inner_texts()
    assert all(re.fullmatch(r"\d+\.\d%", s) for s in scores), scores
    assert page.locator(".result img").get_attribute("alt") == images[0].name
    assert re.fullmatch(r"[\d.,]+ ms", page.locator(".timing-rtt dd").inner_text())
    assert page.locator(".timings .timing").count() == 6
    shot(page, "single-image")

    page.fill("#topk", "5")
    page.locator("#topk").dispatch_event("change")
    page.wait_for_function("() => document.querySelectorAll('.result[data-status=done] .pred').length === 5")
    assert page.locator(".result .pred-label").all_inner_texts() == api_labels(server, images[0], top_k=5)

    page.fill("#topk", "0")  # below the range: the nearest allowed value, not the default
    page.locator("#topk").dispatch_event("change")
    page.wait_for_function("() => document.querySelectorAll('.result[data-status=done] .pred').length === 1")
    assert page.input_value("#topk") == "1"
    page.fill("#topk", "")  # cleared: keeps showing what it showed
    page.locator("#topk").dispatch_event("change")
    assert page.input_value("#topk") == "1"
    assert page.locator(".result[data-status=done] .pred").count() == 1


def test_several_images_give_one_card_each_and_a_non_image_fails_on_its_card_only(
    page: Page, watch: Watch, images: list[Path], not_an_image: Path
) -> None:
    files = [str(p) for p in images] + [str(not_an_image)]
    page.set_input_files("#file", files)
    page.wait_for_function("() => document.querySelectorAll('.card[data-status=pending]').length === 0")
    cards = page.locator(".grid .card")
    assert cards.count() == len(files)
    assert page.locator(".card[data-status=done]").count() == len(images)
    for i in range(len(images)):
        assert cards.nth(i).locator(".pred").count() == 3
        assert cards.nth(i).locator(".file-name").inner_text() == images[i].name
    failed = cards.nth(len(images))
    assert failed.get_attribute("data-status") == "error"
    assert "not an image the model can read" in failed.locator(".error-text").inner_text()
    assert failed.locator("button").count() == 0
    assert re.search(r"6 of 7 images classified in [\d,]+ ms · 1 could not be read", page.inner_text("#summary"))
    # The grid uses the batch endpoint (measured faster than parallel single requests: see the README).
    assert watch.calls == ["/v1/predict/batch"]
    shot(page, "batch-grid")


def test_a_server_taking_fewer_files_a_request_still_classifies_every_image(
    page: Page, watch: Watch, images: list[Path]
) -> None:
    """With RESNET_API_MAX_BATCH_FILES under the page's 16, the batch answers 413 `too_many_files`: not a file's fault."""
    problem = {
        "type": "https://resnet-api.dev/problems/too_many_files",
        "title": "Too many files",
        "status": 413,
        "detail": "more than 2 files sent (RESNET_API_MAX_BATCH_FILES)",
        "code": "too_many_files",
    }
    page.route(
        "**/v1/predict/batch*",
        lambda route: route.fulfill(status=413, json=problem, content_type="application/problem+json"),
    )
    page.set_input_files("#file", [str(p) for p in images[:3]])
    page.wait_for_function("() => document.querySelectorAll('.card[data-status=pending]').length === 0")
    assert page.locator(".card[data-status=done]").count() == 3
    assert "3 of 3 images classified" in page.inner_text("#summary")
    assert watch.calls == ["/v1/predict/batch"] + ["/v1/predict"] * 3, "one request per file instead"


def test_dropping_and_pasting_images_classify_them(page: Page, images: list[Path]) -> None:
    payload = base64.b64encode(images[1].read_bytes()).decode()
    make_files = """([b64, names]) => {
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const dt = new DataTransfer();
        for (const name of names) dt.items.add(new File([bytes], name, {type: "image/jpeg"}));
        return dt;
    }"""
    dt = page.evaluate_handle(make_files, [payload, ["dropped-1.jpg", "dropped-2.jpg"]])
    page.dispatch_event("#dropzone", "drop", {"dataTransfer": dt})
    page.wait_for_selector(".card[data-status=done] >> nth=1")
    assert page.locator(".grid .card").count() == 2

    page.evaluate(
        f"""(b64) => {{
        const dt = ({make_files})([b64, ["pasted.jpg"]]);
        document.dispatchEvent(new ClipboardEvent("paste", {{clipboardData: dt}}));
    }}""",
        payload,
    )
    page.wait_for_selector(".result[data-status=done]")
    assert page.locator(".result .file-name").inner_text() == "pasted.jpg"


def test_a_non_image_alone_gets_a_plain_message_and_no_spinner(page: Page, not_an_image: Path) -> None:
    page.set_input_files("#file", str(not_an_image))
    page.wait_for_selector(".result[data-status=error]")
    assert page.locator(".result .error-text").inner_text() == (
        "This file is not an image the model can read. Use a JPEG, PNG, GIF, WebP or BMP file."
    )
    assert page.locator(".spinner").count() == 0


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [
        (413, "payload_too_large", "This file is too large for the server."),
        (503, "overloaded", "The server is busy right now. Try again in 7 s."),
        (400, "invalid_image", "This image looks damaged or incomplete."),
        (0, "", "Can't reach the server."),
        (200, "", "The server's answer could not be read"),  # a proxy's login page instead of the API's JSON
    ],
)
def test_failures_read_as_plain_language(page: Page, images: list[Path], status: int, code: str, message: str) -> None:
    def answer(route: Any) -> None:
        if status == 0:
            route.abort("connectionrefused")
            return
        if status == 200:
            route.fulfill(status=200, body="<html>Sign in</html>", content_type="text/html")
            return
        body = {"type": "about:blank", "title": code, "status": status, "detail": "server detail", "code": code}
        headers = {"Retry-After": "7"} if status == 503 else {}
        route.fulfill(status=status, json=body, headers=headers, content_type="application/problem+json")

    page.route("**/v1/predict*", answer)
    page.set_input_files("#file", str(images[0]))
    page.wait_for_selector(".result[data-status=error]")
    assert page.locator(".result .error-text").inner_text().startswith(message)
    assert page.locator(".spinner").count() == 0

    retry = page.locator(".result .error-box button")
    if status in (413, 400):
        assert retry.count() == 0, "a bad file stays bad: no retry offered"
        return
    page.unroute("**/v1/predict*")
    retry.click()
    page.wait_for_selector(".result[data-status=done]")


def test_model_identity_is_shown_and_no_banner_for_real_weights(page: Page, server: str) -> None:
    model = httpx.get(f"{server}v1/model").json()
    assert model["untrained"] is False
    page.wait_for_selector("#model-status .dot")
    chips = page.inner_text("#model")
    for value in (model["name"], model["weights"], model["backend"], model["precision"], model["version"]):
        assert value in chips
    assert f"{model['backend']} · {model['precision']}" in chips  # torch runs on torch: no runtime repeated
    assert page.is_hidden("#banner")
    assert page.get_attribute("a[href=docs]", "href") == "docs"
    assert page.get_attribute("a[href=metrics]", "href") == "metrics"


def test_the_status_chip_follows_a_server_that_goes_away_and_comes_back(page: Page, images: list[Path]) -> None:
    page.wait_for_selector("#model-status .dot")
    page.route("**/v1/**", lambda route: route.abort("connectionrefused"))  # the server is gone
    page.set_input_files("#file", str(images[0]))
    page.wait_for_selector(".result[data-status=error]")
    assert page.inner_text("#model-status") == "Can't reach the server. Retrying…"  # no longer "Ready"
    assert page.locator("#model-status .dot").count() == 0
    page.unroute("**/v1/**")  # back
    page.locator(".result .error-box button").click()
    page.wait_for_selector(".result[data-status=done]")
    page.wait_for_selector("#model-status .dot")
    assert page.inner_text("#model-status") == "Ready"


def test_a_page_opened_while_the_model_loads_says_so_then_turns_ready(browser: Browser, server: str) -> None:
    """`resnet-api serve` answers the page before the model is loaded; the API says 503 `not_ready` till then."""
    loading = {
        "type": "https://resnet-api.dev/problems/not_ready",
        "title": "Service not ready",
        "status": 503,
        "detail": "the model is still loading: retry shortly",
        "code": "not_ready",
        "instance": "/v1/model",
    }
    context = browser.new_context(locale="en-US")
    try:
        context.route(
            "**/v1/model",
            lambda route: route.fulfill(status=503, json=loading, headers={"Retry-After": "1"}),
        )
        page = context.new_page()
        page.goto(server)
        expect(page.locator("#model-status")).to_have_text("The model is still loading. Retrying…")
        assert page.locator("#model-status .dot").count() == 0
        context.unroute("**/v1/model")  # loaded: the page's next check (every 2 s) finds it
        expect(page.locator("#model-status")).to_have_text("Ready", timeout=10_000)
        assert httpx.get(f"{server}v1/model").json()["weights"] in page.inner_text("#model")
    finally:
        context.close()


def test_the_model_chip_names_the_runtime_when_it_is_not_the_backend(browser: Browser, server: str) -> None:
    model = {**httpx.get(f"{server}v1/model").json(), "backend": "int8", "runtime": "openvino", "precision": "int8"}
    context = browser.new_context(locale="en-US")
    try:
        context.route("**/v1/model", lambda route: route.fulfill(status=200, json=model))
        page = context.new_page()
        page.goto(server)
        page.wait_for_selector("#model-status .dot")
        assert "int8 (openvino) · int8" in page.inner_text("#model")
    finally:
        context.close()


def test_untrained_weights_get_an_unmistakable_banner(
    browser: Browser, untrained_server: str, images: list[Path]
) -> None:
    watch = Watch(host=urlsplit(untrained_server).netloc)
    page = open_page(browser, untrained_server, watch)
    try:
        banner = page.locator("#banner")
        banner.wait_for(state="visible")
        assert banner.get_attribute("role") == "alert"
        assert "Untrained weights: these predictions are meaningless" in banner.inner_text()
        assert "RESNET_API_WEIGHTS=imagenet" in banner.inner_text()
        assert "untrained" in page.inner_text("#model .chip-warn")
        page.set_input_files("#file", str(images[3]))
        page.wait_for_selector(".result[data-status=done]")
        shot(page, "untrained-banner")
        page.select_option("#lang", "zh-CN")
        page.wait_for_function("() => document.documentElement.lang === 'zh-CN'")
        assert "未训练的权重" in banner.inner_text()
        assert "未训练" in page.inner_text("#model .chip-warn")
    finally:
        page.context.close()
    assert watch.errors == []


def test_chinese_follows_the_browser_and_the_switch_changes_language(
    browser: Browser, server: str, watch: Watch, images: list[Path], not_an_image: Path
) -> None:
    page = open_page(browser, server, watch, locale="zh-CN")
    try:
        assert page.get_attribute("html", "lang") == "zh-CN"
        assert page.inner_text("h1") == "这张图片里有什么？"
        assert page.title() == "图像分类 · resnet-api"
        page.set_input_files("#file", [str(images[2]), str(not_an_image)])
        page.wait_for_function("() => document.querySelectorAll('.card[data-status=pending]').length === 0")
        assert "这个文件不是模型能读取的图片" in page.inner_text(".card[data-status=error]")
        labels = page.locator(".card[data-status=done] .pred-label").all_inner_texts()
        assert all(re.fullmatch(r"[\x20-\x7e]+", label) for label in labels), "class names stay the model's labels"
        shot(page, "chinese")

        page.select_option("#lang", "en")
        page.wait_for_function("() => document.documentElement.lang === 'en'")
        assert page.inner_text("h1") == "What's in this picture?"
        assert page.title() == "Image classifier · resnet-api"
        assert "not an image the model can read" in page.inner_text(".card[data-status=error]")
        page.reload()
        page.wait_for_selector("body[data-ready=true]")
        assert page.get_attribute("html", "lang") == "en", "the choice is remembered"
    finally:
        page.context.close()
    assert watch.errors == []


def test_camera_shows_live_predictions_with_one_frame_in_flight(page: Page, watch: Watch) -> None:
    page.click("#tab-camera")
    page.click("#camera-toggle")
    page.wait_for_selector("#camera-preds .pred >> nth=2", timeout=30_000)
    first = page.locator("#camera-preds .pred-label").all_inner_texts()
    assert len(first) == 3
    page.wait_for_function("() => document.querySelector('#camera-stats').textContent.includes('frames/s')")
    page.wait_for_timeout(1500)
    assert page.is_visible("#live-badge")
    assert len(watch.calls) >= 3, "frames keep coming"
    assert set(watch.calls) == {"/v1/predict"}
    assert watch.max_in_flight == 1, "never more than one frame in flight"
    shot(page, "camera")

    page.click("#camera-toggle")
    assert page.is_hidden("#live-badge")
    page.wait_for_timeout(600)  # an answer already on its way may still land
    sent = len(watch.calls)
    page.wait_for_timeout(1000)
    assert len(watch.calls) == sent, "no frames after stopping"
    assert page.evaluate("document.querySelector('#video').srcObject") is None


# ---------- races: a late answer must never undo a newer choice ----------

HELD_CAMERA = """
// getUserMedia waits for the test: __camera.release() hands the oldest call a real (fake-device) stream.
const real = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
window.__camera = { pending: [], streams: [] };
navigator.mediaDevices.getUserMedia = (constraints) => new Promise((resolve, reject) => {
  window.__camera.pending.push(() => real(constraints).then((s) => { window.__camera.streams.push(s); resolve(s); }, reject));
});
window.__camera.release = () => window.__camera.pending.shift()();
window.__camera.live = () =>
  window.__camera.streams.flatMap((s) => s.getTracks()).filter((t) => t.readyState === "live").length;
"""


def hold_camera(page: Page) -> None:
    """Reload the page with a getUserMedia that resolves only when the test says so."""
    page.add_init_script(HELD_CAMERA)
    page.reload()
    page.wait_for_selector("body[data-ready=true]")


def wait_until(page: Page, done: Callable[[], bool], what: str, timeout_ms: int = 30_000) -> None:
    """Poll a Python-side condition while Playwright keeps dispatching (route handlers run only then)."""
    for _ in range(timeout_ms // 50):
        if done():
            return
        page.wait_for_timeout(50)
    raise AssertionError(f"timed out waiting for {what}")


def test_leaving_the_camera_tab_while_it_starts_turns_the_camera_off(page: Page, watch: Watch) -> None:
    hold_camera(page)
    page.click("#tab-camera")
    page.click("#camera-toggle")
    expect(page.locator("#camera-toggle")).to_have_text("Starting…")
    page.click("#tab-images")  # left before the browser handed over the camera
    page.evaluate("window.__camera.release()")
    page.wait_for_timeout(1000)
    assert page.evaluate("window.__camera.streams.length") == 1
    assert page.evaluate("window.__camera.live()") == 0, "the camera must not keep running"
    assert watch.calls == [], "no frames from a camera nobody looks at"
    page.click("#tab-camera")
    expect(page.locator("#camera-toggle")).to_have_text("Start camera")
    expect(page.locator("#camera-toggle")).to_be_enabled()
    assert page.is_hidden("#live-badge")


def test_stop_then_start_quickly_leaves_one_camera_loop(page: Page) -> None:
    held: list[Route] = []
    hold_camera(page)
    page.route("**/v1/predict*", lambda route: held.append(route))
    page.click("#tab-camera")
    page.click("#camera-toggle")
    page.evaluate("window.__camera.release()")
    wait_until(page, lambda: len(held) == 1, "the first frame")
    page.click("#camera-toggle")  # stop, while that frame is still in flight
    page.click("#camera-toggle")  # start again
    page.evaluate("window.__camera.release()")
    wait_until(page, lambda: len(held) == 2, "the new session's first frame")
    held[0].continue_()  # the old session's answer lands: its loop must end there
    page.wait_for_timeout(1500)
    assert len(held) == 2, "a second camera loop is sending frames"
    page.unroute("**/v1/predict*")  # also lets the held frame through
    page.click("#camera-toggle")


def test_an_older_top_k_answer_never_overwrites_a_newer_one(page: Page, images: list[Path]) -> None:
    page.set_input_files("#file", str(images[0]))
    page.wait_for_selector(".result[data-status=done]")
    held: list[Route] = []
    page.route(
        "**/v1/predict*", lambda route: held.append(route) if "top_k=5" in route.request.url else route.continue_()
    )
    page.fill("#topk", "5")
    page.locator("#topk").dispatch_event("change")
    wait_until(page, lambda: len(held) == 1, "the top-5 request")
    page.fill("#topk", "2")  # chosen while the top-5 answer is still on its way
    page.locator("#topk").dispatch_event("change")
    page.wait_for_function("() => document.querySelectorAll('.result[data-status=done] .pred').length === 2")
    held[0].continue_()
    page.wait_for_timeout(1000)
    assert page.locator(".result[data-status=done] .pred").count() == 2, "the late top-5 answer won"
    assert page.input_value("#topk") == "2"
    page.select_option("#lang", "zh-CN")  # redraws the result from the page's state: the late answer is not in it
    page.wait_for_function("() => document.documentElement.lang === 'zh-CN'")
    assert page.locator(".result[data-status=done] .pred").count() == 2, "the late top-5 answer won"


def test_a_newer_run_stops_an_older_one_sending_its_remaining_chunks(
    page: Page, images: list[Path], tmp_path: Path
) -> None:
    """40 files go as 16 + 16 + 8; once "Classes to show" changes, the old run's third chunk is not sent at all."""
    files = []
    for i in range(40):
        path = tmp_path / f"copy-{i:02d}.jpg"
        path.write_bytes(images[i % len(images)].read_bytes())
        files.append(path)
    held: list[Route] = []
    sent: list[str] = []

    def handle(route: Route) -> None:
        sent.append(route.request.url)
        if "top_k=3" in route.request.url:
            held.append(route)
        else:
            route.continue_()

    page.route("**/v1/predict/batch*", handle)
    page.set_input_files("#file", [str(f) for f in files])
    wait_until(page, lambda: len(held) == 2, "the first run's two chunks in flight")
    page.fill("#topk", "2")
    page.locator("#topk").dispatch_event("change")
    page.wait_for_function("() => document.querySelectorAll('.card[data-status=done]').length === 40")
    for route in held:
        route.continue_()
    page.wait_for_timeout(1000)
    # 2 chunks of the old run, 3 of the new; the old run's third would have gone (as top_k=2) once its two came back
    assert [url.split("top_k=")[1] for url in sent] == ["3", "3", "2", "2", "2"], "the old run sent a third chunk"
    assert page.locator(".card[data-status=done]").first.locator(".pred").count() == 2


def test_a_quick_second_language_choice_wins_over_a_slow_first(page: Page) -> None:
    held: list[Route] = []
    page.route("**/i18n/zh-CN.json", lambda route: held.append(route))
    page.select_option("#lang", "zh-CN")
    wait_until(page, lambda: len(held) == 1, "the Chinese messages request")
    with page.expect_response("**/i18n/en.json"):
        page.select_option("#lang", "en")  # changed their mind before Chinese arrived
    page.wait_for_timeout(200)
    held[0].continue_()
    page.wait_for_timeout(1000)
    assert page.get_attribute("html", "lang") == "en", "the earlier choice was applied after the later one"
    assert page.inner_text("h1") == "What's in this picture?"
    assert page.input_value("#lang") == "en"
    assert page.evaluate("localStorage.getItem('resnet-api.lang')") == "en"


def test_keyboard_reaches_every_control_with_a_visible_focus(page: Page) -> None:
    reached = []
    for _ in range(10):  # skip link, brand, docs, metrics, language, tab, file, top-k, then the footer's links
        page.keyboard.press("Tab")
        info = page.evaluate(
            """() => { const el = document.activeElement;
                const style = getComputedStyle(el.id === 'file' ? el.closest('.dropzone') : el);
                return [el.id || el.getAttribute('href') || el.tagName, style.outlineStyle, style.outlineWidth]; }"""
        )
        reached.append(info[0])
        assert info[1] != "none", f"no visible focus on {info[0]}"
        assert info[2] != "0px", f"no visible focus on {info[0]}"
    for control in ("#main", "docs", "metrics", "lang", "tab-images", "file", "topk"):
        assert control in reached, reached
    page.focus("#tab-images")
    page.keyboard.press("ArrowRight")
    assert page.evaluate("document.activeElement.id") == "tab-camera"
    assert page.is_visible("#panel-camera")
    assert page.is_hidden("#panel-images")
    assert page.locator("#file").get_attribute("aria-describedby") == "drop-hint"


def test_phone_screen_in_dark_mode(
    browser: Browser, server: str, watch: Watch, images: list[Path], tmp_path: Path
) -> None:
    width = 375
    page = open_page(
        browser,
        server,
        watch,
        viewport={"width": width, "height": 812},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
        color_scheme="dark",
    )
    try:
        page.set_input_files("#file", [str(p) for p in images[:4]])
        page.wait_for_function("() => document.querySelectorAll('.card[data-status=done]').length === 4")
        # Not window.innerWidth: on a phone, content too wide zooms the page out and innerWidth grows with it.
        assert page.evaluate("document.documentElement.scrollWidth") <= width, "no sideways scrolling"
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert sum(int(c) for c in re.findall(r"\d+", background)[:3]) < 150, background
        shot(page, "phone-dark")

        # A phone camera's file name, one long word, under a single result.
        photo = tmp_path / "IMG_20240101_123456789_HDR_PORTRAIT_from_the_class_trip_to_the_lake.jpg"
        photo.write_bytes(images[0].read_bytes())
        page.set_input_files("#file", str(photo))
        page.wait_for_selector(".result[data-status=done]")
        assert page.evaluate("document.documentElement.scrollWidth") <= width, (
            "a long file name pushes the page sideways"
        )
    finally:
        page.context.close()
    assert watch.errors == []


def test_page_round_trip_is_recorded(page: Page, images: list[Path]) -> None:
    """Keeps a record of the round trip the page measures for one image (the README quotes bench/ numbers)."""
    times = []
    for i in range(3):
        page.set_input_files("#file", str(images[i]))
        page.wait_for_selector(".result[data-status=done]")
        times.append(float(page.inner_text(".timing-rtt dd").removesuffix(" ms").replace(",", "")))
    assert all(0 < t < 30_000 for t in times)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "round-trip.json").write_text(json.dumps({"one_image_round_trip_ms": times}) + "\n")


REDOCLY_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"
"""ReDoc's "API docs by Redocly" footer image: the one outside fetch, cosmetic (offline it is a missing icon)."""


@pytest.mark.parametrize(("path", "rendered"), [("docs", ".swagger-ui .info .title"), ("redoc", ".redoc-wrap h1")])
def test_api_docs_render_offline(browser: Browser, server: str, watch: Watch, path: str, rendered: str) -> None:
    """Swagger UI and ReDoc come from this server (fastapi-offline's files), not a CDN the offline machine lacks."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    page.on("pageerror", lambda exc: watch.errors.append(str(exc)))
    page.on("request", watch.request)
    page.goto(server + path)
    page.wait_for_selector(rendered, timeout=20_000)
    assert "resnet-api" in page.inner_text(rendered)
    shot(page, f"api-{path}")
    ctx.close()
    assert [url for url in watch.foreign if url != REDOCLY_LOGO] == [], "the docs page fetched from another host"
    assert watch.errors == []


# ---------- servers with other settings, and the classifiers page ----------


@contextmanager
def _serve_with(weights: Path | str, log_name: str, **settings: object) -> Iterator[str]:
    """`_serve` with `RESNET_API_<NAME>` settings, as a context manager."""
    OUT.mkdir(parents=True, exist_ok=True)
    with running_server(weights, OUT / log_name, log_level="warning", **settings) as live:
        yield live.base_url + "/"


def test_a_batch_over_the_request_byte_limit_is_sent_one_file_a_request(
    browser: Browser, weights_file: Path, images: list[Path]
) -> None:
    """Each file fits RESNET_API_MAX_REQUEST_BYTES alone, four together do not: a 413 for the request, not a file."""
    largest = max(p.stat().st_size for p in images[:4])
    limit = int(largest * 1.5) + 4096
    assert sum(p.stat().st_size for p in images[:4]) > limit
    with _serve_with(weights_file, "server-small-requests.log", max_request_bytes=limit) as url:
        watch = Watch(host=urlsplit(url).netloc)
        page = open_page(browser, url, watch)
        try:
            page.set_input_files("#file", [str(p) for p in images[:4]])
            page.wait_for_function("() => document.querySelectorAll('.card[data-status=pending]').length === 0")
            assert page.locator(".card[data-status=done]").count() == 4, page.inner_text("#results")
            assert "4 of 4 images classified" in page.inner_text("#summary")
            assert watch.calls == ["/v1/predict/batch"] + ["/v1/predict"] * 4, "one request per file instead"
        finally:
            page.context.close()
    assert watch.errors == []


def test_choosing_the_same_file_again_shows_it_again(page: Page, images: list[Path]) -> None:
    page.set_input_files("#file", str(images[0]))
    page.wait_for_selector(".result[data-status=done]")
    dropped = page.evaluate_handle(
        """(b64) => {
        const dt = new DataTransfer();
        dt.items.add(new File([Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))], "dropped.jpg", {type: "image/jpeg"}));
        return dt;
    }""",
        base64.b64encode(images[1].read_bytes()).decode(),
    )
    page.dispatch_event("#dropzone", "drop", {"dataTransfer": dropped})
    expect(page.locator(".result .file-name")).to_have_text("dropped.jpg")
    page.wait_for_selector(".result[data-status=done]")
    page.set_input_files("#file", str(images[0]))  # the first file once more, through the same picker
    expect(page.locator(".result .file-name")).to_have_text(images[0].name)
    page.wait_for_selector(".result[data-status=done]")


def test_a_server_with_api_keys_says_so_instead_of_loading_forever(browser: Browser, weights_file: Path) -> None:
    with _serve_with(weights_file, "server-keys.log", api_keys="ui-test-secret-key") as url:
        watch = Watch(host=urlsplit(url).netloc)
        page = open_page(browser, url, watch)
        try:
            message = "This server needs an API key; the Web UI cannot send one."
            expect(page.locator("#model-status")).to_have_text(message)
            checks: list[str] = []
            page.on("request", lambda r: checks.append(r.url) if urlsplit(r.url).path == "/v1/model" else None)
            page.wait_for_timeout(3000)  # the page checked every 2 s while it took the 401 for "loading"
            assert checks == [], "no more checks of the model: a key will not appear by itself"
            expect(page.locator("#model-status")).to_have_text(message)
            page.select_option("#lang", "zh-CN")
            expect(page.locator("#model-status")).to_have_text("此服务器需要 API 密钥，而网页界面无法发送密钥。")
        finally:
            page.context.close()
    assert watch.errors == []


@pytest.fixture(scope="module")
def clf_server(weights_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server with a data directory for custom classifiers."""
    data_dir = tmp_path_factory.mktemp("ui-classifiers")
    with _serve_with(weights_file, "server-classifiers.log", data_dir=data_dir, warmup=False) as url:
        yield url


def make_classifier(server: str, name: str, labels: tuple[str, ...]) -> str:
    """Trains a classifier through the API on colour photos (red, green, blue) named by `labels`; returns its id."""
    colours = ("red", "green", "blue")
    sent: list[str] = []
    files = []
    for li, label in enumerate(labels):
        for i in range(3):
            sent.append(label)
            files.append(("files", (f"{li}-{i}.png", colour_image(colours[li], 1000 * li + i), "image/png")))
    response = httpx.post(f"{server}v1/classifiers", data={"name": name, "labels": sent}, files=files, timeout=120)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def open_classifiers(browser: Browser, server: str, watch: Watch, **context: Any) -> Page:
    page = open_page(browser, server + "classifiers.html", watch, **context)
    page.wait_for_function("() => document.querySelector('#clf-select').value !== ''")
    return page


def test_use_on_a_classifier_suggests_its_labels_for_improving_it(browser: Browser, clf_server: str) -> None:
    first = make_classifier(clf_server, "pets", ("cat", "dog"))
    second = make_classifier(clf_server, "fruit", ("apple", "pear", "plum"))
    watch = Watch(host=urlsplit(clf_server).netloc)
    page = open_classifiers(browser, clf_server, watch)
    try:
        suggestions = "() => [...document.querySelectorAll('#improve-labels option')].map((o) => o.value)"
        for cid, labels in ((first, ["cat", "dog"]), (second, ["apple", "pear", "plum"]), (first, ["cat", "dog"])):
            page.locator(f"#clf-table tr[data-id='{cid}'] button.use").click()
            assert page.input_value("#clf-select") == cid
            assert page.evaluate(suggestions) == labels
    finally:
        page.context.close()
        for cid in (first, second):
            httpx.delete(f"{clf_server}v1/classifiers/{cid}")
    assert watch.errors == []


def test_deleting_a_classifier_already_gone_or_unreachable_says_so(browser: Browser, clf_server: str) -> None:
    gone = make_classifier(clf_server, "gone", ("cat", "dog"))
    kept = make_classifier(clf_server, "kept", ("cat", "dog"))
    watch = Watch(host=urlsplit(clf_server).netloc)
    page = open_classifiers(browser, clf_server, watch)
    try:
        row = page.locator(f"#clf-table tr[data-id='{gone}']")
        expect(row).to_have_count(1)
        assert httpx.delete(f"{clf_server}v1/classifiers/{gone}").status_code == 204  # elsewhere, meanwhile
        row.locator("button.delete").click()
        row.locator("button.delete").click()  # the second click confirms
        expect(page.locator("#list-status")).to_contain_text("This classifier no longer exists")
        expect(row).to_have_count(0)  # the list was read again
        assert page.get_attribute("#list-status", "class") == "status error"

        page.route("**/v1/classifiers/**", lambda route: route.abort("connectionrefused"))
        other = page.locator(f"#clf-table tr[data-id='{kept}'] button.delete")
        other.click()
        other.click()
        expect(page.locator("#list-status")).to_have_text(
            "Can't reach the server. Check that it is running and that you are connected."
        )
        expect(page.locator(f"#clf-table tr[data-id='{kept}']")).to_have_count(1)
    finally:
        page.context.close()
        httpx.delete(f"{clf_server}v1/classifiers/{kept}")
    assert watch.errors == []


def test_a_long_label_does_not_push_a_phone_page_sideways(browser: Browser, clf_server: str, tmp_path: Path) -> None:
    long_label = "a" * 40 + "b" * 40  # one 80-character word
    cid = make_classifier(clf_server, "long", (long_label, "short"))
    photo = tmp_path / "red.png"
    photo.write_bytes(colour_image("red", 4242))
    width = 375
    watch = Watch(host=urlsplit(clf_server).netloc)
    page = open_classifiers(
        browser, clf_server, watch, viewport={"width": width, "height": 812}, is_mobile=True, has_touch=True
    )
    try:
        page.select_option("#clf-select", cid)
        page.locator("#predict-file").set_input_files(str(photo))
        expect(page.locator("#predictions li").first).to_have_attribute("data-label", long_label, timeout=30_000)
        expect(page.locator("#predict-status")).to_contain_text(long_label)
        shot(page, "classifier-long-label-phone")
        assert page.evaluate("document.scrollingElement.scrollWidth") <= width + 1, "no sideways scrolling"
    finally:
        page.context.close()
        httpx.delete(f"{clf_server}v1/classifiers/{cid}")
    assert watch.errors == []


# ---------- keyboard focus survives redraws ----------


def tab_to(page: Page, selector: str, limit: int = 40) -> None:
    """Presses Tab until the focused element matches `selector`, as a keyboard user gets there."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("(sel) => document.activeElement.matches(sel)", selector):
            return
    raise AssertionError(f"Tab never reached {selector}")


def focused(page: Page, selector: str) -> bool:
    return bool(page.evaluate("(sel) => document.activeElement.matches(sel)", selector))


def refuse_batches(route: Route) -> None:
    body = {"type": "about:blank", "title": "overloaded", "status": 503, "detail": "busy", "code": "overloaded"}
    route.fulfill(status=503, json=body, headers={"Retry-After": "1"}, content_type="application/problem+json")


def test_a_grid_redraw_keeps_the_focus_on_the_same_cards_retry_button(page: Page, images: list[Path]) -> None:
    page.route("**/v1/predict/batch*", refuse_batches)
    page.set_input_files("#file", [str(images[0]), str(images[1])])
    expect(page.locator(".card[data-status=error]")).to_have_count(2)
    first_retry = '.card[data-focus-scope="0"] button[data-focus="retry"]'
    tab_to(page, first_retry)
    page.unroute("**/v1/predict/batch*")
    # The second card is retried (a click from script does not move focus): its answer redraws the whole grid.
    page.evaluate("""() => document.querySelector('.card[data-focus-scope="1"] button[data-focus="retry"]').click()""")
    expect(page.locator('.card[data-focus-scope="1"]')).to_have_attribute("data-status", "done")
    assert focused(page, first_retry), "the redraw took the focus away from the first card's Retry button"
    page.keyboard.press("Enter")  # its own button goes away with the error: the focus stays on its card
    expect(page.locator('.card[data-focus-scope="0"]')).to_have_attribute("data-status", "done")
    assert focused(page, '.card[data-focus-scope="0"]')


def test_a_language_change_from_another_tab_keeps_the_focus_on_the_result(
    page: Page, server: str, images: list[Path]
) -> None:
    page.route("**/v1/predict*", refuse_batches)
    page.set_input_files("#file", str(images[0]))
    page.wait_for_selector(".result[data-status=error]")
    summary = '.result[data-focus-scope="0"] summary[data-focus="details"]'
    tab_to(page, summary)
    other = page.context.new_page()
    try:
        other.goto(server)
        other.wait_for_selector("body[data-ready=true]")
        other.select_option("#lang", "zh-CN")  # this page follows and redraws its result in Chinese
        page.wait_for_function("() => document.documentElement.lang === 'zh-CN'")
    finally:
        other.close()
    expect(page.locator(".result .error-box summary")).not_to_have_text("Details")
    assert focused(page, summary), "the redraw took the focus away from the result's Details"


def test_the_classifier_list_keeps_the_focus_on_a_rows_button_across_redraws(browser: Browser, clf_server: str) -> None:
    kept = make_classifier(clf_server, "focus-kept", ("cat", "dog"))
    gone = make_classifier(clf_server, "focus-gone", ("cat", "dog"))
    watch = Watch(host=urlsplit(clf_server).netloc)
    page = open_classifiers(browser, clf_server, watch)
    try:
        use = f"#clf-table tr[data-id='{kept}'] button.use"
        tab_to(page, use, limit=80)
        # Another row is deleted (clicks from script leave the focus where it is): the list is read and drawn again.
        page.evaluate(
            "(sel) => { const b = document.querySelector(sel); b.click(); b.click(); }",
            f"#clf-table tr[data-id='{gone}'] button.delete",
        )
        expect(page.locator(f"#clf-table tr[data-id='{gone}']")).to_have_count(0)
        assert focused(page, use), "the redraw took the focus away from the row's Use button"
        page.keyboard.press("Tab")
        page.keyboard.press("Enter")
        page.keyboard.press("Enter")  # the second press confirms: the row goes, the focus stays in the table
        expect(page.locator(f"#clf-table tr[data-id='{kept}']")).to_have_count(0)
        assert focused(page, "#clf-table")
    finally:
        page.context.close()
        for cid in (kept, gone):
            httpx.delete(f"{clf_server}v1/classifiers/{cid}")
    assert watch.errors == []


@pytest.mark.parametrize("path", ["", "classifiers.html"])
def test_both_pages_get_the_same_labelled_language_menu_that_works_by_keyboard(
    browser: Browser, server: str, watch: Watch, path: str
) -> None:
    page = open_page(browser, server + path, watch)
    try:
        menu = page.get_by_label("Language")
        expect(menu).to_have_attribute("id", "lang")
        expect(menu.locator("option")).to_have_text(["English", "简体中文"])
        assert page.locator("label.lang svg[aria-hidden=true]").count() == 1
        page.focus("#lang")
        page.keyboard.press("ArrowDown")
        page.wait_for_function("() => document.documentElement.lang === 'zh-CN'")
        expect(page.get_by_label("语言")).to_have_value("zh-CN")
        assert focused(page, "#lang")
    finally:
        page.context.close()
    assert watch.errors == []
