"""The custom-classifiers page, end to end in headless Chromium against a real server process.

A new user teaches three classes from a few photos each, classifies a new photo, restarts the
server and finds the classifier still there, giving the same answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright

import chromium
from classifier_images import colour_image
from imagegen import encode
from liveserver import running_server
from resnet_api.api.ui import STATIC_DIR

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not chromium.CHROMIUM.exists(), reason=chromium.MISSING),
]

LABELS = ("red", "green", "blue")


@contextmanager
def server(weights: Path, data_dir: Path, log: Path) -> Iterator[str]:
    with running_server(weights, log, data_dir=data_dir, warmup=False, log_level="warning") as live:
        yield live.base_url


def test_teach_three_classes_classify_and_find_them_after_a_restart(weights_file: Path, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    photos = tmp_path / "photos"
    photos.mkdir()
    examples: dict[str, list[str]] = {}
    for li, label in enumerate(LABELS):
        examples[label] = []
        for i in range(3):
            path = photos / f"{label}-{i}.png"
            path.write_bytes(colour_image(label, 100 * li + i))
            examples[label].append(str(path))
    yellow = [photos / f"yellow-{i}.png" for i in range(2)]
    for i, path in enumerate(yellow):
        path.write_bytes(encode(Image.new("RGB", (96, 96), (230, 210, 40 + 20 * i))))
    new_photo = photos / "new.png"
    new_photo.write_bytes(colour_image("green", 99_999))
    data_dir, log = tmp_path / "data", tmp_path / "server.log"

    with sync_api.sync_playwright() as p:
        browser = chromium.launch(p)
        try:
            with server(weights_file, data_dir, log) as base:
                page = browser.new_page(locale="en-US")
                requests: list[str] = []
                page.on("request", lambda r: requests.append(r.url))
                page.goto(f"{base}/classifiers.html")
                page.fill("#clf-name", "colours")
                boxes = page.locator(".label-box")
                assert boxes.count() == 3
                for i, label in enumerate(LABELS):
                    boxes.nth(i).locator(".label-name").fill(label)
                    boxes.nth(i).locator(".label-files").set_input_files(examples[label])
                    sync_api.expect(boxes.nth(i).locator(".thumbs img")).to_have_count(3)
                page.click("#train")
                sync_api.expect(page.locator("#accuracy")).to_have_text("Accuracy estimate: 100.0%", timeout=60_000)
                sync_api.expect(page.locator("#train-status")).to_contain_text("Trained “colours”")
                sync_api.expect(page.locator("#clf-table tbody tr")).to_have_count(1)

                page.locator("#predict-file").set_input_files(str(new_photo))
                top = page.locator("#predictions li").first
                sync_api.expect(top).to_have_attribute("data-label", "green", timeout=30_000)
                sync_api.expect(page.locator("#predictions li")).to_have_count(3)
                score = float(top.get_attribute("data-score") or 0)
                assert score > 0.5

                page.fill("#improve-label", "yellow")  # a new label, taught after the fact
                page.locator("#improve-files").set_input_files([str(p) for p in yellow])
                page.click("#improve-submit")
                sync_api.expect(page.locator("#improve-status")).to_contain_text(
                    "Retrained (revision 2)", timeout=60_000
                )
                sync_api.expect(page.locator("#clf-table tbody tr td").nth(1)).to_contain_text("yellow (2)")
                page.locator("#predict-file").set_input_files(str(new_photo))
                sync_api.expect(page.locator("#predictions li")).to_have_count(4)  # the new label is answered too
                top = page.locator("#predictions li").first
                sync_api.expect(top).to_have_attribute("data-label", "green")
                score = float(top.get_attribute("data-score") or 0)
                assert all(url.startswith(base) or url.startswith("blob:") for url in requests), requests

            with server(weights_file, data_dir, log) as base:  # restart on the same data directory
                page = browser.new_page(locale="en-US")
                page.goto(f"{base}/classifiers.html")
                sync_api.expect(page.locator("#clf-table tbody tr")).to_have_count(1)
                sync_api.expect(page.locator("#clf-table tbody tr td").first).to_have_text("colours")
                page.locator("#predict-file").set_input_files(str(new_photo))
                top = page.locator("#predictions li").first
                sync_api.expect(top).to_have_attribute("data-label", "green", timeout=30_000)
                assert float(top.get_attribute("data-score") or 0) == pytest.approx(score, abs=1e-4)

                page.locator("#clf-table .delete").click()
                page.locator("#clf-table .delete").click()  # the second click confirms
                sync_api.expect(page.locator("#clf-table tbody tr")).to_have_count(0)
                sync_api.expect(page.locator("#clf-empty")).to_be_visible()
        finally:
            browser.close()


# ---------- the page's own behaviour, against a real server whose classifier answers are staged ----------

CLASSIFIER = {
    "id": "fruit",
    "name": "our fruit, from the class trip to the orchard",
    "labels": [{"label": label, "examples": 3} for label in ("apple", "banana", "cherry")],
    "accuracy": {"accuracy": 0.9, "method": "leave-one-out", "evaluated": 9},
    "updated_at": "2024-05-01T12:00:00Z",
    "compatible": True,
    "backbone": {"weights": "test"},
}
LISTING = {"classifiers": [CLASSIFIER], "skipped": [], "limits": {}}


def answer(top: str) -> dict[str, Any]:
    labels = [top, *(x["label"] for x in CLASSIFIER["labels"] if x["label"] != top)][:3]
    return {
        "predictions": [
            {"index": i, "label": x, "score": s} for i, (x, s) in enumerate(zip(labels, (0.8, 0.15, 0.05), strict=True))
        ],
        "timings": {"total_ms": 5.0, "decode_ms": 1.0, "queue_ms": 1.0, "inference_ms": 3.0, "batch_size": 1},
        "image": {"width": 96, "height": 96, "format": "PNG"},
        "classifier": CLASSIFIER["id"],
    }


@pytest.fixture(scope="module")
def live_url(weights_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("classifiers-page")
    with server(weights_file, folder / "data", folder / "server.log") as base:
        yield base


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        browser = chromium.launch(p)
        yield browser
        browser.close()


@pytest.fixture
def photos(tmp_path: Path) -> list[Path]:
    paths = []
    for i, label in enumerate(("red", "green", "blue")):
        path = tmp_path / f"{label}.png"
        path.write_bytes(colour_image(label, i))
        paths.append(path)
    return paths


# Counts the object URLs the page holds: created and not yet revoked.
TRACK_OBJECT_URLS = """
window.liveObjectURLs = new Set();
const create = URL.createObjectURL, revoke = URL.revokeObjectURL;
URL.createObjectURL = (blob) => { const url = create(blob); window.liveObjectURLs.add(url); return url; };
URL.revokeObjectURL = (url) => { window.liveObjectURLs.delete(url); revoke(url); };
"""


def open_classifiers_page(browser: Browser, live_url: str, problems: list[str], **context: Any) -> Page:
    ctx = browser.new_context(**{"viewport": {"width": 1280, "height": 900}, "locale": "en-US", **context})
    page = ctx.new_page()
    page.on("pageerror", lambda exc: problems.append(f"uncaught: {exc}"))
    page.on("console", lambda msg: problems.append(f"console: {msg.text}") if msg.type == "error" else None)
    page.add_init_script(TRACK_OBJECT_URLS)
    page.route("**/v1/classifiers", lambda route: route.fulfill(json=LISTING))
    page.goto(f"{live_url}/classifiers.html")
    expect(page.locator("#clf-table tbody tr")).to_have_count(1)
    return page


@pytest.fixture
def page(browser: Browser, live_url: str) -> Iterator[Page]:
    problems: list[str] = []
    page = open_classifiers_page(browser, live_url, problems)
    yield page
    page.context.close()
    assert problems == [], "the page logged errors"


def test_a_slow_answer_for_an_earlier_photo_does_not_replace_the_latest(page: Page, photos: list[Path]) -> None:
    held: list[Route] = []

    def predict(route: Route) -> None:
        if not held:
            held.append(route)  # the first photo's answer is slow
        else:
            route.fulfill(json=answer("banana"))

    page.route("**/v1/predict*", predict)
    # Counts answers read by the page; the code after `await response.json()` runs before the next task sees it.
    page.evaluate("""() => {
        window.answersRead = 0;
        const json = Response.prototype.json;
        Response.prototype.json = async function () {
            try { return await json.call(this); } finally { window.answersRead += 1; }
        };
    }""")
    page.locator("#predict-file").set_input_files(str(photos[0]))
    expect(page.locator("#predict-status")).to_have_text("Classifying…")
    page.locator("#predict-file").set_input_files(str(photos[1]))
    expect(page.locator("#predict-status")).to_have_text("banana · 5 ms")
    held[0].fulfill(json=answer("apple"))
    page.wait_for_function("() => window.answersRead === 2")
    expect(page.locator("#predict-status")).to_have_text("banana · 5 ms")
    expect(page.locator("#predictions li")).to_have_count(3)
    expect(page.locator("#predictions li").first).to_have_attribute("data-label", "banana")
    assert page.get_attribute("#predict-preview", "alt") == photos[1].name


def test_photos_taken_off_the_page_release_their_memory(page: Page, photos: list[Path]) -> None:
    live = "() => window.liveObjectURLs.size"
    page.route("**/v1/predict*", lambda route: route.fulfill(json=answer("apple")))
    for photo in photos:
        page.locator("#predict-file").set_input_files(str(photo))
        expect(page.locator("#predictions li")).to_have_count(3)
    assert page.evaluate(live) == 1, "only the preview shown now"

    box = page.locator(".label-box").nth(2)
    box.locator(".label-files").set_input_files([str(p) for p in photos[:2]])
    expect(box.locator(".thumbs img")).to_have_count(2)
    assert page.evaluate(live) == 3
    box.locator(".remove-label").click()
    assert page.evaluate(live) == 1, "a removed label box keeps no photos"

    retrained = {"revision": 2, "examples": 11, "accuracy": {"accuracy": 0.9}}
    page.route("**/v1/classifiers/*/examples", lambda route: route.fulfill(json=retrained))
    page.fill("#improve-label", "apple")
    page.locator("#improve-files").set_input_files([str(p) for p in photos])
    expect(page.locator("#improve-thumbs img")).to_have_count(3)
    page.click("#improve-submit")
    expect(page.locator("#improve-status")).to_contain_text("Retrained (revision 2)")
    assert page.evaluate(live) == 1, "photos sent for retraining are released with their thumbnails"


def test_keyboard_focus_on_a_choose_link_is_visible(page: Page) -> None:
    for _ in range(20):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.type") == "file":
            break
    else:
        pytest.fail("Tab never reached a file input")
    style = page.evaluate("getComputedStyle(document.activeElement.closest('label')).outlineStyle")
    assert style != "none", "the focused file input is a clipped 1 px box: its label must show the focus"


def test_the_page_fits_a_375_px_phone(browser: Browser, live_url: str, photos: list[Path]) -> None:
    problems: list[str] = []
    page = open_classifiers_page(
        browser, live_url, problems, viewport={"width": 375, "height": 812}, is_mobile=True, has_touch=True
    )
    try:
        page.route("**/v1/predict*", lambda route: route.fulfill(json=answer("cherry")))
        page.locator("#predict-file").set_input_files(str(photos[2]))
        expect(page.locator("#predictions li")).to_have_count(3)
        # Not window.innerWidth: on a phone, content too wide zooms the page out and innerWidth grows with it.
        assert page.evaluate("document.documentElement.scrollWidth") <= 375, "the page scrolls sideways"
    finally:
        page.context.close()
    assert problems == []


# ---------- languages ----------

# What a user perceives: the title, the rendered text (not hidden elements, not a closed <details>) and the
# labels, placeholders and tooltips that screen readers and the pointer reveal.
PERCEIVED_TEXT = """() => [
    document.title,
    document.body.innerText,
    ...[...document.querySelectorAll("[aria-label], [placeholder], [title]")].flatMap((el) =>
        ["aria-label", "placeholder", "title"].map((name) => el.getAttribute(name) || "")),
].join("\\n")"""


def english_of_the_page() -> set[str]:
    """The English texts of every key the page uses, cut around their {placeholders} ("{n} photos" -> "photos")."""
    html = (STATIC_DIR / "classifiers.html").read_text(encoding="utf-8")
    js = (STATIC_DIR / "classifiers.js").read_text(encoding="utf-8")
    keys = set(re.findall(r'data-i18n[\w-]*="([\w.]+)"', html)) | set(re.findall(r'\bt\("([\w.]+)"', js))
    en: dict[str, str] = json.loads((STATIC_DIR / "i18n" / "en.json").read_text(encoding="utf-8"))
    assert len(keys) > 30
    assert keys <= set(en), keys - set(en)
    parts = (part.strip(" ·:;,.()%…“”\"'+×") for key in keys for part in re.split(r"\{\w+\}", en[key]))
    return {part for part in parts if re.search(r"[A-Za-z]{2}", part)}


def test_in_chinese_every_string_of_the_page_is_chinese(browser: Browser, live_url: str, photos: list[Path]) -> None:
    problems: list[str] = []
    page = open_classifiers_page(browser, live_url, problems, locale="zh-CN")
    try:
        expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
        expect(page).to_have_title("自定义分类器 · resnet-api")
        expect(page.locator("h1")).to_have_text("教它新类别")
        expect(page.locator("#clf-table tbody td").nth(2)).to_have_text("90.0%（留一法交叉验证）")
        expect(page.locator(".label-box .count").first).to_have_text("0 张照片")

        page.click("#train")  # no name yet: the page says so before sending anything
        expect(page.locator("#train-status")).to_have_text("请为分类器起个名字。")

        def create(route: Route) -> None:
            if route.request.method != "POST":
                route.fallback()  # the listing staged by open_classifiers_page
                return
            route.fulfill(status=201, json={**CLASSIFIER, "training": {"embed_ms": 40.0, "train_ms": 8.0}})

        page.route("**/v1/classifiers", create)
        page.fill("#clf-name", str(CLASSIFIER["name"]))
        boxes = page.locator(".label-box")
        for i, label in enumerate(("apple", "banana")):
            boxes.nth(i).locator(".label-name").fill(label)
            boxes.nth(i).locator(".label-files").set_input_files([str(p) for p in photos])
        expect(boxes.first.locator(".count")).to_have_text("3 张照片")
        page.click("#train")
        expect(page.locator("#train-status")).to_contain_text(f"已训练“{CLASSIFIER['name']}”")
        expect(page.locator("#accuracy")).to_have_text("准确率估计：90.0%")

        page.route("**/v1/predict*", lambda route: route.fulfill(json=answer("banana")))
        page.locator("#predict-file").set_input_files(str(photos[0]))
        expect(page.locator("#predict-status")).to_have_text("banana · 5 毫秒")  # class names stay as taught

        mismatch = {
            "title": "Classifier trained on other weights",
            "status": 409,
            "code": "backbone_mismatch",
            "detail": "classifier 'fruit' was trained on weights test but the service runs other: restart with those",
        }
        page.route("**/v1/classifiers/*/examples", lambda route: route.fulfill(status=409, json=mismatch))
        page.fill("#improve-label", "apple")
        page.locator("#improve-files").set_input_files(str(photos[1]))
        page.click("#improve-submit")
        status = page.locator("#improve-status")
        expect(status).to_contain_text("这个分类器是用其他权重训练的")
        expect(status.locator("summary")).to_have_text("服务器返回的详细信息")
        expect(status.get_by_text(mismatch["detail"])).to_be_hidden()  # the server's own words: one click away

        changed = {**mismatch, "code": "classifier_changed", "detail": "another replica saved revision 3"}
        page.unroute("**/v1/classifiers/*/examples")
        page.route("**/v1/classifiers/*/examples", lambda route: route.fulfill(status=409, json=changed))
        page.fill("#improve-label", "apple")
        page.locator("#improve-files").set_input_files(str(photos[2]))
        page.click("#improve-submit")
        expect(status).to_contain_text("这个分类器同时在另一台服务器上被修改了")  # its own message, not a bare 409

        text = page.evaluate(PERCEIVED_TEXT)
        left = [s for s in english_of_the_page() if re.search(rf"(?<![A-Za-z]){re.escape(s)}(?![A-Za-z])", text)]
        assert left == [], f"English left on the Chinese page: {left}"
    finally:
        page.context.close()
    staged = "the server responded with a status of 409"  # Chromium logs every failed answer, the staged one too
    assert [p for p in problems if staged not in p] == []


def test_a_language_chosen_on_either_page_holds_on_both(browser: Browser, live_url: str) -> None:
    problems: list[str] = []
    page = open_classifiers_page(browser, live_url, problems)  # an English browser
    try:
        expect(page.locator("h1")).to_have_text("Teach new classes")
        page.goto(f"{live_url}/")
        page.wait_for_selector("body[data-ready=true]")
        page.select_option("#lang", "zh-CN")
        expect(page.locator("html")).to_have_attribute("lang", "zh-CN")

        page.goto(f"{live_url}/classifiers.html")
        expect(page.locator("h1")).to_have_text("教它新类别")
        expect(page.locator("#lang")).to_have_value("zh-CN")
        expect(page.locator("#clf-table tbody td").nth(2)).to_have_text("90.0%（留一法交叉验证）")

        other_tab = page.context.new_page()  # the index page, open beside it, in Chinese too
        other_tab.goto(f"{live_url}/")
        other_tab.wait_for_selector("body[data-ready=true]")
        expect(other_tab.locator("html")).to_have_attribute("lang", "zh-CN")

        page.select_option("#lang", "en")  # what the page drew itself follows at once, no reload
        expect(page.locator("h1")).to_have_text("Teach new classes")
        expect(page.locator("#clf-table tbody td").nth(2)).to_have_text("90.0% (leave-one-out)")
        expect(other_tab.locator("html")).to_have_attribute("lang", "en")  # the other tab follows, no reload
        expect(other_tab.locator("#lang")).to_have_value("en")
        expect(other_tab.locator("[data-i18n='drop.title']")).to_have_text("Drop images here or click to choose")
        page.goto(f"{live_url}/")
        page.wait_for_selector("body[data-ready=true]")
        expect(page.locator("html")).to_have_attribute("lang", "en")
    finally:
        page.context.close()
    assert problems == []
