"""MuZero / Gumbel MuZero as a :class:`core.types.Agent` on the shared loop.

Acting: one search per environment on the learned model with the current parameters; the
search policy and root value go to replay as ``extras``. One update, all inside the compiled
loop:

1. sample ``B`` windows of ``K + n`` steps from the prioritised flashbax buffer;
2. bootstrap values ``v_j = V_target(next_obs_j)`` from the target network; for
   ``round(reanalyse_fraction * B)`` windows drawn at random a fresh search with the target
   network over ``o_0..o_{L-1}, next_obs_{L-1}`` replaces the stored policies and the
   bootstrap values (reanalyse; the values from a search without root noise);
3. targets (:mod:`agents.muzero.targets`), importance-weighted loss
   (:mod:`agents.muzero.losses`), one Adam step;
4. priorities ``|v_0 - z_0| + eps`` written back; target network copied every
   ``target_update_period`` updates (or EMA with ``target_tau``).

Board games (``EnvSpec.num_players == 2``) are learned by self-play: the same search acts for
whichever player moves (observations and rewards are the mover's), the search's per-ply
discount is negative (:func:`search_discount`), and with outcome value targets
(``MuZeroConfig.value_targets``) a window runs to the end of the game of each unroll step,
``K + max_episode_steps`` steps, with no bootstrap values and reanalyse refreshing the policies
of ``o_0..o_K`` only. On tasks with legal-action masks the model has a legality head, trained
on the stored masks and used to mask the priors below the root.
"""

from __future__ import annotations

from typing import Any, Callable, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from agents.muzero import acting, losses, targets
from agents.muzero.config import MuZeroConfig
from core import guard, replay
from core.types import Agent, Schedule
from envs.api import Environment, Symmetry
from world_models.muzero import MuZeroModel, Support, make_model, make_model_fns

Array = jax.Array


@struct.dataclass
class MuZeroState:
    """Everything the learner owns (no batch axis)."""

    params: Any  # network parameters
    target_params: Any  # periodic copy / EMA of params (bootstrap values, reanalyse)
    opt_state: Any
    steps: Array  # () int32: updates taken


def search_discount(cfg: MuZeroConfig, num_players: int) -> float:
    """The per-ply discount of the search and the value targets: ``discount`` (1 with outcome
    targets), negated in a two-player game (the next state's value is the opponent's)."""
    gamma = 1.0 if cfg.uses_outcome(num_players) else cfg.discount
    return -gamma if num_players == 2 else gamma


def reconstruction_size(cfg: MuZeroConfig, spec) -> int:
    """Entries of the observation that the reconstruction loss decodes (its vector, or its
    grid flattened); image observations are refused in one line."""
    if len(spec.obs_shape) == 3:
        raise ValueError(f"reconstruction_loss_weight={cfg.reconstruction_loss_weight:g} needs "
                         f"vector observations; {spec.env_id} has images {spec.obs_shape}. "
                         f"Pass --reconstruction-loss-weight 0.")
    return int(np.prod(spec.obs_shape))


def build_model(cfg: MuZeroConfig, env: Environment) -> MuZeroModel:
    """The learned model for ``env`` under ``cfg``'s sizes and supports (with the legality
    head on tasks with legal-action masks)."""
    spec = env.spec
    overrides = {}
    if cfg.latent_dim:
        overrides["latent_dim"] = cfg.latent_dim
    if cfg.hidden:
        overrides["hidden"] = tuple(cfg.hidden)
    if cfg.reconstruction_loss_weight > 0:
        overrides["obs_decoder_dim"] = reconstruction_size(cfg, spec)
    if cfg.action_encoding == "auto" and spec.action_layout is not None:
        overrides["action_layout"] = spec.action_layout
    return make_model(spec.num_actions, spec.obs_shape, size=cfg.model_size,
                      value_support=Support(cfg.value_support_size, cfg.value_support_max,
                                            "signed_hyperbolic"),
                      reward_support=Support(cfg.reward_support_size, cfg.reward_support_max,
                                             "signed_hyperbolic"),
                      legal_head=spec.has_action_mask, **overrides)


def _flat_apply(fn, x: Array, batch_axes: int = 2):
    """Applies a batched ``fn`` to ``x [B, T, ...]`` by flattening the two leading axes."""
    lead = x.shape[:batch_axes]
    out = fn(x.reshape((-1,) + x.shape[batch_axes:]))
    return jax.tree_util.tree_map(lambda y: y.reshape(lead + y.shape[1:]), out)


