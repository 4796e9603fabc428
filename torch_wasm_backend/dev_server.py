"""A small localhost HTTP server for trying exported models in a browser: serves one explicit
folder, plus the JS loader under /torch_wasm_backend/js/, with the cross-origin-isolation headers
that threads need (COOP: same-origin, COEP: require-corp; without them browsers give no shared
memory and the loader runs one thread). `python -m torch_wasm_backend serve DIR`. For development,
not production.

It serves only what it is told to: files inside the folder (symlinks are resolved and must stay
inside), never a path with a component starting with '.' (.git, .env, ...), never a directory
listing (a folder gives its index.html or 404); requests whose Host is not localhost / 127.0.0.1 /
[::1] get 403 (a web page cannot read the folder through DNS rebinding); an idle connection is
closed after `timeout` seconds."""
from __future__ import annotations

import functools
import http.server
import logging
import re
import urllib.parse
from http import HTTPStatus
from pathlib import Path

JS_DIR = Path(__file__).resolve().parent / "js"
JS_PREFIX = "/torch_wasm_backend/js/"
LOCAL_HOST = re.compile(r"(localhost|127\.0\.0\.1|\[::1\])(:\d{1,5})?", re.IGNORECASE)
log = logging.getLogger("torch_wasm_backend")


def _hidden(parts) -> bool:
    return any(p.startswith(".") for p in parts)


class Handler(http.server.SimpleHTTPRequestHandler):
    """Serves `directory`; JS_PREFIX maps to the package's js/ folder. `isolated` adds COOP/COEP."""

    isolated = True
    timeout = 10  # seconds an idle connection may hold its thread
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".mjs": "text/javascript", ".js": "text/javascript", ".wasm": "application/wasm"}

    def send_head(self):
        if not LOCAL_HOST.fullmatch(self.headers.get("Host", "")):
            self.send_error(HTTPStatus.FORBIDDEN, "Host must be localhost, 127.0.0.1 or [::1]")
            return None
        self._target = self._resolve(self.path)
        if self._target is None:
            self.send_error(HTTPStatus.NOT_FOUND, "File not found")
            return None
        return super().send_head()

    def translate_path(self, path):
        return str(self._target)  # checked by _resolve in send_head

    def _resolve(self, url: str) -> Path | None:
        """The file (or, for a folder URL without its trailing '/', the folder: the base class
        redirects) that `url` may serve, or None."""
        path = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
        if "\0" in path or "\\" in path:
            return None
        parts = [p for p in path.split("/") if p]
        if _hidden(parts):   # also rejects '..'
            return None
        if path.startswith(JS_PREFIX):
            name = path[len(JS_PREFIX):]
            return JS_DIR / name if "/" not in name and (JS_DIR / name).is_file() else None
        root = Path(self.directory).resolve()
        target = root.joinpath(*parts).resolve()   # follows symlinks: checked below
        if target.is_dir() and path.endswith("/"):
            target = (target / "index.html").resolve()
        if not target.is_relative_to(root) or _hidden(target.relative_to(root).parts):
            return None
        if target.is_dir():
            return None if path.endswith("/") else target
        return target if target.is_file() else None

    def list_directory(self, path):
        self.send_error(HTTPStatus.NOT_FOUND, "File not found")  # never list a folder
        return None

    def end_headers(self):
        if self.isolated:
            self.send_header("Cross-Origin-Opener-Policy", "same-origin")
            self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, fmt, *args):
        log.debug("dev server: " + fmt, *args)


def make_server(directory, port: int = 8000, isolated: bool = True, handler=Handler,
                host: str = "127.0.0.1") -> http.server.ThreadingHTTPServer:
    directory = Path(directory)
    if not directory.is_dir():
        raise NotADirectoryError(f"{directory} is not a folder; give the folder to serve, e.g. "
                                 "`python -m torch_wasm_backend serve examples/browser`")
    cls = type("BoundHandler", (handler,), {"isolated": isolated})
    return http.server.ThreadingHTTPServer((host, port), functools.partial(cls, directory=str(directory)))


def serve(directory, port: int = 8000, isolated: bool = True) -> None:
    server = make_server(directory, port, isolated)
    print(f"serving {Path(directory).resolve()} at http://127.0.0.1:{server.server_address[1]}/ "
          f"(loader at {JS_PREFIX}loader.mjs; cross-origin isolated: {isolated}); Ctrl-C stops")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
