"""Settings of Stochastic MuZero: MuZero's, plus the codebook and the chance losses."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Dict

from agents.muzero.config import PRESETS as MUZERO_PRESETS
from agents.muzero.config import MuZeroConfig
from core.config import at_least, require


@dataclasses.dataclass(frozen=True)
class StochasticMuZeroConfig(MuZeroConfig):
    """MuZero's settings (:class:`agents.muzero.config.MuZeroConfig`, every field) plus:

    Attributes:
      codebook_size: C, the chance codes (one-hot vectors of size C; 32 in the paper).
      afterstate_value_loss_weight: weight of the afterstate value loss ``CE(Q_k, z_k)``.
      chance_loss_weight: weight of ``CE(sigma_k, c_k)``, the chance prediction against the
        encoder's code.
      commitment_loss_weight: beta of the commitment loss ``||c_k - softmax(e_k)||^2``.
      code_usage_loss_weight: weight of ``log C - H(mean softmax(e_k))`` over a batch's
        observed transitions (an addition to the paper: without it the encoder can give every
        outcome the same code; docs/results/stochastic_muzero.md). 0 turns it off.

    The search is ``mctx.stochastic_muzero_policy`` (PUCT with Dirichlet noise at decision
    nodes), so ``search`` must be ``"muzero"``; EfficientZero's consistency loss and MuZero's
    observation reconstruction loss are not implemented here (``reconstruction_loss_weight``
    stays 0, also in the presets taken from MuZero's).
    """

    # What a field added later did before it existed, where its default is not that (read by
    # experiments.train.field_defaults: a run recorded without the field resumes at this value)
    VALUES_BEFORE_FIELDS: ClassVar[Dict[str, Any]] = {"code_usage_loss_weight": 0.0}

    codebook_size: int = 32
    afterstate_value_loss_weight: float = 0.25
    chance_loss_weight: float = 1.0
    commitment_loss_weight: float = 0.25
    code_usage_loss_weight: float = 0.1

    def __post_init__(self):
        super().__post_init__()
        require(self, [
            *at_least(self, ("codebook_size",), 1),
            *at_least(self, ("afterstate_value_loss_weight", "chance_loss_weight",
                             "commitment_loss_weight", "code_usage_loss_weight"), 0),
            ("search", self.search == "muzero",
             "'muzero' (mctx.stochastic_muzero_policy is a PUCT search; there is no gumbel "
             "variant)"),
            ("use_consistency_loss", not self.use_consistency_loss,
             "False (the consistency loss is not implemented for Stochastic MuZero)"),
            ("reconstruction_loss_weight", self.reconstruction_loss_weight == 0,
             "0 (the reconstruction loss is not implemented for Stochastic MuZero)"),
        ])


def _from_muzero(name: str, **fields) -> StochasticMuZeroConfig:
    """MuZero's preset ``name`` (every MuZero field but the reconstruction loss, which this
    agent does not have) with the chance fields at their defaults."""
    muzero = MUZERO_PRESETS[name]
    return StochasticMuZeroConfig(**{**{f.name: getattr(muzero, f.name)
                                        for f in dataclasses.fields(MuZeroConfig)},
                                     "reconstruction_loss_weight": 0.0, **fields})


# MuZero's recipes where they apply (agents.muzero.config has their measurements): "default" for
# discrete tasks with vector observations (small MLPs, 16 simulations, two updates of batch 64
# per environment step), "minatar" for the MinAtar games and "image" for any other image task.
# "image" is what pgx/2048 (4x4x31 planes) gets: the MinAtar recipe (residual nets of 32
# channels with one block, 8 simulations, one update of batch 32 per 8-environment vectorised
# step, prioritised replay, no reanalyse) with the supports of MuZero's Atari setup, values and
# rewards on 601 bins over [-300, 300] in h-space, |x| up to about 58,700. 2048's reward is the
# sum of a move's merged tiles (256 for two 128s, 4,096 for two 2,048s) and its values reach
# thousands in a game; narrower supports clip both (docs/results/stochastic_muzero.md).
PRESETS: Dict[str, StochasticMuZeroConfig] = {
    "default": _from_muzero("default"),
    "minatar": _from_muzero("minatar"),
    "image": _from_muzero("image"),
    "tiny": StochasticMuZeroConfig(model_size="tiny", num_simulations=4, batch_size=16,
                                   n_step=3, unroll_steps=3, buffer_size=2_000,
                                   prefill_steps=32, value_support_size=11,
                                   value_support_max=5.0, reward_support_size=5,
                                   reward_support_max=2.0, codebook_size=8),
}

# Run defaults read by experiments.presets.run_defaults.
RUN_DEFAULTS = {
    "*": dict(steps=10_000, num_envs=8, log_every=1_000, eval_every=1_000, eval_episodes=10,
              checkpoint_every=0),
}
