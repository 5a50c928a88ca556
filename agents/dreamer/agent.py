"""DreamerV3 as a :class:`core.types.Agent`: acting with the RSSM, one update = world model +
imagination actor-critic on a replayed ``[batch_size, seq_len]`` window batch.

Acting carries ``(RSSM posterior, previous action)`` per environment; where ``is_first`` the
RSSM state and the previous action are reset (as in training, see
:mod:`world_models.dreamer_wm`). With ``replay_context`` every step goes to replay with the
posterior of its observation (its ``extras``), which each update that replays the step
rewrites and which starts the training windows (:meth:`Dreamer.context_entry`). The train
ratio (replayed steps per environment step) sets the schedule: ``updates per vectorised step
= train_ratio * num_envs / (batch_size * seq_len)``.
"""

from __future__ import annotations

import math
from typing import Any, Tuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from agents.dreamer import actor_critic as ac
from agents.dreamer.config import DreamerConfig
from agents.dreamer.optim import make_optimizer
from core import guard, replay, rlmath
from core.types import Agent, Schedule
from envs.api import Environment, check_single_player
from world_models import dreamer_nets as nets
from world_models import dreamer_wm as wm
from world_models.rssm import RSSMState, features, reset_where

Array = jax.Array
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# obs_norm: the smallest standard deviation an observation element is divided by (an element
# that has not varied yet, e.g. an inventory count still at 0, stays within symlog's range
# when it first changes).
OBS_NORM_FLOOR = 0.01


@struct.dataclass
class DreamerState:
    wm_params: Any
    actor_params: Any
    critic_params: Any
    slow_critic_params: Any  # EMA of critic_params (rate cfg.slow_rate per update)
    wm_opt: Any
    actor_opt: Any
    critic_opt: Any
    ret_state: Tuple[Array, Array, Array]  # (P5 EMA, P95 EMA, updates): return normaliser
    steps: Array  # () int32: updates taken
    # running moments of the replayed observations (cfg.obs_norm), else None
    obs_moments: Any = None


@struct.dataclass
class ActCarry:
    state: RSSMState  # leaves [E, ...]: posterior of the last observation
    action: Array  # [E, A] float: the last action (one-hot or in [-1, 1])


def schedule_for(cfg: DreamerConfig, num_envs: int) -> Schedule:
    """Updates per iteration from the train ratio (replayed steps per env step)."""
    per_update = cfg.batch_size * cfg.seq_len
    updates_per_vector_step = cfg.train_ratio * num_envs / per_update
    if updates_per_vector_step >= 1:
        return Schedule(env_steps_per_iteration=1,
                        updates_per_iteration=int(round(updates_per_vector_step)),
                        prefill_steps=cfg.prefill_steps)
    return Schedule(env_steps_per_iteration=max(1, int(round(1 / updates_per_vector_step))),
                    updates_per_iteration=1, prefill_steps=cfg.prefill_steps)


