"""Request limits and the access log, checked on the wire against the real server process."""

from __future__ import annotations

import json
import socket
import time

import httpx

from imagegen import photo_like
from reliability.conftest import SHARED_BODY_TIMEOUT_S, SHARED_MAX_REQUEST_BYTES, ServerProcess


def _read_response(sock: socket.socket, timeout: float) -> bytes:
    """Everything the server sends until it closes the connection or `timeout` passes."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        data += chunk
        if b"\r\n\r\n" in data:
            head, _, body = data.partition(b"\r\n\r\n")
            length = [int(v) for k, v in _headers(head).items() if k == "content-length"]
            if length and len(body) >= length[0]:
                break
    return data


def _closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the server closes the connection within `within` seconds (reads and drops anything else)."""
    sock.settimeout(within)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if not sock.recv(65536):
                return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
    return False


def _headers(head: bytes) -> dict[str, str]:
    lines = head.decode("latin-1").split("\r\n")[1:]
    return {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}


def _status(data: bytes) -> int:
    return int(data.split(b" ", 2)[1])


def test_chunked_body_over_the_limit_is_refused_while_streaming(shared_server: ServerProcess) -> None:
    """No Content-Length: the server must count the chunks and answer 413 before the body ends."""
    with socket.create_connection(("127.0.0.1", shared_server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/predict HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: multipart/form-data; boundary=xyz\r\n\r\n"
        )
        part = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'
        sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
        chunk = b"%x\r\n%s\r\n" % (65536, bytes(65536))
        sent = 0
        try:
            while sent < 4 * SHARED_MAX_REQUEST_BYTES:  # never finish the body
                sock.sendall(chunk)
                sent += 65536
        except OSError:
            pass  # the server answered and closed while we were still sending: that is the point
        data = _read_response(sock, 10)
        closed = _closed_by_server(sock, 3)
    assert _status(data) == 413
    head, _, body = data.partition(b"\r\n\r\n")
    assert json.loads(body)["code"] == "payload_too_large"
    assert "x-request-id" in _headers(head)
    assert sent <= 4 * SHARED_MAX_REQUEST_BYTES
    # The rest of the body is never read: the answer says so and the server hangs up.
    assert _headers(head).get("connection") == "close"
    assert closed


def test_stalled_upload_gets_408_after_the_body_timeout(shared_server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", shared_server.port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(
            b"POST /v1/predict HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n"
            b"Content-Type: multipart/form-data; boundary=xyz\r\n\r\n--xyz\r\n"
        )
        data = _read_response(sock, SHARED_BODY_TIMEOUT_S + 20)
        elapsed = time.monotonic() - started
        closed = _closed_by_server(sock, 3)  # at once, not after the keep-alive timeout (5 s)
    assert _status(data) == 408
    head, _, body = data.partition(b"\r\n\r\n")
    assert json.loads(body)["code"] == "request_timeout"
    assert _headers(head).get("connection") == "close"
    assert closed
    assert SHARED_BODY_TIMEOUT_S - 0.5 <= elapsed < SHARED_BODY_TIMEOUT_S + 15


def test_access_log_has_a_json_line_with_the_request_id(shared_server: ServerProcess) -> None:
    request_id = f"log-check-{time.monotonic_ns()}"
    response = httpx.post(
        f"{shared_server.base_url}/v1/predict",
        files={"file": ("a.jpg", photo_like(64, 64), "image/jpeg")},
        headers={"X-Request-ID": request_id},
        timeout=60,
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == request_id
    deadline = time.monotonic() + 10
    entry = None
    while entry is None and time.monotonic() < deadline:
        for line in shared_server.log().splitlines():
            if request_id in line:
                entry = json.loads(line)  # the whole line is one JSON object
        time.sleep(0.1)
    assert entry is not None, shared_server.log()[-2000:]
    assert entry["logger"] == "resnet_api.access"
    assert entry["request_id"] == request_id
    assert entry["status"] == 200
    assert entry["method"] == "POST"
    assert entry["path"] == "/v1/predict"
    assert entry["duration_ms"] > 0


def test_head_sends_get_headers_and_no_body_on_a_kept_alive_connection(shared_server: ServerProcess) -> None:
    """A body after a HEAD's headers would be read as the next response on the same connection."""
    model = httpx.get(f"{shared_server.base_url}/v1/model", timeout=10)
    with socket.create_connection(("127.0.0.1", shared_server.port), timeout=10) as sock:
        sock.sendall(
            b"HEAD /v1/model HTTP/1.1\r\nHost: t\r\n\r\n"
            b"HEAD /readyz HTTP/1.1\r\nHost: t\r\n\r\n"
            b"GET /livez HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    responses = data.split(b"HTTP/1.1 ")[1:]
    assert [_status(b"HTTP/1.1 " + r) for r in responses] == [200, 200, 200], data[:500]
    first_head, _, first_body = responses[0].partition(b"\r\n\r\n")
    assert first_body == b""  # the next response follows the headers at once
    assert _headers(first_head)["content-length"] == str(len(model.content))
    assert responses[2].endswith(b'{"status":"ok"}')
