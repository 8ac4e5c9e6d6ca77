"""Experiments for ``kind: recorded`` and ``kind: consistency`` claims: re-doing a note's own arithmetic.

The note's numbers are transcribed into the claim's ``config.values``; ``config.expression`` says what the note
computed from them. Expressions are parsed with :mod:`ast` and evaluated by a tiny interpreter that knows only
numbers, the transcribed names, arithmetic and a handful of functions: claim files are data, never code.
"""

from __future__ import annotations

import ast
import math
import operator
import statistics
from collections.abc import Callable, Mapping
from typing import Any

from reprolab.experiments.registry import config_value, experiment

_BINARY: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[float], float]] = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_FUNCTIONS: dict[str, Callable[..., float]] = {
    "abs": abs,
    "min": min,
    "max": max,
    "mean": lambda *xs: statistics.fmean(xs),
    "round": round,
    "sqrt": math.sqrt,
}


def evaluate_expression(expression: str, values: Mapping[str, float]) -> float:
    """Evaluate ``expression`` over ``values``; raises ValueError naming the offending part."""
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"expression {expression!r} is not valid arithmetic: {exc.msg}") from None

    def walk(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, int | float)
            and not isinstance(node.value, bool)
        ):
            return float(node.value)
        if isinstance(node, ast.Name):
            if node.id not in values:
                raise ValueError(
                    f"expression {expression!r} uses {node.id!r}, which is not in values {sorted(values)}"
                )
            return float(values[node.id])
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Div) and right == 0:
                raise ValueError(f"expression {expression!r} divides by zero")
            return float(_BINARY[type(node.op)](left, right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return float(_UNARY[type(node.op)](walk(node.operand)))
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in _FUNCTIONS
            and not node.keywords
        ):
            return float(_FUNCTIONS[node.func.id](*(walk(arg) for arg in node.args)))
        raise ValueError(
            f"expression {expression!r}: {ast.unparse(node)!r} is not allowed (arithmetic on values only)"
        )

    return walk(tree)


@experiment(
    "recorded.arithmetic", version="1", metrics={"value": (None, None)}, config_keys=("values", "expression")
)
def arithmetic(config: Mapping[str, Any], seed: int) -> dict[str, float]:
    """Recompute a number the note derived from its own table. ``seed`` is unused: the result is exact."""
    del seed
    values = config_value(config, "values", kind=dict)
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"config.values.{name} must be a number, got {value!r}")
    expression = config_value(config, "expression", kind=str)
    return {"value": evaluate_expression(expression, values)}
