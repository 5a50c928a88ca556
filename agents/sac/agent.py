"""Soft actor-critic: the reusable learner (``sac_update``) and the agent built on replay.

The learner is independent of where transitions come from: :meth:`SACLearner.update` takes a
:class:`agents.sac.losses.Batch` (or any object with ``obs, action, reward, next_obs,
terminated``), so MBPO can feed it mixed real / model batches. :func:`make` wraps it as a
:class:`core.types.Agent` that samples uniform batches from a flashbax buffer.

One update, in order: critic step (Adam), actor step against the updated critics, temperature
step, Polyak averaging ``Qbar <- tau Q + (1 - tau) Qbar``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Sequence, Tuple

import chex
import jax
import jax.numpy as jnp
import optax
from flax import struct

from core.config import at_least, positive, require, widths, within
from agents.sac import losses
from agents.sac.networks import SACNetworks, make_networks
from core import guard, replay
from core.types import Agent, Schedule
from envs.api import Environment

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class SACConfig:
    """Settings of SAC.

    Attributes:
      actor_hidden, critic_hidden: hidden layer widths of the MLPs.
      learning_rate: Adam step size of actor, critics and temperature.
      batch_size: transitions per update.
      discount: ``gamma``.
      tau: Polyak rate of the target critics.
      init_alpha: initial entropy temperature.
      target_entropy_scale: target entropy is ``-target_entropy_scale * |A|``.
      reward_scale: rewards are multiplied by this in the critic target.
      max_grad_norm: global gradient-norm clip per network (0: no clipping).
      updates_per_step: updates per vectorised environment step (one step of every env), so
        the update-to-data ratio is ``updates_per_step / num_envs``.
      prefill_steps: uniformly random environment steps (summed over envs) before learning.
      buffer_size: replay capacity in steps (summed over envs).
    """

    actor_hidden: Tuple[int, ...] = (256, 256)
    critic_hidden: Tuple[int, ...] = (256, 256)
    learning_rate: float = 3e-4
    batch_size: int = 256
    discount: float = 0.99
    tau: float = 0.005
    init_alpha: float = 1.0
    target_entropy_scale: float = 1.0
    reward_scale: float = 1.0
    max_grad_norm: float = 0.0
    updates_per_step: int = 1
    prefill_steps: int = 1000
    buffer_size: int = 1_000_000

    def __post_init__(self):
        require(self, [
            *widths(self, ("actor_hidden", "critic_hidden")),
            *positive(self, ("learning_rate", "init_alpha", "reward_scale")),
            *at_least(self, ("batch_size", "updates_per_step", "buffer_size"), 1),
            *within(self, ("discount",), 0.0, 1.0, "[)"),
            *within(self, ("tau",), 0.0, 1.0, "(]"),
            *at_least(self, ("target_entropy_scale", "prefill_steps"), 0),
            ("max_grad_norm", self.max_grad_norm >= 0, ">= 0 (0 disables clipping)"),
        ])


PRESETS: Dict[str, SACConfig] = {
    "default": SACConfig(),
    # Pendulum: small networks and a faster lr; with num_envs=1 (one update per env step) the
    # greedy return reaches about -150 within 4-6k env steps.
    "pendulum_v1": SACConfig(actor_hidden=(64, 64), critic_hidden=(64, 64), learning_rate=1e-3,
                             batch_size=256, prefill_steps=1000, buffer_size=100_000),
    "tiny": SACConfig(actor_hidden=(32, 32), critic_hidden=(32, 32), batch_size=32,
                      prefill_steps=64, buffer_size=2_000),
}


@struct.dataclass
class SACState:
    """Everything the SAC learner owns (no batch axis)."""

    actor_params: Any  # policy network parameters
    critic_params: Any  # twin Q parameters
    target_critic_params: Any  # Polyak average of critic_params
    log_alpha: Array  # () float32: log temperature
    actor_opt_state: Any
    critic_opt_state: Any
    alpha_opt_state: Any
    steps: Array  # () int32: updates taken


@dataclasses.dataclass(frozen=True)
class SACLearner:
    """SAC as pure functions for a fixed observation shape and action box.

    Attributes:
      cfg: the settings.
      networks: actor and twin critic (see :mod:`agents.sac.networks`).
      obs_shape: shape of one observation (a vector).
    """

    cfg: SACConfig
    networks: SACNetworks
    obs_shape: Tuple[int, ...]

    @property
    def target_entropy(self) -> float:
        return -self.cfg.target_entropy_scale * self.networks.action_dim

    def _optimizer(self) -> optax.GradientTransformation:
        adam = optax.adam(self.cfg.learning_rate)
        if self.cfg.max_grad_norm > 0:
            return optax.chain(optax.clip_by_global_norm(self.cfg.max_grad_norm), adam)
        return adam

    def init(self, key: Array) -> SACState:
        """Fresh parameters; target critics start equal to the critics."""
        actor_key, critic_key = jax.random.split(key)
        obs = jnp.zeros((1,) + tuple(self.obs_shape), jnp.float32)
        action = jnp.zeros((1, self.networks.action_dim), jnp.float32)
        actor_params = self.networks.actor.init(actor_key, obs)
        critic_params = self.networks.critic.init(critic_key, obs, action)
        log_alpha = jnp.log(jnp.asarray(self.cfg.init_alpha, jnp.float32))
        opt = self._optimizer()
        return SACState(actor_params=actor_params, critic_params=critic_params,
                        target_critic_params=critic_params, log_alpha=log_alpha,
                        actor_opt_state=opt.init(actor_params),
                        critic_opt_state=opt.init(critic_params),
                        alpha_opt_state=opt.init(log_alpha), steps=jnp.zeros((), jnp.int32))

    def policy(self, state: SACState, obs: Array, key: Array, explore: bool) -> Array:
        """``obs [B, O] -> env action [B, A]``: a sample when exploring, else ``tanh(mean)``."""
        chex.assert_rank(obs, 1 + len(self.obs_shape))
        if explore:
            unit, _ = self.networks.sample_action(state.actor_params, obs, key)
        else:
            unit = self.networks.mean_action(state.actor_params, obs)
        return self.networks.env_action(unit)

    def update(self, state: SACState, batch, key: Array) -> Tuple[SACState, Dict[str, Array]]:
        """One SAC update on ``batch`` (leaves ``[B, ...]``, env-unit actions)."""
        chex.assert_rank([batch.obs, batch.action, batch.reward, batch.terminated], [2, 2, 1, 1])
        critic_key, actor_key = jax.random.split(key)
        opt, cfg, nets = self._optimizer(), self.cfg, self.networks

        critic_grad, critic_metrics = jax.grad(losses.critic_loss, has_aux=True)(
            state.critic_params, state.target_critic_params, state.actor_params,
            state.log_alpha, batch, critic_key, networks=nets, discount=cfg.discount,
            reward_scale=cfg.reward_scale)
        # Each step is skipped when its gradients are not finite (core.guard).
        critic_params, critic_opt_state, critic_ok, _ = guard.guarded_step(
            opt, critic_grad, state.critic_opt_state, state.critic_params)

        actor_grad, actor_metrics = jax.grad(losses.actor_loss, has_aux=True)(
            state.actor_params, critic_params, state.log_alpha, batch.obs, actor_key,
            networks=nets)
        actor_params, actor_opt_state, actor_ok, _ = guard.guarded_step(
            opt, actor_grad, state.actor_opt_state, state.actor_params)

        alpha_grad, alpha_metrics = jax.grad(losses.alpha_loss, has_aux=True)(
            state.log_alpha, actor_metrics.pop("log_prob"), self.target_entropy)
        log_alpha, alpha_opt_state, alpha_ok, _ = guard.guarded_step(
            opt, alpha_grad, state.alpha_opt_state, state.log_alpha)

        target = optax.incremental_update(critic_params, state.target_critic_params, cfg.tau)
        new_state = SACState(actor_params=actor_params, critic_params=critic_params,
                             target_critic_params=target, log_alpha=log_alpha,
                             actor_opt_state=actor_opt_state, critic_opt_state=critic_opt_state,
                             alpha_opt_state=alpha_opt_state, steps=state.steps + 1)
        return new_state, {**critic_metrics, **actor_metrics, **alpha_metrics,
                           "skipped_updates": guard.skipped(critic_ok, actor_ok, alpha_ok)}


def make_learner(cfg: SACConfig, *, obs_shape: Sequence[int], action_low: Sequence[float],
                 action_high: Sequence[float]) -> SACLearner:
    """The SAC learner for vector observations and a continuous action box."""
    networks = make_networks(action_low=action_low, action_high=action_high,
                             actor_hidden=cfg.actor_hidden, critic_hidden=cfg.critic_hidden)
    return SACLearner(cfg=cfg, networks=networks, obs_shape=tuple(obs_shape))


def make_sac_update(learner: SACLearner):
    """``sac_update(state, batch, key) -> (state, metrics)``: the learner's pure update."""
    return learner.update


