"""Probabilistic ensemble dynamics model (PETS, Chua et al. 2018; MBPO, Janner et al. 2019).

Each of ``N`` members is an MLP ``f_i`` (SiLU) from the normalised input
``x̃ = (x - μ_x) / σ_x``, ``x = [s, a]`` (``[d_in = d_s + d_a]``), to a diagonal Gaussian over the
normalised target ``ỹ = (y - μ_y) / σ_y``, ``y = [s' - s, r]`` (``[d_out = d_s (+ 1)]``):

    (m, ℓ_raw) = f_i(x̃),   ℓ = ℓ_max - softplus(ℓ_max - ℓ_raw),   ℓ ← ℓ_min + softplus(ℓ - ℓ_min)

so the log-variance stays softly inside the member's learned bounds ``ℓ_min < ℓ < ℓ_max``
(``[d_out]`` each, initialised to -10 and 0.5; the second softplus can overshoot ``ℓ_max`` by at
most ``e^{ℓ_min - ℓ_max}``). Denormalised, a member predicts

    E[s'] = s + μ_y[:d_s] + σ_y[:d_s] m[:d_s],   Var[s'] = σ_y[:d_s]² e^{ℓ[:d_s]}

and the same for the reward (last target column). With ``predict_termination`` one more output is
a Bernoulli logit of ``terminated``. Training (bootstrap, holdout, early stopping, elites) is in
:mod:`world_models.ensemble_fit`; this module holds the config, the state and the predictions,
all written for one example and one member and vmapped over members here or by the caller.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Optional, Tuple

import chex
import jax
import jax.numpy as jnp
import optax
from flax import struct

from core.config import at_least, positive, require, widths, within
from core.nets import MLP

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class EnsembleConfig:
    """Static hyper-parameters of a probabilistic ensemble (defaults: MBPO; PETS: :meth:`pets`).

    Attributes:
      num_members: ``N`` networks trained on bootstrapped data.
      num_elites: members used for prediction, the ones with the lowest holdout MSE.
      hidden_sizes: MLP hidden widths (SiLU).
      learning_rate: Adam step size.
      weight_decay: L2 coefficient on the weight matrices (added to the gradient before Adam).
      batch_size: rows per member per gradient step.
      holdout_fraction: fraction of the valid rows held out for early stopping and elites.
      max_holdout: cap on the number of held-out rows (bounds the cost of each evaluation).
      train_steps: maximum gradient steps per :func:`fit` call.
      eval_every: gradient steps between holdout evaluations (divides ``train_steps``).
      patience: evaluations without a relative improvement of ``min_improvement`` after which a
        member stops training; the fit ends when every member has stopped.
      min_improvement: relative decrease of holdout MSE that counts as an improvement.
      logvar_bound_weight: weight of the penalty ``Σ ℓ_max - Σ ℓ_min`` on the learned bounds.
      init_max_logvar, init_min_logvar: initial log-variance bounds.
      predict_reward: also model the reward.
      predict_termination: also model ``terminated`` (Bernoulli logit, cross-entropy loss).
    """

    num_members: int = 7
    num_elites: int = 5
    hidden_sizes: Tuple[int, ...] = (200, 200, 200, 200)
    learning_rate: float = 1e-3
    weight_decay: float = 5e-5
    batch_size: int = 256
    holdout_fraction: float = 0.2
    max_holdout: int = 5000
    train_steps: int = 2000
    eval_every: int = 100
    patience: int = 5
    min_improvement: float = 0.01
    logvar_bound_weight: float = 0.01
    init_max_logvar: float = 0.5
    init_min_logvar: float = -10.0
    predict_reward: bool = True
    predict_termination: bool = False

    def __post_init__(self):
        object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in self.hidden_sizes))
        require(self, [
            *at_least(self, ("num_members", "batch_size", "max_holdout", "train_steps",
                             "patience"), 1),
            ("num_elites", 1 <= self.num_elites <= self.num_members,
             f"in [1, num_members={self.num_members}]"),
            *widths(self, ("hidden_sizes",), allow_empty=True),
            *positive(self, ("learning_rate",)),
            *at_least(self, ("weight_decay", "logvar_bound_weight"), 0),
            *within(self, ("holdout_fraction", "min_improvement"), 0.0, 1.0, "[)"),
            ("eval_every", 1 <= self.eval_every <= self.train_steps
             and self.train_steps % self.eval_every == 0,
             f"in [1, train_steps={self.train_steps}] and divide train_steps"),
            ("init_min_logvar", self.init_min_logvar < self.init_max_logvar,
             f"< init_max_logvar={self.init_max_logvar}"),
        ])

    @classmethod
    def pets(cls, **overrides) -> "EnsembleConfig":
        """The PETS setting: 5 members, all used for prediction (no elite selection)."""
        return cls(**{"num_members": 5, "num_elites": 5, **overrides})

    def target_size(self, obs_size: int) -> int:
        """``d_out``: state change plus the reward column when predicted."""
        return obs_size + int(self.predict_reward)


@struct.dataclass
class Normaliser:
    """Affine statistics fitted on the training rows (std floored: constant columns get 1)."""

    input_mean: Array  # [d_in]: mean of [obs, action]
    input_std: Array  # [d_in]
    target_mean: Array  # [d_out]: mean of [next_obs - obs, reward]
    target_std: Array  # [d_out]


@struct.dataclass
class EnsembleState:
    """Parameters (leading member axis), optimiser state, normaliser and elites of an ensemble."""

    # {"network": MLP params [N, ...], "max_logvar": [N, d_out], "min_logvar": [N, d_out]}
    params: Any
    opt_state: Any  # optax state of the member-vmapped optimiser, leading [N]
    normaliser: Normaliser
    elites: Array  # [num_elites] int32: member indices used for prediction
    config: EnsembleConfig = struct.field(pytree_node=False)
    obs_size: int = struct.field(pytree_node=False)  # d_s
    action_size: int = struct.field(pytree_node=False)  # d_a


class Prediction(NamedTuple):
    """One member's Gaussian prediction (denormalised) for one example."""

    next_obs_mean: Array  # [d_s]
    next_obs_var: Array  # [d_s]
    reward_mean: Array  # (): zero when the reward is not modelled
    reward_var: Array  # ()