def check_discrete_env(env: Environment, agent: str = "muzero") -> None:
    """One-line errors where ``agent`` (a discrete-action MuZero) cannot run on ``env``."""
    spec = env.spec
    if not spec.discrete:
        raise ValueError(f"agent {agent!r} needs a discrete action space; {spec.env_id} is "
                         f"continuous (use --agent sampled_muzero).")
    if len(spec.obs_shape) not in (1, 2, 3):
        raise ValueError(f"agent {agent!r} needs vector, [H, W] or [H, W, C] observations; "
                         f"{spec.env_id} has shape {spec.obs_shape}")


def mirror_windows(window, symmetry: Symmetry, key: Array):
    """``window`` (leaves ``[B, L, ...]``) with each sequence, with probability 1/2, replaced by
    its mirror image: observations through ``symmetry.obs``, actions, stored search policies
    and legal-action masks permuted; rewards, episode flags and root values are invariant."""
    flip = jax.random.bernoulli(key, 0.5, window.reward.shape[:1])  # [B]

    def pick(mirrored, x):
        return jnp.where(flip.reshape(flip.shape + (1,) * (x.ndim - 1)), mirrored, x)

    obs_fn = lambda o: _flat_apply(jax.vmap(symmetry.obs), o)  # noqa: E731
    extras = dict(window.extras)
    extras["search_policy"] = pick(symmetry.action_values(extras["search_policy"]),
                                   extras["search_policy"])
    mask = window.legal_action_mask
    if mask is not None:
        mask = pick(symmetry.action_values(mask), mask)
    return window.replace(obs=pick(obs_fn(window.obs), window.obs),
                          next_obs=pick(obs_fn(window.next_obs), window.next_obs),
                          action=pick(symmetry.action(window.action), window.action),
                          extras=extras, legal_action_mask=mask)


def model_has_legal_head(model) -> bool:
    """Whether ``model`` (any variant's) predicts legal actions."""
    return bool(getattr(model, "has_legal_head", False))


def reanalyse_rows(key: Array, batch_size: int, num: int) -> Array:
    """``num`` distinct rows of a batch of ``batch_size``, uniformly at random."""
    return jax.random.permutation(key, batch_size)[:num]


def make(cfg: MuZeroConfig, env: Environment, num_envs: int) -> Agent:
    """Builds the agent for ``num_envs`` copies of ``env``."""
    check_discrete_env(env, "gumbel_muzero" if cfg.search == "gumbel" else "muzero")
    if cfg.mirror_augmentation and env.symmetry is None:
        raise ValueError(f"mirror_augmentation needs an environment with a declared symmetry "
                         f"(envs.api.Symmetry); {env.spec.env_id} declares none. Drop "
                         f"--mirror-augmentation or add the symmetry to its adapter.")
    model = build_model(cfg, env)
    root_fn, recurrent_fn = make_model_fns(model, search_discount(cfg, env.spec.num_players))

    def search_fn(params, obs, key, explore: bool, temp=1.0, legal_action_mask=None):
        out = acting.search(cfg, root_fn, recurrent_fn, params, obs, key, explore=explore,
                            temp=temp, legal_action_mask=legal_action_mask)
        return out.action, {"search_policy": out.policy, "root_value": out.root_value}

    return make_agent(cfg, env, num_envs, model=model, search_fn=search_fn)