class Dreamer:
    """The networks and pure functions of DreamerV3 for one environment spec."""

    def __init__(self, cfg: DreamerConfig, env: Environment):
        spec = env.spec
        self.cfg, self.spec = cfg, spec
        self.discrete = spec.discrete
        self.action_dim = spec.action_dim
        obs_range = None if spec.obs_range is None else tuple(map(float, spec.obs_range))
        dtype = COMPUTE_DTYPES[cfg.compute_dtype]
        self.model = wm.WorldModel(
            obs_shape=tuple(spec.obs_shape), action_dim=self.action_dim,
            obs_kind=spec.obs_kind, obs_range=obs_range, deter=cfg.deter,
            hidden=cfg.hidden, groups=cfg.groups, classes=cfg.classes, blocks=cfg.blocks,
            unimix=cfg.unimix, norm=cfg.norm, units=cfg.units, layers=cfg.layers,
            cnn_depth=cfg.cnn_depth, dtype=dtype)
        if cfg.obs_norm and self.model.image:
            raise ValueError("obs_norm standardises vector observations; this task's are "
                             f"images {tuple(spec.obs_shape)} (scaled by their range): drop "
                             "--obs-norm")
        self.actor = ac.Actor(self.action_dim, self.discrete, cfg.units, cfg.layers, cfg.norm,
                              cfg.actor_unimix, dtype)
        self.critic = nets.TwoHotHead(cfg.units, cfg.layers, cfg.norm, dtype)
        opt = dict(warmup=cfg.warmup, agc=cfg.agc, eps=cfg.eps)
        self.wm_opt = make_optimizer(cfg.optimizer, lr=cfg.wm_lr, clip=cfg.wm_clip, **opt)
        self.actor_opt = make_optimizer(cfg.optimizer, lr=cfg.actor_lr, clip=cfg.ac_clip, **opt)
        self.critic_opt = make_optimizer(cfg.optimizer, lr=cfg.critic_lr, clip=cfg.ac_clip,
                                         **opt)
        self.backprop = (not self.discrete) and cfg.continuous_grad == "backprop"
        if self.discrete:
            self._low = self._high = None
        else:
            self._low = jnp.asarray(spec.action_low, jnp.float32)
            self._high = jnp.asarray(spec.action_high, jnp.float32)

    @property
    def feat_dim(self) -> int:
        return self.cfg.deter + self.cfg.groups * self.cfg.classes

    # --- actions: env <-> model representation -------------------------------------------
    def to_model_action(self, action: Array) -> Array:
        """Env action (int or box) -> float vector [A] (one-hot or in [-1, 1])."""
        if self.discrete:
            return jax.nn.one_hot(action, self.action_dim)
        unit = 2.0 * (action - self._low) / (self._high - self._low) - 1.0
        return unit.reshape(action.shape[:-1] + (self.action_dim,))

    def to_env_action(self, action: Array) -> Array:
        if self.discrete:
            return jnp.argmax(action, -1).astype(jnp.int32)
        unit = jnp.clip(action, -1.0, 1.0)
        return (self._low + (unit + 1.0) * 0.5 * (self._high - self._low)).reshape(
            action.shape[:-1] + tuple(self.spec.action_shape))

    # --- init ------------------------------------------------------------------------------
    def init(self, key: Array) -> DreamerState:
        wm_key, actor_key, critic_key, sample_key = jax.random.split(key, 4)
        obs = jnp.zeros(self.spec.obs_shape, self.spec.obs_dtype)
        wm_params = self.model.init(wm_key, obs, jnp.zeros((self.action_dim,)), sample_key)
        feat = jnp.zeros((self.feat_dim,))
        actor_params = self.actor.init(actor_key, feat)
        critic_params = self.critic.init(critic_key, feat)
        zero = jnp.zeros((), jnp.float32)
        return DreamerState(
            wm_params=wm_params, actor_params=actor_params, critic_params=critic_params,
            slow_critic_params=critic_params, wm_opt=self.wm_opt.init(wm_params),
            actor_opt=self.actor_opt.init(actor_params),
            critic_opt=self.critic_opt.init(critic_params),
            ret_state=(zero, zero, jnp.zeros((), jnp.int32)), steps=jnp.zeros((), jnp.int32),
            obs_moments=rlmath.moments_init(self.spec.obs_shape) if self.cfg.obs_norm else None)

    def param_count(self) -> int:
        shapes = jax.eval_shape(self.init, jax.random.PRNGKey(0))
        trees = (shapes.wm_params, shapes.actor_params, shapes.critic_params)
        return int(sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(trees)))

    # --- observation standardisation (cfg.obs_norm) ---------------------------------------
    def normalise(self, state: DreamerState, obs: Array) -> Array:
        """What the world model sees of ``obs [..., *obs_shape]``: standardised by the running
        moments of the replayed observations with ``obs_norm``, else ``obs`` itself."""
        if state.obs_moments is None:
            return obs
        return rlmath.standardise(state.obs_moments, obs, OBS_NORM_FLOOR)

    def denormalise(self, state: DreamerState, obs: Array) -> Array:
        """The inverse of :meth:`normalise` (decoded observations back to the task's scale)."""
        if state.obs_moments is None:
            return obs
        return rlmath.unstandardise(state.obs_moments, obs, OBS_NORM_FLOOR)

    # --- acting ----------------------------------------------------------------------------
    def initial_carry(self, num_envs: int) -> ActCarry:
        init = self.model.initial()
        state = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (num_envs,) + x.shape),
                                       init)
        return ActCarry(state=state, action=jnp.zeros((num_envs, self.action_dim)))

    def act(self, state: DreamerState, obs, is_first, carry: ActCarry, key, explore: bool, *,
            legal_action_mask=None):  # the actor does not use legal-action masks
        """One step for every env: update the posterior with ``obs``, then sample (or mode)."""
        initial = self.model.initial()

        def one(o, first, s, a, k):
            obs_key, act_key = jax.random.split(k)
            s = reset_where(first, s, initial)
            a = jnp.where(first, jnp.zeros_like(a), a)
            embed = self.model.apply(state.wm_params, o, method=wm.WorldModel.embed)
            post, _ = self.model.apply(state.wm_params, s, a, embed, obs_key,
                                       method=wm.WorldModel.obs_step)
            out = self.actor.apply(state.actor_params, features(post))
            if explore:
                action = ac.policy_sample(out, act_key, self.discrete)
            else:
                action = ac.policy_mode(out, self.discrete)
            if not self.discrete:
                action = jnp.clip(action, -1.0, 1.0)
            return post, action

        keys = jax.random.split(key, obs.shape[0])
        post, action = jax.vmap(one)(self.normalise(state, obs), is_first, carry.state,
                                     carry.action, keys)
        extras = self.context_entry(post) if self.cfg.replay_context else {}
        return self.to_env_action(action), ActCarry(state=post, action=action), extras

    # --- replay context --------------------------------------------------------------------
    def context_entry(self, post: RSSMState):
        """What replay stores with a step for ``replay_context`` (any leading axes): the
        deterministic state in bfloat16 (the official code stores its compute dtype's), the
        sample's class per group, and ``valid`` (False in the zero entries of prefill steps)."""
        index_dtype = jnp.uint8 if self.cfg.classes <= 256 else jnp.int32
        return {"deter": post.deter.astype(jnp.bfloat16),
                "stoch": jnp.argmax(post.stoch, -1).astype(index_dtype),
                "valid": jnp.ones(post.deter.shape[:-1], bool)}

    def context_state(self, entry) -> RSSMState:
        """The RSSM state of a stored entry (float32, one-hot sample; logits, which only the
        KL of a fresh posterior reads, zero)."""
        stoch = jax.nn.one_hot(entry["stoch"], self.cfg.classes, dtype=jnp.float32)
        return RSSMState(deter=entry["deter"].astype(jnp.float32), stoch=stoch,
                         logits=jnp.zeros_like(stoch))

    # --- learning --------------------------------------------------------------------------
    def world_model_loss(self, wm_params, batch, key: Array):
        """``(loss, (posterior states [B, T], metrics))`` of the world model on a batch."""
        cfg = self.cfg
        seq = {"obs": batch.obs, "next_obs": batch.next_obs, "reward": batch.reward,
               "terminated": batch.terminated, "is_first": batch.is_first,
               "action": self.to_model_action(batch.action)}
        extra = {}
        if cfg.replay_context:
            first = jax.tree_util.tree_map(lambda x: x[:, 0], batch.extras)
            seq["context"] = self.context_state(first)
            seq["has_context"] = first["valid"]
            extra["context_fraction"] = (first["valid"] & ~batch.is_first[:, 0]).mean()
        losses, (states, metrics) = jax.vmap(
            lambda s, k: wm.loss_fn(wm_params, self.model, s, k, kl_dyn=cfg.kl_dyn,
                                    kl_rep=cfg.kl_rep, free_nats=cfg.free_nats,
                                    recon_scale=cfg.recon_scale,
                                    cont_scale=cfg.discount if cfg.contdisc else 1.0)
        )(seq, jax.random.split(key, batch.reward.shape[0]))
        return losses.mean(), (states, {**jax.tree_util.tree_map(jnp.mean, metrics), **extra})

    def world_model_grad(self, wm_params, batch, key: Array):
        """``(grad, posterior start states [B * T], metrics)`` of the world-model loss alone."""
        grad, (states, metrics) = jax.grad(self.world_model_loss, has_aux=True)(
            wm_params, batch, key)
        return grad, _flat_starts(states), metrics

    def loss(self, params, state: DreamerState, batch, key: Array):
        """The whole update's loss over ``params = (wm, actor, critic)``, as the official single
        optimiser sees it: world model + actor + critic (imagination) + ``repval`` x replay
        value loss. Stop-gradients keep each term on its own parameters, except the replay
        value loss, which also trains the world model through the posterior features.
        Returns ``(loss, (new return-normaliser state, metrics, posterior states [B, T]))``."""
        cfg, sg = self.cfg, jax.lax.stop_gradient
        wm_params, actor_params, critic_params = params
        wm_key, ac_key = jax.random.split(key)
        wm_loss, (states, metrics) = self.world_model_loss(wm_params, batch, wm_key)
        starts = _flat_starts(states)
        traj = ac.imagine(self.model, sg(wm_params), self.actor,
                          actor_params if self.backprop else sg(actor_params), starts, ac_key,
                          cfg.horizon, self.backprop)
        actor_loss, critic_loss, ret_state, ret, ac_metrics = ac.actor_critic_loss(
            actor_params, critic_params, state.slow_critic_params, traj, state.ret_state,
            actor=self.actor, critic=self.critic, cfg=cfg, backprop=self.backprop)
        total = wm_loss + actor_loss + critic_loss
        metrics = {**metrics, **ac_metrics}
        if cfg.repval > 0:
            boot = ret[0].reshape(batch.reward.shape)  # R_0 imagined from s_t
            ret, mask = jax.vmap(lambda r, d, f, b: ac.replay_returns(
                r, d, f, b, discount=cfg.discount, lambda_=cfg.lambda_))(
                    batch.reward, batch.terminated, batch.is_first, boot)
            # the window's last step only bootstraps (official: losses[:, :-1])
            repval = ac.repval_loss(critic_params, state.slow_critic_params,
                                    features(states)[:, :-1], ret[:, :-1], mask[:, :-1],
                                    critic=self.critic, slow_reg=cfg.slow_reg)
            total = total + cfg.repval * repval
            metrics["repval_loss"] = repval
        return total, (ret_state, metrics, states)

    def update(self, state: DreamerState, batch, key: Array):
        """One update on a replayed batch of transitions (leaves ``[B, T, ...]``)."""
        new, metrics, _ = self.update_with_states(state, batch, key)
        return new, metrics

    def update_with_states(self, state: DreamerState, batch, key: Array):
        """:meth:`update`, also returning the batch's posterior states ``[B, T]`` (computed
        with the parameters before the update), which replay context writes back."""
        cfg = self.cfg
        obs_moments = old_moments = state.obs_moments
        if obs_moments is not None:  # the batch's observations join the moments first
            flat = batch.obs.reshape((-1,) + batch.obs.shape[2:])
            obs_moments = rlmath.moments_update(obs_moments, flat)
            state = state.replace(obs_moments=obs_moments)
            batch = batch.replace(obs=self.normalise(state, batch.obs),
                                  next_obs=self.normalise(state, batch.next_obs))
        params = (state.wm_params, state.actor_params, state.critic_params)
        (wm_grad, actor_grad, critic_grad), (ret_state, metrics, states) = jax.grad(
            self.loss, has_aux=True)(params, state, batch, key)

        # Each module's step is skipped when its gradients are not finite (core.guard).
        wm_params, wm_opt, wm_ok, _ = guard.guarded_step(self.wm_opt, wm_grad, state.wm_opt,
                                                         state.wm_params)
        actor_params, actor_opt, actor_ok, _ = guard.guarded_step(
            self.actor_opt, actor_grad, state.actor_opt, state.actor_params)
        critic_params, critic_opt, critic_ok, _ = guard.guarded_step(
            self.critic_opt, critic_grad, state.critic_opt, state.critic_params)
        slow = optax.incremental_update(critic_params, state.slow_critic_params, cfg.slow_rate)
        if obs_moments is not None:  # a skipped world-model step keeps the moments too
            obs_moments = jax.tree_util.tree_map(lambda new, old: jnp.where(wm_ok, new, old),
                                                 obs_moments, old_moments)
        new = DreamerState(wm_params=wm_params, actor_params=actor_params,
                           critic_params=critic_params, slow_critic_params=slow, wm_opt=wm_opt,
                           actor_opt=actor_opt, critic_opt=critic_opt, ret_state=ret_state,
                           steps=state.steps + 1, obs_moments=obs_moments)
        metrics = {**metrics, "skipped_updates": guard.skipped(wm_ok, actor_ok, critic_ok)}
        return new, metrics, states


