"""The command line: predict, openapi, weights fetch and serve, run as a user would."""

from __future__ import annotations

import functools
import http.server
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from imagegen import photo_like
from liveserver import free_port
from resnet_api.cli import main

ROOT = Path(__file__).parents[1]


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESNET_API_")}
    env["PYTHONPATH"] = str(ROOT / "src")
    return {**env, **extra}


def serve_process(port: int, *args: str, **env: str) -> subprocess.Popen[str]:
    """`resnet-api serve` on `port`, its output (stdout and stderr) on `stdout`."""
    return subprocess.Popen(
        [sys.executable, "-m", "resnet_api", "serve", "--port", str(port), *args],
        env=cli_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_predict_prints_a_table(tmp_path: Path, weights_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = tmp_path / "photo.jpg"
    image.write_bytes(photo_like())
    assert main(["predict", str(image), "--weights", str(weights_file), "--top-k", "2"]) == 0
    out = capsys.readouterr().out
    assert "photo.jpg" in out
    assert len([line for line in out.splitlines() if "%" in line]) == 2


def test_predict_json_reports_bad_files_and_fails(
    tmp_path: Path, weights_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good, bad = tmp_path / "good.png", tmp_path / "bad.jpg"
    good.write_bytes(photo_like(fmt="PNG"))
    bad.write_bytes(b"not an image")
    assert main(["predict", str(good), str(bad), "--weights", str(weights_file), "--json"]) == 1
    rows = json.loads(capsys.readouterr().out)
    assert len(rows[0]["predictions"]) == 3
    assert "not a recognised image" in rows[1]["error"]


def test_predict_warns_about_untrained_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = tmp_path / "photo.jpg"
    image.write_bytes(photo_like())
    assert main(["predict", str(image), "--weights", "random"]) == 0
    assert "UNTRAINED" in capsys.readouterr().err


def test_openapi_command_writes_the_committed_schema(tmp_path: Path) -> None:
    out = tmp_path / "openapi.json"
    assert main(["openapi", "-o", str(out)]) == 0
    assert json.loads(out.read_text()) == json.loads((ROOT / "openapi.json").read_text())


@pytest.fixture
def local_mirror(tmp_path: Path) -> Iterator[str]:
    """A loopback HTTP server holding a file that is NOT the official weights."""
    (tmp_path / "resnet18-f37072fd.pth").write_bytes(b"definitely not the official weights")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/resnet18-f37072fd.pth"
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_weights_fetch_refuses_a_file_with_the_wrong_hash(tmp_path: Path, local_mirror: str) -> None:
    target = tmp_path / "weights"
    result = subprocess.run(
        [sys.executable, "-m", "resnet_api", "weights", "fetch", "--weights-dir", str(target), "--quiet"],
        env=cli_env(RESNET_API_WEIGHTS_URL=local_mirror),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert "invalid hash value" in result.stderr
    assert "resnet-api weights fetch" in result.stderr
    assert not (target / "resnet18-f37072fd.pth").exists()


def test_serve_refuses_to_start_without_imagenet_weights(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "resnet_api", "serve", "--port", str(free_port())],
        env=cli_env(RESNET_API_WEIGHTS_DIR=str(tmp_path), RESNET_API_ALLOW_DOWNLOAD="false"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "resnet-api weights fetch" in result.stderr
    assert "RESNET_API_WEIGHTS=random" in result.stderr


def test_serve_answers_over_http_and_stops_cleanly(weights_file: Path) -> None:
    port = free_port()
    proc = serve_process(port, "--weights", str(weights_file))
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            time.sleep(0.2)
        else:
            pytest.fail("server did not become ready in 90 s")
        response = httpx.post(f"{base}/v1/predict", files={"file": ("a.jpg", photo_like(), "image/jpeg")}, timeout=30)
        assert response.status_code == 200
        assert len(response.json()["predictions"]) == 3
        assert httpx.get(f"{base}/docs", timeout=10).status_code == 200
        maps = Path(f"/proc/{proc.pid}/maps")
        if maps.exists():  # the C HTTP parser really serves (with h11 the process never loads httptools)
            assert "httptools" in maps.read_text()
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    assert "Application shutdown complete" in output


@pytest.fixture
def held_download() -> Iterator[tuple[str, threading.Event]]:
    """A loopback weights URL whose answer waits for the event, then sends bytes that are not the weights."""
    release = threading.Event()

    class Held(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            release.wait(60)
            body = b"not the official weights"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Held)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/resnet18-f37072fd.pth", release
    release.set()
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_serve_listens_while_the_model_loads_and_exits_1_when_the_load_fails(
    tmp_path: Path, held_download: tuple[str, threading.Event]
) -> None:
    url, release = held_download
    port = free_port()
    proc = serve_process(port, RESNET_API_WEIGHTS_DIR=str(tmp_path), RESNET_API_WEIGHTS_URL=url)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        live = None
        while live is None and time.monotonic() < deadline:  # the weights download is held: still loading
            try:
                live = httpx.get(f"{base}/livez", timeout=2)
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                time.sleep(0.1)
        assert live is not None, "the port opens while the model loads"
        assert live.status_code == 200
        ready = httpx.get(f"{base}/readyz", timeout=2)
        assert (ready.status_code, ready.json()["code"]) == (503, "not_ready")
        assert "resnet_api_ready 0.0" in httpx.get(f"{base}/metrics", timeout=2).text
        release.set()  # the download ends with the wrong bytes: the load fails, and the server stops
        assert proc.wait(60) == 1
        output = proc.stdout.read() if proc.stdout else ""
        assert "the model could not be loaded, the server stops" in output
        assert "resnet-api weights fetch" in output  # the fixes are named, as when the start-up was the load
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stdout:
            proc.stdout.close()


@pytest.mark.parametrize("value", ["0", "-2", "1001", "x"])
def test_predict_refuses_a_top_k_the_api_would_refuse(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["predict", "a.jpg", "--top-k", value])
    assert stopped.value.code == 2  # a usage error, before any model is loaded
    assert "--top-k" in capsys.readouterr().err


def test_a_setting_or_path_to_fix_is_one_error_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["openapi", "-o", str(tmp_path / "missing" / "openapi.json")]) == 1
    assert "resnet-api openapi: error: [Errno 2] No such file or directory" in capsys.readouterr().err
    assert main(["predict", "--weights", str(tmp_path / "missing.pth"), "a.jpg"]) == 1
    assert "resnet-api predict: error: weights file not found" in capsys.readouterr().err
    monkeypatch.setenv("RESNET_API_LOG_LEVEL", "LOUD")
    assert main(["predict", "a.jpg"]) == 1
    assert "log_level" in capsys.readouterr().err
    monkeypatch.delenv("RESNET_API_LOG_LEVEL")
    keys = tmp_path / "keys"
    keys.write_text("# no keys yet\n")
    monkeypatch.setenv("RESNET_API_API_KEYS_FILE", str(keys))
    assert main(["openapi", "-o", str(tmp_path / "openapi.json")]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"resnet-api openapi: error: {keys}: no API key in the file (every line is empty or a comment); "
        "add keys, or leave RESNET_API_API_KEYS_FILE unset to serve without"
    ]
