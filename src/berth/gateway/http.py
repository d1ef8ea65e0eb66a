"""HTTP/1.1 wire details of the gateway: hop-by-hop headers, the heads it writes, forwarding headers.

Pure functions and constants only, so the protocol classes stay about flow and state.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from berth.gateway.upload import Upload

# RFC 9110 §7.6.1: meaningful for one connection only, never forwarded. Proxy-Authorization is
# meant for the gateway, not for the replica behind it.
REQUEST_HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade",
    b"proxy-connection", b"proxy-authorization",
})
# Headers the gateway writes itself on the way to the replica, so the client's copy is dropped.
REQUEST_REWRITTEN = frozenset({
    b"content-length", b"expect", b"host", b"x-request-id",
    b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host",
})
REQUEST_SPECIAL = REQUEST_HOP_BY_HOP | REQUEST_REWRITTEN
# A client's X-Request-ID travels on (to the replica, into logs and the response) only when it is
# printable ASCII without spaces and at most 200 bytes; otherwise the gateway makes one up.
VALID_REQUEST_ID = re.compile(rb"[\x21-\x7e]{1,200}")
RESPONSE_HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade",
    b"proxy-connection", b"proxy-authenticate",
})
# A 1.1 server answers 1.0 clients with a 1.1 status line (RFC 9110 §6.2); only the framing differs.
STATUS_LINES = {
    status: b"HTTP/1.1 %d %s\r\n" % (status, HTTPStatus(status).phrase.encode())
    for status in range(100, 600) if status in HTTPStatus._value2member_map_
}
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def status_line(status: int) -> bytes:
    return STATUS_LINES.get(status) or b"HTTP/1.1 %d \r\n" % status


def connection_tokens(value: bytes) -> list[bytes]:
    """The header names a `Connection` header lists (RFC 9110 §7.6.1), lowercased."""
    return [token.strip().lower() for token in value.split(b",") if token.strip()]


@dataclass(slots=True)
class Rejection:
    """A request the gateway answers itself, then closes the connection."""

    status: int
    reason: bytes
    message: str


@dataclass(slots=True)
class ParsedRequest:
    method: bytes
    path: bytes
    query: bytes
    host: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    keep_alive: bool
    http10: bool
    request_id: bytes
    forwarded: bytes  # the X-Forwarded-For/-Proto lines for the replica
    error: Rejection | None = None
    is_head: bool = False
    forwarded_host: bytes = b""  # a trusted proxy's X-Forwarded-Host, kept over our Host
    started: float = 0.0  # monotonic time its head began to arrive: its recorded latency counts from here
    upload: Upload | None = None  # its body streams to the replica as it arrives (stream_body routes)
    key_counts: list[int] | None = None  # its API key's counters by status class, once the key was verified


def rejected(rejection: Rejection, request_id: bytes, method: bytes = b"GET", http10: bool = False,
             path: bytes = b"", started: float = 0.0) -> ParsedRequest:
    """`path`, as far as it was read: it tells which API's refusals the answer counts under."""
    return ParsedRequest(method=method, path=path, query=b"", host=b"", headers=[], body=b"", keep_alive=False,
                         http10=http10, request_id=request_id, forwarded=b"", error=rejection,
                         is_head=method == b"HEAD", started=started)


def request_head(request: ParsedRequest, target: bytes) -> bytes:
    """The head the replica gets: HTTP/1.1 with a length, the original Host, X-Forwarded-*."""
    lines = [b"%s %s HTTP/1.1\r\nhost: %s\r\nx-request-id: %s\r\ncontent-length: %d\r\n%sx-forwarded-host: %s\r\n" % (
        request.method, target, request.host, request.request_id, len(request.body), request.forwarded,
        request.forwarded_host or request.host)]
    lines += [b"%s: %s\r\n" % header for header in request.headers]
    lines.append(b"\r\n")
    return b"".join(lines)


def local_response(status: int, body: bytes, content_type: bytes, request_id: bytes, reason: bytes | None,
                   keep_alive: bool, http10: bool, head: bool, extra: bytes = b"") -> bytes:
    """A response the gateway writes itself; to HEAD it keeps the length and drops the body.
    `extra`: more header lines, each ending with CRLF."""
    lines = [status_line(status), b"content-type: %s\r\ncontent-length: %d\r\nx-request-id: %s\r\n%s" % (
        content_type, len(body), request_id, extra)]
    if reason:
        lines.append(b"x-berth-reason: %s\r\n" % reason)
    if not keep_alive:
        lines.append(b"connection: close\r\n")
    elif http10:
        lines.append(b"connection: keep-alive\r\n")
    lines.append(b"\r\n")
    if not head:
        lines.append(body)
    return b"".join(lines)


