"""Compounding error of a trained MuZero model along real greedy-search trajectories.

:func:`evaluate` plays real episodes with the greedy search policy and rolls the learned model
open loop on the real actions (:func:`world_models.evaluation.k_step_error`):

    s_t = h(o_t),  (r̂_{t+k}, s_{t+k}) = g(s_{t+k-1}, a_{t+k-1}),  v̂_{t+k} = V(f(s_{t+k})),

comparing ``r̂`` with the real rewards and ``v̂`` with ``V(f(h(o_{t+k})))``, the value the same
network assigns to the real observation (so the value error isolates what the unrolled
dynamics lose; 0 where ``o_{t+k}`` is terminal, as the model is trained to predict), for
``k = 1..horizon`` (beyond the training unroll K when horizon > K).
It also reports :func:`action_value_errors`: the model's one-step action values, for the
action taken and for the others, against the real next states' values, next to the real gap
between the actions' values; :func:`policy_action_values` gives the greedy policy's own action
values by rollout (exact on a deterministic environment) against the model's;
:func:`returns_by_budget` the greedy return at other search budgets. The command line
is ``python -m experiments.evaluate --logdir RUN``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np

from agents.muzero import acting
from agents.muzero.agent import search_discount
from core import rollout
from world_models.evaluation import k_step_error
from world_models.muzero import MuZeroModel, make_model_fns

Array = jax.Array


def model_k_step_errors(model: MuZeroModel, params, obs: Array, actions: Array,
                        rewards: Array, horizon: int, valid: Optional[Array] = None,
                        terminated: Optional[Array] = None) -> Dict[str, Dict]:
    """``obs [N, T+1, ...]``, ``actions [N, T]``, ``rewards [N, T]`` -> reward and value errors.

    ``valid [N, T]`` (optional) marks the transitions before an episode's end: the rollouts
    step on past a terminal without reset, and those states are scored only where valid.
    ``terminated [N, T]`` (optional) marks the steps whose successor is absorbing: the value
    target there is 0 (what the model is trained to predict), not the network's value of it.
    """
    def step_fn(params, model_state, action):
        s, _ = model_state
        reward_logits, s_next = model.dynamics(params, s[None], action[None])
        return s_next[0], model.reward_support.decode(reward_logits[0])

    return reward_value_errors(model, params, {"": step_fn}, obs, actions, rewards, horizon,
                               valid, terminated)


def reward_value_errors(model, params, step_fns: Dict[str, Callable], obs: Array,
                        inputs: Array, rewards: Array, horizon: int, valid: Optional[Array],
                        terminated: Optional[Array]) -> Dict[str, Dict]:
    """For each ``step_fns[name]`` (``(params, model_state, input) -> (model_state, reward)``
    on ``model_state = (s, reward)``), the k-step errors of the rolled-out rewards against
    ``rewards`` (``"reward" + name``) and of ``V(f(s))`` against the network's value of the
    real observations (``"value" + name``; 0 where ``terminated``), as lists. ``model`` is
    a MuZero-family model: ``represent``, ``predict``, ``value`` and the two supports."""
    @jax.jit  # one compiled program rather than many small ones, op by op
    def errors(params, obs, inputs, rewards, valid, terminated):
        def encode_fn(o):
            return model.represent(params, o[None])[0], jnp.zeros(())

        def value_of(model_state):
            _, value_logits = model.predict(params, model_state[0][None])
            return model.value_support.decode(value_logits[0])

        real_values = jax.vmap(lambda o: model.value(params, o))(obs[:, 1:])  # [N, T]
        if terminated is not None:  # an absorbing state is worth 0; V was never trained there
            real_values = jnp.where(terminated, 0.0, real_values)
        out = {}
        for name, step_params_fn in step_fns.items():
            step_fn = functools.partial(step_params_fn, params)
            out["reward" + name] = k_step_error(
                step_fn, obs, inputs, horizon, encode_fn=encode_fn, observe_fn=lambda ms: ms[1],
                targets=rewards, valid=valid)
            out["value" + name] = k_step_error(
                step_fn, obs, inputs, horizon, encode_fn=encode_fn, observe_fn=value_of,
                targets=real_values, valid=valid)
        return out

    out = errors(params, obs, inputs, rewards, valid, terminated)
    return {name: {k: np.asarray(v).tolist() for k, v in res.items()} for name, res in out.items()}


def _discount(cfg, env) -> float:
    """The per-step discount the search and the action values use on ``env`` (negated in a
    two-player game: the next state's value is the opponent's)."""
    return search_discount(cfg, env.spec.num_players)


def greedy_search_policy(cfg, model: MuZeroModel, params, env) -> rollout.Policy:
    """The greedy (``explore=False``) search on ``model`` as a :data:`core.rollout.Policy` on
    ``env`` (its legal moves at the root where it has masks, its players' discount)."""
    root_fn, recurrent_fn = make_model_fns(model, _discount(cfg, env))

    def policy(env_state, is_first, carry, key):
        out = acting.search(cfg, root_fn, recurrent_fn, params, env_state.obs, key,
                            explore=False,
                            legal_action_mask=rollout.legal_action_masks(env, env_state))
        return out.action, carry, ()

    return policy


def greedy_rollout(env, cfg, model: MuZeroModel, params, key: Array, num: int, length: int,
                   probe: Optional[rollout.Probe] = None) -> rollout.Rollout:
    """``num`` greedy-search trajectories of ``length`` steps without reset (adapter level),
    jitted; ``probe`` (optional) as in :func:`core.rollout.play`."""
    policy = greedy_search_policy(cfg, model, params, env)
    return jax.jit(lambda k: rollout.play(env, policy, k, num_envs=num, length=length,
                                          probe=probe))(key)


def returns_by_budget(env, cfg, model: MuZeroModel, params, key: Array, budgets, num: int,
                      length: int) -> dict:
    """The mean return of ``num`` greedy episodes (cut at ``length`` steps) with the search at
    each number of simulations in ``budgets``, the same keys for every budget: whether the
    trained model and values, or the search's budget, limit greedy play."""
    return {int(n): float(np.mean(greedy_rollout(
        env, dataclasses.replace(cfg, num_simulations=int(n)), model, params, key, num,
        length).returns)) for n in budgets}


def play(env, cfg, model: MuZeroModel, params, key: Array, num: int, length: int):
    """``num`` greedy-search trajectories of ``length`` steps without reset (adapter level).

    Returns ``(obs [N, T+1, ...], actions [N, T], rewards [N, T], terminated [N])``.
    """
    out = greedy_rollout(env, cfg, model, params, key, num, length)
    return out.observations(), out.action, out.reward, out.ended


def evaluate(env, cfg, model: MuZeroModel, params, key: Array, *, trajectories: int,
             length: int, horizon: int) -> Dict:
    """The k-step errors and one-step action values along one set of greedy trajectories.

    Returns ``{"reward": ..., "value": ...}`` (:func:`model_k_step_errors`), ``action_values``
    (:func:`action_value_errors`' summary), ``action_frequencies`` (:func:`action_frequencies`)
    and ``terminated_fraction`` (the trajectories that
    reached a terminal within ``length`` steps); the probe does not change the trajectories.
    """
    out = greedy_rollout(env, cfg, model, params, key, trajectories, length,
                         _action_value_probe(env, cfg, model, params))
    result = model_k_step_errors(model, params, out.observations(), out.action, out.reward,
                                 horizon, valid=out.valid, terminated=out.terminated)
    result["action_values"] = _action_value_summary(env.spec.num_actions, out)
    result["action_frequencies"] = action_frequencies(env.spec.num_actions, out)
    result["terminated_fraction"] = float(np.mean(np.asarray(out.ended)))
    return result


def action_frequencies(num_actions: int, out: rollout.Rollout) -> list:
    """Share of each action among the steps of ``out``'s episodes (``[A]``, summing to 1): a
    greedy policy that has collapsed onto one action shows as a share near 1."""
    alive = np.asarray(out.valid)
    counts = np.bincount(np.asarray(out.action)[alive].reshape(-1), minlength=num_actions)
    return (counts / max(counts.sum(), 1)).tolist()


def action_value_errors(env, cfg, model: MuZeroModel, params, key: Array, num: int,
                        length: int) -> Dict[str, float]:
    """How well the model ranks the actions the search compares, along greedy trajectories.

    At every state ``o_t`` before the episode's end and for every action ``a``:

        Q_model(o_t, a) = r̂ + gamma V(f(g(h(o_t), a)))
        Q_real(o_t, a)  = r(o_t, a) + gamma (1 - terminal) V(f(h(o'_a)))

    with ``o'_a`` the environment's real next observation under ``a`` (one step of the
    adapter from the same state and key) and ``V`` the network's value. The model is trained
    only on the actions that were taken, so the error on the others (``other_error``) is the
    counterfactual error the search relies on; ``real_gap`` / ``model_gap`` are the mean spread
    ``max_a Q - min_a Q``: where the error exceeds the real gap, the search ranks the actions
    by noise. Returns mean absolute errors over alive steps.
    """
    out = greedy_rollout(env, cfg, model, params, key, num, length,
                         _action_value_probe(env, cfg, model, params))
    return _action_value_summary(env.spec.num_actions, out)


def _action_value_probe(env, cfg, model: MuZeroModel, params) -> rollout.Probe:
    """The probe of :func:`action_value_errors`: ``(Q_real, Q_model)``, each ``[N, A]``."""
    value = lambda o: model.value(params, o)
    discount = _discount(cfg, env)

    def probe(env_state, keys):
        inner, obs = env_state.inner, env_state.obs

        def real_q(action):
            act = jnp.full(obs.shape[:1], action, jnp.int32)
            _, next_obs, reward, terminated = jax.vmap(env.adapter_step)(inner, act, keys)
            return (reward.astype(jnp.float32)
                    + discount * jnp.where(terminated, 0.0, value(next_obs)))

        actions = jnp.arange(env.spec.num_actions)
        return (jax.lax.map(real_q, actions).T,
                model_action_values(model, params, obs, discount))

    return probe


def model_action_values(model: MuZeroModel, params, obs: Array, discount: float) -> Array:
    """The model's one-step action values ``r̂ + gamma V(f(g(h(o), a)))``: ``obs [N, ...] ->
    [N, A]``."""
    s = model.represent(params, obs)

    def q(action):
        reward_logits, s_next = model.dynamics(params, s,
                                               jnp.full(obs.shape[:1], action, jnp.int32))
        _, value_logits = model.predict(params, s_next)
        return (model.reward_support.decode(reward_logits)
                + discount * model.value_support.decode(value_logits))

    return jax.lax.map(q, jnp.arange(model.num_actions)).T


def policy_action_values(env, cfg, model: MuZeroModel, params, key: Array, length: int,
                         every: int = 1) -> Dict[str, np.ndarray]:
    """Action values of the greedy search policy by rollout, next to the model's.

    Plays one greedy-search episode of up to ``length`` steps from a reset (adapter level).
    At every ``every``-th state ``s_t`` before its end and for every action ``a`` it rolls
    out: take ``a``, then follow the greedy search policy up to step ``length`` or the
    episode's end:

        Q^pi(s_t, a) = sum_{k < length - t} gamma^k r_{t+k}.

    This is exact for a deterministic environment (CartPole, the classic-control tasks). For a
    stochastic one it is one sample. Pass the environment's time limit as ``length`` so that
    the cut is the real one. Next to it, :func:`model_action_values`: what a one-step
    search compares. Where the true gaps between actions are smaller than the model's errors,
    the search ranks the actions by model error.

    Returns ``t [M]``, ``obs [M, ...]``, ``action [M]`` (taken), ``q_policy [M, A]``,
    ``q_model [M, A]``.
    """
    if length < 1 or every < 1:
        raise ValueError(f"policy_action_values needs length >= 1 and every >= 1, got "
                         f"length={length}, every={every}")
    search = greedy_search_policy(cfg, model, params, env)
    discount = _discount(cfg, env)

    @jax.jit
    def returns(start, first_action, horizon, key):
        def policy(env_state, is_first, carry, k):
            action, carry, extras = search(env_state, is_first, carry, k)
            return jnp.where(is_first, first_action, action), carry, extras

        out = rollout.play(env, policy, key, num_envs=first_action.shape[0], length=length,
                           start=start)
        steps = jnp.arange(length)
        counted = out.valid & (steps < horizon[:, None])
        return jnp.where(counted, discount ** steps * out.reward, 0.0).sum(1)

    episode_key, rollout_key = jax.random.split(key)
    # one greedy episode, with the environments' states before every step
    episode = greedy_rollout(env, cfg, model, params, episode_key, 1, length,
                             lambda env_state, keys: env_state)
    states = jax.tree.map(lambda x: x[0], episode.probes)  # leaves [T, ...]
    obs, actions = episode.obs[0], episode.action[0]
    t = np.arange(0, int(episode.lengths[0]), every)
    num_actions = env.spec.num_actions
    pick = np.repeat(t, num_actions)  # every state once per action
    q = returns(jax.tree.map(lambda x: x[pick], states),
                jnp.tile(jnp.arange(num_actions), len(t)), jnp.asarray(length - pick),
                rollout_key)
    return {"t": t, "obs": np.asarray(obs[t]), "action": np.asarray(actions[t]),
            "q_policy": np.asarray(q).reshape(len(t), num_actions),
            "q_model": np.asarray(model_action_values(model, params, obs[t], discount))}


def policy_action_value_summary(out: Dict[str, np.ndarray]) -> Dict[str, float]:
    """Mean true and model gaps ``max_a Q - min_a Q``, the model's mean absolute error and how
    often its best action is the true best (states where the true values are not all equal).

    The rollouts stop at step ``length`` and the model does not, so near that cut the error
    also holds the value the model rightly expects beyond it."""
    q, m = out["q_policy"], out["q_model"]
    true_gap, model_gap = q.max(1) - q.min(1), m.max(1) - m.min(1)
    decided = true_gap > 1e-6
    agree = (m.argmax(1) == q.argmax(1))[decided]
    return {"states": int(len(q)), "true_gap": float(true_gap.mean()),
            "model_gap": float(model_gap.mean()), "model_error": float(np.abs(m - q).mean()),
            "best_action_agreement": float(agree.mean()) if agree.size else float("nan"),
            "decided_states": int(decided.sum())}


def _action_value_summary(num_actions: int, out: rollout.Rollout) -> Dict[str, float]:
    alive = np.asarray(out.valid)  # [N, T]
    q_real, q_model = (np.asarray(q)[alive] for q in out.probes)  # [M, A]
    taken = np.asarray(jax.nn.one_hot(out.action, num_actions), bool)[alive]
    error = np.abs(q_model - q_real)
    return {"taken_error": float(error[taken].mean()),
            "other_error": float(error[~taken].mean()) if num_actions > 1 else 0.0,
            "real_gap": float((q_real.max(1) - q_real.min(1)).mean()),
            "model_gap": float((q_model.max(1) - q_model.min(1)).mean()),
            "steps": int(alive.sum())}
