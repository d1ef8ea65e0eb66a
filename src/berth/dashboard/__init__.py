"""The live dashboard served by the daemon's observe app under /_berth/ (page, static assets, JSON, SSE).

`routes(source)` gives the Starlette routes to mount; `source` implements `DashboardSource`.
"""

from berth.dashboard.routes import routes
from berth.dashboard.source import DashboardSource

__all__ = ["DashboardSource", "routes"]
