"""A request body streamed to the replica as it arrives, for routes whose predict takes body_stream.

The reader dispatches such a request once its head is read and hands each piece of its body to
`append` as httptools parses it. Until an upstream connection takes the upload (it is being
connected, or the request waits behind another one or for a replica to start), pieces wait here, at
most BUFFER bytes before the client is paused. Afterwards they go straight to that connection's
transport, and the client is paused while that transport's buffer is above its high-water mark
(UpstreamConnection.pause_writing), so the gateway holds a bounded amount whatever the body's size.

The replica gets the client's framing: a Content-Length body as it is, a chunked body re-chunked
piece by piece (trailers dropped). A request any of whose body went to a replica is never retried on
another: the gateway no longer has those bytes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from time import monotonic
from typing import Protocol

# Read ahead of an upstream connection before the client is paused (one socket read may add 256 KiB).
BUFFER = 256 * 2**10
LAST_CHUNK = b"0\r\n\r\n"


class UploadOwner(Protocol):
    """The client connection, whose reading an upload pauses and resumes."""

    def hold_client(self) -> None: ...

    def release_client(self) -> None: ...


class Upload:
    __slots__ = ("buffered", "chunked", "complete", "expect_continue", "length", "owner", "pieces", "progressed",
                 "received", "sent", "transport", "upstream_paused")

    def __init__(self, owner: UploadOwner, length: int | None, expect_continue: bool) -> None:
        self.owner = owner
        self.length = length  # the client's Content-Length; None: chunked
        self.chunked = length is None
        self.expect_continue = expect_continue  # a 100 Continue is owed when the request is dispatched
        self.pieces: list[bytes] = []  # read before an upstream connection took the upload
        self.buffered = 0
        self.received = 0
        self.complete = False  # the client sent the whole body
        self.sent = False  # some of the body went to a replica: no retry on another one
        self.transport: asyncio.Transport | None = None
        self.progressed: Callable[[float], None] | None = None
        self.upstream_paused = False

    @property
    def may_read(self) -> bool:
        """Whether the client may be read from, as far as this upload is concerned."""
        return not self.upstream_paused and (self.transport is not None or self.buffered <= BUFFER)

    def framing(self) -> bytes:
        """The header line that frames the body for the replica."""
        return b"transfer-encoding: chunked\r\n" if self.length is None else b"content-length: %d\r\n" % self.length

    def append(self, data: bytes) -> None:
        self.received += len(data)
        if self.chunked:
            data = b"%x\r\n%s\r\n" % (len(data), data)
        self._out(data)

    def finish(self) -> None:
        self.complete = True
        if self.chunked:
            self._out(LAST_CHUNK)

    def _out(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None:
            if not transport.is_closing():  # closing: the exchange is ending; its connection is gone
                self.sent = True
                transport.write(data)
                if self.progressed is not None:
                    self.progressed(monotonic())
            return
        self.pieces.append(data)
        self.buffered += len(data)
        if self.buffered > BUFFER:
            self.owner.hold_client()

    def attach(self, transport: asyncio.Transport, progressed: Callable[[float], None] | None = None) -> None:
        """An upstream connection took the request (its head is written): what was read follows it.
        `progressed` hears of each piece sent, so a long upload that keeps moving is not timed out."""
        self.transport, self.progressed = transport, progressed
        if self.pieces:
            self.sent = True
            data = b"".join(self.pieces)
            self.pieces.clear()
            self.buffered = 0
            transport.write(data)  # may pause_writing at once: release_client then keeps the client paused
        if not self.complete:
            self.owner.release_client()

    def detach(self) -> None:
        """Its upstream connection is gone (lost, abandoned, or the exchange ended)."""
        self.transport = self.progressed = None
        self.upstream_paused = False

    # --- the upstream transport's write buffer (UpstreamConnection.pause_writing/resume_writing) ---
    def pause(self) -> None:
        self.upstream_paused = True
        if not self.complete:
            self.owner.hold_client()

    def resume(self) -> None:
        self.upstream_paused = False
        if not self.complete:
            self.owner.release_client()


def streamed_head(head: bytes, upload: Upload) -> bytes:
    """request_head's output (made for an empty body) with the upload's framing instead."""
    return head.replace(b"\r\ncontent-length: 0\r\n", b"\r\n" + upload.framing(), 1)
