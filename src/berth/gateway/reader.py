"""The request side of a client connection: httptools callbacks turned into whole requests.

It enforces the size limits as bytes arrive (414, 431, 413), refuses expectations it cannot meet
(417), accepts absolute-form targets, drops trailers (they never override a header) and hands one
ParsedRequest per message to its connection, in order, rejections included.
"""

from __future__ import annotations

from collections.abc import Callable
from time import monotonic
from typing import Protocol

import httptools

from berth.gateway.http import (
    REQUEST_SPECIAL,
    VALID_REQUEST_ID,
    ParsedRequest,
    Rejection,
    connection_tokens,
    forwarded_lines,
    rejected,
)
from berth.gateway.limits import GatewaySettings
from berth.gateway.routes import RoutingTable
from berth.gateway.upload import Upload


class Reading:
    """Where the reader is in a message (plain ints: compared on every callback)."""

    IDLE = 0   # between messages
    HEAD = 1   # request line and headers
    BODY = 2


class RequestSink(Protocol):
    """The connection, as the reader sees it."""

    peer: bytes
    trusted: bool
    forwarded: bytes

    def enqueue(self, request: ParsedRequest) -> None: ...

    def want_continue(self) -> None: ...

    def hold_client(self) -> None: ...

    def release_client(self) -> None: ...

    new_request_id: Callable[[], bytes]


