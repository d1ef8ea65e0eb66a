"""Baseline: the MLP unbatched in one bare uvicorn + Starlette process (predict inline on the loop)."""

import argparse
import importlib.util
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

spec = importlib.util.spec_from_file_location("mlp", Path(__file__).parent / "mlp" / "predictor.py")
assert spec and spec.loader
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
predictor = module.PythonPredictor({})


async def predict(request: Request) -> Response:
    return JSONResponse(predictor.predict(await request.json()))


app = Starlette(routes=[Route("/mlp", predict, methods=["POST"])])

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
