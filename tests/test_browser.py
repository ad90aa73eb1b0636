"""A real browser (headless Chromium over the DevTools protocol) answers one study question and walks the
results view of a 288-image run: tables, a filter change, the images, the drill-down, the A/B view and a
download.

The served app is started exactly as `bench dashboard` starts it (``dashboard_command``). Screenshots and
the measured timings (``timings.json``: first page after the server is up, a filter change) land in
``$BENCH_SCREENSHOT_DIR`` (default: the test's temporary folder); the timings are printed too. They are
measurements, not assertions: the design keeps performance claims out of timed tests.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from study_sample import make_benchmark_run, make_sample_runs
from websockets.sync.client import connect

from lcbench.dashboard.launch import dashboard_command
from lcbench.study import StudyDB, create_study

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
    "--window-size=1100,1900",
    "--hide-scrollbars",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


SERVER_TIMEOUT = 1800.0  # fail-safes only: on a shared machine the server imports every plugin before it answers
PAGE_TIMEOUT = 900.0


def _wait(check: Callable[[], Any], what: str, timeout: float = PAGE_TIMEOUT) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            value = check()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class Cdp:
    """A minimal DevTools-protocol client: one page, synchronous commands, events ignored."""

    def __init__(self, ws_url: str):
        self.ws = connect(ws_url, max_size=None, open_timeout=30)
        self.ids = itertools.count(1)

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.ws.recv(timeout=PAGE_TIMEOUT))
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def js(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result.get("result", {}).get("value")

    def text(self) -> str:
        return self.js("document.body ? document.body.innerText : ''") or ""


def _serve(runs: list[Path], study: Path | None, folder: Path) -> tuple[subprocess.Popen, str, Any]:
    port = _free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    log = (folder / "streamlit.log").open("w")
    server = subprocess.Popen(
        dashboard_command(runs, study, port=port, address="127.0.0.1"),
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=folder,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).status == 200, "the app server",
              timeout=SERVER_TIMEOUT)
    except BaseException:
        server.terminate()
        server.wait(timeout=60)
        log.close()
        raise
    return server, url, log


@pytest.fixture()
def served(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    runs = make_sample_runs(tmp_path / "runs")
    info = create_study(runs, tmp_path / "study", questions_per_participant=2, participants=["ann"], seed=1)
    server, url, log = _serve(runs, info.path, tmp_path)
    try:
        yield url, info
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()


@pytest.fixture()
def served_results(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    run = make_benchmark_run(tmp_path / "bench")  # 12 methods x 6 scenes x 4 seeds = 288 images, + references
    server, url, log = _serve([run], None, tmp_path)
    try:
        yield url, run
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()


@pytest.fixture()
def browser(tmp_path: Path) -> Iterator[Cdp]:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.fail(
            "headless Chromium is needed: install Debian's `chromium` package (apt-get install chromium)"
        )
    profile = tmp_path / "profile"
    proc = subprocess.Popen(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        port = int(_wait(lambda: port_file.is_file() and port_file.read_text().split("\n")[0], "Chromium"))
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
        page = next(t for t in targets if t["type"] == "page")
        cdp = Cdp(page["webSocketDebuggerUrl"])
        yield cdp
        cdp.ws.close()
    finally:
        proc.terminate()
        proc.wait(timeout=20)


NO_CHROME = """
(() => !document.querySelector('[data-testid="stMainMenu"]')
  && !document.querySelector('[data-testid="stAppDeployButton"]')
  && ![...document.querySelectorAll('button')].some(b => b.innerText.trim() === 'Deploy'))()
