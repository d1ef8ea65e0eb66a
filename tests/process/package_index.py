"""A local package index for tests: pure-Python wheels written in the test, served as a PEP 503 simple index.

    with PackageIndex(tmp_path / "wheels") as index:
        index.add("berthdemo", "1.0")
        index.add("needs-old-pydantic", "1.0", requires=["pydantic<2"])
        env = {"UV_INDEX_URL": index.url, ...}

Everything happens offline and in milliseconds: a wheel is a zip written with `zipfile`, and the index is an
`http.server.ThreadingHTTPServer` on 127.0.0.1 (port 0) in a daemon thread, shut down (socket closed) on exit.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
import threading
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


def normalize(name: str) -> str:
    """PEP 503 name normalization: runs of `-`, `_`, `.` become one `-`, lower case."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


@dataclass(frozen=True)
class Wheel:
    name: str  # the project name as written in METADATA
    version: str
    path: Path

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def build_wheel(folder: Path, name: str, version: str, requires: Iterable[str] = (),
                module_source: str | None = None) -> Wheel:
    """Write `{name}-{version}-py3-none-any.whl` into `folder`: one package `{name}` (its `__init__.py`
    sets `__version__`, or is `module_source`), and its dist-info (METADATA with `Requires-Dist` lines from
    `requires`, WHEEL, RECORD)."""
    folder.mkdir(parents=True, exist_ok=True)
    module = re.sub(r"[-.]+", "_", name).lower()  # the import name
    dist = f"{module}-{version}"  # the wheel file name's (escaped) distribution part
    metadata = "".join([
        "Metadata-Version: 2.1\n",
        f"Name: {name}\n",
        f"Version: {version}\n",
        "Summary: a package built by berth's tests\n",
        *(f"Requires-Dist: {requirement}\n" for requirement in requires),
    ])
    files = {
        f"{module}/__init__.py": module_source if module_source is not None else f"__version__ = {version!r}\n",
        f"{dist}.dist-info/METADATA": metadata,
        f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: berth-tests\nRoot-Is-Purelib: true\n"
                                    "Tag: py3-none-any\n",
    }
    record = "".join(f"{path},{_record_hash(text.encode())},{len(text.encode())}\n" for path, text in files.items())
    files[f"{dist}.dist-info/RECORD"] = record + f"{dist}.dist-info/RECORD,,\n"
    path = folder / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for member, text in files.items():
            archive.writestr(member, text)
    return Wheel(name, version, path)


class PackageIndex:
    """The wheels of one folder served as a PEP 503 simple index at `url` (`http://127.0.0.1:<port>/simple`).

    `/simple/` lists the projects, `/simple/<normalized-name>/` links each of its wheels as
    `/files/<file>#sha256=<hex>`; pages are built per request, so wheels added while it runs are seen.
    Every request is recorded in `requests` as "GET /path" (to tell whether a deploy touched the index at all).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.wheels: list[Wheel] = []
        self.requests: list[str] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def add(self, name: str, version: str, requires: Iterable[str] = (), module_source: str | None = None) -> Wheel:
        wheel = build_wheel(self.folder, name, version, requires, module_source)
        with self._lock:
            self.wheels.append(wheel)
        return wheel

    @property
    def port(self) -> int:
        assert self._server is not None, "the index is not running"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/simple"

    def start(self) -> PackageIndex:
        index = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._answer(with_body=True)

            def do_HEAD(self) -> None:  # uv asks before fetching a wheel (no ranges offered)
                self._answer(with_body=False)

            def _answer(self, with_body: bool) -> None:
                path = unquote(urlsplit(self.path).path)
                with index._lock:
                    index.requests.append(f"{self.command} {path}")
                    wheels = list(index.wheels)
                status, content_type, body = index._respond(path, wheels)
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if with_body:
                    self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # quiet: the test's output is not the place for access logs

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="package-index", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> PackageIndex:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _respond(self, path: str, wheels: list[Wheel]) -> tuple[int, str, bytes]:
        def page(title: str, links: list[tuple[str, str]]) -> bytes:
            anchors = "\n".join(f'<a href="{html.escape(href)}">{html.escape(text)}</a><br/>' for href, text in links)
            return (f"<!DOCTYPE html>\n<html><head><meta name=\"pypi:repository-version\" content=\"1.0\">"
                    f"<title>{html.escape(title)}</title></head>\n<body>\n{anchors}\n</body></html>\n").encode()

        parts = [part for part in path.split("/") if part]
        if parts == ["simple"]:
            projects = sorted({normalize(wheel.name) for wheel in wheels})
            return 200, "text/html", page("Simple index", [(f"/simple/{name}/", name) for name in projects])
        if len(parts) == 2 and parts[0] == "simple":
            files = [wheel for wheel in wheels if normalize(wheel.name) == normalize(parts[1])]
            if files:
                links = [(f"/files/{wheel.path.name}#sha256={wheel.sha256}", wheel.path.name) for wheel in files]
                return 200, "text/html", page(f"Links for {parts[1]}", links)
        if len(parts) == 2 and parts[0] == "files":
            for wheel in wheels:
                if wheel.path.name == parts[1]:
                    return 200, "application/octet-stream", wheel.path.read_bytes()
        return 404, "text/plain", b"not found\n"
