"""DreamerV3 world model: encoder + RSSM + decoder + reward and continue heads.

Replay stores transitions ``(o_t, a_t, r_t, o'_t, terminated_t, is_first_t)`` (``o'_t`` is the
true successor; within an episode ``o'_t = o_{t+1}``). Along one replayed sequence:

    s_t  = q(. | img(initial, 0), e(o_t))     where is_first_t or t = 0 (the RSSM is reset)
         = s'_{t-1}                           otherwise
    s'_t = q(. | img(s_t, a_t), e(o'_t))      (posterior of the successor)

so sequences may cross episode boundaries, and terminal observations are encoded too: the
heads on ``s'_t`` predict ``o'_t`` (decoder), ``r_t`` (two-hot) and ``1 - terminated_t``
(continue). The KL term is the balanced KL of ``s'_t`` and, where the RSSM was reset, of ``s_t``
(whose reconstruction and continue flag are also trained, and at an episode's start its reward
0, as the official code trains its first steps). The states ``s_t`` start imagination.

With replay context (the official ``replay_context``), a sequence may bring the posterior of
``o_0`` stored in replay (``seq["context"]``, ``seq["has_context"]``): then ``s_0`` is that
state, not a reset posterior, unless ``is_first_0``, and ``o_0`` is not trained on.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from world_models import dreamer_nets as nets
from world_models.rssm import RSSM, RSSMState, features, kl_balance, reset_where

Array = jax.Array


class WorldModel(nn.Module):
    """All world-model networks; methods take one example (see module docstring).

    ``obs_kind`` ('vector' | 'image', default: 'image' for rank-3 shapes) and ``obs_range``
    (an image's ``(low, high)``) are the environment spec's (``envs.api.EnvSpec``).
    ``dtype`` is the networks' compute dtype (float32 parameters; float32 states, outputs and
    losses: see ``world_models.dreamer_nets``).
    """

    obs_shape: Sequence[int]
    action_dim: int
    obs_kind: Optional[str] = None
    obs_range: Optional[Tuple[float, float]] = None
    deter: int = 512
    hidden: int = 64
    groups: int = 32
    classes: int = 4
    blocks: int = 8
    unimix: float = 0.01
    norm: str = "rms"
    units: int = 64
    layers: int = 3
    cnn_depth: int = 4
    dtype: Any = jnp.float32

    @property
    def image(self) -> bool:
        return (self.obs_kind or ("image" if len(self.obs_shape) == 3 else "vector")) == "image"

    @property
    def image_range(self) -> Tuple[float, float]:
        return tuple(self.obs_range) if self.obs_range is not None else (0.0, 255.0)

    def setup(self):
        dt = self.dtype
        self.rssm = RSSM(deter=self.deter, hidden=self.hidden, groups=self.groups,
                         classes=self.classes, blocks=self.blocks, unimix=self.unimix,
                         norm=self.norm, dtype=dt)
        if self.image:
            self.encoder = nets.CNNEncoder(self.cnn_depth, self.image_range, self.norm, dt)
            self.decoder = nets.CNNDecoder(tuple(self.obs_shape), self.cnn_depth, self.deter,
                                           self.units, norm=self.norm, dtype=dt)
        else:
            self.encoder = nets.MLPEncoder(self.units, self.layers, self.norm, dt)
            self.decoder = nets.MLPDecoder(tuple(self.obs_shape), self.units, self.layers,
                                           self.norm, dt)
        self.reward_head = nets.TwoHotHead(self.units, 1, self.norm, dt)
        self.cont_head = nets.ContinueHead(self.units, 1, self.norm, dt)

    def initial(self) -> RSSMState:
        return RSSMState(deter=jnp.zeros((self.deter,)),
                         stoch=jnp.zeros((self.groups, self.classes)),
                         logits=jnp.zeros((self.groups, self.classes)))

    def embed(self, obs):
        return self.encoder(obs)

    def obs_step(self, state, action, embed, key):
        return self.rssm.obs_step(state, action, embed, key)

    def img_step(self, state, action, key):
        return self.rssm.img_step(state, action, key)

    def posterior(self, deter, embed, key):
        return self.rssm.posterior(deter, embed, key)

    def recurrent(self, state, action):
        return self.rssm.recurrent(state, action)

    def prior_logits(self, deter):
        return self.rssm.prior_logits(deter)

    def heads(self, feat):
        """``feat -> (decoded obs, reward logits [255], continue logit)``."""
        return self.decoder(feat), self.reward_head(feat), self.cont_head(feat)

    def reward_continue(self, feat):
        """``feat -> (reward logits [255], continue logit)`` (imagination needs no decoder)."""
        return self.reward_head(feat), self.cont_head(feat)

    def __call__(self, obs, action, key):
        post, _ = self.obs_step(self.initial(), action, self.embed(obs), key)
        return self.heads(features(post))


def recon_loss(model: WorldModel, pred: Array, obs: Array) -> Array:
    if model.image:
        return nets.image_recon_loss(pred, obs, model.image_range)
    return nets.vector_recon_loss(pred, obs)


def first_steps(seq: Dict[str, Array]) -> Array:
    """``[T]`` bool: the steps whose state is a reset posterior of ``o_t``: episode starts, and
    the window's first step unless it brings a replayed context state."""
    start = jnp.arange(seq["is_first"].shape[0]) == 0
    if "has_context" in seq:
        start = start & ~seq["has_context"]
    return seq["is_first"] | start