def _check_env(env: Environment) -> None:
    spec = env.spec
    if spec.discrete:
        raise ValueError(f"agent 'sac' needs a continuous action space; {spec.env_id} has a "
                         f"discrete one ({spec.num_actions} actions). Use a continuous task "
                         f"such as gymnax/Pendulum-v1.")
    if spec.action_low is None or spec.action_high is None or len(spec.action_shape) != 1:
        raise ValueError(f"agent 'sac' needs a flat bounded action box; {spec.env_id} has "
                         f"action shape {spec.action_shape} and bounds "
                         f"{spec.action_low}..{spec.action_high}")
    if len(spec.obs_shape) != 1:
        raise ValueError(f"agent 'sac' needs vector observations; {spec.env_id} has shape "
                         f"{spec.obs_shape}")


def make(cfg: SACConfig, env: Environment, num_envs: int) -> Agent:
    """Builds the SAC agent for ``num_envs`` copies of ``env``."""
    _check_env(env)
    spec = env.spec
    learner = make_learner(cfg, obs_shape=spec.obs_shape, action_low=spec.action_low,
                           action_high=spec.action_high)
    buffer = replay.make_buffer(num_envs=num_envs, capacity=max(cfg.buffer_size, 2 * num_envs),
                                batch_size=cfg.batch_size)

    def act(state: SACState, obs, is_first, carry, key, explore: bool, *,
            legal_action_mask=None):  # continuous actions: never masked
        del is_first
        return learner.policy(state, obs, key, explore), carry, {}

    def update(state: SACState, buffer_state, key):
        sample_key, learn_key = jax.random.split(key)
        sample = buffer.sample(buffer_state, sample_key).experience  # leaves [B, 1, ...]
        batch = losses.Batch(obs=sample.obs[:, 0], action=sample.action[:, 0],
                             reward=sample.reward[:, 0], next_obs=sample.next_obs[:, 0],
                             terminated=sample.terminated[:, 0])
        state, metrics = learner.update(state, batch, learn_key)
        return state, buffer_state, metrics

    schedule = Schedule(env_steps_per_iteration=1, updates_per_iteration=cfg.updates_per_step,
                        prefill_steps=cfg.prefill_steps)
    return Agent(init=learner.init, initial_carry=lambda n: jnp.zeros((n,)), act=act,
                 update=update, buffer=buffer, schedule=schedule)