"""

CLICK_RATING = """
(() => {{
  const groups = [...document.querySelectorAll('[data-testid="stForm"] [role="radiogroup"]')];
  if (groups.length < 2) return false;
  const labels = groups[{group}].querySelectorAll('label');
  labels[{rating} - 1].click();
  return true;
}})()
"""


def test_browser_answers_one_question(served: tuple[str, Any], browser: Cdp, tmp_path: Path) -> None:
    url, info = served
    browser.send("Page.enable")
    browser.send("Page.navigate", url=url)
    selector = 'input[aria-label="Participant code"]'
    _wait(lambda: browser.js(f"!!document.querySelector('{selector}')"), "the participant code field")
    browser.js(f"document.querySelector('{selector}').focus()")
    browser.send("Input.insertText", text="ann")
    for kind in ("keyDown", "keyUp"):
        browser.send("Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter", windowsVirtualKeyCode=13)
    # the scale's anchors are on the page (waited for: a loaded machine renders the question in parts)
    _wait(lambda: "Question 1 of 2" in browser.text() and "1 = not at all, 5 = perfectly" in browser.text(),
          "the first question with the scale's anchors")
    assert browser.js(NO_CHROME), "participants must see neither Deploy nor the main menu"
    _wait(lambda: browser.js(CLICK_RATING.format(group=0, rating=4)), "the text-alignment rating")
    _wait(lambda: browser.js(CLICK_RATING.format(group=1, rating=2)), "the image-alignment rating")
    browser.js(
        "[...document.querySelectorAll('button')].find(b => b.innerText.includes('Submit answer')).click()"
    )
    _wait(lambda: "Question 2 of 2" in browser.text(), "the second question")
    answers = StudyDB(info.path).answers()
    assert [(a["participant"], a["text_alignment"], a["image_alignment"]) for a in answers] == [("ann", 4, 2)]
    _wait(
        lambda: browser.js("[...document.images].filter(i => i.complete && i.naturalWidth > 0).length >= 3"),
        "the images to load",
    )
    shot = base64.b64decode(browser.send("Page.captureScreenshot", format="png")["data"])
    out = Path(os.environ.get("BENCH_SCREENSHOT_DIR", tmp_path))
    out.mkdir(parents=True, exist_ok=True)
    (out / "study_question.png").write_bytes(shot)
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 10_000


FIRST_PAGE = """
(() => document.body.innerText.includes('Table 1: automatic scores per method')
  && document.body.innerText.includes('Conventions')
  && document.querySelectorAll('[data-testid="stDataFrame"]').length >= 4
  && !document.querySelector('[data-testid="stStatusWidget"] [data-testid="stStatusWidgetRunningIcon"]')
  && !document.body.innerText.includes('Running...'))()
"""
IDLE = """
(() => !document.querySelector('[data-testid="stStatusWidgetRunningIcon"]')
  && !document.body.innerText.includes('Running...'))()
