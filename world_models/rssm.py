"""Recurrent state-space model (RSSM) of DreamerV3, written for ONE example.

State ``s = (deter h [D], stoch z [G, C] one-hot, logits [G, C])``. One step:

    prior (imagination):  h' = GRU(h, [z, a]),        z' ~ p(z' | h')      (``img_step``)
    posterior (observe):  h' as above,                z' ~ q(z' | h', e)    (``obs_step``)

where ``e`` is the embedding of the observation. The stochastic state is ``G`` categorical
groups of ``C`` classes; probabilities are mixed with 1% uniform ("unimix",
``p = 0.99 softmax(l) + 0.01 / C``) and samples are straight-through one-hot vectors
(``z = onehot + p - sg(p)``). The recurrent core is the official DreamerV3 one
(``dreamerv3/rssm.py`` ``_core``), block-diagonal with ``blocks`` groups: the inputs
``x = [in(h), in(flat z), in(a)]`` (each Linear -> Norm -> SiLU), each block ``b`` sees its own
slice ``h_b`` of ``h`` and all of ``x``, a block-linear hidden layer normalised over the whole
``D``-vector, then the block-linear gates (no norm):

    y = SiLU(Norm(flat_b W1_b [h_b, x] + b1))         [D]
    r, c, u = split(W2_b y_b + b2)                    per block
    r = sigmoid(r), c = tanh(r * c), u = sigmoid(u - 1),  h' = u * c + (1 - u) * h

The prior has two hidden layers, the posterior one (on ``[h', e]``); every hidden layer is
Linear (with bias) -> Norm -> SiLU.

Callers vmap over examples and scan over time. Features for heads: ``[h, flatten(z)]``.

``dtype`` is the compute dtype (DreamerV3's ``compute_dtype``): the linear maps run in it
(parameters stay float32 and are cast), the norms reduce in float32, and the state ``(h, z,
logits)`` is kept in float32, so the categorical distributions, the KL and the recurrent
carry are float32 whatever the compute dtype.
"""

from __future__ import annotations

from typing import Any, Tuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from core import nets

Array = jax.Array


@struct.dataclass
class RSSMState:
    deter: Array  # [D] float32: GRU state h
    stoch: Array  # [G, C] float32: straight-through one-hot sample z
    logits: Array  # [G, C] float32: unimix log-probabilities of z


def unimix_logits(logits: Array, unimix: float) -> Array:
    """``log((1 - unimix) softmax(logits) + unimix / C)`` over the last axis."""
    probs = jax.nn.softmax(logits, axis=-1)
    probs = (1.0 - unimix) * probs + unimix / logits.shape[-1]
    return jnp.log(probs)


def straight_through_sample(key: Array, logits: Array) -> Array:
    """One-hot sample of ``Cat(softmax(logits))`` per group with straight-through gradients.

    The class is drawn by inverting the cumulative probabilities with one uniform number per
    group (the first class whose cumulative probability exceeds it): the distribution of
    ``jax.random.categorical``'s Gumbel-max from a quarter of its random numbers at 4 classes
    (generating them is a noticeable part of a DreamerV3 update on a CPU).
    """
    probs = jax.nn.softmax(logits, axis=-1)
    u = jax.random.uniform(key, logits.shape[:-1] + (1,), probs.dtype)
    index = jnp.sum(jnp.cumsum(probs, axis=-1)[..., :-1] <= u, axis=-1)
    onehot = jax.nn.one_hot(index, logits.shape[-1], dtype=probs.dtype)
    return onehot + probs - jax.lax.stop_gradient(probs)


def categorical_kl(logits_p: Array, logits_q: Array) -> Array:
    """``KL(p || q) = sum_groups sum_c p_c (log p_c - log q_c)`` for ``[G, C]`` log-probs."""
    logp = jax.nn.log_softmax(logits_p, axis=-1)
    logq = jax.nn.log_softmax(logits_q, axis=-1)
    return (jnp.exp(logp) * (logp - logq)).sum(axis=(-2, -1))


