"""Headless Chromium driven over the DevTools protocol on a pipe (--remote-debugging-pipe):
Debian's chromium and the standard library, nothing else.

Why our own few lines and not Playwright or Selenium: both need a download that the tests do
not otherwise need (Playwright's bundled Node driver, or chromium-driver and selenium), and
what a student does in a webmail is five things: open a page, click, type, wait until the
page shows something, take a screenshot. Clicks and keys are real input events at the
element's place on the screen (Input.dispatchMouseEvent), as a person's, not JS .click().

    with Browser(tmp_path) as page:
        page.open("http://127.0.0.1:8080/")
        page.type("#rcmloginuser", "alice")
        page.click("#rcmloginsubmit")
        page.wait("document.querySelectorAll('#messagelist tbody tr').length == 3")
        page.screenshot(path)
"""

from __future__ import annotations

import base64
import json
import os
import select
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any

CHROMIUM = "/usr/bin/chromium"


class BrowserError(AssertionError):
    pass


class Browser:
    """One headless Chromium with one tab; every call is one DevTools command, answered."""

    def __init__(self, profile: Path, width: int = 1280, height: int = 800) -> None:
        profile.mkdir(parents=True, exist_ok=True)
        to_chromium, self._writer = os.pipe()
        self._reader, from_chromium = os.pipe()
        # Chromium reads commands on fd 3 and writes answers on fd 4 (bash: dash takes only
        # one-digit descriptors in a redirection).
        self.process = subprocess.Popen(
            ["bash", "-c", f'exec "$0" "$@" 3<&{to_chromium} 4>&{from_chromium}', CHROMIUM,
             "--headless", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
             "--no-first-run", "--no-default-browser-check", "--disable-extensions",
             "--disable-background-networking", "--disable-sync", "--mute-audio",
             f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"],
            pass_fds=(to_chromium, from_chromium), stdin=subprocess.DEVNULL,
            # its singleton socket's directory (/tmp/org.chromium.Chromium.*) is left behind
            # at a TERM: inside the profile, it goes with the test's temp directory
            env={**os.environ, "TMPDIR": str(profile)},
            stdout=subprocess.DEVNULL, stderr=open(profile / "chromium.log", "wb"))
        os.close(to_chromium)
        os.close(from_chromium)
        self._pending = b""
        self._next_id = 0
        self.session = ""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target,
                                 flatten=True)["sessionId"]
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=1, mobile=False)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for fd in (self._reader, self._writer):
            try:
                os.close(fd)
            except OSError:
                pass

    def call(self, method: str, timeout: float = 30, **params: Any) -> dict[str, Any]:
        """Send one command (to the tab once there is one) and return its result; events
        in between are not asked for and are dropped."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if self.session:
            message["sessionId"] = self.session
        os.write(self._writer, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" not in self._pending:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self._reader], [], [], left)[0]:
                    raise BrowserError(f"chromium did not answer {method} in {timeout} s")
                chunk = os.read(self._reader, 1 << 20)
                if not chunk:
                    raise BrowserError(f"chromium exited during {method}")
                self._pending += chunk
            raw, self._pending = self._pending.split(b"\0", 1)
            answer = json.loads(raw)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise BrowserError(f"{method}: {answer['error']}")
                return answer["result"]

    def js(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (awaited if a promise)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait(self, condition: str, timeout: float = 20, what: str = "") -> Any:
        """Until the expression is truthy, as a person waits until the page shows something:
        a page has no signal for "what I look for is drawn now", so look ten times a second."""
        deadline = time.monotonic() + timeout
        while True:  # an element found stands for true (a DOM node has no JSON value;
            # nodeType, not instanceof Node: an iframe's nodes have the iframe's Node)
            value = self.js(f"(v => v && v.nodeType ? true : v)({condition})")
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"the page never showed {what or condition}")
            time.sleep(0.1)

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        self.wait("document.readyState == 'complete' && location.href != 'about:blank'",
                  what=url)

    @staticmethod
    def find(selector: str, text: str | None = None, frame: str | None = None) -> str:
        """JavaScript for the element: the first match of `selector` (whose visible text
        starts with this line, if given: a folder's name above its unread count), in the
        document or in the iframe `frame`."""
        doc = f"document.querySelector({json.dumps(frame)}).contentDocument" if frame \
            else "document"
        return (f"[...{doc}.querySelectorAll({json.dumps(selector)})].find(e =>"
                f" e.getClientRects().length && ({json.dumps(text)} === null"
                f" || e.innerText.trim().split('\\n')[0].trim() == {json.dumps(text)}))")

    def _centre(self, selector: str, text: str | None = None,
                frame: str | None = None) -> tuple[float, float]:
        """Where the element is on the screen, scrolled into view (inside an iframe: the
        frame's place plus the element's place in it), once a click there would reach it:
        it is what the page has at that point (no overlay, no menu fading in over it), no
        animation runs (CSS transitions, jQuery's effects: a popover still fading in takes
        a click, but its item's handlers may not be bound yet), and two looks 50 ms apart
        find it at the same place (a menu that Popper is still placing, a list redrawn)."""
        offset = (f"document.querySelector({json.dumps(frame)}).getBoundingClientRect()"
                  if frame else "{left: 0, top: 0}")
        look = (f"(() => {{ const e = {self.find(selector, text, frame)}; if (!e) return null;"
                f" e.scrollIntoView({{block: 'nearest'}}); const r = e.getBoundingClientRect();"
                f" const x = r.left + r.width / 2, y = r.top + r.height / 2;"
                f" const hit = e.ownerDocument.elementFromPoint(x, y);"
                f" if (!hit || !(hit === e || e.contains(hit))) return null;"
                f" if ([document, e.ownerDocument].some(d => d.getAnimations()"
                f".some(a => a.playState == 'running'))) return null;"
                f" if (window.jQuery && jQuery.timers.length) return null;"
                f" const o = {offset}; return [o.left + x, o.top + y]; }})()")
        what = f"a visible {selector}" + (f" saying {text!r}" if text else "")
        deadline = time.monotonic() + 20
        last = None
        while True:
            where = self.wait(look, what=what + " that stays in place")
            if where == last:
                return where[0], where[1]
            if time.monotonic() > deadline:
                raise BrowserError(f"{what} kept moving: {last} then {where}")
            last = where
            time.sleep(0.05)

    def click(self, selector: str, text: str | None = None, frame: str | None = None,
              count: int = 1) -> None:
        """A left click (count=2: a double click) on the element, once it is visible."""
        x, y = self._centre(selector, text, frame)
        self.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        for n in range(1, count + 1):
            for kind in ("mousePressed", "mouseReleased"):
                self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left",
                          clickCount=n)

    def drag(self, selector: str, target: str, text: str | None = None,
             target_text: str | None = None) -> None:
        """Press on one element, move in steps, release on the other (a drag, as by hand)."""
        x0, y0 = self._centre(selector, text)
        x1, y1 = self._centre(target, target_text)
        self.call("Input.dispatchMouseEvent", type="mouseMoved", x=x0, y=y0)
        self.call("Input.dispatchMouseEvent", type="mousePressed", x=x0, y=y0, button="left",
                  clickCount=1)
        for step in range(1, 11):
            self.call("Input.dispatchMouseEvent", type="mouseMoved", button="left", buttons=1,
                      x=x0 + (x1 - x0) * step / 10, y=y0 + (y1 - y0) * step / 10)
        self.call("Input.dispatchMouseEvent", type="mouseReleased", x=x1, y=y1, button="left",
                  clickCount=1)

    def type(self, selector: str, text: str) -> None:
        """Click into a field and type, as keys."""
        self.click(selector)
        self.call("Input.insertText", text=text)

    def text(self, selector: str, frame: str | None = None) -> str:
        """The visible text of the element, or ''."""
        return self.js(f"(e => e ? e.innerText : '')({self.find(selector, None, frame)})")

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path
