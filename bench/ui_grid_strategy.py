"""Measure, inside headless Chromium, what the Web UI's grid should use: one batch request or parallel singles.

Starts `resnet-api serve` on a free loopback port (untrained weights: the timing does not depend on them), opens
the page and times, with `fetch` from the page itself: one image (round trip), 8 images through
`POST /v1/predict/batch`, and 8 parallel `POST /v1/predict` (time to the first and to the last answer).
Prints the medians as JSON and writes them to bench/results/ui_grid_strategy.json.

    .venv/bin/python bench/ui_grid_strategy.py --reps 15
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import chromium  # noqa: E402
from imagegen import photo_like  # noqa: E402
from liveserver import running_server  # noqa: E402

MEASURE_JS = """async ({images, reps}) => {
  const blobs = images.map((b) => new Blob([Uint8Array.from(atob(b), (c) => c.charCodeAt(0))], {type: "image/jpeg"}));
  const single = async (blob, i) => {
    const form = new FormData();
    form.append("file", blob, `img${i}.jpg`);
    const r = await fetch("v1/predict", {method: "POST", body: form});
    if (!r.ok) throw new Error(`predict: HTTP ${r.status}`);
    return r.json();
  };
  const batch = async () => {
    const form = new FormData();
    blobs.forEach((b, i) => form.append("files", b, `img${i}.jpg`));
    const r = await fetch("v1/predict/batch", {method: "POST", body: form});
    if (!r.ok) throw new Error(`batch: HTTP ${r.status}`);
    return r.json();
  };
  const out = {one: [], batch8: [], parallel8_first: [], parallel8: []};
  await single(blobs[0], 0);  // warm the connection and the model
  for (let k = 0; k < reps; k++) {
    let t = performance.now();
    await single(blobs[k % blobs.length], k);
    out.one.push(performance.now() - t);
    t = performance.now();
    await batch();
    out.batch8.push(performance.now() - t);
    t = performance.now();
    let first = null;
    await Promise.all(blobs.map((b, i) => single(b, i).then(() => { first ??= performance.now() - t; })));
    out.parallel8.push(performance.now() - t);
    out.parallel8_first.push(first);
  }
  return out;
}"""


def median(values: list[float]) -> float:
    ordered = sorted(values)
    return round(ordered[len(ordered) // 2], 1)


def main() -> int:
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--images", type=int, default=8)
    args = parser.parse_args()

    log = Path(tempfile.mkdtemp(prefix="ui-grid-")) / "server.log"
    with running_server("random", log, log_level="warning") as server, sync_playwright() as pw:
        images = [base64.b64encode(photo_like(640, 480, seed=i)).decode() for i in range(args.images)]
        browser = chromium.launch(pw)
        page = browser.new_page()
        page.goto(server.base_url + "/")
        raw = page.evaluate(MEASURE_JS, {"images": images, "reps": args.reps})
        browser.close()
    result = {
        "images": args.images,
        "reps": args.reps,
        "cpus": os.cpu_count(),
        "median_ms": {name: median(values) for name, values in raw.items()},
        # Paired per repetition, so machine noise that hits both alike cancels out.
        "batch_faster_in_reps": sum(b < p for b, p in zip(raw["batch8"], raw["parallel8"], strict=True)),
        "median_parallel_minus_batch_ms": median([p - b for b, p in zip(raw["batch8"], raw["parallel8"], strict=True)]),
    }
    print(json.dumps(result, indent=2))
    out = ROOT / "bench" / "results" / "ui_grid_strategy.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**result, "raw_ms": raw}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
