"""`python -m berth.control`: the supervisor the CLI starts in the background (see master.py)."""

import argparse
import json
import os
import sys
from pathlib import Path

from berth.control.master import SupervisorSettings, default_gateway_workers, run
from berth.control.paths import Paths
from berth.errors import BerthError


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m berth.control")
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8888)
    parser.add_argument("--gateway-workers", type=int, default=None)
    parser.add_argument("--readiness-timeout", type=float, default=None)
    parser.add_argument("--gateway-settings", default="{}", help="GatewaySettings fields as JSON")
    parser.add_argument("--log-retention", type=float, default=None)
    parser.add_argument("--max-log-size", type=int, default=None)
    args = parser.parse_args()
    options: tuple[str, ...] = ("--readiness-timeout", str(args.readiness_timeout)) if args.readiness_timeout else ()
    if args.log_retention is not None:
        options += ("--log-retention", str(args.log_retention))
    if args.max_log_size is not None:
        options += ("--max-log-size", str(args.max_log_size))
    settings = SupervisorSettings(
        paths=Paths(args.home), host=args.host, port=args.port,
        gateway_workers=args.gateway_workers or default_gateway_workers(os.cpu_count() or 1),
        daemon_options=options, gateway_settings=json.loads(args.gateway_settings))
    try:
        return run(settings)
    except BerthError as exc:
        print(f"berth daemon: error: {exc.message}", file=sys.stderr, flush=True)
        if exc.hint:
            print(f"berth daemon: hint: {exc.hint}", file=sys.stderr, flush=True)
        return exc.exit_code


sys.exit(main())
