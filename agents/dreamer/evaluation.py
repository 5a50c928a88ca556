"""Compounding error of a trained RSSM along real trajectories.

:func:`evaluate` plays real episodes with the actor's mode, filters each with the world model's
posterior (``q(z_t | h_t, o_t)``), and from every posterior state rolls the prior
(imagination, ``p(z' | h')``, sampled) open loop on the real actions
(:func:`world_models.evaluation.k_step_error`):

    s_t = posterior(o_<=t),  s_{t+k} = img_step(s_{t+k-1}, a_{t+k-1}),

decoding ``s_{t+k}`` into an observation (``symexp`` of the symlog vector decoder; the image
decoder's ``[0, 1]`` output mapped back to the observation's range) and a reward (the
two-hot head's mean), compared with the real ``o_{t+k}`` and ``r_{t+k-1}`` for ``k = 1..horizon``
(imagination uses ``horizon`` 15 in training). ``k = 0`` (reconstruction from the posterior) is
reported as ``reconstruction_abs_error`` for reference, and so is ``persistence``: the errors of
taking ``o_t`` for ``o_{t+k}``, which a model that tracks the observation should beat.

:func:`value_calibration` compares, along the same episodes, the critic's value of every
posterior state with the discounted return the episode then earned, and the reward head's
prediction with the real reward: a world model whose reward head misses when rewards come
trains a critic that expects rewards the policy does not earn. The command line is
``python -m experiments.evaluate --logdir RUN``.
"""

from __future__ import annotations

import functools
from typing import Dict, List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from agents.dreamer.agent import OBS_NORM_FLOOR, Dreamer
from core import rlmath, rollout
from world_models import dreamer_nets as nets
from world_models import dreamer_wm as wm
from world_models.evaluation import k_step_error
from world_models.rssm import RSSMState, features

Array = jax.Array


def _pack(state: RSSMState) -> Array:
    lead = state.deter.shape[:-1]
    return jnp.concatenate([state.deter, state.stoch.reshape(lead + (-1,)),
                            state.logits.reshape(lead + (-1,))], axis=-1)


def _unpack(packed: Array, deter: int, groups: int, classes: int) -> RSSMState:
    lead = packed.shape[:-1]
    size = groups * classes
    return RSSMState(deter=packed[..., :deter],
                     stoch=packed[..., deter:deter + size].reshape(lead + (groups, classes)),
                     logits=packed[..., deter + size:].reshape(lead + (groups, classes)))


def decode_observation(model: wm.WorldModel, decoded: Array) -> Array:
    """The decoder's output as an observation: ``symexp`` of the symlog prediction (vectors),
    or the ``[0, 1]`` image mapped back to the observation's range (images)."""
    if model.image:
        low, high = model.image_range
        return low + decoded * (high - low)
    return rlmath.symexp(decoded)


@functools.partial(jax.jit, static_argnums=0)
def filtered_states(dreamer: Dreamer, params, obs: Array, actions: Array, key: Array,
                    obs_moments=None) -> Array:
    """The posterior states of ``obs [N, T+1, ...]`` filtered along ``actions [N, T, A]`` with
    the world model ``params`` (no resets inside), packed: ``[N, T+1, D]``. ``obs_moments``:
    the run's ``DreamerState.obs_moments`` (``obs_norm``), by which the model sees ``obs``.
    One compiled program per ``dreamer`` and shapes."""
    num, length = actions.shape[:2]
    if obs_moments is not None:
        obs = rlmath.standardise(obs_moments, obs, OBS_NORM_FLOOR)

    def posteriors(o, a, k):
        seq = {"obs": o[:-1], "next_obs": o[1:], "action": a,
               "is_first": jnp.zeros((length,), bool)}
        _, _, states, post, _ = wm.observe(dreamer.model, params, seq, k)
        return jax.tree_util.tree_map(lambda s, p: jnp.concatenate([s[:1], p], 0), states, post)

    return _pack(jax.vmap(posteriors)(obs, actions, jax.random.split(key, num)))


def _correlation(x: np.ndarray, y: np.ndarray) -> Optional[float]:
    if x.size < 2 or x.std() == 0 or y.std() == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def element_correlations(recon: np.ndarray, obs: np.ndarray) -> List[Optional[float]]:
    """Per element of the flattened observations ``obs [M, ...]``, the correlation of its
    reconstruction ``recon [M, ...]`` with it over the ``M`` samples (``None`` where either is
    constant)."""
    recon, obs = recon.reshape(recon.shape[0], -1), obs.reshape(obs.shape[0], -1)
    return [_correlation(recon[:, i], obs[:, i]) for i in range(obs.shape[1])]


