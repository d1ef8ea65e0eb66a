"""The live dashboard served by the daemon's observe app under /_berth/ (page, static assets, JSON, SSE)."""

from berth.dashboard.source import DashboardSource

__all__ = ["DashboardSource"]