def observe(model: WorldModel, params, seq: Dict[str, Array], key: Array
            ) -> Tuple[RSSMState, Array, RSSMState, RSSMState, Array]:
    """Posterior states of ONE sequence (leaves ``[T, ...]``).

    ``seq`` has ``obs, next_obs [T, *obs]``, ``action [T, A]`` (float), ``is_first [T]``, and
    optionally ``context`` (an :class:`RSSMState`, the stored posterior of ``o_0``) with
    ``has_context`` (() bool, whether it is valid).
    Returns ``(start_post, start_prior_logits, s, next_post, next_prior_logits)``: the
    reset-state posterior of ``o_t`` and its prior's logits ``[G, C]`` (the prior step from the
    initial state with a zero action, the same for every ``t``), the state ``s_t`` used at
    ``t`` and the successor posterior ``s'_t`` with its prior's logits ``[T, G, C]``.

    Only the recurrence ``h' = GRU(s_t, a_t)`` and the posterior sample run step by step; the
    encoder, the reset posteriors and the prior heads run over the whole window at once.
    Keys as in ``obs_step``: ``(prior, posterior) = split(key_t)``; the prior's sample is not
    needed here and not drawn.
    """
    chex.assert_rank(seq["is_first"], 1)
    length = seq["is_first"].shape[0]
    apply = lambda method, *a: model.apply(params, *a, method=method)  # noqa: E731
    embed = jax.vmap(lambda o: apply(WorldModel.embed, o))
    e, e_next = embed(seq["obs"]), embed(seq["next_obs"])
    initial = model.initial()
    zero_action = jnp.zeros((model.action_dim,))
    first = first_steps(seq)

    start_key, scan_key = jax.random.split(key)
    step_keys = jax.vmap(jax.random.split)(jax.random.split(start_key, length))  # [T, 2]
    start_deter = apply(WorldModel.recurrent, initial, zero_action)
    start_prior_logits = apply(WorldModel.prior_logits, start_deter)
    start_post = jax.vmap(lambda e_t, k: apply(WorldModel.posterior, start_deter, e_t, k))(
        e, step_keys[:, 1])

    def step(carry, inputs):
        start_t, e_next_t, a_t, first_t, k = inputs
        s_t = reset_where(first_t, carry, start_t)
        deter = apply(WorldModel.recurrent, s_t, a_t)
        next_post = apply(WorldModel.posterior, deter, e_next_t, jax.random.split(k)[1])
        return next_post, (s_t, next_post)

    keys = jax.random.split(scan_key, length)
    _, (states, post) = jax.lax.scan(
        step, seq.get("context", initial), (start_post, e_next, seq["action"], first, keys))
    prior_logits = jax.vmap(lambda h: apply(WorldModel.prior_logits, h))(post.deter)
    return start_post, start_prior_logits, states, post, prior_logits


