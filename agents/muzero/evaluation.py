"""Compounding error of the trained MuZero dynamics along real trajectories.

``python -m agents.muzero.evaluation --logdir runs/<muzero run> [--horizon 10]`` restores a
trained run, plays ``--trajectories`` real episodes with the greedy search policy, and rolls the
learned model open loop on the real actions (:func:`world_models.evaluation.k_step_error`):

    s_t = h(o_t),  (r̂_{t+k}, s_{t+k}) = g(s_{t+k-1}, a_{t+k-1}),  v̂_{t+k} = V(f(s_{t+k})),

comparing ``r̂`` with the real rewards and ``v̂`` with ``V(f(h(o_{t+k})))``, the value the same
network assigns to the real observation (so the value error isolates what the unrolled
dynamics lose), for ``k = 1..horizon`` (beyond the training unroll K when horizon > K).
It also reports :func:`action_value_errors`: the model's one-step action values, for the
action taken and for the others, against the real next states' values, next to the real gap
between the actions' values; and with ``--policy-values-every N``,
:func:`policy_action_values`: the greedy policy's own action values by rollout (exact on a
deterministic environment) against the model's.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional

import jax
import jax.numpy as jnp
import numpy as np

from agents.muzero import acting
from world_models.evaluation import k_step_error
from world_models.muzero import MuZeroModel, make_model_fns

Array = jax.Array


def model_k_step_errors(model: MuZeroModel, params, obs: Array, actions: Array,
                        rewards: Array, horizon: int, valid: Optional[Array] = None
                        ) -> Dict[str, Dict]:
    """``obs [N, T+1, ...]``, ``actions [N, T]``, ``rewards [N, T]`` -> reward and value errors.

    ``valid [N, T]`` (optional) marks the transitions before an episode's end: the rollouts
    step on past a terminal without reset, and those states are scored only where valid.
    """
    def step_fn(model_state, action):
        s, _ = model_state
        reward_logits, s_next = model.dynamics(params, s[None], action[None])
        return s_next[0], model.reward_support.decode(reward_logits[0])

    def encode_fn(o):
        return model.represent(params, o[None])[0], jnp.zeros(())

    def value_of(model_state):
        _, value_logits = model.predict(params, model_state[0][None])
        return model.value_support.decode(value_logits[0])

    real_values = jax.vmap(lambda o: model.value(params, o))(obs[:, 1:])  # [N, T]
    out = {"reward": k_step_error(step_fn, obs, actions, horizon, encode_fn=encode_fn,
                                  observe_fn=lambda ms: ms[1], targets=rewards, valid=valid),
           "value": k_step_error(step_fn, obs, actions, horizon, encode_fn=encode_fn,
                                 observe_fn=value_of, targets=real_values, valid=valid)}
    return {name: {k: np.asarray(v).tolist() for k, v in res.items()} for name, res in out.items()}


def _rollout(env, cfg, model: MuZeroModel, params, key: Array, num: int, length: int,
             probe: Optional[Callable] = None):
    """Greedy-search trajectories; ``probe(inner, obs, keys)`` (optional) runs at every step
    before the action is taken and its outputs are stacked ``[T, ...]``."""
    root_fn, recurrent_fn = make_model_fns(model, cfg.discount)

    def body(carry, step_key):
        inner, obs, ended = carry
        search_key, env_key = jax.random.split(step_key)
        keys = jax.random.split(env_key, num)
        action = acting.search(cfg, root_fn, recurrent_fn, params, obs, search_key,
                               explore=False).action
        probed = probe(inner, obs, keys) if probe is not None else ()
        inner, next_obs, reward, terminated = jax.vmap(env.adapter_step)(inner, action, keys)
        return (inner, next_obs, ended | terminated), (next_obs, action, reward, ended, probed)

    @jax.jit
    def run(key):
        reset_key, loop_key = jax.random.split(key)
        inner, obs = jax.vmap(env.adapter_reset)(jax.random.split(reset_key, num))
        (_, _, ended), (next_obs, actions, rewards, ended_before, probed) = jax.lax.scan(
            body, (inner, obs, jnp.zeros(num, bool)), jax.random.split(loop_key, length))
        all_obs = jnp.concatenate([obs[None], next_obs], axis=0)
        return (jnp.swapaxes(all_obs, 0, 1), actions.T, rewards.T.astype(jnp.float32), ended,
                ~ended_before.T, probed)

    return run(key)


def play(env, cfg, model: MuZeroModel, params, key: Array, num: int, length: int):
    """``num`` greedy-search trajectories of ``length`` steps without reset (adapter level).

    Returns ``(obs [N, T+1, ...], actions [N, T], rewards [N, T], terminated [N])``.
    """
    return _rollout(env, cfg, model, params, key, num, length)[:4]


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
    rollout = _rollout(env, cfg, model, params, key, num, length,
                       _action_value_probe(env, cfg, model, params, num))
    return _action_value_summary(env.spec.num_actions, rollout)


def _action_value_probe(env, cfg, model: MuZeroModel, params, num: int) -> Callable:
    """The ``_rollout`` probe of :func:`action_value_errors`: ``(Q_real, Q_model)``, [N, A]."""
    value = lambda o: model.value(params, o)

    def probe(inner, obs, keys):
        def real_q(action):
            act = jnp.full((num,), action, jnp.int32)
            _, next_obs, reward, terminated = jax.vmap(env.adapter_step)(inner, act, keys)
            return (reward.astype(jnp.float32)
                    + cfg.discount * jnp.where(terminated, 0.0, value(next_obs)))

        actions = jnp.arange(env.spec.num_actions)
        return (jax.lax.map(real_q, actions).T,
                model_action_values(model, params, obs, cfg.discount))

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
    root_fn, recurrent_fn = make_model_fns(model, cfg.discount)

    def policy(obs, k):
        return acting.search(cfg, root_fn, recurrent_fn, params, obs, k, explore=False).action

    @jax.jit
    def returns(inner, obs, first_action, horizon, key):
        n = first_action.shape[0]

        def step(c, xs):
            inner, obs, ended, ret, disc = c
            k, i = xs
            action = jnp.where(i == 0, first_action, policy(obs, k))
            inner, obs, reward, terminated = jax.vmap(env.adapter_step)(
                inner, action, jax.random.split(k, n))
            ret = ret + jnp.where(~ended & (i < horizon), disc * reward, 0.0)
            return (inner, obs, ended | terminated, ret, disc * cfg.discount), None

        init = (inner, obs, jnp.zeros(n, bool), jnp.zeros(n), jnp.ones(n))
        return jax.lax.scan(step, init, (jax.random.split(key, length), jnp.arange(length))
                            )[0][3]

    episode_key, rollout_key = jax.random.split(key)
    # one greedy episode (_rollout with num=1), its environment states probed at every step
    all_obs, actions, _, _, alive, inners = _rollout(
        env, cfg, model, params, episode_key, 1, length, lambda inner, obs, keys: inner)
    inners = jax.tree.map(lambda x: x[:, 0], inners)  # [T, ...]
    obs, actions = all_obs[0, :length], actions[0]
    t = np.arange(0, int(np.asarray(alive[0]).sum()), every)
    num_actions = env.spec.num_actions
    pick = np.repeat(t, num_actions)  # every state once per action
    q = returns(jax.tree.map(lambda x: x[pick], inners), obs[pick],
                jnp.tile(jnp.arange(num_actions), len(t)), jnp.asarray(length - pick),
                rollout_key)
    return {"t": t, "obs": np.asarray(obs[t]), "action": np.asarray(actions[t]),
            "q_policy": np.asarray(q).reshape(len(t), num_actions),
            "q_model": np.asarray(model_action_values(model, params, obs[t], cfg.discount))}


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


def _action_value_summary(num_actions: int, rollout) -> Dict[str, float]:
    _, actions, _, _, alive, (q_real, q_model) = rollout
    alive = np.asarray(alive)  # [N, T]
    q_real = np.swapaxes(np.asarray(q_real), 0, 1)[alive]  # [M, A]
    q_model = np.swapaxes(np.asarray(q_model), 0, 1)[alive]
    taken = np.asarray(jax.nn.one_hot(actions, num_actions), bool)[alive]
    error = np.abs(q_model - q_real)
    return {"taken_error": float(error[taken].mean()),
            "other_error": float(error[~taken].mean()) if num_actions > 1 else 0.0,
            "real_gap": float((q_real.max(1) - q_real.min(1)).mean()),
            "model_gap": float((q_model.max(1) - q_model.min(1)).mean()),
            "steps": int(alive.sum())}


def main(argv: Optional[List[str]] = None) -> Dict:
    from agents import registry
    from experiments import train

    parser = train.evaluation_parser("python -m agents.muzero.evaluation", __doc__, horizon=10)
    parser.add_argument("--policy-values-every", type=int, default=0,
                        help="also roll out the greedy policy's action values at every N-th "
                             "state of one episode (policy_action_values; 0: off)")
    parser.add_argument("--policy-length", type=int, default=0,
                        help="episode length cut for --policy-values-every (default: the "
                             "environment's time limit)")
    args = parser.parse_args(argv)
    env, cfg, state, record = train.load_run(args.logdir, args.seed_index)
    module = registry.agent_module(record["agent"])
    model = module.build_model(cfg, env)
    params = state.agent.params
    # One set of greedy trajectories serves both measurements (the probe does not change them).
    rollout = _rollout(env, cfg, model, params, jax.random.PRNGKey(7), args.trajectories,
                       args.length, _action_value_probe(env, cfg, model, params,
                                                        args.trajectories))
    obs, actions, rewards, ended, alive = rollout[:5]
    result = model_k_step_errors(model, params, obs, actions, rewards, args.horizon,
                                 valid=alive)
    result["action_values"] = _action_value_summary(env.spec.num_actions, rollout)
    result.update(logdir=args.logdir, env_steps=int(np.asarray(state.env_steps)),
                  trajectories=args.trajectories, length=args.length,
                  terminated_fraction=float(np.mean(ended)),
                  unroll_steps=cfg.unroll_steps)
    print("one-step action values (model vs real next state), mean abs:",
          {k: round(v, 3) for k, v in result["action_values"].items()})
    if args.policy_values_every > 0:
        out = policy_action_values(env, cfg, model, params, jax.random.PRNGKey(8),
                                   args.policy_length or env.spec.max_episode_steps,
                                   args.policy_values_every)
        result["policy_action_values"] = policy_action_value_summary(out)
        print("greedy policy's action values by rollout vs the model's one-step ones:",
              {k: round(v, 3) for k, v in result["policy_action_values"].items()})
    train.report_errors(result, ("reward", "value"), args.json)
    return result


if __name__ == "__main__":
    from experiments import cli
    cli.run(main)