def _member_network(config: EnsembleConfig, d_out: int) -> MLP:
    """SiLU MLP ``x̃ [d_in] -> [mean (d_out), raw logvar (d_out), termination logit (0 or 1)]``."""
    return MLP(config.hidden_sizes, 2 * d_out + int(config.predict_termination), act="silu")


def network(config: EnsembleConfig, obs_size: int) -> MLP:
    """The member MLP with ``2 d_out (+ 1)`` outputs for this config."""
    return _member_network(config, config.target_size(obs_size))


def optimizer(config: EnsembleConfig) -> optax.GradientTransformation:
    """L2 on weight matrices (as in MBPO's loss) followed by Adam; applied per member."""
    def decay_mask(params):
        return {"network": jax.tree.map(lambda x: x.ndim >= 2, params["network"]),
                "max_logvar": False, "min_logvar": False}
    return optax.chain(optax.add_decayed_weights(config.weight_decay, decay_mask),
                       optax.adam(config.learning_rate))


def init(key: Array, obs_size: int, action_size: int,
         config: EnsembleConfig = EnsembleConfig()) -> EnsembleState:
    """Independent member initialisations (``vmap`` over ``N`` keys) and an identity normaliser."""
    d_in, d_out = obs_size + action_size, config.target_size(obs_size)
    net = network(config, obs_size)

    def init_member(member_key):
        return {"network": net.init(member_key, jnp.zeros((d_in,)))["params"],
                "max_logvar": jnp.full((d_out,), config.init_max_logvar, jnp.float32),
                "min_logvar": jnp.full((d_out,), config.init_min_logvar, jnp.float32)}

    params = jax.vmap(init_member)(jax.random.split(key, config.num_members))
    normaliser = Normaliser(jnp.zeros((d_in,)), jnp.ones((d_in,)),
                            jnp.zeros((d_out,)), jnp.ones((d_out,)))
    return EnsembleState(params=params, opt_state=jax.vmap(optimizer(config).init)(params),
                         normaliser=normaliser,
                         elites=jnp.arange(config.num_elites, dtype=jnp.int32),
                         config=config, obs_size=obs_size, action_size=action_size)


def bound_logvar(raw: Array, max_logvar: Array, min_logvar: Array) -> Array:
    """Soft clamp ``ℓ = ℓ_min + softplus(ℓ_max - softplus(ℓ_max - ℓ_raw) - ℓ_min)``."""
    logvar = max_logvar - jax.nn.softplus(max_logvar - raw)
    return min_logvar + jax.nn.softplus(logvar - min_logvar)


def forward(config: EnsembleConfig, member_params, x_normalised: Array):
    """One member, one normalised input ``[d_in]`` -> ``(mean [d_out], logvar [d_out], logit ())``.

    Everything is in normalised target units; ``logit`` is zero without a termination head.
    """
    d_out = member_params["max_logvar"].shape[-1]
    out = _member_network(config, d_out).apply({"params": member_params["network"]}, x_normalised)
    logvar = bound_logvar(out[d_out:2 * d_out], member_params["max_logvar"],
                          member_params["min_logvar"])
    logit = out[2 * d_out] if config.predict_termination else jnp.zeros((), out.dtype)
    return out[:d_out], logvar, logit


def _member_outputs(state: EnsembleState, member_params, obs: Array, action: Array):
    chex.assert_shape(obs, (state.obs_size,))
    chex.assert_shape(action, (state.action_size,))
    norm = state.normaliser
    x = jnp.concatenate([obs, action]).astype(jnp.float32)
    mean, logvar, logit = forward(state.config, member_params,
                                  (x - norm.input_mean) / norm.input_std)
    return norm.target_mean + norm.target_std * mean, norm.target_std ** 2 * jnp.exp(logvar), logit


def predict_with_params(state: EnsembleState, member_params, obs: Array,
                        action: Array) -> Prediction:
    """:func:`predict` for explicit (un-stacked) member parameters; vmap over stacked ones."""
    y_mean, y_var, _ = _member_outputs(state, member_params, obs, action)
    return _prediction(state, obs, y_mean, y_var)


