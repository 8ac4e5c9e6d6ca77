"""Marker expressions for ``reprolab check -m``: the same words pytest's ``-m`` understands for claims.

A claim carries the names of its scale (``fast``/``gpu``) and kind (``reproduce``/``recorded``/``consistency``).
The expression is parsed with :mod:`ast` and may only use those names, ``and``, ``or``, ``not`` and parentheses.
"""

from __future__ import annotations

import ast
from collections.abc import Callable

from reprolab.claims.loader import LoadedClaim


def claim_markers(item: LoadedClaim) -> set[str]:
    return {item.claim.scale, item.claim.kind}


def compile_marker_expression(expression: str) -> Callable[[set[str]], bool]:
    """Compile ``expression`` into a predicate over a set of marker names; ValueError when malformed."""
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError:
        raise ValueError(f"bad marker expression {expression!r}") from None

    allowed = (ast.Expression, ast.BoolOp, ast.Name, ast.Load, ast.And, ast.Or, ast.Not)

    def check(node: ast.AST) -> None:
        negation = isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not)
        if not (negation or isinstance(node, allowed)):
            raise ValueError(f"bad marker expression {expression!r}: only names, and, or, not, parentheses")
        for child in ast.iter_child_nodes(node):
            check(child)

    check(tree)

    def evaluate(node: ast.AST, markers: set[str]) -> bool:
        if isinstance(node, ast.Expression):
            return evaluate(node.body, markers)
        if isinstance(node, ast.Name):
            return node.id in markers
        if isinstance(node, ast.UnaryOp):
            return not evaluate(node.operand, markers)
        assert isinstance(node, ast.BoolOp)
        results = (evaluate(value, markers) for value in node.values)
        return all(results) if isinstance(node.op, ast.And) else any(results)

    return lambda markers: evaluate(tree, markers)
