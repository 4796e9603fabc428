"""The `serve` dev server serves only the folder it is given (issue 16 part 6): files inside it,
no dotfiles, no symlinks leaving it, no directory listings, only localhost Host headers (DNS
rebinding), idle connections closed. Real HTTP requests over loopback, each bounded by a socket
timeout."""
import http.client
import socket
import threading
import time

import pytest

from torch_wasm_backend import __main__ as cli
from torch_wasm_backend.dev_server import Handler, make_server

IDLE_TIMEOUT = 0.5


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("serve")
    root = tmp_path / "site"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "index.html").write_text("<p>index</p>")
    (root / "model.wasm").write_bytes(b"\0asm\1\0\0\0")
    (root / "sub" / "deeper" / "index.html").write_text("deeper index")
    (root / "sub" / "listed-if-listing.txt").write_text("x")
    (root / ".env").write_text("SECRET=1")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[core]")
    (root / "sub" / ".hidden.txt").write_text("hidden")
    (tmp_path / "outside.txt").write_text("outside secret")
    (root / "escape.txt").symlink_to(tmp_path / "outside.txt")
    (root / "escape_dir").symlink_to(tmp_path)
    (root / "alias.wasm").symlink_to(root / "model.wasm")       # stays inside: allowed
    (root / "to_dotfile.txt").symlink_to(root / ".env")          # inside, but a dotfile
    return root


@pytest.fixture(scope="module")
def server(site):
    handler = type("ShortIdle", (Handler,), {"timeout": IDLE_TIMEOUT})
    srv = make_server(site, 0, True, handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=10)


def get(port, path, host="127.0.0.1", method="GET"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest(method, path, skip_host=True)
        if host is not None:
            conn.putheader("Host", host)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.read(), dict(resp.getheaders())
    finally:
        conn.close()


def test_serves_files_and_index_with_isolation_headers(server):
    status, body, headers = get(server, "/")
    assert status == 200 and body == b"<p>index</p>"
    assert headers["Cross-Origin-Opener-Policy"] == "same-origin"
    assert headers["Cross-Origin-Embedder-Policy"] == "require-corp"
    status, body, headers = get(server, "/model.wasm?v=1")
    assert status == 200 and body == b"\0asm\1\0\0\0" and headers["Content-type"] == "application/wasm"
    assert get(server, "/alias.wasm")[0] == 200
    assert get(server, "/sub/deeper/")[1] == b"deeper index"
    assert get(server, "/sub/deeper")[0] == 301            # then the index, as a browser would
    status, body, headers = get(server, "/torch_wasm_backend/js/loader.mjs")
    assert status == 200 and b"loadModel" in body and headers["Content-type"] == "text/javascript"
    assert get(server, "/", method="HEAD")[0] == 200


@pytest.mark.parametrize("path", [
    "/sub/", "/escape_dir/", "/.git/",                                      # no listings
    "/.env", "/%2eenv", "/.git/config", "/sub/.hidden.txt", "/to_dotfile.txt",  # no dotfiles
    "/../outside.txt", "/%2e%2e/outside.txt", "/sub/%2e%2e/%2e%2e/outside.txt",  # no escapes
    "/escape.txt", "/escape_dir/outside.txt", "/escape_dir",                  # no symlinks out
    "/torch_wasm_backend/js/../../../outside.txt", "/torch_wasm_backend/js/%2e%2e/__init__.py",
    "/torch_wasm_backend/js/", "/missing.txt", "/model.wasm%00.txt", "/..%5coutside.txt",
])
def test_refuses_what_it_was_not_told_to_serve(server, path):
    status, body, _ = get(server, path)
    assert status in (403, 404), (path, status)
    assert b"outside secret" not in body and b"SECRET" not in body and b"listed-if-listing" not in body


@pytest.mark.parametrize("host", ["localhost", "localhost:8000", "LOCALHOST", "127.0.0.1:1",
                                  "[::1]", "[::1]:8000"])
def test_local_host_headers_are_accepted(server, host):
    assert get(server, "/model.wasm", host=host)[0] == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "localhost.evil.example",
                                  "127.0.0.1.evil.example", "127.0.0.2", "0.0.0.0", "", None,
                                  "localhost:8000@evil.example", "[::1]x"])
def test_other_host_headers_are_forbidden(server, host):
    status, body, _ = get(server, "/model.wasm", host=host)
    assert status == 403 and b"Host must be localhost" in body


def test_idle_connections_are_closed(server):
    with socket.create_connection(("127.0.0.1", server), timeout=10) as sock:
        start = time.monotonic()
        assert sock.recv(1) == b""          # the server hangs up, having read no request
        assert time.monotonic() - start < 10 * IDLE_TIMEOUT + 5  # bound on a hang, not a speed check


def test_cli_needs_an_existing_folder(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["serve"])
    assert info.value.code == 2 and "directory" in capsys.readouterr().err
    assert cli.main(["serve", str(tmp_path / "missing"), "--port", "0"]) == 1
    assert "is not a folder" in capsys.readouterr().err