def loss_fn(params, model: WorldModel, seq: Dict[str, Array], key: Array, *, kl_dyn: float,
            kl_rep: float, free_nats: float, recon_scale: float = 1.0, cont_scale: float = 1.0
            ) -> Tuple[Array, Tuple[RSSMState, Dict[str, Any]]]:
    """World-model loss of ONE sequence: ``recon_scale recon + reward + continue + KL``
    averaged over T, each term over the successor posteriors and, at the first steps, the reset
    posteriors of ``o_t`` (continue target ``cont_scale``; reward target 0 at episode starts).

    ``seq`` additionally holds ``reward [T]`` and ``terminated [T]`` (bool). ``recon_scale``
    is the official implementation's decoder loss scale (1 by default): the reconstruction is
    the only term that pays for information in the posterior beyond the free nats, so on
    observations of small magnitude a larger scale is what makes the latent state precise.
    The continue target is ``cont_scale (1 - terminated)``: the 2024 code's ``contdisc`` sets
    ``cont_scale = 1 - 1/horizon``, so the predicted continue probability carries the discount.
    Returns ``(loss, (s [T] states for imagination, metrics))``.
    """
    start_post, start_prior_logits, states, post, prior_logits = observe(model, params, seq,
                                                                         key)
    first = first_steps(seq).astype(jnp.float32)
    heads = jax.vmap(lambda f: model.apply(params, f, method=WorldModel.heads))
    dec, rew_logits, cont_logit = heads(features(post))
    start_dec, start_rew_logits, start_cont_logit = heads(features(start_post))
    rl = jax.vmap(lambda p, o: recon_loss(model, p, o))
    recon = rl(dec, seq["next_obs"]) + first * rl(start_dec, seq["obs"])
    # The official code trains the reward and continue heads on every replayed posterior.
    # A reset posterior's observation is never terminal (imagination starts from it and
    # weighs its steps by its continue prediction); at an episode's first step no reward led
    # to it (0), while the reward before a window's first step is not in the window.
    episode_start = seq["is_first"].astype(jnp.float32)
    reward = (nets.SUPPORT.cross_entropy(rew_logits, seq["reward"])
              + episode_start * nets.SUPPORT.cross_entropy(start_rew_logits,
                                                           jnp.zeros_like(first)))
    cont = (nets.continue_loss(cont_logit,
                               cont_scale * (1.0 - seq["terminated"].astype(jnp.float32)))
            + first * nets.continue_loss(start_cont_logit, jnp.full_like(first, cont_scale)))
    kl, kl_metrics = kl_balance(post.logits, prior_logits, dyn_scale=kl_dyn,
                                rep_scale=kl_rep, free_nats=free_nats)
    kl_start, _ = kl_balance(start_post.logits, start_prior_logits, dyn_scale=kl_dyn,
                             rep_scale=kl_rep, free_nats=free_nats)
    total = recon_scale * recon + reward + cont + kl + first * kl_start
    metrics = {"wm_loss": total.mean(), "recon_loss": recon.mean(), "reward_loss": reward.mean(),
               "cont_loss": cont.mean(), "kl_dyn": kl_metrics["kl_dyn"].mean(),
               "kl_rep": kl_metrics["kl_rep"].mean(),
               "reward_pred": nets.SUPPORT.decode(rew_logits).mean()}
    return total.mean(), (states, metrics)
