"""Open an HTML page in a real headless Chromium and report what a reader would see go wrong.

Drives Debian's `chromium` over the DevTools protocol (websocket-client, no Selenium or Playwright): load the
page (a file, or a URL such as a local server's), wait until it is complete, then read every image's state, every
console error, uncaught exception and failed resource load the browser logged, and every URL the page requested.

Example:
    >>> seen = render(Path("runs/study/report.html"))  # doctest: +SKIP
    >>> seen["errors"], [img["loaded"] for img in seen["images"]]  # doctest: +SKIP
    ([], [True, True, True, True, True])
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
IMAGES = "JSON.stringify(Array.from(document.images).map(i => ({alt: i.alt, loaded: i.complete && i.naturalWidth > 0})))"


def browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def render(page: Path | str, timeout: float = 120.0, ready: str | None = None, screenshot: bool = False) -> dict[str, Any]:
    """{"images": [{"alt", "loaded"}], "errors": [text], "requests": [url], "title": str} of `page` (a file or a URL)
    once its document is complete and, for a page its scripts build (Gradio), the JavaScript `ready` is true;
    with `screenshot`, also "screenshot": the PNG bytes of a 1280x900 view."""
    import websocket

    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:  # Chromium may still be writing it
        proc = subprocess.Popen(
            [browser(), "--headless=new", "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0",
             f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            port = _port(Path(profile), proc, timeout)
            targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
            target = next(t for t in targets if t.get("type") == "page")
            ws = websocket.create_connection(target["webSocketDebuggerUrl"], timeout=timeout, suppress_origin=True)
            try:
                return _load(ws, page, timeout, ready, screenshot)
            finally:
                ws.close()
        finally:
            # The whole group: a renderer left behind would keep its connections to the page's server open (a
            # Gradio server then waits for them when Ctrl-C closes it).
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _port(profile: Path, proc: subprocess.Popen, timeout: float) -> int:
    """The DevTools port Chromium chose (it writes it to DevToolsActivePort in the profile)."""
    deadline = time.monotonic() + timeout
    marker = profile / "DevToolsActivePort"
    while time.monotonic() < deadline:
        if marker.is_file() and marker.read_text().strip():
            return int(marker.read_text().splitlines()[0])
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited with {proc.returncode} before opening its DevTools port")
        time.sleep(0.1)
    raise TimeoutError("chromium did not open its DevTools port")


def _load(ws: Any, page: Path | str, timeout: float, ready: str | None = None, screenshot: bool = False) -> dict[str, Any]:
    """Navigate, then ask until the document is complete (asking, not waiting for one load event that a busy
    machine's browser may send before the listener is attached), then read the images and the title."""
    ids = iter(range(1, 10_000))
    errors: list[str] = []
    requests: list[str] = []

    def ask(method: str, **params: Any) -> Any:
        n = next(ids)
        ws.send(json.dumps({"id": n, "method": method, "params": params}))
        while True:
            event = json.loads(ws.recv())
            _collect(event, errors, requests)
            if event.get("id") == n:
                result = event.get("result", {})
                return result.get("result", {}).get("value") if "result" in result else result

    for method in ("Runtime.enable", "Log.enable", "Page.enable", "Network.enable"):
        ask(method)
    if screenshot:
        ask("Emulation.setDeviceMetricsOverride", width=1280, height=900, deviceScaleFactor=1, mobile=False)
    url = page if isinstance(page, str) else page.resolve().as_uri()
    ask("Page.navigate", url=url)
    deadline = time.monotonic() + timeout
    done = url.split(":", 1)[0] + ":complete"  # the new page's protocol: not about:blank still loading
    while ask("Runtime.evaluate", expression="location.protocol + document.readyState") != done:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{page} did not finish loading in {timeout:.0f} s")
        time.sleep(0.2)
    while ready and ask("Runtime.evaluate", expression=f"Boolean({ready})", returnByValue=True) is not True:
        if time.monotonic() > deadline:  # a page its scripts build is blank until they have run
            raise TimeoutError(f"{page}: {ready} was not true after {timeout:.0f} s")
        time.sleep(0.2)
    images = json.loads(ask("Runtime.evaluate", expression=IMAGES, returnByValue=True))
    title = ask("Runtime.evaluate", expression="document.title", returnByValue=True)
    time.sleep(0.5)  # console messages logged while loading may trail the answers
    ask("Runtime.evaluate", expression="1")
    seen = {"images": images, "errors": errors, "requests": requests, "title": title}
    if screenshot:
        time.sleep(1.0)  # let the last layout and fonts settle before the picture
        seen["screenshot"] = base64.b64decode(ask("Page.captureScreenshot", format="png")["data"])
    return seen


def _collect(event: dict[str, Any], errors: list[str], requests: list[str]) -> None:
    """Console errors, uncaught exceptions and failed loads (a broken image, a missing file) into `errors`; every
    URL the page asked for (documents, scripts, styles, fonts, fetches, workers) into `requests`."""
    method, params = event.get("method"), event.get("params", {})
    if method == "Network.requestWillBeSent":
        requests.append(params.get("request", {}).get("url", ""))
    if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
        errors.append("console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
    elif method == "Runtime.exceptionThrown":
        errors.append("exception: " + params.get("exceptionDetails", {}).get("text", ""))
    elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
        errors.append("log: " + params["entry"].get("text", ""))
