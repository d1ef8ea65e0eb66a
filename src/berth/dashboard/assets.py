"""The dashboard's static files, shipped as package data and read once into memory.

The page refers to every asset as /_berth/static/<file>?v=<content hash>, so a browser may keep an
asset for a year (immutable) and still gets the new one after an upgrade: the URL changes with the
content. A request without the current hash gets `no-cache` with an ETag (revalidated, 304 if unchanged).
Text assets are gzipped once at start and sent so to a client that accepts it (a third of the bytes).
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response

PAGE = "index.html"
TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".html": "text/html; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png",
         ".ico": "image/x-icon", ".LICENSE": "text/plain; charset=utf-8", ".txt": "text/plain; charset=utf-8"}
IMMUTABLE = "public, max-age=31536000, immutable"
SECURITY = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
            # Nothing is loaded from elsewhere: the policy says so, and a stray external URL fails loudly.
            "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                                       "script-src 'self'; connect-src 'self'; frame-ancestors 'none'"}


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str
    gzipped: bytes | None = None  # compressed once at start; None when compressing saves nothing

    @classmethod
    def of(cls, body: bytes, media_type: str) -> Asset:
        packed = gzip.compress(body, compresslevel=9, mtime=0)
        return cls(body, media_type, hashlib.sha256(body).hexdigest()[:16],
                   packed if len(packed) < len(body) * 0.9 else None)


class Assets:
    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = {name: Asset.of(body, _media_type(name)) for name, body in files.items()}
        self._page = self._render_page(files[PAGE])

    def _render_page(self, template: bytes) -> Asset:
        # `{{name}}` in index.html becomes the asset's versioned URL.
        text = template.decode()
        for name, asset in self.files.items():
            text = text.replace("{{" + name + "}}", f"/_berth/static/{name}?v={asset.etag}")
        return Asset.of(text.encode(), TYPES[".html"])

    def page(self, request: Request) -> Response:
        return _send(request, self._page, "no-cache")

    def file(self, request: Request, name: str) -> Response:
        asset = self.files.get(name)
        if asset is None or name == PAGE:
            return Response(f"no dashboard asset named {name!r}\n", status_code=404, media_type=TYPES[".txt"])
        cache = IMMUTABLE if request.query_params.get("v") == asset.etag else "no-cache"
        return _send(request, asset, cache)

    def total_bytes(self, gzipped: bool = False) -> int:
        return sum(len(asset.gzipped if gzipped and asset.gzipped else asset.body) for asset in self.files.values())


def _send(request: Request, asset: Asset, cache: str) -> Response:
    headers = {"ETag": f'"{asset.etag}"', "Cache-Control": cache, "Vary": "Accept-Encoding", **SECURITY}
    if asset.etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    if asset.gzipped is not None and "gzip" in request.headers.get("accept-encoding", ""):
        return Response(asset.gzipped, media_type=asset.media_type, headers={**headers, "Content-Encoding": "gzip"})
    return Response(asset.body, media_type=asset.media_type, headers=headers)


def _media_type(name: str) -> str:
    for suffix, media_type in TYPES.items():
        if name.endswith(suffix):
            return media_type
    return "application/octet-stream"


def load_assets() -> Assets:
    folder = resources.files("berth.dashboard") / "static"
    files = {entry.name: entry.read_bytes() for entry in folder.iterdir() if entry.is_file()}
    return Assets(files)
