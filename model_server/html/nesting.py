"""Recursion without Python's call stack, for walks as deep as the parser nests elements.

A walker is written as a generator that *yields* each nested call it wants to make (another such
generator) instead of calling it; `run_nested` runs every yielded call to its end before the caller
resumes, with an explicit stack. The code reads like the recursive version, and no nesting depth can
raise RecursionError (the parser keeps 256 levels, Python's default limit is 1000 frames, and a pool
thread may already be some frames deep).
"""

from __future__ import annotations

from typing import Generator

__all__ = ["Nested", "run_nested"]

Nested = Generator["Nested", None, None]

_DONE = object()


def run_nested(call: Nested) -> None:
    """Run `call` and, depth first, every nested call it yields (each before its caller resumes)."""
    stack = [call]
    while stack:
        nested = next(stack[-1], _DONE)
        if nested is _DONE:
            stack.pop()
        else:
            stack.append(nested)
