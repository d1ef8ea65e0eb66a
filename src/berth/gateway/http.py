"""HTTP/1.1 wire details of the gateway: hop-by-hop headers, the heads it writes, forwarding headers.

Pure functions and constants only, so the protocol classes stay about flow and state.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus

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

    @property
    def is_head(self) -> bool:
        return self.method == b"HEAD"


def rejected(rejection: Rejection, request_id: bytes, method: bytes = b"GET", http10: bool = False) -> ParsedRequest:
    return ParsedRequest(method=method, path=b"", query=b"", host=b"", headers=[], body=b"", keep_alive=False,
                         http10=http10, request_id=request_id, forwarded=b"", error=rejection)


def request_head(request: ParsedRequest, target: bytes) -> bytes:
    """The head the replica gets: HTTP/1.1 with a length, the original Host, X-Forwarded-*."""
    lines = [b"%s %s HTTP/1.1\r\nhost: %s\r\nx-request-id: %s\r\ncontent-length: %d\r\n%sx-forwarded-host: %s\r\n" % (
        request.method, target, request.host, request.request_id, len(request.body), request.forwarded,
        request.host)]
    lines += [b"%s: %s\r\n" % header for header in request.headers]
    lines.append(b"\r\n")
    return b"".join(lines)


def local_response(status: int, body: bytes, content_type: bytes, request_id: bytes, reason: bytes | None,
                   keep_alive: bool, http10: bool, head: bool) -> bytes:
    """A response the gateway writes itself; to HEAD it keeps the length and drops the body."""
    lines = [status_line(status), b"content-type: %s\r\ncontent-length: %d\r\nx-request-id: %s\r\n" % (
        content_type, len(body), request_id)]
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
