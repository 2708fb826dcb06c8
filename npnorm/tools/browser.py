"""Open built book pages in headless Chromium and check them, with no dependency but Chromium itself.

Chromium is driven through the DevTools protocol over a pipe (``--remote-debugging-pipe``: JSON
messages separated by NUL bytes on file descriptors 3 and 4), so no websocket library, Selenium or
Playwright is needed. For every page :func:`check_pages` records

* every network request the page makes (``Network.requestWillBeSent``) and every failed load,
* whether MathJax finished and typeset every ``.math`` element Sphinx emitted (and no TeX errors),
* whether every ``<img>`` loaded (``naturalWidth > 0``),
* JavaScript exceptions,

and can save a PNG screenshot. ``python -m npnorm.tools.browser`` checks the built book and prints a
report; ``--screenshots DIR`` also saves one PNG per page.
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--mute-audio", "--hide-scrollbars",
    "--disable-dev-shm-usage", "--allow-file-access-from-files",
)
LOCAL_SCHEMES = {"file", "data", "blob", "about", "chrome", "devtools"}
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]"}

# Runs in the page once it has loaded: waits for MathJax, then reports what a reader would see.
PAGE_PROBE = r"""
(async () => {
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  let mathjax = "absent";
  if (window.MathJax) {
    for (let i = 0; i < 200 && !(MathJax.startup && MathJax.startup.promise); i++) await sleep(50);
    if (MathJax.startup && MathJax.startup.promise) {
      try { await MathJax.startup.promise; mathjax = "ready"; } catch (e) { mathjax = "failed: " + e; }
    } else { mathjax = "never started"; }
  }
  const imgs = Array.from(document.images);
  await Promise.all(imgs.map((im) => im.complete ? null :
      new Promise((r) => { im.addEventListener("load", r); im.addEventListener("error", r); })));
  const mathEls = Array.from(document.querySelectorAll(".math"));
  return {
    title: document.title,
    mathjax: mathjax,
    math_elements: mathEls.length,
    math_untypeset: mathEls.filter((el) => !el.querySelector("mjx-container")).length,
    mjx_containers: document.querySelectorAll("mjx-container").length,
    tex_errors: Array.from(document.querySelectorAll("mjx-merror")).map((e) => e.getAttribute("data-mjx-error") || e.textContent).slice(0, 5),
    images: imgs.length,
    broken_images: imgs.filter((im) => !(im.complete && im.naturalWidth > 0)).map((im) => im.getAttribute("src")),
    resources: performance.getEntriesByType("resource").map((e) => e.name),
  };
})()
"""


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary (``$CHROMIUM`` first), or None."""
    env = os.environ.get("CHROMIUM")
    if env:
        return env if Path(env).exists() else shutil.which(env)
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def is_local(url: str) -> bool:
    """True for URLs that do not leave the machine."""
    parsed = urlparse(url)
    if parsed.scheme in LOCAL_SCHEMES:
        return True
    return parsed.scheme in ("http", "https", "ws", "wss") and (parsed.hostname or "") in LOCAL_HOSTS


@dataclass
class PageResult:
    """What the browser saw on one page."""

    url: str
    probe: dict = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    screenshot: Path | None = None

    @property
    def external_requests(self) -> list[str]:
        return sorted({u for u in self.requests + self.probe.get("resources", []) if not is_local(u)})

    def problems(self, expect_math: bool | None = None) -> list[str]:
        """Everything wrong with the page, in words (empty when it is fine)."""
        p = []
        probe = self.probe
        if not probe:
            return ["the page did not load"]
        if self.external_requests:
            p.append(f"requests that leave the machine: {self.external_requests}")
        if self.failed:
            p.append(f"failed loads: {self.failed}")
        if self.exceptions:
            p.append(f"JavaScript exceptions: {self.exceptions}")
        if probe["math_elements"] and probe["mathjax"] != "ready":
            p.append(f"the page has {probe['math_elements']} equations but MathJax is {probe['mathjax']}")
        if probe["math_untypeset"]:
            p.append(f"{probe['math_untypeset']} of {probe['math_elements']} equations were not typeset by MathJax")
        if probe["tex_errors"]:
            p.append(f"TeX errors: {probe['tex_errors']}")
        if expect_math and probe["mjx_containers"] == 0:
            p.append("expected typeset equations (mjx-container elements) but found none")
        if probe["broken_images"]:
            p.append(f"images that did not load: {probe['broken_images']}")
        return p