def kl_balance(post_logits: Array, prior_logits: Array, *, dyn_scale: float, rep_scale: float,
               free_nats: float = 1.0) -> Tuple[Array, dict]:
    """DreamerV3's balanced KL with free bits (one example or any leading axes).

    ``dyn = max(free, KL(sg(q) || p))`` trains the prior, ``rep = max(free, KL(q || sg(p)))``
    the posterior; loss ``= dyn_scale dyn + rep_scale rep``.
    """
    sg = jax.lax.stop_gradient
    dyn_kl = categorical_kl(sg(post_logits), prior_logits)
    rep_kl = categorical_kl(post_logits, sg(prior_logits))
    dyn = jnp.maximum(dyn_kl, free_nats)
    rep = jnp.maximum(rep_kl, free_nats)
    loss = dyn_scale * dyn + rep_scale * rep
    return loss, {"kl_dyn": dyn_kl, "kl_rep": rep_kl}


def norm_eps(kind: str) -> float:
    """Epsilon of the Dreamer networks' norms: 1e-3 for LayerNorm, 1e-4 for RMSNorm."""
    return 1e-3 if kind == "layer" else 1e-4


def hidden_layer(units: int, norm: str, layers: int = 1, dtype: Any = jnp.float32) -> nets.MLP:
    """``layers`` x (Linear with bias -> Norm -> SiLU), DreamerV3's hidden layers, computed in
    ``dtype``."""
    return nets.MLP((units,) * layers, norm=norm, norm_eps=norm_eps(norm), act="silu",
                    layout="norm_scope", dtype=dtype)


class BlockLinear(nn.Module):
    """Block-diagonal linear map: ``x [blocks, n_in] -> [blocks, n_out]`` with one W per block.

    The kernel ``[blocks, n_in, n_out]`` is initialised as the official ``BlockLinear``'s, with
    fan-in ``blocks * n_in`` (the fan of the whole block-diagonal matrix). It computes in
    ``dtype`` (float32 parameters cast to it).

    ``shared [n_shared]``, when given, is an input every block sees after its own slice (block
    ``b`` maps ``[x_b, shared]``, so ``n_in = x.shape[-1] + n_shared``): its part of every
    block's kernel is applied as one dense ``[n_shared, blocks * n_out]`` product, the same map
    without copying ``shared`` into each block.
    """

    blocks: int
    n_out: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, shared=None):
        n_own = x.shape[-1]
        n_in = n_own + (0 if shared is None else shared.shape[-1])
        w = self.param("kernel", nn.initializers.lecun_normal(), (self.blocks, n_in, self.n_out))
        b = self.param("bias", nn.initializers.zeros, (self.blocks, self.n_out))
        x, w, b = (a.astype(self.dtype) for a in (x, w, b))
        out = jnp.einsum("gi,gio->go", x, w[:, :n_own]) + b
        if shared is not None:
            w_shared = jnp.moveaxis(w[:, n_own:], 0, 1).reshape(n_in - n_own, -1)
            out = out + (shared.astype(self.dtype) @ w_shared).reshape(self.blocks, self.n_out)
        return out


