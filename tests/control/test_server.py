"""The control plane's HTTP server: a real ThreadingHTTPServer on 127.0.0.1, driven with http.client."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Iterator

import pytest

from streamer.control.server import (
    Guard,
    HttpError,
    HttpServer,
    Request,
    Response,
    is_loopback,
    parse_address,
)
from streamer.errors import ConfigError

TIMEOUT_S = 10.0


def call(server: HttpServer, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=TIMEOUT_S)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


@pytest.fixture
def server() -> Iterator[HttpServer]:
    srv = HttpServer("127.0.0.1", 0)
    seen: list[Request] = []

    def echo(request: Request) -> Response:
        seen.append(request)
        return Response.json({"params": request.params, "query": request.query, "client": request.client})

    def post(request: Request) -> Response:
        return Response.json({"got": request.json()}, 201)

    def crash(request: Request) -> Response:
        raise RuntimeError("a bug in a handler")

    def stream(request: Request) -> Response:
        return Response(200, (f"chunk {i}\n".encode() for i in range(3)), "text/plain")

    srv.routes.add("GET", "/things/{name}", echo)
    srv.routes.add("DELETE", "/things/{name}", echo)
    srv.routes.add("POST", "/things", post)
    srv.routes.add("GET", "/crash", crash)
    srv.routes.add("GET", "/stream", stream)
    with srv:
        yield srv


def test_addresses_parse_and_bad_ones_are_one_line_errors() -> None:
    assert parse_address("none") is None and parse_address("") is None and parse_address(" off ") is None
    assert parse_address("8090") == ("127.0.0.1", 8090)
    assert parse_address("0.0.0.0:80") == ("0.0.0.0", 80)
    assert parse_address("[::1]:0") == ("::1", 0)
    for bad in ("host:", ":8090", "x:99999", "a b:1", "127.0.0.1:port", "user@h:1"):
        with pytest.raises(ConfigError, match="--http: bad address") as err:
            parse_address(bad)
        assert "\n" not in str(err.value) and "HOST:PORT" in str(err.value)
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.3.4.5", "::1", "localhost"))
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.10") and not is_loopback("example.com")


def test_routes_match_segments_and_answer_404_and_405(server: HttpServer) -> None:
    status, _, body = call(server, "GET", "/things/a%20b?x=1&x=2")
    assert status == 200
    assert json.loads(body) == {"params": {"name": "a b"}, "query": {"x": ["1", "2"]}, "client": "127.0.0.1"}
    status, _, body = call(server, "GET", "/nothing/here")
    assert status == 404 and json.loads(body)["error"].startswith("no such endpoint: /nothing/here")
    status, headers, body = call(server, "PUT", "/things/a")
    assert status == 405 and headers["allow"] == "DELETE, GET"
    with pytest.raises(ValueError, match="already routed"):
        server.routes.add("GET", "/things/{other}", lambda r: Response(200))


def test_json_bodies_are_checked(server: HttpServer) -> None:
    ok = call(server, "POST", "/things", b'{"a": 1}', {"Content-Type": "application/json"})
    assert ok[0] == 201 and json.loads(ok[2]) == {"got": {"a": 1}}
    status, _, body = call(server, "POST", "/things", b'{"a": ', {"Content-Type": "application/json"})
    assert status == 400 and json.loads(body)["error"].startswith("malformed JSON body")
    # text/plain is what a web page may send cross-site without a preflight: refused
    status, _, body = call(server, "POST", "/things", b'{"a": 1}', {"Content-Type": "text/plain"})
    assert status == 415 and "application/json" in json.loads(body)["error"]
    # an announced body over the limit is refused before it is read (sent raw: http.client would send it)
    with socket.create_connection((server.host, server.port), timeout=TIMEOUT_S) as raw:
        raw.sendall(b"POST /things HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 2000000\r\n\r\n")
        answer = raw.makefile("rb").read()
    assert answer.startswith(b"HTTP/1.1 413 ") and b"request body of 2000000 bytes is over 1048576" in answer


def test_a_failing_handler_is_a_500_with_one_line_and_the_server_keeps_serving(server: HttpServer) -> None:
    status, _, body = call(server, "GET", "/crash")
    assert status == 500
    error = json.loads(body)["error"]
    assert error.startswith("internal error: RuntimeError: a bug in a handler") and "\n" not in error
    assert call(server, "GET", "/things/x")[0] == 200


def test_a_streamed_body_arrives_whole_and_head_has_none(server: HttpServer) -> None:
    status, headers, body = call(server, "GET", "/stream")
    assert status == 200 and body == b"chunk 0\nchunk 1\nchunk 2\n" and headers["connection"] == "close"
    status, headers, body = call(server, "HEAD", "/things/x")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 0


def test_keep_alive_connections_serve_several_requests(server: HttpServer) -> None:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=TIMEOUT_S)
    try:
        for i in range(3):
            conn.request("GET", f"/things/{i}")
            resp = conn.getresponse()
            assert resp.status == 200 and json.loads(resp.read())["params"] == {"name": str(i)}
    finally:
        conn.close()


def test_a_token_guards_mutating_routes_only() -> None:
    srv = HttpServer("127.0.0.1", 0, Guard("127.0.0.1", "s3cret"))
    srv.routes.add("GET", "/x", lambda r: Response.json({}))
    srv.routes.add("DELETE", "/x", lambda r: Response.json({"deleted": True}))
    with srv:
        assert call(srv, "GET", "/x")[0] == 200
        status, headers, body = call(srv, "DELETE", "/x")
        assert status == 401 and headers["www-authenticate"].startswith("Bearer")
        assert "needs the control plane's token" in json.loads(body)["error"]
        status, _, body = call(srv, "DELETE", "/x", headers={"Authorization": "Bearer wrong"})
        assert status == 401 and "the one given is wrong" in json.loads(body)["error"]
        assert call(srv, "DELETE", "/x", headers={"Authorization": "Bearer s3cret"})[0] == 200


def test_off_loopback_without_a_token_refuses_changes() -> None:
    """Tests bind loopback only, so the off-loopback rule is checked on the guard itself."""
    request = Request("POST", "/sources", {}, {}, http.client.HTTPMessage(), b"{}")
    with pytest.raises(HttpError) as err:
        Guard("0.0.0.0").check(request)
    assert err.value.status == 401 and "beyond this machine" in str(err.value)
    assert not Guard("192.168.1.20").open_to_changes and Guard("192.168.1.20", "t").open_to_changes
    Guard("127.0.0.1").check(request)  # no Host header: allowed on loopback


def test_on_loopback_a_foreign_host_header_is_refused(server: HttpServer) -> None:
    """A web page whose name was rebound to 127.0.0.1 sends its own name as Host: refused."""
    status, _, body = call(server, "DELETE", "/things/a", headers={"Host": "evil.example:80"})
    assert status == 403 and "Host 'evil.example:80'" in json.loads(body)["error"]
    assert call(server, "DELETE", "/things/a", headers={"Host": f"localhost:{server.port}"})[0] == 200
    assert call(server, "GET", "/things/a", headers={"Host": "evil.example"})[0] == 200  # reads are open


def test_a_port_in_use_is_a_one_line_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"--http: cannot listen on 127.0.0.1:{port}: .*in use") as err:
            HttpServer("127.0.0.1", port).start()
        assert "\n" not in str(err.value)


def test_concurrent_requests_are_served_in_parallel(server: HttpServer) -> None:
    release = threading.Event()
    entered = threading.Barrier(3, timeout=TIMEOUT_S)

    def slow(request: Request) -> Response:
        entered.wait()  # three requests inside their handlers at once, or BrokenBarrierError
        release.wait(TIMEOUT_S)
        return Response.json({"ok": True})

    server.routes.add("GET", "/slow", slow)
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(call(server, "GET", "/slow")[0]))
               for _ in range(2)]
    for t in threads:
        t.start()
    entered.wait()
    release.set()
    for t in threads:
        t.join(TIMEOUT_S)
    assert results == [200, 200]
