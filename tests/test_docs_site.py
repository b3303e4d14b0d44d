"""The documentation site: it builds with ``mkdocs build --strict``, every page loads in headless
Chromium without a console error, a failed request or an uncaught exception, the API reference
shows the docstrings, every tutorial shows a plot and the CLI reference lists every command.

The site is built once per session from ``executed_docs`` (the documentation with its tutorial
notebooks executed: ``LTH_DOCS_EXECUTE=false`` keeps mkdocs-jupyter from running them again).
Browser checks drive one Chromium over the DevTools protocol (``--remote-debugging-pipe``):
unlike the console lines of ``--enable-logging``, its events tell a ``console.error`` from a
``console.log`` and report failed requests (a 404, a blocked CDN) as well.
"""

from __future__ import annotations

import fcntl
import functools
import html
import http.server
import inspect
import json
import os
import re
import select
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = next(
    (
        p
        for p in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser"))
        if p and Path(p).is_file()
    ),
    None,
)
MKDOCS = Path(sys.executable).with_name("mkdocs")

pytestmark = pytest.mark.xdist_group("docs")


# ------------------------------------------------------------------ the build


@pytest.fixture(scope="session")
def built_site(executed_docs: Path, tmp_path_factory) -> dict:
    """``mkdocs build --strict`` of the executed copy, once: {"rc", "log", "site", "seconds"}."""
    if not (executed_docs / "src").exists():  # mkdocstrings: ``paths: [src]``, relative to mkdocs.yml
        (executed_docs / "src").symlink_to(REPO / "src", target_is_directory=True)
    site = tmp_path_factory.mktemp("site") / "site"
    env = {**os.environ, "LTH_DOCS_EXECUTE": "false", "MPLBACKEND": "Agg"}
    started = time.perf_counter()
    build = subprocess.run(
        [str(MKDOCS), "build", "--strict", "-f", str(executed_docs / "mkdocs.yml"), "-d", str(site)],
        # pymdownx.snippets: base_path "." is the working directory (README.md, CONTRIBUTING.md are copied there)
        cwd=executed_docs,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    return {
        "rc": build.returncode,
        "log": build.stdout + build.stderr,
        "site": site,
        "seconds": time.perf_counter() - started,
    }


@pytest.fixture(scope="session")
def site(built_site: dict) -> Path:
    if built_site["rc"] != 0:
        pytest.fail("the site did not build (see test_mkdocs_build_strict)", pytrace=False)
    return built_site["site"]


def test_mkdocs_build_strict(built_site):
    log = "\n".join(built_site["log"].splitlines()[-60:])
    assert built_site["rc"] == 0, f"mkdocs build --strict failed:\n{log}"
    print(f"built in {built_site['seconds']:.1f} s")


def page_text(path: Path) -> str:
    """The visible text of an HTML page: scripts and tags removed, entities decoded, spaces collapsed."""
    text = re.sub(r"<(script|style)\b[^>]*>.*?</\1>", " ", path.read_text(encoding="utf-8"), flags=re.S | re.I)
    text = html.unescape(re.sub(r"<[^>]+>", " ", text))
    return " ".join(text.split())


def docstring_line(obj) -> str:
    """The first line of ``obj``'s docstring as rendered: code spans and roles without their markup."""
    line = inspect.getdoc(obj).splitlines()[0]
    line = re.sub(r":\w+:`~?([^`]*)`", r"\1", line)
    return " ".join(line.replace("`", "").replace("**", "").split())


def test_api_reference_shows_the_docstrings(site):
    import lth

    pages = sorted((site / "reference" / "api").rglob("*.html"))
    assert pages, "no API reference pages under reference/api/"
    text = "".join(page_text(p) for p in pages).replace(" ", "")  # a tag left a space, or did not
    for name in ("LotteryModel", "find_ticket", "compute_mask"):
        line = docstring_line(getattr(lth, name))
        assert line.replace(" ", "") in text, f"the API reference does not show lth.{name}'s docstring: {line!r}"


def test_every_tutorial_shows_a_plot(site):
    notebooks = sorted((REPO / "docs" / "tutorials").glob("*.ipynb"))
    if not notebooks:
        pytest.skip("no tutorial notebooks in docs/tutorials yet")
    missing = []
    for notebook in notebooks:
        page = site / "tutorials" / notebook.stem / "index.html"
        assert page.is_file(), f"{notebook.name} was not built to {page.relative_to(site)}"
        content = page.read_text(encoding="utf-8")
        if not re.search(r"<img\b[^>]*\bsrc=[\"']data:image/(png|jpeg|svg\+xml);base64,", content):
            missing.append(notebook.name)
    assert not missing, f"tutorials without a rendered image (a plot as <img src=data:image/png;base64,...>): {missing}"


def test_cli_reference_lists_every_command(site):
    import click

    from lth.cli.main import cli

    names = cli.list_commands(click.Context(cli))
    page = site / "reference" / "cli" / "index.html"
    assert page.is_file(), "reference/cli/ was not built"
    text = page_text(page)
    missing = [name for name in names if f"lth {name}" not in text]
    assert not missing, f"the CLI reference lacks: {missing}"


# ------------------------------------------------------------------ the browser


class Browser:
    """One headless Chromium driven over the DevTools protocol on a pipe (fds 3 and 4)."""

    def __init__(self, profile: Path):
        # the browser's ends become its fds 3 (commands in) and 4 (answers out): moved above 9
        # first, so that bash's redirections cannot overwrite one with the other
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        ends = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_browser_r, from_browser_w)]
        os.close(to_browser_r)
        os.close(from_browser_w)
        flags = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            f"--user-data-dir={profile}",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        self.process = subprocess.Popen(
            ["bash", "-c", f'exec "$@" 3<&{ends[0]} 4>&{ends[1]} {ends[0]}<&- {ends[1]}>&-', "bash", CHROMIUM, *flags],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=ends,
        )
        for fd in ends:
            os.close(fd)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=self.session)

    def _send(self, message: dict) -> None:
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")

    def _receive(self, timeout: float) -> dict | None:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._from_browser], [], [], timeout)
            if not ready:
                return None
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, session: str | None = None, timeout: float = 30, **params) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        self._send(message)
        deadline = time.monotonic() + timeout
        while True:
            answer = self._receive(max(0.0, deadline - time.monotonic()))
            if answer is None:
                raise TimeoutError(f"no answer to {method}")
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})
            self.events.append(answer)

    def load(self, url: str, settle: float = 0.5, timeout: float = 20) -> list[str]:
        """Load ``url``; return its problems: console errors, uncaught exceptions, failed requests."""
        self.events = []
        self.call("Page.navigate", session=self.session, url=url)
        deadline = time.monotonic() + timeout
        loaded = False
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            event = self._receive(0.1)
            if event is not None:
                self.events.append(event)
                loaded = loaded or event.get("method") == "Page.loadEventFired"
                quiet_since = time.monotonic()
            elif loaded and time.monotonic() - quiet_since >= settle:
                break
        problems = [] if loaded else [f"no load event within {timeout} s"]
        requests = {}
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Network.requestWillBeSent":
                requests[params["requestId"]] = params["request"]["url"]
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                args = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
                problems.append(f"console.{params['type']}: {args}")
            elif method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                description = details.get("exception", {}).get("description") or details.get("text")
                problems.append(f"uncaught: {description}")
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                entry = params["entry"]
                problems.append(f"{entry.get('source')}: {entry['text']} ({entry.get('url', '')})")
            elif method == "Network.loadingFailed" and not params.get("canceled"):
                url = requests.get(params["requestId"], "?")
                problems.append(f"request failed: {url}: {params.get('errorText')}")
            elif method == "Network.responseReceived" and params["response"]["status"] >= 400:
                problems.append(f"HTTP {params['response']['status']}: {params['response']['url']}")
        return list(dict.fromkeys(problems))

    def close(self) -> None:
        try:
            self._send({"id": 0, "method": "Browser.close"})
            self.process.wait(timeout=10)
        except Exception:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@pytest.fixture(scope="session")
