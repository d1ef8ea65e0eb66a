"""The baseline: a predictor inside one bare uvicorn + Starlette process, as a user would write it.

    python bench/bare_server.py --project bench/trivial --endpoint /trivial --port 9000

predict() runs inline on the event loop: the cheapest way to serve it, so the toughest baseline.
"""

import argparse
import importlib.util
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


def app_for(project: Path, endpoint: str) -> Starlette:
    spec = importlib.util.spec_from_file_location("bare_predictor", project / "predictor.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    predictor = module.PythonPredictor({})

    async def predict(request: Request) -> Response:
        return JSONResponse(predictor.predict(await request.json()))

    return Starlette(routes=[Route(endpoint, predict, methods=["POST"])])


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--project", type=Path, required=True)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app_for(args.project, args.endpoint), host="127.0.0.1", port=args.port, log_level="warning",
                access_log=False)
