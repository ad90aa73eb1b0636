"""A real browser (headless Chromium over the DevTools protocol) answers one study question.

The served app is started exactly as `bench dashboard` starts it (``dashboard_command``). The
screenshot lands in ``$BENCH_SCREENSHOT_DIR`` (default: the test's temporary folder).
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
from study_sample import make_sample_runs
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


def _wait(check: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
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
            reply = json.loads(self.ws.recv(timeout=60))
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def js(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result.get("result", {}).get("value")

    def text(self) -> str:
        return self.js("document.body ? document.body.innerText : ''") or ""


@pytest.fixture()
def served(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    runs = make_sample_runs(tmp_path / "runs")
    info = create_study(runs, tmp_path / "study", questions_per_participant=2, participants=["ann"], seed=1)
    port = _free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    log = (tmp_path / "streamlit.log").open("w")
    server = subprocess.Popen(
        dashboard_command(runs, info.path, port=port, address="127.0.0.1"),
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=tmp_path,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(
            lambda: urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).status == 200, "the app server"
        )
        yield url, info
    finally:
        server.terminate()
        server.wait(timeout=20)
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
    _wait(lambda: "Question 1 of 2" in browser.text(), "the first question")
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
