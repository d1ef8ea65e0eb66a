"""`python -m berth.control`: the daemon entry the CLI starts in the background."""

import argparse
import os
import sys
from pathlib import Path

from berth.control.daemon import DaemonSettings, run
from berth.control.paths import Paths
from berth.control.reconciler import Timeouts
from berth.errors import BerthError


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m berth.control")
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8888)
    parser.add_argument("--max-body-size", type=int, default=64 * 2**20)
    parser.add_argument("--readiness-timeout", type=float, default=Timeouts().readiness)
    args = parser.parse_args()
    settings = DaemonSettings(paths=Paths(args.home), host=args.host, port=args.port,
                              max_body_size=args.max_body_size, timeouts=Timeouts(readiness=args.readiness_timeout))
    try:
        run(settings, os.environ)
    except BerthError as exc:
        print(f"berth daemon: error: {exc.message}", file=sys.stderr, flush=True)
        if exc.hint:
            print(f"berth daemon: hint: {exc.hint}", file=sys.stderr, flush=True)
        return exc.exit_code
    return 0


sys.exit(main())
