"""`python -m berth.activator --namespace NS --port 8080`: the activator in its pod (in-cluster credentials)."""

from __future__ import annotations

import argparse
import logging
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m berth.activator")
    parser.add_argument("--namespace", default=os.environ.get("BERTH_NAMESPACE", "default"),
                        help="the namespace of the APIs it serves (its own)")
    parser.add_argument("--host", default="0.0.0.0")  # a pod: reached through its Service
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)

    import uvicorn
    from lightkube import AsyncClient

    from berth.activator.app import create_app, service_url
    from berth.activator.cluster import LightkubeCluster

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    client = AsyncClient(namespace=args.namespace)  # in a pod: its service account's token and CA
    cluster = LightkubeCluster(client, args.namespace)
    app = create_app(cluster, service_url(args.namespace), on_close=cluster.close)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False,
                timeout_graceful_shutdown=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
