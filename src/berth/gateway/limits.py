"""The gateway's timeouts and size limits, with nginx's and uvicorn's defaults as the reference.

docs/gateway.md lists each with the reference it follows.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

# Descriptors kept out of the client budget: the listening socket, logs, the control link, pooled
# upstream connections beyond the one per client.
RESERVED_DESCRIPTORS = 64


@dataclass(frozen=True)
class GatewaySettings:
    max_body_size: int = 64 * 2**20        # 413 beyond (nginx client_max_body_size is 1m; models take more)
    max_streamed_body_size: int = 0        # the same for routes that stream bodies (predict takes body_stream); 0: none
    max_request_line: int = 8 * 2**10      # 414 beyond: nginx large_client_header_buffers 8k
    max_header_bytes: int = 64 * 2**10     # 431 beyond: the sum of every name and value
    header_timeout: float = 60.0           # nginx client_header_timeout: the whole head
    body_timeout: float = 60.0             # nginx client_body_timeout: between two reads
    keep_alive_timeout: float = 75.0       # nginx keepalive_timeout (uvicorn: 5s); see docs/gateway.md
    max_connections: int = 10_000          # client connections; capped by the descriptor limit
    upstream_idle_timeout: float = 60.0    # nginx upstream keepalive_timeout
    linger_timeout: float = 2.0            # after an error answer, read and drop what the client still sends
    trusted_proxies: tuple[str, ...] = ()  # addresses or networks whose X-Forwarded-* are extended

    @property
    def shortest_client_timeout(self) -> float:
        return min(self.header_timeout, self.body_timeout, self.keep_alive_timeout)


def connection_budget(configured: int) -> int:
    """Client connections that fit in the descriptor limit: each may hold an upstream connection too."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return configured
    return max(1, min(configured, (soft - RESERVED_DESCRIPTORS) // 2))