def correlation_summary(per_element: Sequence[Optional[float]], env_id: str
                        ) -> Dict[str, Dict]:
    """:func:`element_correlations` summarised over all elements and over each group of
    elements the task names (``craftax/Craftax-Classic-Symbolic-v1``:
    :func:`envs.craftax_env.observation_groups`): per group with elements that vary, their
    count (``varying``), the ``median`` correlation and how many are ``below_half``."""
    groups = {"all": np.arange(len(per_element))}
    if env_id.startswith("craftax/"):
        from envs import craftax_env
        groups.update(craftax_env.observation_groups(env_id.split("/", 1)[1]) or {})
    summary = {}
    for group, index in groups.items():
        corr = [per_element[i] for i in index if per_element[i] is not None]
        if corr:
            summary[group] = {"median": float(np.median(corr)), "varying": len(corr),
                              "below_half": int(sum(c < 0.5 for c in corr))}
    return summary


def print_correlation_summary(summary: Dict[str, Dict], what: str) -> None:
    """One line per group of :func:`correlation_summary`."""
    for group, row in summary.items():
        label = "all" if group == "all" else f"the {group}"
        print(f"{what} of {label} elements that vary ({row['varying']}): correlation with the "
              f"real value median {row['median']:.3f}, below 0.5 in {row['below_half']}")


def discounted_returns(rewards: np.ndarray, valid: np.ndarray, discount: float) -> np.ndarray:
    """``G_t = sum_k discount^k r_{t+k}`` over the valid steps of each row (``[N, T]``)."""
    out = np.zeros_like(rewards, dtype=np.float64)
    acc = np.zeros(rewards.shape[0])
    for t in reversed(range(rewards.shape[1])):
        acc = np.where(valid[:, t], rewards[:, t] + discount * acc, 0.0)
        out[:, t] = acc
    return out


@functools.partial(jax.jit, static_argnums=0)
def _value_and_reward_predictions(dreamer: Dreamer, state, packed: Array):
    """The critic's mean values of the packed posterior states ``s_0 .. s_{T-1}`` and the reward
    head's mean predictions on ``s_1 .. s_T`` (``[N, T]`` each), in one compiled program."""
    cfg = dreamer.cfg
    feats = jax.vmap(jax.vmap(lambda p: features(_unpack(p, cfg.deter, cfg.groups,
                                                         cfg.classes))))(packed)
    value = nets.SUPPORT.decode(dreamer.critic.apply(state.critic_params, feats[:, :-1]))
    reward_logits, _ = jax.vmap(jax.vmap(lambda f: dreamer.model.apply(
        state.wm_params, f, method=wm.WorldModel.reward_continue)))(feats[:, 1:])
    return value, nets.SUPPORT.decode(reward_logits)


def value_calibration(dreamer: Dreamer, state, obs: Array, actions: Array, rewards: Array,
                      valid: Array, ended: Array, key: Array) -> Dict[str, Dict]:
    """The critic and the reward head of the trained ``state`` against played episodes.

    Args as :func:`rssm_k_step_errors`, with ``ended [N]``: the episode terminated within the
    window. Returns

    * ``value``: the critic's mean value ``V(s_t)`` of the posterior states ``s_t`` and the
      mean discounted return ``G_t`` (the run's discount) the episode earned from ``t`` on, over
      the steps of the episodes that terminated (a cut episode's return is unknown), with their
      correlation and ``num_steps``;
    * ``reward``: the reward head's mean (two-hot) prediction on the posterior of ``o_{t+1}``
      and the real ``r_t`` over all valid steps, their correlation, and both means over the
      ``events``: the steps whose reward is at least half the largest one played (when it is
      positive), with their count.

    Correlations are ``None`` where either side is constant.
    """
    packed = filtered_states(dreamer, state.wm_params, obs, actions, key, state.obs_moments)
    value, predicted = (np.asarray(x) for x in _value_and_reward_predictions(
        dreamer, state, packed))
    predicted = predicted.reshape(value.shape)
    rewards, valid = np.asarray(rewards, np.float64), np.asarray(valid, bool)
    returns = discounted_returns(rewards, valid, dreamer.cfg.discount)
    done = valid & np.asarray(ended, bool)[:, None]
    out = {"value": {"critic_mean": float(value[done].mean()) if done.any() else None,
                     "return_mean": float(returns[done].mean()) if done.any() else None,
                     "correlation": _correlation(value[done], returns[done]),
                     "num_steps": int(done.sum())}}
    real, pred = rewards[valid], predicted[valid]
    top = real.max() if real.size else 0.0
    events = real >= 0.5 * top if top > 0 else np.zeros_like(real, bool)
    out["reward"] = {"predicted_mean": float(pred.mean()), "real_mean": float(real.mean()),
                     "correlation": _correlation(pred, real),
                     "predicted_at_events": float(pred[events].mean()) if events.any() else None,
                     "real_at_events": float(real[events].mean()) if events.any() else None,
                     "num_events": int(events.sum())}
    return out