def serve():
    """``serve(directory)``: the base URL of an HTTP server of ``directory`` on a free port."""
    servers = []

    def start(directory: Path) -> str:
        handler = functools.partial(_QuietHandler, directory=str(directory))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def browser(tmp_path_factory) -> Iterator[Browser]:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed")
    chrome = Browser(tmp_path_factory.mktemp("chromium-profile"))
    yield chrome
    chrome.close()


def test_the_browser_check_catches_errors(tmp_path, serve, browser):
    """Self-test: a console.error, an uncaught exception and a missing script and stylesheet are
    caught; a console.log and a clean page are not."""
    (tmp_path / "bad.html").write_text(
        '<html><head><link rel="stylesheet" href="missing.css"></head><body><p>x</p>'
        '<script>console.log("just a log"); console.error("x")</script>'
        '<script src="missing.js"></script><script>notDefined()</script></body></html>'
    )
    (tmp_path / "good.html").write_text('<html><body><p>ok</p><script>console.log("fine")</script></body></html>')
    base = serve(tmp_path)
    problems = browser.load(base + "bad.html")
    joined = "\n".join(problems)
    assert "console.error: x" in problems, joined
    assert any("notDefined is not defined" in p for p in problems), joined
    assert any("404" in p and "missing.js" in p for p in problems), joined
    assert any("404" in p and "missing.css" in p for p in problems), joined
    assert not any("just a log" in p for p in problems), joined
    assert browser.load(base + "good.html") == []


def test_every_page_loads_without_errors(site, serve, browser):
    base = serve(site)
    pages = sorted(str(p.relative_to(site)) for p in site.rglob("*.html"))
    failures = {}
    started = time.perf_counter()
    for page in pages:
        problems = browser.load(base + page)
        if problems:
            failures[page] = problems
    report = "\n".join(f"{page}:\n  " + "\n  ".join(problems) for page, problems in failures.items())
    assert not failures, f"{len(failures)} of {len(pages)} pages have errors in the browser:\n{report}"
    print(f"{len(pages)} pages in {time.perf_counter() - started:.1f} s")
