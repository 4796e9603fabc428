"""A small localhost HTTP server for trying exported models in a browser: serves a folder, plus the
JS loader under /torch_wasm_backend/js/, with the cross-origin-isolation headers that threads need
(COOP: same-origin, COEP: require-corp; without them browsers give no shared memory and the loader
runs one thread). `python -m torch_wasm_backend serve DIR`. For development, not production."""
from __future__ import annotations

import functools
import http.server
import logging
from pathlib import Path

JS_DIR = Path(__file__).resolve().parent / "js"
JS_PREFIX = "/torch_wasm_backend/js/"
log = logging.getLogger("torch_wasm_backend")


class Handler(http.server.SimpleHTTPRequestHandler):
    """Serves `directory`; JS_PREFIX maps to the package's js/ folder. `isolated` adds COOP/COEP."""

    isolated = True
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".mjs": "text/javascript", ".js": "text/javascript", ".wasm": "application/wasm"}

    def translate_path(self, path):
        clean = path.split("?", 1)[0].split("#", 1)[0]
        if clean.startswith(JS_PREFIX):
            name = clean[len(JS_PREFIX):]
            if "/" not in name and (JS_DIR / name).is_file():
                return str(JS_DIR / name)
        return super().translate_path(path)

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