def error_body(message: str, request_id: bytes) -> bytes:
    return json.dumps({"error": message, "request_id": request_id.decode("latin-1")}).encode()


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(proxies: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(proxy, strict=False) for proxy in proxies)


def is_trusted(peer: str, networks: tuple[Network, ...]) -> bool:
    if not networks or not peer:
        return False
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(address in network for network in networks)


def forwarded_lines(peer: bytes, client_for: bytes | None, client_proto: bytes | None) -> bytes:
    """X-Forwarded-For/-Proto: the client's values extended, when the peer is a trusted proxy."""
    chain = b"%s, %s" % (client_for, peer) if client_for and peer else (peer or client_for or b"")
    lines = b"x-forwarded-for: %s\r\n" % chain if chain else b""
    return lines + b"x-forwarded-proto: %s\r\n" % (client_proto or b"http")


class ResponseHead:
    """A replica's response head, and how it travels on to the client.

    The common case (a length, no hop-by-hop header, a 1.1 keep-alive client) costs a few bytes
    searches and forwards the head untouched (`rewritten` is None).
    """

    __slots__ = ("dechunk", "head_only", "keep_client", "raw", "rewritten", "status", "until_eof",
                 "upstream_keep_alive")

    def __init__(self, raw: bytes, keep_alive: bool, http10: bool, is_head: bool) -> None:
        self.raw = raw
        self.status = int(raw[9:12]) if raw[9:12].isdigit() else 502
        found = FRAMING_HEADERS.findall(raw)
        if found and found != JUST_LENGTH:
            found = [name.lower() for name in found]
        has_length = b"content-length" in found
        chunked = b"transfer-encoding" in found
        hop_by_hop = len(found) > has_length
        tokens = _connection_values(raw) if b"connection" in found else []
        self.upstream_keep_alive = raw.startswith(b"HTTP/1.1") and b"close" not in tokens
        self.head_only = is_head
        self.dechunk = self.until_eof = False
        passthrough_chunked = False
        if is_head or has_length or self.status in (204, 304):
            pass
        elif chunked and not http10:
            passthrough_chunked = True  # forwarded with its chunked framing as is
        elif chunked:
            self.dechunk, keep_alive = True, False  # a 1.0 client: the body ends when we close
        else:
            self.until_eof, keep_alive = True, False  # the replica's body ends with its connection
        self.keep_client = keep_alive
        extra = b"connection: close\r\n" if not keep_alive else b"connection: keep-alive\r\n" if http10 else b""
        if hop_by_hop:
            self.rewritten: bytes | None = _rebuild(raw, tokens, passthrough_chunked) + extra + b"\r\n"
        else:
            self.rewritten = raw[:-2] + extra + b"\r\n" if extra else None


# One scan finds the headers that decide how a response travels on: its length and the hop-by-hop ones.
FRAMING_HEADERS = re.compile(
    rb"\n(content-length|%s)[ \t]*:" % b"|".join(sorted(RESPONSE_HOP_BY_HOP)), re.IGNORECASE)
JUST_LENGTH = [b"content-length"]
# What every plain response (a length, nothing hop-by-hop) becomes for a 1.1 keep-alive client, by status.
PLAIN = {
    b"%d" % status: ResponseHead(b"HTTP/1.1 %d -\r\ncontent-length: 0\r\n\r\n" % status, True, False, False)
    for status in range(200, 600) if status not in (204, 304)
}


def _connection_values(raw: bytes) -> list[bytes]:
    tokens: list[bytes] = []
    for line in raw.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"connection":
            tokens += connection_tokens(value)
    return tokens


def _rebuild(raw: bytes, tokens: list[bytes], keep_chunked: bool) -> bytes:
    """The head without its hop-by-hop headers (and those its Connection header names), no final CRLF."""
    lines = raw[:-4].split(b"\r\n")
    dropped = RESPONSE_HOP_BY_HOP.union(tokens)
    kept = [lines[0]]
    for line in lines[1:]:
        name = line.partition(b":")[0].strip().lower()
        if name not in dropped:
            kept.append(line)
        elif keep_chunked and name == b"transfer-encoding":
            kept.append(b"transfer-encoding: chunked")
    return b"\r\n".join(kept) + b"\r\n"