class Chromium:
    """A headless Chromium driven over the DevTools pipe. Use as a context manager."""

    def __init__(self, binary: str | None = None, width: int = 1280, height: int = 900, timeout: float = 60.0):
        self.binary = binary or find_chromium()
        if not self.binary:
            raise FileNotFoundError("no Chromium found (install the Debian package `chromium` or set $CHROMIUM)")
        self.width, self.height, self.timeout = width, height, timeout
        self._id = 0
        self._events: queue.Queue = queue.Queue()
        self._responses: dict[int, dict] = {}
        self._cv = threading.Condition()

    # -- process and pipe -----------------------------------------------------------------------
    def __enter__(self) -> Chromium:
        self._profile = tempfile.mkdtemp(prefix="npnorm-chromium-")
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        # park the child's ends above any descriptor number we are about to overwrite
        child_in = fcntl.fcntl(to_child_r, fcntl.F_DUPFD, 10)
        child_out = fcntl.fcntl(from_child_w, fcntl.F_DUPFD, 10)
        os.close(to_child_r)
        os.close(from_child_w)

        cmd = [self.binary, *FLAGS, f"--user-data-dir={self._profile}", "--remote-debugging-pipe",
               f"--window-size={self.width},{self.height}", "about:blank"]
        # Chromium reads commands from fd 3 and writes replies to fd 4. subprocess closes every
        # descriptor it was not asked to keep *after* any preexec hook, so a tiny Python trampoline
        # moves the kept descriptors to 3 and 4 and then becomes Chromium.
        trampoline = ("import os, sys; a, b = int(sys.argv[1]), int(sys.argv[2]); os.dup2(a, 3); os.dup2(b, 4); "
                      "os.close(a); os.close(b); os.execv(sys.argv[3], sys.argv[3:])")
        self.proc = subprocess.Popen([sys.executable, "-c", trampoline, str(child_in), str(child_out), *cmd],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=None if os.environ.get("NPNORM_CHROMIUM_LOG") else subprocess.DEVNULL,
                                     pass_fds=(child_in, child_out))
        os.close(child_in)
        os.close(child_out)
        self._write = os.fdopen(to_child_w, "wb", buffering=0)
        self._read = os.fdopen(from_child_r, "rb", buffering=0)
        threading.Thread(target=self._reader, daemon=True).start()
        self.send("Browser.getVersion")
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for f in (self._write, self._read):
            try:
                f.close()
            except OSError:
                pass
        shutil.rmtree(self._profile, ignore_errors=True)

    def _reader(self) -> None:
        buf = b""
        while True:
            try:
                chunk = self._read.read(65536)
            except (OSError, ValueError):
                chunk = b""
            if not chunk:
                with self._cv:
                    self._responses[-1] = {"error": {"message": "Chromium closed the pipe"}}
                    self._cv.notify_all()
                return
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                if "id" in msg:
                    with self._cv:
                        self._responses[msg["id"]] = msg
                        self._cv.notify_all()
                else:
                    self._events.put(msg)

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float | None = None) -> dict:
        """Send one DevTools command and wait for its result."""
        self._id += 1
        msg_id = self._id
        msg = {"id": msg_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self._write.write(json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + (timeout or self.timeout)
        with self._cv:
            while msg_id not in self._responses:
                if -1 in self._responses:
                    raise RuntimeError(f"{method}: Chromium exited")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{method}: no answer from Chromium within {timeout or self.timeout} s")
                self._cv.wait(left)
            reply = self._responses.pop(msg_id)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    # -- one page ------------------------------------------------------------------------------
    def check(self, url: str, screenshot: Path | None = None, settle: float = 0.5) -> PageResult:
        """Load ``url`` in a fresh tab, wait for it (and MathJax) to finish, and report."""
        result = PageResult(url)
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        try:
            for domain in ("Network", "Page", "Runtime"):
                self.send(f"{domain}.enable", session=session)
            self.send("Emulation.setDeviceMetricsOverride", {"width": self.width, "height": self.height,
                                                             "deviceScaleFactor": 1, "mobile": False},
                      session=session)
            self._drain(session, result)
            self.send("Page.navigate", {"url": url}, session=session)
            self._wait_for(session, "Page.loadEventFired", result)
            probe = self.send("Runtime.evaluate", {"expression": PAGE_PROBE, "awaitPromise": True,
                                                   "returnByValue": True}, session=session)
            if "exceptionDetails" in probe:
                result.exceptions.append(str(probe["exceptionDetails"].get("text")))
            else:
                result.probe = probe["result"]["value"]
            end = time.monotonic() + settle  # let late requests (fonts, lazy scripts) show up
            while time.monotonic() < end:
                self._drain(session, result, wait=0.05)
            if screenshot is not None:  # the whole page, not just the first screenful
                size = self.send("Page.getLayoutMetrics", session=session)["cssContentSize"]
                height = int(min(size["height"], 16000))
                shot = self.send("Page.captureScreenshot", {
                    "format": "png", "captureBeyondViewport": True,
                    "clip": {"x": 0, "y": 0, "width": self.width, "height": height, "scale": 1}}, session=session)
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                screenshot.write_bytes(base64.b64decode(shot["data"]))
                result.screenshot = screenshot
        finally:
            self.send("Target.closeTarget", {"targetId": target})
        return result

    def _handle(self, msg: dict, session: str, result: PageResult) -> None:
        if msg.get("sessionId") != session:
            return
        method, params = msg.get("method"), msg.get("params", {})
        if method == "Network.requestWillBeSent":
            result.requests.append(params["request"]["url"])
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            result.failed.append(f"{params.get('errorText')} ({params.get('type')})")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            result.exceptions.append(str(details.get("exception", {}).get("description") or details.get("text")))

    def _drain(self, session: str, result: PageResult, wait: float = 0.0) -> None:
        try:
            while True:
                self._handle(self._events.get(timeout=wait) if wait else self._events.get_nowait(), session, result)
        except queue.Empty:
            pass

    def _wait_for(self, session: str, event: str, result: PageResult) -> None:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            try:
                msg = self._events.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            self._handle(msg, session, result)
            if msg.get("sessionId") == session and msg.get("method") == event:
                return
        raise TimeoutError(f"{result.url}: {event} did not arrive within {self.timeout} s")


def check_pages(paths: list[Path], screenshots: Path | None = None) -> dict[Path, PageResult]:
    """Check several HTML files in one browser session."""
    results = {}
    with Chromium() as browser:
        for path in paths:
            shot = screenshots / (path.stem + ".png") if screenshots else None
            results[path] = browser.check(path.resolve().as_uri(), screenshot=shot)
    return results


def toc_documents(toc_path: Path) -> list[str]:
    """Every document listed in a Jupyter Book ``_toc.yml``: the root first, then in order."""
    import yaml

    toc = yaml.safe_load(Path(toc_path).read_text())
    files = [toc["root"]]

    def walk(node) -> None:
        if isinstance(node, dict):
            if "file" in node:
                files.append(node["file"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(toc.get("parts", toc.get("chapters", [])))
    return files


def book_pages(html: Path) -> list[Path]:
    """The HTML page of every document listed in book/_toc.yml."""
    toc_path = html.parents[1] / "_toc.yml"
    if not toc_path.exists():
        toc_path = Path(__file__).resolve().parents[2] / "book" / "_toc.yml"
    return [html / f"{Path(f).with_suffix('')}.html" for f in toc_documents(toc_path)]


def main(argv: list[str] | None = None) -> int:
    from .build_book import html_dir

    parser = argparse.ArgumentParser(prog="python -m npnorm.tools.browser", description=__doc__.splitlines()[0])
    parser.add_argument("--learner", action="store_true", help="check the learner edition")
    parser.add_argument("--screenshots", type=Path, help="save a PNG of every page into this directory")
    args = parser.parse_args(argv)
    html = html_dir("learner" if args.learner else "teacher")
    pages = book_pages(html)
    bad = 0
    for path, res in check_pages(pages, args.screenshots).items():
        problems = res.problems()
        bad += bool(problems)
        p = res.probe
        print(f"{'FAIL' if problems else 'ok  '} {path.name:<22} equations {p.get('mjx_containers', 0):>4}  "
              f"images {p.get('images', 0):>3}  requests {len(res.requests):>3} (external {len(res.external_requests)})")
        for prob in problems:
            print(f"       - {prob}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
