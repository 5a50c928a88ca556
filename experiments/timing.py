"""How the benchmark suites time compiled calls: one helper, the same rules for every number.

A timing compiles ``jax.jit(fn)`` for the given arguments (the compile is timed apart), makes
one warm-up call, then times calls one by one (each waited for with ``block_until_ready``)
until ``min_seconds`` have passed and at least ``min_calls`` were made.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any, Callable, Tuple

import jax


@dataclasses.dataclass(frozen=True)
class Timing:
    """compile_s: seconds to lower and compile; seconds: each timed call's seconds."""

    compile_s: float
    seconds: Tuple[float, ...]

    @property
    def calls(self) -> int:
        return len(self.seconds)

    @property
    def mean(self) -> float:
        return sum(self.seconds) / len(self.seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def best(self) -> float:
        return min(self.seconds)


def time_jitted(fn: Callable, *args: Any, min_seconds: float, min_calls: int = 1,
                max_calls: int = 1000, threaded: bool = False) -> Timing:
    """Times ``jax.jit(fn)(*args)``.

    With ``threaded`` the function returns ``(state, out)`` and ``state`` is the next call's
    first argument (a training chunk: the first argument is donated, as in training).
    """
    start = time.perf_counter()
    jitted = jax.jit(fn, donate_argnums=0) if threaded else jax.jit(fn)
    compiled = jitted.lower(*args).compile()
    compile_s = time.perf_counter() - start

    def call(args):
        out = compiled(*args)
        jax.block_until_ready(out)
        return (out[0],) + tuple(args[1:]) if threaded else args

    args = call(args)  # warm-up
    seconds = []
    begin = time.perf_counter()
    while len(seconds) < max_calls and (len(seconds) < min_calls
                                        or time.perf_counter() - begin < min_seconds):
        t = time.perf_counter()
        args = call(args)
        seconds.append(time.perf_counter() - t)
    return Timing(compile_s=compile_s, seconds=tuple(seconds))


__all__ = ["Timing", "time_jitted"]