def _flat_starts(states: RSSMState) -> RSSMState:
    """Posterior states ``[B, T, ...]`` as stop-gradient imagination starts ``[B * T, ...]``."""
    return jax.tree_util.tree_map(
        lambda x: jax.lax.stop_gradient(x.reshape((-1,) + x.shape[2:])), states)


def make(cfg: DreamerConfig, env: Environment, num_envs: int) -> Agent:
    """Builds DreamerV3 for ``num_envs`` copies of ``env`` and prints its parameter count."""
    check_single_player(env.spec, "dreamer")
    dreamer = Dreamer(cfg, env)
    print(f"[dreamer] parameters: {dreamer.param_count():,} (world model + actor + critic)",
          flush=True)
    buffer = replay.make_buffer(num_envs=num_envs,
                                capacity=max(cfg.buffer_size, num_envs * (cfg.seq_len + 1)),
                                batch_size=cfg.batch_size, sequence_length=cfg.seq_len)

    def update(state, buffer_state, key):
        sample_key, learn_key = jax.random.split(key)
        if not cfg.replay_context:
            batch = buffer.sample(buffer_state, sample_key).experience  # leaves [B, T, ...]
            state, metrics = dreamer.update(state, batch, learn_key)
            return state, buffer_state, metrics
        batch, positions = replay.sample_windows(buffer_state, sample_key, cfg.batch_size,
                                                 cfg.seq_len)
        state, metrics, states = dreamer.update_with_states(state, batch, learn_key)
        # the posteriors of o_1 .. o_{T-1} computed in this window (that of o_0 is what it
        # started from, or a reset posterior that the step's own history would not give)
        rows, times = positions
        entry = dreamer.context_entry(jax.lax.stop_gradient(states))
        buffer_state = replay.write_extras(buffer_state, (rows, times[:, 1:]),
                                           jax.tree_util.tree_map(lambda x: x[:, 1:], entry))
        return state, buffer_state, metrics

    return Agent(init=dreamer.init, initial_carry=dreamer.initial_carry, act=dreamer.act,
                 update=update, buffer=buffer, schedule=schedule_for(cfg, num_envs))