class RSSM(nn.Module):
    """DreamerV3 RSSM for one example (see module docstring).

    Attributes:
      deter: GRU state size D (divisible by ``blocks``).
      hidden: width of input projections and of the prior/posterior hidden layers.
      groups, classes: G categorical groups of C classes.
      blocks: block-diagonal GRU blocks (1: dense GRU).
      unimix: uniform mixture weight of the categorical probabilities.
      norm: 'rms' or 'layer'.
      dtype: compute dtype of the networks (the state stays float32; module docstring).
    """

    deter: int = 512
    hidden: int = 64
    groups: int = 32
    classes: int = 4
    blocks: int = 1
    unimix: float = 0.01
    norm: str = "rms"
    dtype: Any = jnp.float32

    def setup(self):
        dt = self.dtype
        self.in_deter = hidden_layer(self.hidden, self.norm, dtype=dt)
        self.in_stoch = hidden_layer(self.hidden, self.norm, dtype=dt)
        self.in_action = hidden_layer(self.hidden, self.norm, dtype=dt)
        self.dyn_hidden = BlockLinear(self.blocks, self.deter // self.blocks, dtype=dt)
        self.dyn_hidden_norm = nets.Norm(self.norm, eps=norm_eps(self.norm), dtype=dt)
        self.gru = BlockLinear(self.blocks, 3 * (self.deter // self.blocks), dtype=dt)
        self.prior_hidden = hidden_layer(self.hidden, self.norm, layers=2, dtype=dt)
        self.prior_out = nn.Dense(self.groups * self.classes, dtype=dt)
        self.post_hidden = hidden_layer(self.hidden, self.norm, dtype=dt)
        self.post_out = nn.Dense(self.groups * self.classes, dtype=dt)

    def initial(self) -> RSSMState:
        g, c = self.groups, self.classes
        return RSSMState(deter=jnp.zeros((self.deter,)), stoch=jnp.zeros((g, c)),
                         logits=jnp.zeros((g, c)))

    def _core(self, deter: Array, stoch: Array, action: Array) -> Array:
        """``h' [D]`` (float32) from ``h``, ``z`` and ``a``, computed in ``dtype``."""
        cast = lambda a: a.astype(self.dtype)  # noqa: E731
        x = jnp.concatenate([self.in_deter(cast(deter)), self.in_stoch(cast(stoch.reshape(-1))),
                             self.in_action(cast(action))])
        nb, per = self.blocks, self.deter // self.blocks
        hid = self.dyn_hidden(cast(deter.reshape(nb, per)), x)  # block b sees [h_b, x]
        hid = jax.nn.silu(self.dyn_hidden_norm(hid.reshape(-1)))
        gates = self.gru(hid.reshape(nb, per))  # [nb, 3 per]
        reset, cand, update = jnp.split(gates, 3, axis=-1)
        reset = jax.nn.sigmoid(reset)
        cand = jnp.tanh(reset * cand)
        update = jax.nn.sigmoid(update - 1.0)
        new = update * cand + (1.0 - update) * deter.reshape(nb, per).astype(jnp.float32)
        return new.reshape(-1)

    def _logits(self, x: Array, hidden: nn.Module, out: nn.Module) -> Array:
        logits = out(hidden(x.astype(self.dtype))).astype(jnp.float32)
        return unimix_logits(logits.reshape(self.groups, self.classes), self.unimix)

    def recurrent(self, state: RSSMState, action: Array) -> Array:
        """``h' = GRU(h, [z, a])`` [D], the deterministic half of both steps."""
        chex.assert_rank(action, 1)
        return self._core(state.deter, state.stoch, action)

    def prior_logits(self, deter: Array) -> Array:
        """Unimix log-probabilities ``[G, C]`` of ``p(z | h)``."""
        return self._logits(deter, self.prior_hidden, self.prior_out)

    def img_step(self, state: RSSMState, action: Array, key: Array) -> RSSMState:
        """Prior step ``(s, a) -> s'`` with ``z' ~ p(z' | h')`` (action [A] float)."""
        deter = self.recurrent(state, action)
        logits = self.prior_logits(deter)
        return RSSMState(deter=deter, stoch=straight_through_sample(key, logits), logits=logits)

    def obs_step(self, state: RSSMState, action: Array, embed: Array, key: Array
                 ) -> Tuple[RSSMState, RSSMState]:
        """Posterior step: returns ``(posterior, prior)`` for the same ``h'``."""
        chex.assert_rank([action, embed], 1)
        prior_key, post_key = jax.random.split(key)
        prior = self.img_step(state, action, prior_key)
        return self.posterior(prior.deter, embed, post_key), prior

    def posterior(self, deter: Array, embed: Array, key: Array) -> RSSMState:
        """``z ~ q(z | h, e)`` for a given ``h = deter`` (the second half of ``obs_step``; its
        ``key`` is the second of ``split(obs_step's key)``)."""
        logits = self._logits(jnp.concatenate([deter, embed]), self.post_hidden, self.post_out)
        return RSSMState(deter=deter, stoch=straight_through_sample(key, logits), logits=logits)

    def __call__(self, state: RSSMState, action: Array, embed: Array, key: Array):
        """Initialisation entry point (creates every parameter)."""
        return self.obs_step(state, action, embed, key)


def features(state: RSSMState) -> Array:
    """``[..., D + G C]``: the input of every head."""
    lead = state.deter.shape[:-1]
    return jnp.concatenate([state.deter, state.stoch.reshape(lead + (-1,))], axis=-1)


def reset_where(first: Array, state: RSSMState, initial: RSSMState) -> RSSMState:
    """``initial`` where ``first`` (scalar bool, one example) else ``state``."""
    return jax.tree_util.tree_map(lambda a, b: jnp.where(first, b, a), state, initial)
