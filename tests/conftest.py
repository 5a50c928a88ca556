"""Test-wide settings: a persistent XLA compilation cache shared by all test processes, and cheap
compiles for the fast tests.

Most fast tests spend their time compiling small programs, not running them; JAX's
``jax_disable_most_optimizations`` (XLA backend optimisation level 0, no expensive LLVM passes)
cuts that time by about a third. Tests marked ``slow`` train for many steps, so they keep the full
optimisations, as a user's run does. The setting is also exported as
``JAX_DISABLE_MOST_OPTIMIZATIONS`` so that the subprocesses a test starts compile the same way;
setting that variable before pytest starts (``0`` or ``1``) applies it to every test instead.
"""

import os

import jax
import pytest

CACHE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".jax_cache")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", CACHE_DIR)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs",
                  float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))
CHOSEN_BY_USER = "JAX_DISABLE_MOST_OPTIMIZATIONS" in os.environ


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Before the test's fixtures are built: full optimisations for slow tests only."""
    if CHOSEN_BY_USER:
        return
    fast = item.get_closest_marker("slow") is None
    jax.config.update("jax_disable_most_optimizations", fast)
    os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1" if fast else "0"
