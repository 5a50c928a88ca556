"""``experiments.latent_capacity``: the probe measures what one latent sample carries."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

import envs
from agents.dreamer import PRESETS
from agents.dreamer.agent import Dreamer
from experiments import latent_capacity
from experiments.cli import UsageError


def _two_bits(key, n=512):
    """CartPole-shaped observations whose first two elements are independent fair bits (+-1)
    and whose other two are constant."""
    bits = jax.random.bernoulli(key, 0.5, (n, 2)).astype(np.float32) * 2.0 - 1.0
    return np.concatenate([np.asarray(bits), np.full((n, 2), 0.5, np.float32)], 1)


@pytest.mark.slow
@pytest.mark.parametrize("groups, carried", [(1, 1), (2, 2)])
def test_one_latent_carries_as_many_bits_as_it_has(groups, carried):
    """A latent of ``groups`` binary classes reconstructs ``groups`` of two independent bits:
    one bit (correlation ~1) and the other not at all (~0) with one group, both with two
    (a learning check: 300 updates of the probe)."""
    env = envs.make("gymnax/CartPole-v1")
    cfg = dataclasses.replace(PRESETS["tiny"], groups=groups, classes=2, units=32, unimix=0.0)
    key = jax.random.PRNGKey(0)
    result = latent_capacity.probe(Dreamer(cfg, env), _two_bits(key), key, updates=300,
                                   batch_size=64, learning_rate=1e-2, env_id="gymnax/CartPole-v1")
    corr = result["reconstruction_correlation"]
    assert corr[2] is None and corr[3] is None  # constant elements
    assert sum(c > 0.9 for c in corr[:2]) == carried, corr
    assert sum(c < 0.3 for c in corr[:2]) == 2 - carried, corr
    assert result["summary"]["all"]["varying"] == 2
    assert result["held_out_observations"] == 64


def test_cli_prints_the_summary_and_refuses_images(tmp_path, capsys):
    out = tmp_path / "new_dir" / "lc.json"  # its folder is made
    result = latent_capacity.main(["--env", "gymnax/CartPole-v1", "--preset", "tiny",
                                   "--updates", "20", "--batch-size", "16", "--num-envs", "2",
                                   "--length", "20", "--json", str(out)])
    printed = capsys.readouterr().out
    assert "[latent_capacity] gymnax/CartPole-v1, preset tiny" in printed
    assert "reconstruction of all elements that vary" in printed
    assert len(result["reconstruction_correlation"]) == 4 and out.exists()
    assert result["wall_seconds"] > 0
    with pytest.raises(UsageError, match="image observations"):
        latent_capacity.main(["--env", "gymnax/Breakout-MinAtar", "--preset", "tiny"])
    with pytest.raises(UsageError, match="drop --obs-norm"):
        latent_capacity.main(["--env", "gymnax/CartPole-v1", "--preset", "tiny", "--obs-norm"])
    with pytest.raises(UsageError, match="--updates must be >= 1"):
        latent_capacity.main(["--env", "gymnax/CartPole-v1", "--updates", "0"])