@functools.partial(jax.jit, static_argnums=(0, 5))
def _rssm_errors(dreamer: Dreamer, params, obs: Array, actions: Array, rewards: Array,
                 horizon: int, key: Array, valid: Optional[Array], obs_moments):
    """:func:`rssm_k_step_errors`' array part in one compiled program: the decoded posteriors
    ``[N, T+1, ...]``, the observations scored ``[N, T+1]``, the reconstruction error and the
    two :func:`k_step_error` dicts."""
    model, cfg = dreamer.model, dreamer.cfg
    num, length = rewards.shape
    apply = lambda method, *a: model.apply(params, *a, method=method)  # noqa: E731
    unpack = lambda p: _unpack(p, cfg.deter, cfg.groups, cfg.classes)  # noqa: E731

    filter_key, obs_key, reward_key = jax.random.split(key, 3)
    packed = filtered_states(dreamer, params, obs, actions, filter_key, obs_moments)  # [N, T+1, D]

    def step_fn(p, action, k):
        return _pack(apply(wm.WorldModel.img_step, unpack(p), action, k))

    def decode_obs(p):
        decoded, _, _ = apply(wm.WorldModel.heads, features(unpack(p)))
        decoded = decode_observation(model, decoded)
        if obs_moments is None:
            return decoded
        return rlmath.unstandardise(obs_moments, decoded, OBS_NORM_FLOOR)

    def decode_reward(p):
        _, reward_logits, _ = apply(wm.WorldModel.heads, features(unpack(p)))
        return nets.SUPPORT.decode(reward_logits).reshape(())

    recon = jax.vmap(jax.vmap(decode_obs))(packed)
    recon_norm = jnp.linalg.norm((recon - obs).reshape(num, length + 1, -1), axis=-1)
    # o_0 and every observation that follows a valid transition (none past an episode's end)
    seen = (jnp.ones((num, length + 1), bool) if valid is None else
            jnp.concatenate([jnp.ones((num, 1), bool), jnp.asarray(valid, bool)], 1))
    recon_err = (recon_norm * seen).sum() / seen.sum()
    out = {"obs": k_step_error(step_fn, packed, actions, horizon, key=obs_key,
                               observe_fn=decode_obs, targets=obs[:, 1:], valid=valid),
           "reward": k_step_error(step_fn, packed, actions, horizon, key=reward_key,
                                  observe_fn=decode_reward, targets=rewards, valid=valid)}
    return recon, seen, recon_err, out


def rssm_k_step_errors(dreamer: Dreamer, params, obs: Array, actions: Array, rewards: Array,
                       horizon: int, key: Array, valid: Optional[Array] = None,
                       obs_moments=None) -> Dict[str, Dict]:
    """Open-loop errors of the world model ``params`` (``DreamerState.wm_params``).

    Args:
      obs: ``[N, T+1, *obs_shape]`` real observations of ``N`` episodes (no resets inside).
      actions: ``[N, T, A]`` float model actions (``dreamer.to_model_action`` of env actions).
      rewards: ``[N, T]`` real rewards (``rewards[:, t]`` follows ``actions[:, t]``).
      valid: optional ``[N, T]`` bool, the transitions before an episode's end (``play`` steps
        on past a terminal without reset; later states are not scored).
      obs_moments: the run's ``DreamerState.obs_moments`` with ``obs_norm`` (the model sees
        standardised observations; its decoded ones are scored back on the task's scale).
    Returns ``{"obs": ..., "reward": ...}`` (each :func:`k_step_error`'s dict as lists),
    ``reconstruction_abs_error`` (mean ``||decode(posterior_t) - o_t||`` over ``o_0`` and the
    observations after valid transitions), for vector observations
    ``reconstruction_correlation`` (per element of the flattened observation, the correlation
    of its decoded value with the real one over the same observations; ``None`` where either
    is constant) and ``persistence``
    (:func:`persistence_errors`: the observation errors of predicting that nothing changes).
    """
    recon, seen, recon_err, out = _rssm_errors(dreamer, params, obs, actions, rewards, horizon,
                                               key, valid, obs_moments)
    if not dreamer.model.image:  # per element: is what the posterior holds of it decoded?
        mask = np.asarray(seen)
        element_corr = element_correlations(np.asarray(recon)[mask], np.asarray(obs)[mask])
    result = {name: {k: np.asarray(v).tolist() for k, v in res.items()}
              for name, res in out.items()}
    result["reconstruction_abs_error"] = float(recon_err)
    if not dreamer.model.image:
        result["reconstruction_correlation"] = element_corr
    result["persistence"] = persistence_errors(np.asarray(obs), horizon, valid)
    return result