class RequestReader:
    def __init__(self, sink: RequestSink, settings: GatewaySettings, routes: RoutingTable | None = None) -> None:
        self.sink = sink
        self.settings = settings
        self.routes = routes if routes is not None else RoutingTable()
        self.max_header_bytes = settings.max_header_bytes
        self.upload: Upload | None = None  # the body being streamed to a replica as it arrives
        self.parser = httptools.HttpRequestParser(self)
        self.state = Reading.IDLE
        self.head_started = 0.0
        self.last_read = 0.0
        self.stopped = False  # after a rejection: nothing more is parsed on this connection
        self._head_bytes = 0
        self._rare = True
        self.on_message_begin()
        self.state = Reading.IDLE

    def feed(self, data: bytes) -> None:
        """The connection's data_received itself (one call less per read on the hot path)."""
        self.last_read = monotonic()
        if self.stopped:
            return  # lingering after an answer that closes: what still comes is dropped
        continued_head = self.state == Reading.HEAD
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.stopped = True  # the Upgrade header was dropped; the replica answered a plain request
        except httptools.HttpParserError as exc:
            self.reject(400, b"bad-request", f"malformed HTTP request: {exc}")
        if continued_head and self.state == Reading.HEAD and not self.stopped:
            # A header httptools is still gathering is invisible to on_header: bound it here.
            self._head_bytes += len(data)
            if self._head_bytes > self.settings.max_request_line + self.settings.max_header_bytes:
                self.reject(431, b"headers-too-large", "the request head exceeds its size limit")

    def reject(self, status: int, reason: bytes, message: str) -> None:
        if self.stopped:
            return
        self.stopped = True
        request_id = self.request_id or self.sink.new_request_id()
        path = self.url.partition(b"?")[0] if self.state != Reading.IDLE else b""
        self.sink.enqueue(rejected(Rejection(status, reason, message), request_id, self._method(), self.http10,
                                   path, self.head_started))

    def stop(self) -> None:
        self.stopped = True

    def _method(self) -> bytes:
        try:
            return self.parser.get_method() if self.state != Reading.IDLE else b"GET"
        except httptools.HttpParserError:
            return b"GET"

    # --- httptools callbacks ----------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.state = Reading.HEAD
        self.head_started = self.last_read  # feed stamped it just before parsing
        self._head_bytes = 0
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.body_size = 0
        self.header_bytes = 0
        self.request_id = b""
        self.host: bytes | None = None
        self.content_length = b""
        self.http10 = False
        if self._rare:
            self._reset_rare()

    def _reset_rare(self) -> None:
        """Fields most requests never set: reset only after a request that did."""
        self._rare = False
        self.max_body = self.settings.max_body_size  # a streamed body has its own limit
        self.chunked = False
        self.expect = b""
        self.tokens: list[bytes] = []
        self.client_for: bytes | None = None
        self.client_proto: bytes | None = None
        self.client_host: bytes | None = None

    def on_url(self, url: bytes) -> None:
        if self.stopped:
            return
        self.url += url
        if len(self.url) > self.settings.max_request_line:
            self.reject(414, b"uri-too-long", f"the request target exceeds {self.settings.max_request_line} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.state != Reading.HEAD or self.stopped:
            return  # trailers, or a request already refused
        size = self.header_bytes = self.header_bytes + len(name) + len(value) + 4
        if size > self.max_header_bytes:
            self.reject(431, b"headers-too-large",
                        f"the request headers exceed {self.settings.max_header_bytes} bytes")
            return
        lowered = name.lower()
        if lowered not in REQUEST_SPECIAL:
            self.headers.append((lowered, value))
        elif lowered == b"host":  # the common special ones inline: this runs for every header
            if self.host is not None:
                self.reject(400, b"bad-request", "more than one Host header")
            self.host = value
        elif lowered == b"content-length":
            self.content_length = value
        else:
            self._special(lowered, value)

    def _special(self, name: bytes, value: bytes) -> None:
        self._rare = True
        if name == b"x-request-id":
            if VALID_REQUEST_ID.fullmatch(value):
                self.request_id = value
        elif name == b"expect":
            self.expect = value.lower()
        elif name == b"connection":
            self.tokens += connection_tokens(value)
        elif name == b"transfer-encoding":
            self.chunked = b"chunked" in value.lower()
        elif self.sink.trusted:
            if name == b"x-forwarded-for":
                self.client_for = value if self.client_for is None else b"%s, %s" % (self.client_for, value)
            elif name == b"x-forwarded-proto":
                self.client_proto = value
            elif name == b"x-forwarded-host":
                self.client_host = value

    def on_headers_complete(self) -> None:
        self.state = Reading.BODY
        if self.stopped:
            return
        parser = self.parser
        self.http10 = parser.get_http_version() == "1.0"
        if self.routes.streaming and self._stream_body():
            return
        limit = self.settings.max_body_size
        if self.content_length.isdigit() and int(self.content_length) > limit:
            self.reject(413, b"body-too-large",
                        f"the request body ({int(self.content_length)} bytes) exceeds the limit of {limit} bytes")
        elif self.expect and not self.http10:  # RFC 9110 §10.1.1: 1.0 expectations are ignored
            if self.expect != b"100-continue":
                self.reject(417, b"expectation-failed", "only `Expect: 100-continue` is supported")
            else:
                self.sink.want_continue()

    def on_body(self, body: bytes) -> None:
        if self.stopped:
            return
        self.body_size += len(body)
        if self.body_size > self.max_body:
            self.reject(413, b"body-too-large", f"the request body exceeds the limit of {self.max_body} bytes")
            return
        self.body.append(body)  # for a streamed body, Upload.append

    def on_message_complete(self) -> None:
        self.state = Reading.IDLE
        if self.stopped:
            return
        upload = self.upload
        if upload is not None:
            self.upload = None
            upload.finish()
            return
        request = self._request()
        if request is not None:
            self.sink.enqueue(request)

    def _request(self) -> ParsedRequest | None:
        parser = self.parser
        url = self.url
        if url[:1] == b"/":
            path, _, query = url.partition(b"?")
            host = self.host or b""
        else:
            target = self._target()
            if target is None:
                return None
            path, query, host = target
        headers = self.headers
        if self.tokens:
            named = set(self.tokens)
            headers = [(name, value) for name, value in headers if name not in named]
        keep_alive = parser.should_keep_alive() and not parser.should_upgrade()
        sink = self.sink
        forwarded = sink.forwarded if not sink.trusted else forwarded_lines(
            sink.peer, self.client_for, self.client_proto)
        method = parser.get_method()
        body = self.body
        # Positional: this runs once per request (method, path, query, host, headers, body, keep_alive,
        # http10, request_id, forwarded, error, is_head, forwarded_host, started).
        return ParsedRequest(
            method, path, query, host, headers, body[0] if len(body) == 1 else b"".join(body), keep_alive,
            self.http10, self.request_id or sink.new_request_id(), forwarded, None, method == b"HEAD",
            self.client_host or b"", self.head_started)

    def _stream_body(self) -> bool:
        """A body for a route that streams it: the request goes out now, its body as it arrives.
        False: an ordinary request (no body, or a route that buffers); True: dispatched or refused."""
        length = int(self.content_length) if self.content_length.isdigit() else 0
        if not (self.chunked or length):
            return False
        if self.url[:1] == b"/":
            path = self.url.partition(b"?")[0]
        else:
            target = self._target()
            if target is None:
                return True  # refused
            path = target[0]
        route = self.routes.resolve(path.decode("latin-1"))[0]
        if route is None or not route.stream_body:
            return False
        self._rare = True  # _reset_rare puts max_body back
        limit = self.max_body = self.settings.max_streamed_body_size or 2**63
        if length > limit:
            self.reject(413, b"body-too-large", f"the request body ({length} bytes) exceeds the limit of {limit} "
                        "bytes for streamed bodies (max_streamed_body_size)")
            return True
        expect = self.expect and not self.http10
        if expect and self.expect != b"100-continue":
            self.reject(417, b"expectation-failed", "only `Expect: 100-continue` is supported")
            return True
        request = self._request()  # built while the body is still the empty list
        if request is None:
            return True
        upload = request.upload = self.upload = Upload(self.sink, None if self.chunked else length, bool(expect))
        self.body = upload  # type: ignore[assignment]  # on_body appends to it
        self.sink.enqueue(request)
        return True

    def _target(self) -> tuple[bytes, bytes, bytes] | None:
        """Path, query and Host; an absolute-form target names the host itself (RFC 9112 §3.2.2)."""
        url = self.url
        if url.startswith(b"/") or url == b"*":
            path, _, query = url.partition(b"?")
            return path, query, self.host or b""
        try:
            parsed = httptools.parse_url(url)
        except httptools.HttpParserInvalidURLError:
            parsed = None
        if parsed is None or parsed.schema not in (b"http", b"https") or not parsed.host:
            self.reject(400, b"bad-request", "the request target is neither a path nor an http URL")
            return None
        host = parsed.host + (b":%d" % parsed.port if parsed.port else b"")
        return parsed.path or b"/", parsed.query or b"", host