"""
CLICK_TEXT = """
(() => {{
  const el = [...document.querySelectorAll('{selector}')].find(e => e.innerText.trim() === {text!r});
  if (!el) return false;
  el.click();
  return true;
}})()
"""


def _shot(browser: Cdp, out: Path, name: str) -> Path:
    shot = base64.b64decode(browser.send("Page.captureScreenshot", format="png", captureBeyondViewport=False)["data"])
    path = out / name
    path.write_bytes(shot)
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 10_000
    return path


def _click_text(browser: Cdp, selector: str, text: str, what: str) -> None:
    _wait(lambda: browser.js(CLICK_TEXT.format(selector=selector, text=text)), what)


def test_browser_results_views(served_results: tuple[str, Path], browser: Cdp, tmp_path: Path) -> None:
    url, run = served_results
    out = Path(os.environ.get("BENCH_SCREENSHOT_DIR", tmp_path))
    out.mkdir(parents=True, exist_ok=True)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    browser.send("Page.enable")
    try:
        browser.send("Browser.setDownloadBehavior", behavior="allow", downloadPath=str(downloads))
    except RuntimeError:
        browser.send("Page.setDownloadBehavior", behavior="allow", downloadPath=str(downloads))
    timings: dict[str, float] = {}

    # 1. the first page (Table 1, Table 2, calibration, conventions) of a 288-image run, server already up
    started = time.monotonic()
    browser.send("Page.navigate", url=url)
    _wait(lambda: browser.js(FIRST_PAGE), "the first page")
    timings["first_page_s"] = time.monotonic() - started
    text = browser.text()
    assert "408 of 408 images pass the filters" in text and "Table 2: ablation of LoRA-Composer" in text
    assert browser.js(NO_CHROME)
    _shot(browser, out, "results_tables.png")

    # 2. a filter change: drop the last selected style (real) with Backspace in the Style filter
    started = time.monotonic()
    browser.js("""(() => { const box = [...document.querySelectorAll('[data-testid="stMultiSelect"]')]
        .find(e => e.innerText.startsWith('Style')); box.querySelector('input').focus(); return true; })()""")
    for kind in ("keyDown", "keyUp"):
        browser.send("Input.dispatchKeyEvent", type=kind, key="Backspace", code="Backspace", windowsVirtualKeyCode=8)
    _wait(lambda: "136 of 408 images pass the filters" in browser.text() and browser.js(FIRST_PAGE),
          "the filtered tables")  # anime scenes: 2 of 6, so 17 rows x 2 scenes x 4 seeds
    timings["filter_change_s"] = time.monotonic() - started
    _shot(browser, out, "results_filtered.png")

    # 3. the images: lossless PNG at native resolution times an integer zoom, pixelated, never smoothed
    _click_text(browser, '[data-testid="stRadio"] label', "Images", "the Images section")
    _wait(lambda: browser.js("[...document.images].filter(i => i.src.includes('/media/') && i.complete"
                             " && i.naturalWidth > 0).length >= 17") and browser.js(IDLE), "the gallery")
    sizes = browser.js("[...document.images].filter(i => i.src.includes('/media/')).map(i => [i.naturalWidth,"
                       " i.naturalHeight, getComputedStyle(i).imageRendering])")
    assert sizes and all(w == 192 and h == 192 and r == "pixelated" for w, h, r in sizes), sizes
    kinds = browser.js("Promise.all([...document.images].filter(i => i.src.includes('/media/')).slice(0, 3)"
                       ".map(i => fetch(i.src).then(r => r.headers.get('content-type'))))")
    assert kinds == ["image/png"] * 3
    _shot(browser, out, "results_gallery.png")

    # 4. the drill-down of one image: enlarged, with its record and the run's manifest
    _click_text(browser, "button", "Details", "a Details button")
    _wait(lambda: "Drill-down:" in browser.text() and browser.js(IDLE), "the drill-down")
    text = browser.text()
    assert "git revision" in text and "Run manifest" in text and "Prompt:" in text
    _shot(browser, out, "results_drilldown.png")
    _click_text(browser, "button", "Close the drill-down", "the close button")
    _wait(lambda: "Drill-down:" not in browser.text() and browser.js(IDLE), "the drill-down to close")

    # 5. A/B: two methods on one scene and seed
    _click_text(browser, '[data-testid="stRadio"] label', "A/B", "the A/B section")
    ab_scores = "document.querySelectorAll('[data-testid=\"stDataFrame\"]').length >= 1"
    _wait(lambda: "A: " in browser.text() and "B: " in browser.text() and browser.js(IDLE)
          and ("B - A" in browser.text() or browser.js(ab_scores)), "the A/B view with its score difference")
    _shot(browser, out, "results_ab.png")

    # 6. a download: Table 1 as CSV
    _click_text(browser, '[data-testid="stRadio"] label', "Tables", "the Tables section")
    _wait(lambda: browser.js(FIRST_PAGE), "the tables again")
    _click_text(browser, "button", "table1: CSV", "the Table 1 CSV button")
    target = downloads / "table1.csv"
    _wait(lambda: target.is_file() and target.stat().st_size > 0, "the downloaded table1.csv")
    header = target.read_text().splitlines()[0]
    assert header.startswith("method,type,random_weights,n,Anime-I,Anime-I ci95")

    (out / "timings.json").write_text(json.dumps(timings, indent=2))
    print(f"dashboard timings on this machine: {timings}")
