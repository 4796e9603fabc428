"""A real headless Chromium (Debian `chromium`) opens a page from a localhost server, loads the same
exported files with the same JS loader, and POSTs its outputs back; they must match eager.
With COOP/COEP headers the loader uses 2 threads on shared memory; without them it falls back to
1 thread and says why on the console. The isolated run loads the npm package's copy of the loader
(unpacked from its `npm pack` tarball), the other the dev server's. Nothing here downloads a browser."""
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
import torch

import torch_wasm_backend
from torch_wasm_backend import wasm_file
from torch_wasm_backend.dev_server import Handler, make_server
from helpers import MATMUL

PAGE = Path(__file__).parent / "browser" / "run.html"
CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
if CHROMIUM is None and os.environ.get("CI"):
    raise RuntimeError("chromium is missing on CI: scripts/setup.sh installs the Debian package 'chromium'")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (scripts/setup.sh installs it)")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-quic", "--disable-extensions",
         "--disable-dev-shm-usage"]


class _ReportHandler(Handler):
    reports: queue.Queue = None  # set per server

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(204)
        self.end_headers()
        self.reports.put(json.loads(body))


def run_page(site: Path, query: dict, isolated: bool, tmp_path, page: str = "run.html") -> dict:
    """Opens `page` of `site` in headless chromium and returns the JSON it POSTs back."""
    reports = queue.Queue()
    handler = type("H", (_ReportHandler,), {"reports": reports})
    server = make_server(site, 0, isolated, handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/{page}?{urllib.parse.urlencode(query)}"
    browser = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", url],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        return reports.get(timeout=180)  # a bound on a hang, not a speed check
    except queue.Empty:
        browser.kill()
        raise AssertionError("the page sent no report within 180 s; chromium stderr:\n"
                             + browser.stderr.read().decode(errors="replace")[-3000:])
    finally:
        browser.terminate()
        try:
            browser.wait(timeout=20)
        except subprocess.TimeoutExpired:
            browser.kill()
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def site(exported, tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    shutil.copy(PAGE, root / "run.html")
    shutil.copy(Path(torch_wasm_backend.__file__).parent / "kernels.wasm", root / "foreign.wasm")
    cases = []
    for name, e in exported.items():
        shutil.copy(e.path, root / f"{name}.wasm")
        (root / f"{name}.x.f32").write_bytes(e.x.numpy().astype("<f4").tobytes())
        cases.append({"model": f"/{name}.wasm", "input": f"/{name}.x.f32",
                      "name": wasm_file.read_metadata(e.path)["inputs"][0]["name"]})
    return root, cases


def _check_outputs(report, exported, threads):
    assert "fatal" not in report, report["fatal"]
    for name, e in exported.items():
        r = report["results"][f"/{name}.wasm"]
        assert r["threads"] == threads and r["same"]
        got = torch.tensor(r["output"], dtype=torch.float32).reshape(e.expected.shape)
        torch.testing.assert_close(got, e.expected, **MATMUL)


def test_chromium_cross_origin_isolated_two_threads(site, exported, npm_tarball, tmp_path):
    """Runs the loader of the npm package (the tarball `npm pack` made, unpacked into the site), which
    must bring every module and Worker script it loads."""
    root, cases = site
    with tarfile.open(npm_tarball) as tar:
        tar.extractall(root / "npm", filter="data")
    report = run_page(root, {"cases": json.dumps(cases), "threads": 2, "errors": 1, "foreign": "/foreign.wasm",
                             "loader": "/npm/package/loader.mjs"}, True, tmp_path)
    assert report["crossOriginIsolated"] is True
    _check_outputs(report, exported, threads=2)
    assert report["warnings"] == []
    err = report["errors"]
    assert err["wrong_name"].startswith("ModelInputError: unknown input name 'nope'")
    assert "got Float64Array, the model takes float32" in err["wrong_dtype"]
    assert "332 values, the model takes shape [9,37] = 333 values" in err["wrong_length"]
    assert "ModelFileError" in err["truncated"] and "truncated" in err["truncated"]
    assert "not a torch_wasm_backend export" in err["foreign"]


def test_chromium_without_isolation_falls_back_to_one_thread(site, exported, tmp_path):
    root, cases = site
    report = run_page(root, {"cases": json.dumps(cases), "threads": 2}, False, tmp_path)
    assert report["crossOriginIsolated"] is False
    _check_outputs(report, exported, threads=1)
    assert all(not r["sharedMemory"] for r in report["results"].values())
    assert any("not cross-origin isolated" in w and "Cross-Origin-Embedder-Policy" in w for w in report["warnings"])


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "browser"


def test_example_page(tmp_path):
    """examples/browser as the README runs it: export_model.py, then index.html from the dev server;
    the page logs its difference to eager on the console (read from chromium's log)."""
    site = tmp_path / "site"
    site.mkdir()
    exported = subprocess.run([sys.executable, str(EXAMPLE / "export_model.py"), str(site)], capture_output=True, text=True)
    assert exported.returncode == 0, exported.stderr[-3000:]  # the cause of a failure, not only its exit code
    shutil.copy(EXAMPLE / "index.html", site / "index.html")
    server = make_server(site, 0, True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    log_file = tmp_path / "chromium.log"
    with open(log_file, "wb") as log:
        browser = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr",
                            "--v=0", f"http://127.0.0.1:{server.server_address[1]}/"], stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 120  # a bound on a hang, not a speed check
        while time.monotonic() < deadline and "max difference to PyTorch eager" not in log_file.read_text(errors="replace"):
            time.sleep(0.2)
    finally:
        browser.terminate()
        browser.wait(timeout=20)
        server.shutdown()
        server.server_close()
    text = log_file.read_text(errors="replace")
    assert "threads: 2, cross-origin isolated: true" in text, text[-3000:]
    diff = float(re.search(r"max difference to PyTorch eager: ([0-9.e+-]+)", text).group(1))
    assert diff <= 1e-4
