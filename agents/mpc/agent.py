"""Model-predictive control with a closed-form linear model: collect, refit, plan, act.

Every ``refit_every`` environment steps the linear model ``s' = A s + B a (+ c)`` is refitted by
least squares on ALL data in replay; at every step CEM plans an action sequence over the model
with the environment's known reward (as the PETS paper does for its tasks), the first action is
executed, and the plan is shifted to warm-start the next step.
"""

from __future__ import annotations

import dataclasses
from typing import Dict

import jax
import jax.numpy as jnp
from flax import struct

from agents.mpc import cem
from core import replay
from core.types import Agent, Schedule
from envs.api import Environment
from world_models import linear

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class MPCConfig:
    """Settings of the linear-model MPC agent.

    Attributes:
      horizon, population, elites, cem_iterations, alpha, init_std: the CEM planner.
      ridge: ridge term of the least-squares fit.
      refit_every: environment steps (per environment) between model refits.
      prefill_steps: random-action steps collected before the first fit.
      buffer_size: replay capacity in steps (all of it is used in each fit).
      action_noise: std of Gaussian noise added to actions while training (fraction of range).
    """

    horizon: int = 15
    population: int = 200
    elites: int = 20
    cem_iterations: int = 4
    alpha: float = 0.1
    init_std: float = 0.5
    ridge: float = 1e-6
    refit_every: int = 25
    prefill_steps: int = 50
    buffer_size: int = 20_000
    action_noise: float = 0.0

    def cem(self) -> cem.CEMConfig:
        return cem.CEMConfig(horizon=self.horizon, population=self.population,
                             elites=self.elites, iterations=self.cem_iterations,
                             alpha=self.alpha, init_std=self.init_std)


PRESETS: Dict[str, MPCConfig] = {
    "default": MPCConfig(),
    "tiny": MPCConfig(horizon=8, population=64, elites=8, cem_iterations=3, refit_every=10,
                      prefill_steps=20, buffer_size=2_000),
}


@struct.dataclass
class MPCState:
    model: linear.LinearModel  # the current least-squares fit
    fits: Array  # () int32: number of refits so far


def make(cfg: MPCConfig, env: Environment, num_envs: int) -> Agent:
    """Builds the MPC agent for ``num_envs`` copies of ``env``."""
    spec = env.spec
    cem.check_spec(spec, "mpc")
    if env.reward_fn is None:
        raise ValueError(f"agent 'mpc' needs the environment's known reward function, which "
                         f"{spec.env_id} does not provide; use 'pets', which learns the reward.")
    if len(spec.obs_shape) != 1:
        raise ValueError(f"agent 'mpc' needs vector observations; {spec.env_id} has shape "
                         f"{spec.obs_shape}")
    planner = cfg.cem()
    low = jnp.asarray(spec.action_low, jnp.float32)
    high = jnp.asarray(spec.action_high, jnp.float32)
    buffer = replay.make_buffer(num_envs=num_envs, capacity=cfg.buffer_size, batch_size=1)

    def init(key):
        del key
        n, m = spec.obs_shape[0], spec.action_shape[0]
        empty = linear.from_matrices(jnp.zeros((n, n)), jnp.zeros((n, m)))
        return MPCState(model=empty, fits=jnp.zeros((), jnp.int32))

    def initial_carry(n_envs):
        return cem.initial_plans(planner, low, high, n_envs)

    def objective_for(model, obs):
        def objective(plans, _):
            def rollout(actions):
                def step(s, a):
                    s_next = linear.predict(model, s, a)
                    return s_next, env.reward_fn(s, a, s_next)
                _, rewards = jax.lax.scan(step, obs, actions)
                return rewards.sum()
            return jax.vmap(rollout)(plans)
        return objective

    def act(state: MPCState, obs, is_first, carry, key, explore: bool, *,
            legal_action_mask=None):  # continuous actions: never masked
        plan_key, noise_key = jax.random.split(key)
        action, next_carry, _ = cem.plan_batch(lambda o: objective_for(state.model, o), obs,
                                               is_first, carry, plan_key, planner, low, high)
        if explore and cfg.action_noise > 0:
            noise = cfg.action_noise * (high - low) * jax.random.normal(noise_key, action.shape)
            action = jnp.clip(action + noise, low, high)
        return action, next_carry, {}

    def update(state: MPCState, buffer_state, key):
        del key
        data, mask = replay.all_steps(buffer_state)
        model = linear.fit(data.obs, data.action, data.next_obs, weights=mask, ridge=cfg.ridge)
        pred = jax.vmap(linear.predict, in_axes=(None, 0, 0))(model, data.obs, data.action)
        sq_err = ((pred - data.next_obs) ** 2).sum(-1)
        metrics = {"model_mse": (sq_err * mask).sum() / jnp.maximum(mask.sum(), 1.0),
                   "model_rank_deficient": model.rank_deficient.astype(jnp.float32)}
        return MPCState(model=model, fits=state.fits + 1), buffer_state, metrics

    schedule = Schedule(env_steps_per_iteration=cfg.refit_every, updates_per_iteration=1,
                        prefill_steps=cfg.prefill_steps)
    return Agent(init=init, initial_carry=initial_carry, act=act, update=update, buffer=buffer,
                 schedule=schedule)
