"""An environment's own per-episode metrics (``TimeStep.episode_metrics``, e.g. craftax's
achievements) reach the logged lines as means over the episodes that ended in a chunk."""

import types

import jax.numpy as jnp
import numpy as np

from core import loop, runner


def test_episode_metrics_are_summed_where_done_and_logged_as_per_seed_means():
    done = jnp.array([[False, True], [True, True]])  # [T, N]: 3 episodes end
    timesteps = types.SimpleNamespace(
        done=done, episode_return=jnp.array([[0.0, 2.0], [4.0, 6.0]]),
        episode_length=jnp.array([[0, 3], [5, 7]]),
        episode_metrics={"achievement_collect_wood": jnp.array([[1.0, 1.0], [0.0, 1.0]])})
    stats = loop._episode_stats(timesteps)
    assert float(stats[loop.EPISODE_METRIC_SUM + "achievement_collect_wood"]) == 2.0
    # Two seeds (leading axis) as the runner sees them: 3 and 1 episodes.
    per_seed = {name: np.stack([np.asarray(value), np.asarray(value) * 0 + {
        "episodes": 1.0, "episode_return_sum": 8.0, "episode_length_sum": 9.0,
        loop.EPISODE_METRIC_SUM + "achievement_collect_wood": 0.0}[name]])
        for name, value in stats.items()}
    out = runner._summarise(per_seed)
    assert out["episodes"] == 4
    np.testing.assert_allclose(out["achievement_collect_wood_mean"], (2 / 3 + 0 / 1) / 2)
    np.testing.assert_allclose(out["episode_return_mean"], (12 / 3 + 8 / 1) / 2)
    assert not any(name.startswith(loop.EPISODE_METRIC_SUM) for name in out)
