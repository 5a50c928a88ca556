"""Gumbel MuZero (``mctx.gumbel_muzero_policy``, the improved policy as the policy target)
trained through the loop on the corridor of :mod:`tests.agents.test_muzero_learning`."""

import numpy as np
import pytest

from agents import gumbel_muzero
from tests.agents.test_muzero_learning import corridor_config, returns_from_cell_0


@pytest.mark.slow
def test_gumbel_muzero_walks_past_the_bait():
    """Greedy from cell 0 every seed walks the corridor (return 1); a search over immediate
    rewards, or an agent whose value targets are broken, takes the bait (0.5)."""
    cfg = corridor_config(gumbel_muzero.PRESETS)
    assert cfg.search == "gumbel"
    returns = returns_from_cell_0(cfg, steps=4000)
    np.testing.assert_allclose(returns, 1.0, err_msg="greedy returns from cell 0")


def test_continuous_task_error_names_gumbel_muzero():
    import envs

    with pytest.raises(ValueError, match="agent 'gumbel_muzero' needs a discrete action space"):
        gumbel_muzero.make(gumbel_muzero.PRESETS["tiny"], envs.make("linear/random_4x2"), 2)
