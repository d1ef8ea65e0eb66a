"""`python -m berth.gateway`: one gateway worker, started by the supervisor (never by hand)."""

import argparse
import json
import sys
from pathlib import Path

from berth.gateway.proxy import GatewaySettings
from berth.gateway.worker import WorkerSettings, run


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m berth.gateway")
    parser.add_argument("--home", type=Path, required=True)  # names the instance in `ps`
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--listen-fd", type=int, required=True)
    parser.add_argument("--lifeline-fd", type=int, default=None)
    parser.add_argument("--control-socket", type=Path, required=True)
    parser.add_argument("--routes-file", type=Path, required=True)
    parser.add_argument("--settings", default="{}", help="GatewaySettings fields as JSON")
    parser.add_argument("--observe-socket", type=Path, default=None,
                        help="the daemon's read-only app; default: observe.sock beside the control socket")
    parser.add_argument("--request-logs", type=Path, default=None, help="default: HOME/logs")
    args = parser.parse_args()
    settings = WorkerSettings(listen_fd=args.listen_fd, control_socket=args.control_socket,
                              routes_file=args.routes_file, index=args.index, lifeline_fd=args.lifeline_fd,
                              gateway=_gateway_settings(json.loads(args.settings)),
                              observe_socket=args.observe_socket or args.control_socket.parent / "observe.sock",
                              request_logs=args.request_logs or args.home / "logs")
    run(settings)
    return 0


def _gateway_settings(fields: dict[str, object]) -> GatewaySettings:
    # JSON has lists where the frozen settings keep tuples.
    return GatewaySettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})  # type: ignore[arg-type]


sys.exit(main())