def make_agent(cfg: MuZeroConfig, env: Environment, num_envs: int, *, model: MuZeroModel,
               search_fn: Callable, policy_loss: Callable = losses.policy_cross_entropy,
               policy_actions: str = None, batch_loss: Callable = losses.batch_loss) -> Agent:
    """The agent around a model and a search (MuZero's and Sampled MuZero's shared loop glue).

    Args:
      search_fn: ``(params, obs [B, ...], key, explore, temp) -> (action [B, ...], extras)``;
        ``extras`` (leading axis B) go to replay and hold at least ``"search_policy"`` (the
        policy target) and ``"root_value"``; reanalyse replaces every entry. On tasks with
        legal-action masks it is also given ``legal_action_mask=[B, A] bool`` (keyword).
      policy_loss: the policy term of :func:`agents.muzero.losses.example_loss`.
      policy_actions: the ``extras`` entry holding the actions the search policy is over
        (Sampled MuZero's sampled actions), passed to the targets; None for discrete actions.
      batch_loss: ``(params, obs [B, K+1, ...], actions [B, K, ...], targets, weights [B], *,
        model, cfg, policy_loss) -> (loss, {"metrics": {...}, "priority": [B]})``, by default
        :func:`agents.muzero.losses.batch_loss`; a variant with a model of its own (Stochastic
        MuZero's afterstates) passes its own. ``model`` needs ``init(key, obs_shape)`` and
        ``value(params, obs [N, ...]) -> [N]`` (bootstrap values).
    """
    spec = env.spec
    opt = losses.optimizer(cfg)
    outcome = cfg.uses_outcome(spec.num_players)
    length = cfg.window_length(spec.num_players, spec.max_episode_steps)
    n_step = length - cfg.unroll_steps
    discount = search_discount(cfg, spec.num_players)
    k1 = cfg.unroll_steps + 1
    buffer = replay.make_buffer(num_envs=num_envs,
                                capacity=max(cfg.buffer_size, num_envs * (length + 1)),
                                batch_size=cfg.batch_size, sequence_length=length,
                                prioritised=True, priority_exponent=cfg.priority_exponent)
    num_reanalyse = int(round(cfg.reanalyse_fraction * cfg.batch_size))

    def init(key: Array) -> MuZeroState:
        params = model.init(key, spec.obs_shape)
        return MuZeroState(params=params, target_params=params, opt_state=opt.init(params),
                           steps=jnp.zeros((), jnp.int32))

    options = cfg.explore_epsilon > 0  # exploration options (acting.explore_options)

    def initial_carry(n: int):
        if not options:
            return jnp.zeros((n,))
        return acting.initial_explore_carry(n, spec.action_shape, spec.action_dtype)

    def act(state: MuZeroState, obs, is_first, carry, key, explore: bool, *,
            legal_action_mask=None):
        temp = acting.temperature(cfg, state.steps)
        search_key = option_key = key
        if options:
            search_key, option_key = jax.random.split(key)
        if legal_action_mask is None:
            action, extras = search_fn(state.params, obs, search_key, explore, temp)
        else:
            action, extras = search_fn(state.params, obs, search_key, explore, temp,
                                       legal_action_mask=legal_action_mask)
        if options and explore:
            action, carry = acting.explore_options(cfg, spec.sample_action, carry, action,
                                                   is_first, option_key, legal_action_mask)
        return action, carry, extras

    def reanalyse(state: MuZeroState, window, values_after: Array, key: Array):
        """Fresh search (target network) for ``num_reanalyse`` windows drawn at random.

        The draw is uniform over the batch's rows: flashbax's stratified sampling orders the
        batch by buffer position, so a fixed slice (e.g. the first rows) would reanalyse the
        same environments' data every time and never the rest.
        """
        pick_key, search_key = jax.random.split(key)
        rows = reanalyse_rows(pick_key, cfg.batch_size, num_reanalyse)
        if outcome:  # policies of the unrolled steps only; outcomes need no values
            roots = window.obs[rows, :k1]
        else:
            roots = jnp.concatenate([window.obs[rows], window.next_obs[rows, -1:]], axis=1)
        mask = None
        if window.legal_action_mask is not None:  # the last root gives a value only: unmasked
            mask = window.legal_action_mask[rows, :roots.shape[1]]
            if not outcome:
                mask = jnp.concatenate([mask, jnp.ones_like(mask[:, -1:])], axis=1)

        temp = acting.temperature(cfg, state.steps)  # as acting has it now

        def search(steps: slice, explore: bool):
            """The search on ``roots[:, steps]`` (and their masks), ``[R, S]`` outputs."""
            masks = {} if mask is None else {
                "legal_action_mask": mask[:, steps].reshape((-1,) + mask.shape[2:])}
            return _flat_apply(lambda o: search_fn(state.target_params, o, search_key, explore,
                                                   temp=temp, **masks), roots[:, steps])[1]

        if outcome:
            out = search(slice(None), True)
            extras = {name: value.at[rows, :k1].set(out[name])
                      for name, value in window.extras.items() if name != "root_value"}
            return extras, values_after
        # Policies from the search as acting runs it (root noise), the bootstrap values from
        # one without: noise sends visits to worse actions and biases the root value down.
        # (Sampled MuZero's search without noise draws its action samples with a fixed key.)
        out = search(slice(None, -1), True)
        clean = search(slice(1, None), False)
        done = window.terminated[rows] | window.truncated[rows]
        fresh_values = jnp.where(done, values_after[rows], clean["root_value"])
        extras = {name: value.at[rows].set(out[name])
                  for name, value in window.extras.items() if name != "root_value"}
        return extras, values_after.at[rows].set(fresh_values)

    def compute_targets(state: MuZeroState, window, key: Array):
        if outcome:  # no bootstrap: not computed
            values_after = jnp.zeros(window.reward.shape, jnp.float32)
        else:
            values_after = _flat_apply(lambda o: model.value(state.target_params, o),
                                       window.next_obs)  # [B, L]
        extras = window.extras
        if num_reanalyse > 0:
            extras, values_after = reanalyse(state, window, values_after, key)
        fn = lambda r, te, tr, f, p, v, pa, lm: targets.unroll_targets(
            r, te, tr, f, p, v, unroll_steps=cfg.unroll_steps, n_step=n_step,
            discount=discount, policy_actions=pa, outcome=outcome, legal_mask=lm)
        return jax.vmap(fn)(window.reward, window.terminated, window.truncated, window.is_first,
                            extras["search_policy"], jax.lax.stop_gradient(values_after),
                            extras[policy_actions] if policy_actions else None,
                            window.legal_action_mask if model_has_legal_head(model) else None)

    def shrink_and_perturb(params, steps: Array, key: Array):
        """Every ``shrink_period`` updates (up to ``shrink_stop``): ``keep * params + (1 - keep)
        * fresh init``."""
        fresh = model.init(key, spec.obs_shape)
        due = steps % cfg.shrink_period == 0
        if cfg.shrink_stop > 0:
            due = due & (steps <= cfg.shrink_stop)
        keep = cfg.shrink_keep
        return jax.tree.map(lambda p, f: jnp.where(due, keep * p + (1 - keep) * f, p),
                            params, fresh)

    def update(state: MuZeroState, buffer_state, key) -> Tuple[MuZeroState, Any, dict]:
        sample_key, search_key = jax.random.split(key)
        sample = buffer.sample(buffer_state, sample_key)
        window = sample.experience  # leaves [B, L, ...]
        if cfg.mirror_augmentation:
            window = mirror_windows(window, env.symmetry, jax.random.fold_in(sample_key, 1))
        unroll_targets = compute_targets(state, window, search_key)
        weights = targets.importance_weights(sample.probabilities, cfg.importance_exponent)
        grads, aux = jax.grad(batch_loss, has_aux=True)(
            state.params, window.obs[:, :k1], window.action[:, :cfg.unroll_steps],
            unroll_targets, weights, model=model, cfg=cfg, policy_loss=policy_loss)
        # An update whose gradients overflow is skipped and counted (core.guard).
        params, opt_state, finite, grad_norm = guard.guarded_step(opt, grads, state.opt_state,
                                                                   state.params)
        steps = state.steps + 1
        if cfg.shrink_period > 0:
            params = shrink_and_perturb(params, steps, jax.random.fold_in(search_key, 1))
        if cfg.target_tau > 0:
            target = optax.incremental_update(params, state.target_params, cfg.target_tau)
        else:
            target = optax.periodic_update(params, state.target_params, steps,
                                           cfg.target_update_period)
        # A skipped update (or a non-finite priority) keeps the windows' stored priorities:
        # one NaN in the sum tree would corrupt every later draw.
        priority = jnp.where(finite & jnp.isfinite(aux["priority"]),
                             aux["priority"] + cfg.priority_eps,
                             replay.stored_priorities(buffer_state, sample.indices,
                                                      cfg.priority_exponent))
        buffer_state = buffer.set_priorities(buffer_state, sample.indices, priority)
        metrics = dict(aux["metrics"], value_target=unroll_targets.value[:, 0].mean(),
                       importance_weight=weights.mean(), priority=aux["priority"].mean(),
                       grad_norm=grad_norm, skipped_updates=guard.skipped(finite))
        return MuZeroState(params, target, opt_state, steps), buffer_state, metrics

    schedule = Schedule(env_steps_per_iteration=cfg.env_steps_per_iteration,
                        updates_per_iteration=cfg.updates_per_iteration,
                        prefill_steps=max(cfg.prefill_steps, num_envs * (length + 1)))
    return Agent(init=init, initial_carry=initial_carry, act=act, update=update,
                 buffer=buffer, schedule=schedule)
