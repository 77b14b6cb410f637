"""The HTML leaderboard in a real headless browser (Debian ``chromium``): no script from a
result file runs, hostile strings show as text, the page's own script and style pass its CSP,
and a click on a column header sorts the table.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: NUL-ended
JSON on file descriptors 3 and 4), so nothing but the standard library is needed and nothing
listens on a port. Without chromium the test is skipped, except under CI (``CI`` set), where a
skip would hide a broken page: there it fails.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from embench.leaderboard_build import build
from tests.leaderboard_fixtures import make_run, new_board, probe_result, write_run
from tests.test_leaderboard_site import HOSTILE, hostile_run


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
        pytest.fail("chromium is not installed, and CI must run the browser test: "
                    "apt-get install chromium (see .ci/run)")
    pytest.skip("chromium is not installed (Debian: apt-get install chromium)")


class Browser:
    """A minimal DevTools-protocol client over chromium's debugging pipe."""

    def __init__(self, exe: str, profile: Path):
        to_child, self._w = os.pipe()
        self._r, from_child = os.pipe()

        def fds() -> None:  # the child reads commands on fd 3 and answers on fd 4
            a, b = os.dup(to_child), os.dup(from_child)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
             f"--user-data-dir={profile}", "--no-first-run", "--no-default-browser-check",
             "--window-size=1280,1600", "about:blank"],
            preexec_fn=fds, close_fds=False, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        os.close(to_child)
        os.close(from_child)
        self._buf, self._id, self.events, self.session = b"", 0, [], None

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._r], [], [], left)[0]:
                raise TimeoutError("chromium did not answer")
            chunk = os.read(self._r, 1 << 16)
            if not chunk:
                raise EOFError("chromium closed the pipe")
            self._buf += chunk
        message, self._buf = self._buf.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, timeout: float = 30.0, **params) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            msg["sessionId"] = self.session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, event: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for i, seen in enumerate(self.events):
                if seen.get("method") == event:
                    return self.events.pop(i)
            self.events.append(self._read(deadline))

    def js(self, expression: str):
        out = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in out, out
        return out["result"].get("value")

    def click(self, selector: str) -> None:
        """A real mouse click (pressed and released) in the middle of the element."""
        box = self.js(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); "
                      "e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect(); "
                      "return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1],
                      button="left", clickCount=1)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)
        os.close(self._w)
        os.close(self._r)


@pytest.fixture
def browser(tmp_path):
    exe = _chromium()
    b = Browser(exe, tmp_path / "profile")
    try:
        target = b.call("Target.createTarget", url="about:blank")["targetId"]
        b.session = b.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            b.call(f"{domain}.enable")
        yield b
    finally:
        b.close()


def _encoders(b: Browser, table: str) -> list[str]:
    return b.js(f"[...document.querySelectorAll('{table} tbody tr')]"
                ".map(tr => tr.cells[1].textContent)")


def test_page_in_headless_chromium(browser, tmp_path):
    board = new_board(tmp_path)
    write_run(board / "results" / "evil.json", hostile_run())
    write_run(board / "results" / "more.json", make_run(
        [probe_result("mert-v1-95m", (80.0, 82.0, 81.0)), probe_result("zz", (20.0, 25.0))],
        run_id="more-run"))
    build(board)
    browser.call("Page.navigate", url=(board / "index.html").resolve().as_uri())
    browser.wait_for("Page.loadEventFired")
    time.sleep(0.3)  # let any (hostile) error handler that could fire, fire

    assert browser.js("document.title") == "embench leaderboard"
    assert browser.js("window.__pwned === undefined")
    assert browser.js("document.scripts.length") == 1
    assert browser.js("document.images.length") == 0
    assert browser.js("[...document.querySelectorAll('*')].every(e => "
                      "![...e.attributes].some(a => a.name.startsWith('on')))")
    hrefs = browser.js("[...document.links].map(a => a.href)")
    assert hrefs and all(h.startswith(("https:", "http:", "file:")) for h in hrefs), hrefs
    text = browser.js("document.body.innerText")
    for hostile in HOSTILE[:4]:
        assert hostile in text
    # the page's own style and sort script ran: the CSP hashes match, nothing was blocked
    assert browser.js("getComputedStyle(document.querySelector('th')).cursor") == "pointer"
    blocked = [e for e in browser.events if e.get("method") == "Log.entryAdded"
               and "Content Security Policy" in e["params"]["entry"].get("text", "")]
    assert blocked == []

    table = browser.js("[...document.querySelectorAll('table.sortable tbody tr td:nth-child(2)')]"
                       ".find(td => td.textContent.includes('mert-v1-95m'))"
                       ".closest('section').id")  # the table of the run "more-run"
    sel = f"#{table} table.sortable"
    assert browser.js(f"document.querySelector('{sel} thead th:nth-child(3)').textContent")\
        .startswith("accuracy")
    best_first = _encoders(browser, sel)
    score = f"{sel} thead th:nth-child(3)"
    browser.click(score)
    assert browser.js(f"document.querySelector('{score}').getAttribute('aria-sort')") \
        == "ascending"
    ascending = _encoders(browser, sel)
    assert ascending != best_first and ascending[0] == "zz" and ascending[-1] == "mert-v1-95m"
    browser.click(score)
    assert _encoders(browser, sel) == ascending[::-1]
    browser.click(f"{sel} thead th:nth-child(2)")
    names = _encoders(browser, sel)
    assert names == sorted(names, key=str.lower)

    shot = tmp_path / "leaderboard.png"
    browser.click(score)
    shot.write_bytes(base64.b64decode(browser.call("Page.captureScreenshot")["data"]))
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 10_000
