"""The cross-entropy method over action sequences, for model-predictive control.

Written for one example (one environment): callers vmap over environments. The objective is
any function of a population of action sequences, so the same planner drives the closed-form
linear model (agents/mpc) and the probabilistic ensemble with trajectory sampling (PETS).

Each iteration samples ``population`` sequences ``a ~ N(mean, std^2)`` clipped to the action
bounds, keeps the ``elites`` with the highest objective, and moves the distribution towards
their moments with smoothing ``alpha`` (the weight kept on the old value, as in PETS):

    mean <- alpha * mean + (1 - alpha) * mean(elites)
    std  <- alpha * std  + (1 - alpha) * std(elites)

Three options from iCEM (Pinneri et al., 2020), all off by default (plain CEM as in PETS):

* ``noise_beta > 0``: the sampling noise is coloured along the horizon, power spectrum
  ``1 / f^beta`` (``beta = 2``: smooth, low-frequency action sequences) rescaled to unit variance
  per sequence, instead of white noise;
* ``keep_elites``: the elites of one iteration replace the last ``elites`` samples of the next;
* ``return_best``: the plan returned (executed, then shifted into the warm start) is the best
  sampled one over all iterations instead of the final mean, so no averaging of tied plans
  executes a blurred action.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Tuple

import chex
import jax
import jax.numpy as jnp

from core.config import at_least, require, within

Array = jax.Array
Objective = Callable[[Array, Array], Array]  # (actions [P, H, m], key) -> returns [P]


@dataclasses.dataclass(frozen=True)
class CEMConfig:
    """CEM settings (PETS defaults for cartpole/reacher: population 400, elites 40, horizon 25)."""

    horizon: int = 25
    population: int = 400
    elites: int = 40
    iterations: int = 5
    alpha: float = 0.1
    init_std: float = 0.5  # initial std as a fraction of the action range (high - low)
    min_std: float = 1e-3  # std floor as a fraction of the action range
    noise_beta: float = 0.0  # iCEM coloured noise exponent (0: white noise)
    keep_elites: bool = False  # iCEM: carry the elites into the next iteration's population
    return_best: bool = False  # iCEM: return the best sampled plan, not the final mean

    def __post_init__(self):
        require(self, [
            ("noise_beta", self.noise_beta >= 0, ">= 0 (0: white noise)"),
            ("keep_elites", not (self.keep_elites and self.elites >= self.population),
             f"off unless elites < population={self.population}"),
            ("elites", 0 < self.elites <= self.population,
             f"in [1, population={self.population}]"),
            *within(self, ("alpha",), 0.0, 1.0, "[)"),
            *at_least(self, ("horizon", "iterations"), 1),
        ])


def initial_mean(cfg: CEMConfig, low: Array, high: Array) -> Array:
    """The plan ``[H, m]`` a new episode starts from: the middle of the action box."""
    return jnp.broadcast_to((low + high) / 2.0, (cfg.horizon,) + low.shape)


def shift(mean: Array, low: Array, high: Array) -> Array:
    """Warm start: drop the executed first action, repeat the box middle at the end."""
    return jnp.concatenate([mean[1:], ((low + high) / 2.0)[None]], axis=0)


def coloured_noise(key: Array, shape: Tuple[int, ...], beta: float) -> Array:
    """Standard-normal-like noise ``[P, H, m]`` with power spectrum ``1 / f^beta`` along ``H``.

    ``beta = 0`` is white noise. Each ``(p, :, j)`` sequence is rescaled to unit variance.
    """
    if beta == 0.0 or shape[1] < 2:
        return jax.random.normal(key, shape)
    pop, horizon, dims = shape
    freqs = jnp.fft.rfftfreq(horizon)
    freqs = freqs.at[0].set(freqs[1])  # the constant component gets the lowest frequency's power
    scale = freqs ** (-beta / 2.0)
    re_key, im_key = jax.random.split(key)
    spectrum = (jax.random.normal(re_key, (pop, dims, freqs.shape[0]))
                + 1j * jax.random.normal(im_key, (pop, dims, freqs.shape[0]))) * scale
    x = jnp.fft.irfft(spectrum, n=horizon, axis=-1)
    x = x / jnp.maximum(jnp.std(x, axis=-1, keepdims=True), 1e-6)
    return jnp.swapaxes(x, 1, 2)


def optimize(objective: Objective, mean: Array, key: Array, cfg: CEMConfig, low: Array,
             high: Array) -> Tuple[Array, Dict[str, Array]]:
    """Runs CEM from ``mean [H, m]``; returns the final mean (or best, ``return_best``) plan
    and diagnostics."""
    chex.assert_rank(mean, 2)
    chex.assert_equal_shape([low, high])
    span = high - low
    std = jnp.broadcast_to(cfg.init_std * span, mean.shape)

    def iteration(carry, it_key):
        mean, std, best_value, best_plan, kept = carry
        noise_key, eval_key = jax.random.split(it_key)
        eps = coloured_noise(noise_key, (cfg.population,) + mean.shape, cfg.noise_beta)
        plans = jnp.clip(mean + std * eps, low, high)
        if cfg.keep_elites:
            plans = jnp.concatenate([plans[:cfg.population - cfg.elites], kept], axis=0)
        values = objective(plans, eval_key)
        chex.assert_shape(values, (cfg.population,))
        values = jnp.where(jnp.isfinite(values), values, -jnp.inf)
        top_values, top_idx = jax.lax.top_k(values, cfg.elites)
        elites = plans[top_idx]
        new_mean = cfg.alpha * mean + (1.0 - cfg.alpha) * elites.mean(axis=0)
        new_std = cfg.alpha * std + (1.0 - cfg.alpha) * elites.std(axis=0)
        new_std = jnp.maximum(new_std, cfg.min_std * span)
        better = top_values[0] > best_value
        best_plan = jnp.where(better, elites[0], best_plan)
        best_value = jnp.maximum(best_value, top_values[0])
        return (new_mean, new_std, best_value, best_plan, elites), top_values.mean()

    # The first iteration's "kept elites" are copies of the warm start (evaluated once more).
    init = (mean, std, jnp.array(-jnp.inf, jnp.float32), mean,
            jnp.broadcast_to(mean, (cfg.elites,) + mean.shape))
    (mean, std, best_value, best_plan, _), elite_means = jax.lax.scan(
        iteration, init, jax.random.split(key, cfg.iterations))
    return (best_plan if cfg.return_best else mean), {
        "plan_value": elite_means[-1], "best_value": best_value, "final_std": std.mean()}


def check_spec(spec, agent: str) -> None:
    """Raises ValueError unless ``spec`` has continuous actions and vector observations."""
    if spec.discrete:
        raise ValueError(f"agent '{agent}' plans continuous actions with CEM; {spec.env_id} has "
                         f"a discrete action space. Use a continuous task such as "
                         f"brax/inverted_pendulum or linear/* (the MuZero agents plan over "
                         f"discrete actions).")
    if len(spec.obs_shape) != 1:
        raise ValueError(f"agent '{agent}' needs vector observations; {spec.env_id} has shape "
                         f"{spec.obs_shape}")


def initial_plans(cfg: CEMConfig, low: Array, high: Array, num_envs: int) -> Array:
    """The acting carry of a batch of environments: one start plan ``[E, H, m]`` each."""
    return jnp.broadcast_to(initial_mean(cfg, low, high), (num_envs, cfg.horizon) + low.shape)


def plan_batch(objective_for: Callable[[Array], Objective], obs: Array, is_first: Array,
               plans: Array, key: Array, cfg: CEMConfig, low: Array,
               high: Array) -> Tuple[Array, Array, Dict[str, Array]]:
    """Receding-horizon step for a batch: plan from each env's warm start, act, shift.

    Args:
      objective_for: ``obs [n] -> Objective`` for one environment (closes over the model).
      obs: ``[E, n]``; is_first: ``[E]`` (a new episode restarts from :func:`initial_mean`);
      plans: ``[E, H, m]`` warm starts (the carry).
    Returns:
      first actions ``[E, m]``, shifted plans ``[E, H, m]`` (the next carry), CEM diagnostics.
    """
    start = jnp.where(is_first[:, None, None], initial_plans(cfg, low, high, obs.shape[0]), plans)
    keys = jax.random.split(key, obs.shape[0])
    best, info = jax.vmap(lambda o, p, k: optimize(objective_for(o), p, k, cfg, low, high))(
        obs, start, keys)
    return best[:, 0], jax.vmap(shift, in_axes=(0, None, None))(best, low, high), info