def _prediction(state: EnsembleState, obs: Array, y_mean: Array, y_var: Array) -> Prediction:
    d = state.obs_size
    zero = jnp.zeros((), y_mean.dtype)
    has_reward = state.config.predict_reward
    return Prediction(next_obs_mean=obs + y_mean[:d], next_obs_var=y_var[:d],
                      reward_mean=y_mean[d] if has_reward else zero,
                      reward_var=y_var[d] if has_reward else zero)


def member_params(state: EnsembleState, member) -> Any:
    """The parameters of one member (``member`` may be traced)."""
    return jax.tree.map(lambda p: p[member], state.params)


def predict(state: EnsembleState, member, obs: Array, action: Array) -> Prediction:
    """Gaussian next observation and reward of one member for obs ``[d_s]``, action ``[d_a]``.

    Returns ``(next_obs_mean [d_s], next_obs_var [d_s], reward_mean (), reward_var ())``.
    """
    return predict_with_params(state, member_params(state, member), obs, action)


def predict_all(state: EnsembleState, obs: Array, action: Array) -> Prediction:
    """Every member's :class:`Prediction` for one example, each field with a leading ``[N]``."""
    return jax.vmap(predict_with_params, in_axes=(None, 0, None, None))(
        state, state.params, obs, action)


def termination_prob(state: EnsembleState, member, obs: Array, action: Array) -> Array:
    """``P(terminated)`` of one member (needs ``predict_termination``), a scalar."""
    if not state.config.predict_termination:
        raise ValueError("termination_prob needs EnsembleConfig.predict_termination=True.")
    return jax.nn.sigmoid(_member_outputs(state, member_params(state, member), obs, action)[2])


def predict_members(state: EnsembleState, members: Array, obs: Array,
                    action: Array) -> Tuple[Prediction, Array]:
    """Member ``members[g]`` applied to every example of group ``g``.

    ``obs [G, n, d_s]``, ``action [G, n, d_a]``, ``members [G]`` -> (:class:`Prediction` with
    fields ``[G, n, ...]``, ``P(terminated) [G, n]``, zero without a termination head). Each
    group gathers its member's parameters once, so its ``n`` examples go through the MLP as
    matrix products (unlike vmapping :func:`predict` with a per-example member).
    """
    chex.assert_rank(members, 1)
    chex.assert_rank([obs, action], 3)
    params = jax.tree.map(lambda p: p[members], state.params)

    def one(member_params, o, a):
        y_mean, y_var, logit = _member_outputs(state, member_params, o, a)
        p_term = (jax.nn.sigmoid(logit) if state.config.predict_termination
                  else jnp.zeros((), y_mean.dtype))
        return _prediction(state, o, y_mean, y_var), p_term

    per_group = jax.vmap(one, in_axes=(None, 0, 0))
    return jax.vmap(per_group)(params, obs, action)


def mean_next_obs(state: EnsembleState, obs: Array, action: Array) -> Array:
    """Deterministic step ``mean over elites of E_i[s']`` ``[d_s]`` (a ``k_step_error`` step_fn)."""
    return jnp.mean(predict_all(state, obs, action).next_obs_mean[state.elites], axis=0)


def uncertainty(state: EnsembleState, obs: Array, action: Array) -> Tuple[Array, Array]:
    """``(aleatoric, epistemic)`` variance of ``s'`` over the elites, each ``[d_s]``.

    aleatoric = mean_i Var_i[s'] (noise the members predict), epistemic = Var_i E_i[s']
    (disagreement between members); their sum is the variance of the elite mixture.
    """
    pred = predict_all(state, obs, action)
    return (jnp.mean(pred.next_obs_var[state.elites], axis=0),
            jnp.var(pred.next_obs_mean[state.elites], axis=0))


def sample_next(state: EnsembleState, obs: Array, action: Array, key: Array,
                member: Optional[Array] = None) -> Tuple[Array, Array]:
    """One sample ``(next_obs [d_s], reward ())`` for trajectory sampling.

    With ``member=None`` a random elite is drawn per call (PETS TS-1 / MBPO rollouts); pass a
    fixed member per particle for TS-∞. The sample is ``mean + sqrt(var) z``, ``z ~ N(0, I)``.
    """
    member_key, obs_key, reward_key = jax.random.split(key, 3)
    if member is None:
        member = state.elites[jax.random.randint(member_key, (), 0, state.elites.shape[0])]
    pred = predict(state, member, obs, action)
    next_obs = pred.next_obs_mean + jnp.sqrt(pred.next_obs_var) * jax.random.normal(
        obs_key, obs.shape)
    reward = pred.reward_mean + jnp.sqrt(pred.reward_var) * jax.random.normal(reward_key, ())
    return next_obs, reward


def sample_next_obs(state: EnsembleState, obs: Array, action: Array, key: Array) -> Array:
    """:func:`sample_next` without the reward (a stochastic ``k_step_error`` step_fn)."""
    return sample_next(state, obs, action, key)[0]