def persistence_errors(obs: np.ndarray, horizon: int, valid=None) -> Dict[str, list]:
    """The errors of predicting ``o_{t+k}`` by ``o_t`` (nothing changes), scored as
    :func:`world_models.evaluation.k_step_error` scores the model, for ``k = 1..horizon``: a
    reference for the model's errors. ``obs [N, T+1, ...]``; ``valid [N, T]`` as there.
    Returns ``abs_error`` and ``pooled_relative_error`` (lists of ``horizon``)."""
    num, length = obs.shape[0], obs.shape[1] - 1
    flat = obs.reshape(num, length + 1, -1).astype(np.float64)
    valid = np.ones((num, length), bool) if valid is None else np.asarray(valid, bool)
    starts = length - horizon + 1
    abs_error, relative = [], []
    for k in range(1, horizon + 1):
        ok = np.stack([valid[:, t:t + k].all(1) for t in range(starts)], 1)  # [N, starts]
        err = np.linalg.norm(flat[:, k:k + starts] - flat[:, :starts], axis=-1)[ok]
        norm = np.linalg.norm(flat[:, k:k + starts], axis=-1)[ok]
        abs_error.append(float(err.mean()) if err.size else float("nan"))
        relative.append(float(err.mean() / max(norm.mean(), 1e-6)) if err.size
                        else float("nan"))
    return {"abs_error": abs_error, "pooled_relative_error": relative}


def play(env, dreamer: Dreamer, state, key: Array, num: int, length: int,
         sample: bool = False):
    """``num`` episodes of ``length`` steps with the actor's mode, or with its samples as in
    training when ``sample`` (adapter level, no reset).

    Returns ``(obs [N, T+1, ...], model actions [N, T, A], rewards [N, T], terminated [N],
    alive [N, T])``; ``alive[:, t]``: no terminal before step ``t``.
    """
    def policy(env_state, is_first, carry, k):
        action, carry, _ = dreamer.act(state, env_state.obs, is_first, carry, k, sample)
        return action, carry, carry.action  # the model's action, recorded as the extras

    @jax.jit
    def run(key):
        return rollout.play(env, policy, key, num_envs=num, length=length,
                            carry=dreamer.initial_carry(num))

    out = run(key)
    return (out.observations().astype(jnp.float32), out.extras, out.reward, out.ended,
            out.valid)


def evaluate(env, dreamer: Dreamer, state, key: Array, *, trajectories: int, length: int,
             horizon: int, sample: bool = False) -> Dict:
    """:func:`rssm_k_step_errors` of ``state.wm_params`` and :func:`value_calibration` along
    :func:`play`'s trajectories (``sample``: the actor's samples instead of its mode).

    ``state`` is the trained ``DreamerState``; returns the errors, ``calibration`` and
    ``terminated_fraction`` (the trajectories that reached a terminal within ``length`` steps).
    """
    play_key, error_key, calibration_key = jax.random.split(key, 3)
    obs, actions, rewards, ended, alive = play(env, dreamer, state, play_key, trajectories,
                                               length, sample)
    result = rssm_k_step_errors(dreamer, state.wm_params, obs, actions, rewards, horizon,
                                error_key, valid=alive, obs_moments=state.obs_moments)
    result["calibration"] = value_calibration(dreamer, state, obs, actions, rewards, alive,
                                              ended, calibration_key)
    result["terminated_fraction"] = float(np.mean(np.asarray(ended)))
    return result
