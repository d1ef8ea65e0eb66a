"""The parameter names of a predictor's `predict`, read from its source without importing it.

The control plane never imports the user's code (that is the replica's job), yet the gateway must know
before the first request whether an API takes its request body as a stream (a `predict` with a
`body_stream` parameter, berth.runtime.contract.BODY_STREAM). The source is parsed, never run.
"""

from __future__ import annotations

import ast

# berth.runtime.contract.BODY_STREAM, repeated because config may not import runtime; a unit test
# holds the two equal.
BODY_STREAM = "body_stream"


def predict_parameters(source: str, class_name: str) -> set[str] | None:
    """The names `predict` of class `class_name` can be called with by name, `self` left out.

    None when that cannot be told from the source: a syntax error, no such class at the top level, or
    a class without its own `predict` (inherited, or assigned). `*args` and `**kwargs` name nothing a
    caller injects by name, so they are left out too.
    """
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):  # ValueError: a null byte in the source
        return None
    classes = [node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == class_name]
    if not classes:
        return None
    # As Python does, the last definition of a name wins (for the class and for the method).
    methods = [node for node in classes[-1].body
               if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == "predict"]
    if not methods:
        return None
    arguments = methods[-1].args
    positional = [arg.arg for arg in (*arguments.posonlyargs, *arguments.args)]
    if not _is_static(methods[-1]):
        positional = positional[1:]  # self
    return {*positional, *(arg.arg for arg in arguments.kwonlyargs)}


def _is_static(function: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    return any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in function.decorator_list)


def batching_conflict(source: str, class_name: str) -> str | None:
    """Why a predictor cannot run with server_side_batching, when its predict takes body_stream."""
    parameters = predict_parameters(source, class_name)
    if parameters is None or BODY_STREAM not in parameters:
        return None
    return (f"{class_name}.predict takes {BODY_STREAM} (its request body as a stream), which "
            "predictor.server_side_batching cannot give it: a batch is made of whole request bodies. Remove "
            f"server_side_batching, or the {BODY_STREAM} parameter")
