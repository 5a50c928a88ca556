"""Compounding error of a trained Stochastic MuZero model along real greedy games.

:func:`greedy_games` plays real episodes with an agent's greedy search (legal-action masks
included) and :func:`model_k_step_errors` rolls the learned model open loop on the real
actions from every real state (:func:`world_models.evaluation.k_step_error`):

    s_t = h(o_t),  as = phi(s, a_{t+k-1}),  (r̂_{t+k}, s_{t+k}) = g(as, c_{t+k-1}),
    v̂_{t+k} = V(f(s_{t+k})),

against the real rewards and ``V(f(h(o_{t+k})))`` (the value the same network gives the real
observation; 0 where it is terminal), for ``k = 1..horizon``, with two choices of the chance
codes ``c``:

* ``observed``: the encoder's code of the real pair ``(o_{t+k-1}, o_{t+k})``, the outcome
  that happened: what the model gets wrong given the chance events;
* ``likely``: the most likely code under ``sigma`` (no observation): one path of the search.

MuZero's model on the same games is :func:`agents.muzero.evaluation.model_k_step_errors`
(its one dynamics step has no chance input). The command line is ``python -m
experiments.evaluate --logdir RUN``.
"""

from __future__ import annotations

from typing import Dict, Optional

import jax
import jax.numpy as jnp

from agents.muzero.evaluation import reward_value_errors
from core import rollout
from world_models.stochastic_muzero import StochasticMuZeroModel

Array = jax.Array


def greedy_games(env, agent, agent_state, key: Array, num: int, length: int
                 ) -> rollout.Rollout:
    """``num`` greedy episodes of ``length`` steps at most (adapter level, no reset) of any
    :class:`core.types.Agent` on ``env``, jitted; the legal-action mask is passed where the
    task has one."""
    policy = rollout.agent_policy(env, agent.act, agent_state)
    return jax.jit(lambda k: rollout.play(env, policy, k, num_envs=num, length=length,
                                          carry=agent.initial_carry(num)))(key)


def model_k_step_errors(model: StochasticMuZeroModel, params, obs: Array, actions: Array,
                        rewards: Array, horizon: int, valid: Optional[Array] = None,
                        terminated: Optional[Array] = None) -> Dict[str, Dict]:
    """``obs [N, T+1, ...]``, ``actions [N, T]``, ``rewards [N, T]`` -> ``{"reward_observed",
    "value_observed", "reward_likely", "value_likely"}`` (module doc), each
    :func:`world_models.evaluation.k_step_error`'s dict; ``valid [N, T]`` as there;
    ``terminated [N, T]`` as in :func:`agents.muzero.evaluation.model_k_step_errors`."""
    observed = jax.vmap(lambda o: jnp.argmax(model.encode(params, o[:-1], o[1:]), -1))(obs)
    inputs = jnp.stack([actions.astype(jnp.int32), observed.astype(jnp.int32)], -1)  # [N,T,2]

    def make_step(use_observed: bool):
        def step_fn(params, model_state, action_code):
            s, _ = model_state
            afterstate = model.afterstate(params, s[None], action_code[None, 0])
            chance_logits, _ = model.afterstate_predict(params, afterstate)
            code = action_code[1] if use_observed else jnp.argmax(chance_logits[0])
            reward_logits, s_next = model.dynamics(
                params, afterstate, jax.nn.one_hot(code, model.codebook_size)[None])
            return s_next[0], model.reward_support.decode(reward_logits[0])
        return step_fn

    return reward_value_errors(model, params, {"_observed": make_step(True),
                                               "_likely": make_step(False)},
                               obs, inputs, rewards, horizon, valid, terminated)
