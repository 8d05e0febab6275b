"""The Web UI's files: served at `/` by the app, complete in both languages, self-contained, shipped in the wheel."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import httpx
import pytest

from resnet_api.api.ui import STATIC_DIR

ROOT = Path(__file__).resolve().parents[2]


ASSETS = {
    "/app.js": "text/javascript",
    "/i18n.js": "text/javascript",
    "/focus.js": "text/javascript",
    "/classifiers.html": "text/html",
    "/classifiers.js": "text/javascript",
    "/classifiers.css": "text/css",
    "/style.css": "text/css",
    "/i18n/en.json": "application/json",
    "/i18n/zh-CN.json": "application/json",
    "/favicon.svg": "image/svg+xml",
    "/index.html": "text/html",
}


async def test_root_serves_the_page_and_its_assets(client: httpx.AsyncClient) -> None:
    response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="app.js"></script>' in response.text
    for path, media_type in ASSETS.items():
        asset = await client.get(path)
        assert asset.status_code == 200, path
        assert asset.headers["content-type"].startswith(media_type), path
        # Revalidated before each use, so a page never runs beside a script cached from an older release.
        assert asset.headers["cache-control"] == "no-cache", path
        again = await client.get(path, headers={"If-None-Match": asset.headers["etag"]})
        assert again.status_code == 304, path


async def test_ui_leaves_the_api_as_it_was(client: httpx.AsyncClient) -> None:
    wrong_method = await client.get("/v1/predict")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["code"] == "method_not_allowed"
    assert (await client.post("/nope")).status_code == 404
    assert (await client.post("/app.js")).status_code == 405
    for response in (await client.get("/nope.html"), await client.get("/../pyproject.toml")):
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
    for docs in ("/docs", "/redoc"):  # the pages and their scripts come from this server: no CDN when offline
        page = await client.get(docs)
        assert page.status_code == 200
        assert "cdn." not in page.text
        scripts = re.findall(r'src="([^"]+\.js)"', page.text)
        assert scripts
        for script in scripts:
            assert (await client.get(script)).status_code == 200
    assert (await client.get("/metrics")).status_code == 200
    assert (await client.get("/v1/model")).json()["name"] == "resnet18"
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert "/" not in paths
    assert not [p for p in paths if p.endswith((".html", ".js", ".css", ".json", ".svg"))]


def _messages(lang: str) -> dict[str, str]:
    data: dict[str, str] = json.loads((STATIC_DIR / "i18n" / f"{lang}.json").read_text(encoding="utf-8"))
    return data


def test_every_language_has_every_string_with_the_same_placeholders() -> None:
    en, zh = _messages("en"), _messages("zh-CN")
    assert set(en) == set(zh)
    for key in en:
        assert set(re.findall(r"\{\w+\}", en[key])) == set(re.findall(r"\{\w+\}", zh[key])), key
        if key != "result.image":  # "{width} × {height} {format}" reads the same in both
            assert zh[key] not in ("", en[key]), key


@pytest.mark.parametrize(("page", "script"), [("index.html", "app.js"), ("classifiers.html", "classifiers.js")])
def test_every_key_the_page_uses_is_translated(page: str, script: str) -> None:
    html = (STATIC_DIR / page).read_text(encoding="utf-8")
    js = (STATIC_DIR / script).read_text(encoding="utf-8")
    used = set(re.findall(r'data-i18n(?:-aria-label|-title|-placeholder)?="([\w.]+)"', html))
    used |= set(re.findall(r'\bt\("([\w.]+)"', js))
    used |= set(re.findall(r'"(model\.(?:notReady|offline|loading))"', js))
    assert len(used) > 40
    assert used <= set(_messages("en")), used - set(_messages("en"))


def test_pages_share_one_language_module_their_policy_allows() -> None:
    """One list of languages, one storage key and one t(): a language chosen on either page holds on the other."""
    for page, script in (("index.html", "app.js"), ("classifiers.html", "classifiers.js")):
        html = (STATIC_DIR / page).read_text(encoding="utf-8")
        assert f'<script type="module" src="{script}"></script>' in html, page
        assert re.search(r"script-src 'self'[;\"]", html), f"{page}: its CSP must allow this server's modules"
        js = (STATIC_DIR / script).read_text(encoding="utf-8")
        assert re.search(r'^import \{[^}]*\} from "\./i18n\.js";$', js, re.MULTILINE), script
        assert "localStorage" not in js, f"{script}: remembering the choice is i18n.js's job"
    shared = (STATIC_DIR / "i18n.js").read_text(encoding="utf-8")
    languages = re.search(r"LANGUAGES = \{(.*)\};", shared)
    assert languages, "i18n.js lists its languages in LANGUAGES"
    listed = set(re.findall(r'"?([\w-]+)"?: "', languages.group(1)))
    assert listed == {p.stem for p in (STATIC_DIR / "i18n").glob("*.json")}


def test_the_language_menu_is_written_once_in_i18n_js() -> None:
    """Each page holds a placeholder only; i18n.js builds the labelled menu, so the pages cannot drift apart."""
    for page in ("index.html", "classifiers.html"):
        html = (STATIC_DIR / page).read_text(encoding="utf-8")
        assert html.count("<span data-lang-menu></span>") == 1, page
        assert 'id="lang"' not in html, f"{page}: the menu's markup belongs in i18n.js"
    shared = (STATIC_DIR / "i18n.js").read_text(encoding="utf-8")
    assert 'id: "lang"' in shared
    assert 'dataset.i18n = "lang.label"' in shared, "the menu's label is translated with the page"


def test_page_loads_nothing_from_other_sites() -> None:
    for path in STATIC_DIR.rglob("*"):
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            # The SVG namespace is an identifier, never fetched.
            urls = [u for u in re.findall(r"(?:https?:)?//[\w.-]+\.\w+[^\s\"')]*", text) if "www.w3.org" not in u]
            assert urls == [], f"{path.name} refers to {urls}: the UI must work offline"


def test_wheel_package_data_ships_every_static_file() -> None:
    """setuptools globs do not cross directories: `static/*` alone would leave `static/i18n/` out of the wheel."""
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["resnet_api"]
    package = STATIC_DIR.parent
    shipped = {p for pattern in patterns for p in package.glob(pattern) if p.is_file()}
    files = {p for p in STATIC_DIR.rglob("*") if p.is_file()}
    assert files <= shipped, sorted(str(p.relative_to(package)) for p in files - shipped)


def test_every_page_names_an_icon_the_ui_ships() -> None:
    """Without one the browser asks for /favicon.ico, a 404 logged as an error in the console of every visit."""
    for page in sorted(STATIC_DIR.glob("*.html")):
        icon = re.search(r'<link rel="icon" href="([^"]+)"', page.read_text(encoding="utf-8"))
        assert icon, f"{page.name} has no <link rel=icon>"
        assert (STATIC_DIR / icon.group(1)).is_file(), f"{page.name}: {icon.group(1)} is not in static/"
