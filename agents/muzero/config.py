"""Settings of MuZero / Gumbel MuZero, validated at construction, and the presets."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Dict, Tuple

from core.config import at_least, one_of, positive, require, widths, within
from world_models.muzero import NET_PRESETS

SEARCHES = ("muzero", "gumbel")
Q_NORMALISATIONS = ("siblings", "tree")
VALUE_TARGETS = ("auto", "n_step", "outcome")
ACTION_ENCODINGS = ("auto", "broadcast")


@dataclasses.dataclass(frozen=True)
class MuZeroConfig:
    """Settings of the agent (paper values as defaults where the paper gives them).

    Attributes:
      search: ``"muzero"`` (``mctx.muzero_policy``: PUCT, Dirichlet root noise, visit-count
        temperature) or ``"gumbel"`` (``mctx.gumbel_muzero_policy``: Gumbel top-k, sequential
        halving, the improved policy as the policy target).
      num_simulations: simulations per search (acting and reanalyse).
      dirichlet_alpha, dirichlet_fraction, pb_c_init: muzero search root noise and PUCT constant.
      q_normalisation: how the muzero search scales Q-values to [0, 1] for PUCT: ``"siblings"``
        (mctx's default: min and max over the parent's value and its children) or ``"tree"``
        (min and max over every visited edge of the tree, the paper's ``MinMaxStats``;
        :func:`agents.muzero.acting.qtransform_by_tree_min_max`).
      temperatures, temperature_boundaries: visit-count temperature ``temperatures[i]`` once
        ``temperature_boundaries[i-1]`` updates have been made (the muzero search, and the
        gumbel search with ``gumbel_temperature``).
      max_num_considered_actions, gumbel_scale: gumbel search settings.
      gumbel_temperature: the gumbel search's acting noise follows the temperature schedule:
        ``gumbel_scale * temperatures[i]`` (the Gumbel-max trick then samples from
        ``softmax((logits + sigma(q)) / T)``, the analogue of the visit-count temperature).
        Off: the noise keeps ``gumbel_scale`` throughout, as in the paper.
      gumbel_value_scale: ``c_scale`` of the gumbel search's
        ``sigma(q) = (c_visit + max_b N(b)) c_scale q`` on min-max-rescaled completed Q-values
        (mctx's ``qtransform_completed_by_mix_value``, default 0.1): the weight of the search's
        action values against the prior logits in acting and in the policy target.
      model_size: network size preset (``world_models.muzero.NET_PRESETS``).
      latent_dim, hidden: override the preset's widths when > 0 / non-empty.
      action_encoding: how the residual network's dynamics sees the action: ``"broadcast"``
        (its one-hot vector as constant planes over the grid, as for a joystick) or
        ``"auto"``: those planes, plus a board plane marking where the action acts
        (its cell or column) on tasks that declare it (``EnvSpec.action_layout``: the pgx
        board games), as AlphaZero and MuZero encode board moves. Without that plane a
        convolution must work out from constant planes which cell a move fills.
      value_support_size, value_support_max: bins and range (transformed space) of values;
        likewise ``reward_support_*`` for rewards.
      discount: gamma; n_step: bootstrap horizon of value targets; unroll_steps: K.
      value_targets: ``"n_step"`` (n-step returns bootstrapped on the target network's value),
        ``"outcome"`` (the game's final outcome from the mover's point of view, no bootstrap,
        no discount: each window reaches the end of its game, ``unroll_steps +
        max_episode_steps`` steps, and in a two-player game a ply's return is its mover's
        reward minus the next mover's return, MuZero's targets for board games), or
        ``"auto"``: ``"outcome"`` on two-player games (``EnvSpec.num_players == 2``), else
        ``"n_step"``. With outcome targets ``discount`` and ``n_step`` are not used.
      legal_loss_weight: weight of the legality head's loss (binary cross-entropy against the
        legal-action mask of every real state of the unroll) on tasks with legal-action masks;
        the search removes the actions the head predicts illegal below the root.
      batch_size, learning_rate, max_grad_norm: optimisation (Adam; 0 disables clipping).
      lr_decay_steps, lr_final_fraction: the learning rate decays linearly from
        ``learning_rate`` to ``lr_final_fraction * learning_rate`` over ``lr_decay_steps``
        updates and stays there (0 steps: constant).
      weight_decay: L2 coefficient c in ``loss + c ||theta||^2``.
      value_loss_weight, reward_loss_weight, policy_loss_weight: loss weights (value 0.25 as
        in MuZero Reanalyse).
      use_consistency_loss, consistency_loss_weight: EfficientZero's self-supervised loss.
      reconstruction_loss_weight: weight of an observation reconstruction loss (0: off): a
        decoder MLP reads each unrolled hidden state ``s_k`` and is trained towards the real
        observation ``o_k`` (``symlog``, squared error averaged over its entries), scaled and
        masked past the episode's end as the other unrolled terms. Its gradient reaches the
        representation and the dynamics: a dense target for the model besides the value,
        reward and policy targets. Vector observations only (rank 1, or rank 2 flattened).
      buffer_size: replay capacity (steps, summed over envs).
      priority_exponent, importance_exponent, priority_eps: alpha, beta of prioritised replay
        and the floor added to |value error|.
      target_update_period: updates between copies of the target network (when
        ``target_tau == 0``); target_tau: EMA rate of the target network otherwise.
      reanalyse_fraction: fraction of each batch whose policy and value targets are recomputed
        by a fresh search with the target network inside the update.
      shrink_period, shrink_keep, shrink_stop: every ``shrink_period`` updates (0: never) up
        to update ``shrink_stop`` (0: no end) the parameters are shrunk and perturbed towards a
        fresh initialisation (Ash & Adams 2020):
        ``theta <- shrink_keep * theta + (1 - shrink_keep) * theta_init_fresh``; against the loss
        of plasticity at high replay ratios (optimiser state and target network unchanged).
      mirror_augmentation: train on each sampled window or, with probability 1/2, on its mirror
        image under the environment's declared exact symmetry (``Environment.symmetry``, e.g.
        CartPole's ``x -> -x``): observations mirrored, actions and policy targets permuted,
        rewards and values unchanged. Domain knowledge, as AlphaGo Zero's board symmetries; off
        by default (on in the ``cartpole_v1`` presets), and an error for an environment without
        a declared symmetry.
      env_steps_per_iteration, updates_per_iteration: the replay ratio (updates per vectorised
        env step is their ratio).
      prefill_steps: random-action steps (summed over envs) before learning.
      explore_epsilon, explore_zeta, explore_max_duration: temporally extended random
        exploration while acting (epsilon-z-greedy, Dabney et al. 2021): at each step of an
        environment not already in one, with probability ``explore_epsilon`` an exploration
        option starts, a uniformly random action held for ``n`` steps, ``n`` drawn from the
        zeta distribution ``P(n) ~ n^-explore_zeta`` truncated at ``explore_max_duration``;
        the option ends early when an episode starts or when its action becomes illegal (on
        a two-player board game the held move is usually illegal at the next turn, so options
        there last one move). The search still runs at every step and its policy and value
        go to replay as the targets. 0 (off) by default; evaluation never explores.
    """

    # What a field added later did before it existed, where its default is not that (read by
    # experiments.train.field_defaults: a run recorded without the field resumes at this value,
    # here a function of the task's EnvSpec: the board plane changed the network only where a
    # task declares an action layout)
    VALUES_BEFORE_FIELDS: ClassVar[Dict[str, Any]] = {"action_encoding": lambda spec: (
        "broadcast" if spec is not None and spec.action_layout is not None else "auto")}

    search: str = "muzero"
    num_simulations: int = 50
    dirichlet_alpha: float = 0.25
    dirichlet_fraction: float = 0.25
    pb_c_init: float = 1.25
    q_normalisation: str = "siblings"
    temperatures: Tuple[float, ...] = (1.0, 0.5, 0.25)
    temperature_boundaries: Tuple[int, ...] = (50_000, 75_000)
    max_num_considered_actions: int = 16
    gumbel_scale: float = 1.0
    gumbel_temperature: bool = False
    gumbel_value_scale: float = 0.1
    model_size: str = "small"
    latent_dim: int = 0
    hidden: Tuple[int, ...] = ()
    action_encoding: str = "auto"
    value_support_size: int = 41
    value_support_max: float = 20.0
    reward_support_size: int = 21
    reward_support_max: float = 10.0
    discount: float = 0.997
    n_step: int = 5
    value_targets: str = "auto"
    unroll_steps: int = 5
    batch_size: int = 128
    learning_rate: float = 1e-3
    lr_decay_steps: int = 0
    lr_final_fraction: float = 0.1
    max_grad_norm: float = 5.0
    weight_decay: float = 1e-4
    value_loss_weight: float = 0.25
    reward_loss_weight: float = 1.0
    policy_loss_weight: float = 1.0
    legal_loss_weight: float = 1.0
    use_consistency_loss: bool = False
    consistency_loss_weight: float = 2.0
    buffer_size: int = 100_000
    priority_exponent: float = 1.0
    importance_exponent: float = 1.0
    priority_eps: float = 1e-6
    target_update_period: int = 100
    target_tau: float = 0.0
    reanalyse_fraction: float = 0.5
    shrink_period: int = 0
    shrink_keep: float = 0.8
    shrink_stop: int = 0
    mirror_augmentation: bool = False
    env_steps_per_iteration: int = 1
    updates_per_iteration: int = 1
    prefill_steps: int = 500
    explore_epsilon: float = 0.0
    explore_zeta: float = 2.0
    explore_max_duration: int = 100
    reconstruction_loss_weight: float = 0.0

    @property
    def sequence_length(self) -> int:
        """Replay window with n-step targets: K + n steps (targets for unroll steps 0..K need
        n rewards each); see :meth:`window_length` for outcome targets."""
        return self.unroll_steps + self.n_step

    def uses_outcome(self, num_players: int) -> bool:
        """Whether value targets are game outcomes on a task with ``num_players`` players."""
        return self.value_targets == "outcome" or (self.value_targets == "auto"
                                                   and num_players == 2)

    def window_length(self, num_players: int, max_episode_steps: int) -> int:
        """Replay window on a task: K + n steps, or K + ``max_episode_steps`` with outcome
        targets (every window reaches the end of the game of each of its unroll steps)."""
        if self.uses_outcome(num_players):
            return self.unroll_steps + max_episode_steps
        return self.sequence_length

    def __post_init__(self):
        bounds = list(self.temperature_boundaries)
        default_scale = type(self).gumbel_value_scale  # the field's default
        require(self, [
            one_of(self, "search", SEARCHES),
            one_of(self, "q_normalisation", Q_NORMALISATIONS),
            one_of(self, "value_targets", VALUE_TARGETS),
            one_of(self, "action_encoding", ACTION_ENCODINGS),
            ("q_normalisation", self.search == "muzero" or self.q_normalisation == "siblings",
             "'siblings' with search='gumbel' (the gumbel search rescales its completed "
             "Q-values itself; see gumbel_value_scale)"),
            ("gumbel_value_scale",
             self.search == "gumbel" or self.gumbel_value_scale == default_scale,
             f"left at {default_scale} with search='muzero' (it only scales the gumbel "
             "search's Q-values; use --agent gumbel_muzero)"),
            ("gumbel_temperature", self.search == "gumbel" or not self.gumbel_temperature,
             "off with search='muzero' (it only scales the gumbel search's acting noise; "
             "use --agent gumbel_muzero)"),
            one_of(self, "model_size", tuple(NET_PRESETS)),
            *at_least(self, ("num_simulations", "n_step", "unroll_steps", "batch_size",
                             "max_num_considered_actions", "target_update_period",
                             "env_steps_per_iteration", "explore_max_duration"), 1),
            *[(f, getattr(self, f) >= 2, ">= 2 (a categorical support needs two bins)")
              for f in ("value_support_size", "reward_support_size")],
            *at_least(self, ("updates_per_iteration", "prefill_steps", "latent_dim",
                             "weight_decay", "max_grad_norm", "value_loss_weight",
                             "reward_loss_weight", "policy_loss_weight", "legal_loss_weight",
                             "consistency_loss_weight", "reconstruction_loss_weight",
                             "gumbel_scale", "gumbel_value_scale",
                             "lr_decay_steps", "shrink_period", "shrink_stop"), 0),
            *widths(self, ("hidden",), allow_empty=True),
            ("temperatures", len(self.temperatures) == len(self.temperature_boundaries) + 1
             and all(t >= 0 for t in self.temperatures),
             "non-negative, one more than temperature_boundaries"),
            ("temperature_boundaries",
             all(b > 0 for b in bounds) and all(a < b for a, b in zip(bounds, bounds[1:])),
             "positive update counts in strictly increasing order"),
            *within(self, ("discount",), 0.0, 1.0, "[)"),
            *positive(self, ("explore_zeta", "learning_rate", "value_support_max",
                             "reward_support_max", "priority_eps", "dirichlet_alpha",
                             "pb_c_init")),
            *within(self, ("lr_final_fraction", "shrink_keep", "dirichlet_fraction",
                           "priority_exponent", "importance_exponent", "target_tau",
                           "reanalyse_fraction", "explore_epsilon"), 0.0, 1.0),
            ("reanalyse_fraction", self.reanalyse_fraction == 0
             or self.reanalyse_fraction * self.batch_size >= 1,
             f"0 or at least one window of the batch of {self.batch_size}, i.e. >= "
             f"1 / batch_size = {1 / self.batch_size:.3g}"),
            ("buffer_size", self.buffer_size >= self.sequence_length,
             f">= unroll_steps + n_step = {self.sequence_length}"),
        ])


# CartPole: small nets, 16 simulations, 8 envs per seed (RUN_DEFAULTS) and 16 updates per
# vectorised step, i.e. two updates per environment step; a target copy every 50 updates; the
# learning rate decays linearly 1e-3 -> 1e-4 over the 20,000 updates of a 10k-step run.
# Failing seeds balance the pole but let the cart drift into the end of the rail; long value
# targets help. Share of seeds reaching 475 within 10k steps over the README's runs (27-35
# seeds each, one update per step): discount 0.997 with 30-step targets 25 of 35, with 10-step
# targets 16 of 27, discount 0.99 with 5-step targets 12 of 30. Gumbel MuZero uses this preset
# too (agents.gumbel_muzero). Mirror augmentation with CartPole's x -> -x symmetry gives 55 of
# 64 seeds within 10k steps against 45 of 64 without (same eight 8-seed groups, one update per
# step); with it, two updates per step give 61 of 64 where one gives 55 of 64 on the same seeds
# (without mirror two updates per step did not help: 5 of 8).
_CARTPOLE = dict(model_size="small", num_simulations=16, discount=0.997, n_step=30,
                 batch_size=64, learning_rate=1e-3, buffer_size=20_000,
                 priority_exponent=0.6, importance_exponent=0.4, reanalyse_fraction=0.0,
                 temperature_boundaries=(1_000, 2_000), value_support_size=41,
                 value_support_max=20.0, reward_support_size=11, reward_support_max=2.0,
                 env_steps_per_iteration=1, updates_per_iteration=16, prefill_steps=256,
                 target_update_period=50, lr_decay_steps=20_000, lr_final_fraction=0.1,
                 mirror_augmentation=True)

# The default for a discrete task with vector observations (what a task without a preset of its own
# gets): the CartPole recipe without its CartPole-specific part, mirror augmentation (most tasks
# declare no symmetry), and with the observation reconstruction loss at weight 8: on Acrobot,
# without it no seed reached -100 in 10k steps; with it every seed of four 3-seed runs does by
# 12,288 steps, where weight 4 left one seed of twelve short and weight 1 most
# (docs/results/muzero.md). Small nets, 16 simulations, two updates per environment step on 8
# environments, 30-step value targets at discount 0.997, prioritised replay, no reanalyse, the
# learning rate decaying 1e-3 -> 1e-4 over the 20,000 updates of the default 10k-step run (then
# constant). The supports cover any task whose rewards are within +-8 per step: rewards 11 bins
# over [-2, 2] in h-space (|r| <= 8), values 41 bins over [-20, 20] (|v| <= 422, above the 333 that
# rewards of +-1 reach at discount 0.997), so the -1-per-step tasks (Acrobot, MountainCar) and
# Catch's +-1 fit as well as CartPole's +1 (tests/agents/test_muzero_default.py).
# docs/results/muzero.md ('Default preset on classic control') has what it learns: Catch in 2-3k
# environment steps (its 10 x 5 board flattened, see there), Acrobot in 2-12k, and not MountainCar
# (exploration).
_DEFAULT = dict(_CARTPOLE, mirror_augmentation=False, reconstruction_loss_weight=8.0)

# MinAtar on a 2-core CPU: 32-channel residual nets, 8 simulations, one update (batch 32) per
# 8-env vectorised step, no reanalyse (about 60 env steps/s with the CPU conv path). Values up
# to about 422 and rewards up to about 117 (the MuZeroConfig supports): MinAtar's rewards are
# small.
_MINATAR = dict(model_size="small", latent_dim=32, num_simulations=8, batch_size=32,
                learning_rate=1e-3, buffer_size=100_000, priority_exponent=0.6,
                importance_exponent=0.4, reanalyse_fraction=0.0,
                temperature_boundaries=(5_000, 10_000), updates_per_iteration=1,
                prefill_steps=1_000)

PRESETS: Dict[str, MuZeroConfig] = {
    "default": MuZeroConfig(**_DEFAULT),
    "cartpole_v1": MuZeroConfig(**_CARTPOLE),
    "minatar": MuZeroConfig(**_MINATAR),
    # Any other image task (experiments.presets.IMAGE_PRESET), whose reward scale nothing
    # says: the MinAtar recipe with the supports of MuZero's Atari setup, values and rewards
    # on 601 bins over [-300, 300] in h-space (|x| up to about 58,700; the bins as fine as
    # the MinAtar recipe's). On pgx/2048, where merges reward hundreds, this recipe scored
    # 5,099 at 280k-300k steps against 3,394 at 300k with narrower supports
    # (docs/results/stochastic_muzero.md).
    "image": MuZeroConfig(**_MINATAR, value_support_size=601, value_support_max=300.0,
                          reward_support_size=601, reward_support_max=300.0),
    # Two-player board games (pgx/tic_tac_toe, connect_four, othello, go_9x9) by self-play on
    # a 2-core CPU: 32-channel residual nets, 16 simulations, outcome value targets (the
    # "auto" default on two-player games), one update (batch 64) per vectorised step of the
    # 16 environments of RUN_DEFAULTS, no reanalyse, the visit temperature falling after
    # 5,000 and 10,000 updates.
    "board_games": MuZeroConfig(model_size="small", latent_dim=32, num_simulations=16,
                                dirichlet_alpha=0.3, batch_size=64, learning_rate=1e-3,
                                buffer_size=50_000, priority_exponent=0.6,
                                importance_exponent=0.4, reanalyse_fraction=0.0,
                                temperature_boundaries=(5_000, 10_000),
                                value_support_size=21, value_support_max=2.0,
                                reward_support_size=11, reward_support_max=2.0,
                                updates_per_iteration=1, prefill_steps=1_000),
    "tiny": MuZeroConfig(model_size="tiny", num_simulations=4, batch_size=16, n_step=3,
                         unroll_steps=3, buffer_size=2_000, prefill_steps=32,
                         value_support_size=11, value_support_max=5.0, reward_support_size=5,
                         reward_support_max=2.0, max_num_considered_actions=4),
}

# Run defaults read by experiments.presets.run_defaults.
RUN_DEFAULTS = {
    "*": dict(steps=10_000, num_envs=8, log_every=1_000, eval_every=1_000, eval_episodes=10,
              checkpoint_every=0),
    "gymnax": dict(num_envs=8),
    # the two-player pgx games (the board_games preset's)
    **{f"pgx/{game}": dict(num_envs=16, steps=50_000, log_every=5_000, eval_every=5_000,
                           eval_episodes=32)
       for game in ("tic_tac_toe", "connect_four", "othello", "go_9x9")},
}
