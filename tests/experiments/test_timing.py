"""The one timing helper of the benchmark suites."""

import jax.numpy as jnp

from experiments.timing import Timing, time_jitted


def test_summaries_of_the_readings():
    t = Timing(compile_s=0.5, seconds=(1.0, 2.0, 3.0, 10.0))
    assert (t.calls, t.mean, t.median, t.best) == (4, 4.0, 2.5, 1.0)


def test_times_at_least_min_calls_and_threads_the_state():
    seen = []

    def chunk(state):
        seen.append(None)  # runs once, at tracing
        return state + 1, state.sum()

    timing = time_jitted(chunk, jnp.zeros(3), min_seconds=0.0, min_calls=5)
    assert timing.calls == 5 and timing.compile_s > 0 and len(seen) == 1
    timed = time_jitted(lambda x, y: x @ y, jnp.ones((4, 4)), jnp.ones((4, 4)),
                        min_seconds=0.0, min_calls=3, threaded=False)
    assert timed.calls == 3 and all(s > 0 for s in timed.seconds)
