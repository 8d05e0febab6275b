"""The custom-classifiers page, end to end in headless Chromium against a real server process.

A new user teaches three classes from a few photos each, classifies a new photo, restarts the
server and finds the classifier still there, giving the same answer.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image

import chromium
from classifier_images import colour_image
from imagegen import encode
from liveserver import running_server

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
                page = browser.new_page()
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
                page = browser.new_page()
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
