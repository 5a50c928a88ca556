"""A learned terminal value for PETS plans (optional; ``PETSConfig.terminal_value``).

A short planning horizon cannot see slow failures (on brax/inverted_pendulum: the cart drifting
into the end of its rail, seconds before the pole falls), and a long one is ruined by
compounding model error (an unstable system amplifies it). A value of the state reached at the
end of the horizon bridges the two, as in LOOP / TD-MPC: plans are scored by

    sum_{t<H} gamma^t alive_t r_t + gamma^H alive_H V(s_H).

``V`` is fitted by TD(0) on all real transitions in replay (the data of past planners, so it
evaluates their mixture): target ``r + gamma (1 - terminated) V_target(s')`` with a Polyak-averaged
target network, inputs normalised with the ensemble's observation statistics, outputs in units
of ``1 / (1 - gamma)`` (the largest return of a unit reward).
"""

from __future__ import annotations

from typing import Any, Dict, Sequence, Tuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from core.guard import guarded_step
from core.nets import MLP

Array = jax.Array


@struct.dataclass
class ValueState:
    params: Any
    target_params: Any
    opt_state: Any


def _net(hidden: Sequence[int]) -> MLP:
    return MLP(tuple(hidden), 1)


def init(key: Array, obs_size: int, hidden: Sequence[int], learning_rate: float) -> ValueState:
    params = _net(hidden).init(key, jnp.zeros((obs_size,), jnp.float32))
    return ValueState(params=params, target_params=params,
                      opt_state=optax.adam(learning_rate).init(params))


def apply(params: Any, hidden: Sequence[int], obs: Array, obs_mean: Array, obs_std: Array,
          discount: float) -> Array:
    """``V(obs)`` for obs ``[..., d_s]`` (returns ``[...]``)."""
    x = (obs - obs_mean) / obs_std
    return _net(hidden).apply(params, x)[..., 0] / (1.0 - discount)


def fit(state: ValueState, obs: Array, reward: Array, next_obs: Array, terminated: Array,
        mask: Array, obs_mean: Array, obs_std: Array, key: Array, *, hidden: Sequence[int],
        discount: float, learning_rate: float, steps: int, batch_size: int,
        tau: float) -> Tuple[ValueState, Dict[str, Array]]:
    """``steps`` TD(0) updates on minibatches drawn uniformly from the valid rows (``mask``)."""
    tx = optax.adam(learning_rate)
    probs = mask / jnp.maximum(jnp.sum(mask), 1.0)
    value = lambda p, o: apply(p, hidden, o, obs_mean, obs_std, discount)

    def step(carry, step_key):
        params, target, opt_state = carry
        rows = jax.random.choice(step_key, obs.shape[0], (batch_size,), p=probs)
        target_v = reward[rows] + discount * (1.0 - terminated[rows]) * value(target,
                                                                             next_obs[rows])
        scale = 1.0 - discount  # regress in units of 1 / (1 - gamma)

        def loss(p):
            return jnp.mean(((value(p, obs[rows]) - target_v) * scale) ** 2)

        loss_value, grads = jax.value_and_grad(loss)(params)
        params, opt_state, finite, _ = guarded_step(tx, grads, opt_state, params)
        target = optax.incremental_update(params, target, tau)
        return (params, target, opt_state), (loss_value, finite)

    (params, target, opt_state), (losses, finite) = jax.lax.scan(
        step, (state.params, state.target_params, state.opt_state), jax.random.split(key, steps))
    mean_v = jnp.sum(value(params, obs) * mask) / jnp.maximum(jnp.sum(mask), 1.0)
    return (ValueState(params=params, target_params=target, opt_state=opt_state),
            {"value_loss": losses[-1], "value_mean": mean_v,
             "value_skipped_updates": 1.0 - jnp.mean(finite.astype(jnp.float32))})
