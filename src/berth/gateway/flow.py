"""Read flow control on a transport, after uvicorn's flow_control.py.

One object owns `read_paused` together with the calls that change it, so the flag and the
transport can never disagree (a pooled connection left paused never answers again).
"""

from __future__ import annotations

import asyncio


class ReadFlow:
    __slots__ = ("_transport", "read_paused")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self.read_paused = False

    def pause_reading(self) -> None:
        if not self.read_paused:
            self.read_paused = True
            if not self._transport.is_closing():
                self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused:
            self.read_paused = False
            if not self._transport.is_closing():
                self._transport.resume_reading()
