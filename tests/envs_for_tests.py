"""Tiny environments for tests, small enough to learn in seconds on a CPU."""

import jax
import jax.numpy as jnp

from envs.api import EnvSpec, Environment


def corridor(length: int = 5, bait: float = 0.1, random_start: bool = False) -> Environment:
    """A corridor of ``length`` cells where only a long-sighted policy scores.

    The agent starts in cell 0 (``random_start``: a uniformly random cell, exploring starts)
    and observes its cell one-hot. In cell ``p`` action ``p % 2`` moves on with reward 0,
    except from the last cell, where it pays 1 and terminates; the other action takes the
    bait: reward ``bait`` (< 1) and the episode terminates. From cell 0, moving on in every
    cell returns 1 and every other policy ``bait``, in particular the policy that is greedy in
    the immediate reward (it takes the bait at once); a random policy returns
    ``bait + (1 - bait) / 2^length`` on average. The right action alternates, so a policy
    must read the observation.
    """
    def observe(cell):
        return jax.nn.one_hot(cell, length)

    def reset(key):
        cell = (jax.random.randint(key, (), 0, length) if random_start
                else jnp.zeros((), jnp.int32))
        return cell, observe(cell)

    def step(cell, action, key):
        del key
        moves_on = action == cell % 2
        at_goal = moves_on & (cell == length - 1)
        reward = jnp.where(moves_on, jnp.where(at_goal, 1.0, 0.0), bait)
        next_cell = jnp.where(moves_on & ~at_goal, cell + 1, cell)
        return next_cell, observe(next_cell), reward, ~moves_on | at_goal

    spec = EnvSpec(env_id="test/corridor", obs_shape=(length,), discrete=True, num_actions=2,
                   max_episode_steps=length + 1)
    return Environment(spec=spec, adapter_reset=reset, adapter_step=step)


def immediate_reward_policy(env: Environment):
    """A :data:`core.rollout.Policy` that takes the action of highest immediate reward, read
    from the true environment (first action on ties): the one-step lookahead with a perfect
    reward model and no value."""
    actions = jnp.arange(env.spec.num_actions, dtype=jnp.int32)

    def rewards(inner, key):
        return jax.vmap(lambda a: env.adapter_step(inner, a, key)[2])(actions)

    def policy(env_state, is_first, carry, key):
        keys = jax.random.split(key, is_first.shape[0])
        action = jnp.argmax(jax.vmap(rewards)(env_state.inner, keys), axis=-1)
        return action.astype(jnp.int32), carry, {}

    return policy
