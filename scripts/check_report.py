#!/usr/bin/env python3
"""Open an HTML report in headless Chromium and fail on console errors; write a screenshot.

    python scripts/check_report.py report.html [--screenshot report.png] [--width 1280] [--max-height 16000]

Talks to the browser over the DevTools protocol on a pipe (--remote-debugging-pipe), with the
standard library only. It fails (exit 1) on any console error or assertion, uncaught exception,
browser log error (e.g. a resource that failed to load), image that did not decode, or reference
to an external http(s) resource; exit 2 when no browser can be started. Needs Debian's
``chromium`` package (or chromium-browser / google-chrome on the PATH, or $CHROMIUM).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
PAGE_FACTS = """JSON.stringify({
  title: document.title,
  images: document.images.length,
  broken: Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt.slice(0, 80)),
  external: Array.from(document.querySelectorAll('[src], [href]'))
    .map(e => e.getAttribute('src') || e.getAttribute('href')).filter(u => /^(https?:)?\\/\\//i.test(u)),
  height: Math.ceil(document.documentElement.scrollHeight),
})"""


def find_browser() -> str | None:
    """The Chromium executable: $CHROMIUM, else the first of BROWSERS on the PATH."""
    if os.environ.get("CHROMIUM"):
        return shutil.which(os.environ["CHROMIUM"])
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


class DevTools:
    """A DevTools protocol connection over the browser's pipe (fd 3: commands in, fd 4: replies out)."""

    def __init__(self, browser: str, profile: str, width: int, height: int) -> None:
        to_browser_read, self.to_browser = os.pipe()
        self.from_browser, from_browser_write = os.pipe()
        args = [
            browser,
            "--headless",
            "--remote-debugging-pipe",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            "about:blank",
        ]
        # The browser expects the pipe on fds 3 and 4 exactly; a shell puts it there.
        command = ["sh", "-c", f'exec "$0" "$@" 3<&{to_browser_read} 4>&{from_browser_write}', *args]
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            command,
            pass_fds=(to_browser_read, from_browser_write),
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
        )
        os.close(to_browser_read)
        os.close(from_browser_write)
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> int:
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        return self.next_id

    def receive(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.from_browser], [], [], left)[0]:
                raise TimeoutError("the browser did not answer in time")
            chunk = os.read(self.from_browser, 1 << 20)
            if not chunk:
                raise ConnectionError("the browser closed the connection")
            self.buffer += chunk
        message, _, self.buffer = self.buffer.partition(b"\0")
        return json.loads(message)

    def call(
        self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30.0
    ) -> dict[str, Any]:
        """Send a command and wait for its reply, keeping the events that arrive meanwhile."""
        wanted = self.send(method, params, session)
        deadline = time.monotonic() + timeout
        while True:
            message = self.receive(deadline)
            if message.get("id") == wanted:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error'].get('message')}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, method: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == method for e in self.events):
            self.events.append(self.receive(deadline))

    def drain(self, seconds: float) -> None:
        """Collect the events of the next ``seconds`` (late console messages)."""
        deadline = time.monotonic() + seconds
        try:
            while True:
                self.events.append(self.receive(deadline))
        except TimeoutError:
            pass

    def close(self) -> str:
        """Close the browser; return its own log (for diagnostics)."""
        try:
            self.send("Browser.close")
            self.process.wait(timeout=10)
        except Exception:  # already gone, or not answering: make sure it is
            self.process.kill()
            self.process.wait()
        for fd in (self.to_browser, self.from_browser):
            os.close(fd)
        self.log.seek(0)
        return self.log.read().decode(errors="replace")


def _text(args: list[dict[str, Any]]) -> str:
    return " ".join(str(a.get("value", a.get("description", a.get("type", "")))) for a in args)


def problems(events: list[dict[str, Any]]) -> list[str]:
    """Console errors and assertions, uncaught exceptions and browser log errors among ``events``."""
    found = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            found.append(f"console.{params['type']}: {_text(params.get('args', []))}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            description = details.get("exception", {}).get("description") or details.get("text")
            found.append(f"uncaught exception: {description}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            found.append(f"{entry.get('source', 'log')} error: {entry.get('text')} {entry.get('url', '')}".rstrip())
    return found


def check(report: Path, screenshot: Path | None, width: int, max_height: int) -> int:
    browser = find_browser()
    if browser is None:
        print("check_report: no Chromium found; install Debian's chromium package or set $CHROMIUM", file=sys.stderr)
        return 2
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="check-report-") as profile:
        tools = DevTools(browser, profile, width, 900)
        try:
            target = tools.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = tools.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Runtime", "Log", "Page"):
                tools.call(f"{domain}.enable", session=session)
            tools.call(
                "Emulation.setDeviceMetricsOverride",
                {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False},
                session=session,
            )
            tools.call("Page.navigate", {"url": report.resolve().as_uri()}, session=session)
            tools.wait_for("Page.loadEventFired")
            tools.drain(0.3)
            facts = json.loads(
                tools.call("Runtime.evaluate", {"expression": PAGE_FACTS, "returnByValue": True}, session=session)[
                    "result"
                ]["value"]
            )
            found = problems(tools.events)
            found += [f"image did not load: {alt!r}" for alt in facts["broken"]]
            found += [f"external resource: {url}" for url in facts["external"]]
            if screenshot is not None:
                height = min(facts["height"], max_height)
                shot = tools.call(
                    "Page.captureScreenshot",
                    {
                        "format": "png",
                        "captureBeyondViewport": True,
                        "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
                    },
                    session=session,
                    timeout=60,
                )
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                screenshot.write_bytes(base64.b64decode(shot["data"]))
        except (TimeoutError, ConnectionError, RuntimeError, KeyError) as error:
            log = tools.close()
            print(f"check_report: the browser failed: {error}\n{log[-2000:]}", file=sys.stderr)
            return 2
        tools.close()
    seconds = time.monotonic() - started
    shot_note = f"; screenshot {screenshot} ({width}x{min(facts['height'], max_height)})" if screenshot else ""
    print(
        f"{report}: {facts['title']!r}, {facts['images']} images, {len(found)} problem(s) in {seconds:.1f} s{shot_note}"
    )
    for problem in found:
        print(f"  {problem}")
    return 1 if found else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="the HTML file to open")
    parser.add_argument("--screenshot", type=Path, help="write a PNG of the page here (full page up to --max-height)")
    parser.add_argument("--width", type=int, default=1280, help="viewport width in px [1280]")
    parser.add_argument("--max-height", type=int, default=16000, help="screenshot height limit in px [16000]")
    args = parser.parse_args(argv)
    if not args.report.is_file():
        print(f"check_report: {str(args.report)!r} is not a file", file=sys.stderr)
        return 2
    return check(args.report, args.screenshot, args.width, args.max_height)


if __name__ == "__main__":
    sys.exit(main())
