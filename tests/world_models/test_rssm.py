"""RSSM, DreamerV3 heads and world-model loss: hand-derived numbers and a short fit."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from core import rlmath
from world_models import dreamer_nets as nets
from world_models import dreamer_wm as wm
from world_models.rssm import (RSSM, categorical_kl, features, kl_balance,
                               straight_through_sample, unimix_logits)


def test_symlog_symexp_round_trip_and_gradient():
    x = jnp.array([-1e4, -3.0, -0.5, 0.0, 0.5, 3.0, 1e4])
    np.testing.assert_allclose(rlmath.symexp(rlmath.symlog(x)), x, rtol=1e-5)
    # d/dx sign(x) log(1 + |x|) = 1 / (1 + |x|) (away from 0: jnp.sign has zero gradient there)
    nonzero = x[x != 0]
    grad = jax.vmap(jax.grad(rlmath.symlog))(nonzero)
    np.testing.assert_allclose(grad, 1.0 / (1.0 + jnp.abs(nonzero)), rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(jax.grad(rlmath.symexp))(nonzero),
                               jnp.exp(jnp.abs(nonzero)), rtol=1e-5)


def test_two_hot_round_trip_mean_and_loss_gradient():
    points = np.asarray(nets.SUPPORT.points)
    # the official bins: symexp(linspace(-20, 20, 255)), mirrored around an exact 0
    np.testing.assert_allclose(points, rlmath.symexp(np.linspace(-20.0, 20.0, 255)), rtol=1e-5)
    assert points[127] == 0.0 and np.all(points[:127] == -points[:127:-1])
    y = jnp.array([-250.0, -1.0, 0.0, 0.3, 7.0, 1234.0])
    labels = nets.SUPPORT.encode(y)  # two-hot in raw space, between the neighbouring bins
    np.testing.assert_allclose(labels.sum(-1), 1.0, rtol=1e-6)
    assert np.all((np.asarray(labels) > 0).sum(-1) <= 2)
    np.testing.assert_allclose(labels @ nets.SUPPORT.points, y, rtol=1e-5, atol=1e-6)
    # log of the two-hot labels as logits: the mean E[bin] (raw space) = y.
    np.testing.assert_allclose(nets.SUPPORT.decode(jnp.log(labels + 1e-30)), y, rtol=1e-3,
                               atol=1e-5)
    # uniform logits: exactly 0 (the symmetric sum)
    assert float(nets.SUPPORT.decode(jnp.zeros(255))) == 0.0
    assert np.all(np.asarray(jax.jit(nets.SUPPORT.decode)(jnp.zeros((3, 255)))) == 0.0)
    # d CE / d logits = softmax(logits) - labels; zero logits give the uniform softmax.
    grad = jax.grad(lambda lg: nets.SUPPORT.cross_entropy(lg, y[4]))(jnp.zeros(nets.SUPPORT.size))
    np.testing.assert_allclose(grad, 1.0 / nets.SUPPORT.size - labels[4], atol=1e-6)


def test_two_hot_head_starts_at_zero():
    head = nets.TwoHotHead(units=8, layers=1)
    params = head.init(jax.random.PRNGKey(0), jnp.ones(5))
    out = head.apply(params, jax.random.normal(jax.random.PRNGKey(1), (3, 5)))
    np.testing.assert_allclose(nets.SUPPORT.decode(out), 0.0, atol=1e-6)


def test_unimix_floor_and_straight_through_gradient():
    logits = jnp.array([[10.0, -10.0, 0.0, 0.0]])
    mixed = jnp.exp(unimix_logits(logits, 0.01))
    assert float(mixed.min()) >= 0.01 / 4 - 1e-7
    np.testing.assert_allclose(mixed.sum(), 1.0, rtol=1e-6)
    w = jnp.array([[1.0, 2.0, 3.0, 4.0]])
    sample = straight_through_sample(jax.random.PRNGKey(0), logits)
    assert set(np.unique(np.asarray(sample)).tolist()) <= {0.0, 1.0}
    g_st = jax.grad(lambda lg: (straight_through_sample(jax.random.PRNGKey(0), lg) * w).sum())
    g_soft = jax.grad(lambda lg: (jax.nn.softmax(lg) * w).sum())
    np.testing.assert_allclose(g_st(logits), g_soft(logits), atol=1e-6)


def test_straight_through_sample_draws_the_softmax_distribution():
    probs = jnp.array([[0.1, 0.0, 0.6, 0.3], [0.25, 0.25, 0.25, 0.25]])
    logits = jnp.log(probs)
    draws = jax.vmap(lambda k: straight_through_sample(k, logits))(
        jax.random.split(jax.random.PRNGKey(3), 20_000))
    freq = np.asarray(draws.mean(0))
    np.testing.assert_allclose(freq, probs, atol=0.015)
    assert freq[0, 1] == 0.0  # a class of probability 0 is never drawn
    np.testing.assert_allclose(np.asarray(draws).sum(-1), 1.0, atol=1e-6)


def test_kl_balance_free_bits_by_hand():
    p = jnp.log(jnp.array([[0.5, 0.5]]))
    q = jnp.log(jnp.array([[0.9, 0.1]]))
    hand = 0.5 * np.log(0.5 / 0.9) + 0.5 * np.log(0.5 / 0.1)  # 0.5108 nats
    np.testing.assert_allclose(categorical_kl(p, q), hand, rtol=1e-5)
    # below one free nat: both terms clipped to 1, no gradient
    loss, _ = kl_balance(p, q, dyn_scale=0.5, rep_scale=0.1)
    np.testing.assert_allclose(loss, 0.6, rtol=1e-6)
    g = jax.grad(lambda a, b: kl_balance(a, b, dyn_scale=0.5, rep_scale=0.1)[0],
                 argnums=(0, 1))(p, q)
    assert float(jnp.abs(g[0]).max()) == 0.0 and float(jnp.abs(g[1]).max()) == 0.0
    # three groups -> KL = 3 * 0.5108 = 1.532 > 1: loss = (dyn + rep) * KL
    p3, q3 = jnp.repeat(p, 3, 0), jnp.repeat(q, 3, 0)
    for dyn, rep in ((0.5, 0.1), (1.0, 0.1)):
        loss, _ = kl_balance(p3, q3, dyn_scale=dyn, rep_scale=rep)
        np.testing.assert_allclose(loss, (dyn + rep) * 3 * hand, rtol=1e-5)
    # the dynamics term trains only the prior, the representation term only the posterior
    g_post, g_prior = jax.grad(lambda a, b: kl_balance(a, b, dyn_scale=1.0, rep_scale=0.0)[0],
                               argnums=(0, 1))(p3, q3)
    assert float(jnp.abs(g_post).max()) == 0.0 and float(jnp.abs(g_prior).max()) > 0
    g_post, g_prior = jax.grad(lambda a, b: kl_balance(a, b, dyn_scale=0.0, rep_scale=1.0)[0],
                               argnums=(0, 1))(p3, q3)
    assert float(jnp.abs(g_prior).max()) == 0.0 and float(jnp.abs(g_post).max()) > 0


@pytest.mark.slow
def test_rssm_shapes_under_vmap_and_scan():
    rssm = RSSM(deter=16, hidden=8, groups=3, classes=5, blocks=4)
    key = jax.random.PRNGKey(0)
    params = rssm.init(key, rssm.initial(), jnp.zeros(2), jnp.zeros(7), key)
    batch, steps = 6, 4
    init = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (batch,) + x.shape),
                                  rssm.initial())
    embeds = jnp.ones((steps, batch, 7))
    actions = jnp.ones((steps, batch, 2))

    def step(state, inputs):
        e, a, k = inputs
        keys = jax.random.split(k, batch)
        post, prior = jax.vmap(lambda s, a_, e_, k_: rssm.apply(
            params, s, a_, e_, k_, method=RSSM.obs_step))(state, a, e, keys)
        return post, (post, prior)

    _, (post, prior) = jax.lax.scan(step, init, (embeds, actions, jax.random.split(key, steps)))
    assert post.deter.shape == prior.deter.shape == (steps, batch, 16)
    assert post.stoch.shape == prior.logits.shape == (steps, batch, 3, 5)
    np.testing.assert_allclose(post.stoch.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(post.deter, prior.deter)
    assert features(post).shape == (steps, batch, 16 + 15)
    img = jax.vmap(lambda s, a_, k_: rssm.apply(params, s, a_, k_, method=RSSM.img_step))(
        init, actions[0], jax.random.split(key, batch))
    assert img.stoch.shape == (batch, 3, 5)


def _fixed_batch(key, batch=4, length=12):
    """Sequences of a noisy linear system with reward = first observation coordinate."""
    obs = jax.random.normal(key, (batch, length + 1, 3))
    obs = jnp.cumsum(obs * 0.3, axis=1)
    action = jax.random.randint(jax.random.fold_in(key, 1), (batch, length), 0, 2)
    return {"obs": obs[:, :-1], "next_obs": obs[:, 1:], "reward": obs[:, 1:, 0] * 5.0,
            "terminated": jnp.zeros((batch, length), bool),
            "is_first": jnp.zeros((batch, length), bool).at[:, 5].set(True),
            "action": jax.nn.one_hot(action, 2)}


def _small_model():
    """A world model of 3-dim observations and 2 actions, and its parameters (key 0)."""
    model = wm.WorldModel(obs_shape=(3,), action_dim=2, deter=16, hidden=8, groups=2,
                          classes=3, blocks=1, units=16, layers=1)
    key = jax.random.PRNGKey(0)
    return model, model.init(key, jnp.zeros(3), jnp.zeros(2), key)


def _fit(loss, params, seq, opt, steps: int):
    """``steps`` optimiser steps of ``loss`` (a partial ``wm.loss_fn``) on the 4 sequences of
    ``seq``; returns the parameters and the per-step metrics (means over the sequences)."""
    def total(p, k):
        out, (_, metrics) = jax.vmap(lambda s, kk: loss(p, seq=s, key=kk))(
            seq, jax.random.split(k, 4))
        return out.mean(), jax.tree_util.tree_map(jnp.mean, metrics)

    @jax.jit
    def train(p, k):
        def body(carry, kk):
            p, s = carry
            (_, m), g = jax.value_and_grad(total, has_aux=True)(p, kk)
            upd, s = opt.update(g, s, p)
            return (optax.apply_updates(p, upd), s), m

        (p, _), ms = jax.lax.scan(body, (p, opt.init(p)), jax.random.split(k, steps))
        return p, ms

    return train(params, jax.random.PRNGKey(2))


@pytest.mark.slow
@pytest.mark.parametrize("steps", [40])
def test_world_model_fit_reduces_recon_and_reward_loss(steps):
    model = wm.WorldModel(obs_shape=(3,), action_dim=2, deter=32, hidden=16, groups=4,
                          classes=4, blocks=2, units=32, layers=1)
    key = jax.random.PRNGKey(0)
    params = model.init(key, jnp.zeros(3), jnp.zeros(2), key)
    seq = _fixed_batch(jax.random.PRNGKey(1))
    loss = functools.partial(wm.loss_fn, model=model, kl_dyn=0.5, kl_rep=0.1, free_nats=1.0)
    _, ms = _fit(loss, params, seq, optax.adam(3e-3), steps)
    first = {k: float(v[:3].mean()) for k, v in ms.items()}
    last = {k: float(v[-3:].mean()) for k, v in ms.items()}
    assert last["recon_loss"] < 0.7 * first["recon_loss"], (first, last)
    assert last["reward_loss"] < 0.7 * first["reward_loss"], (first, last)


@pytest.mark.slow
def test_reset_posteriors_train_the_reward_and_continue_heads():
    # Every successor is terminal with reward 5; the reset posteriors (where imagination also
    # starts) are not terminal (continue target cont_scale), and the one at the episode start
    # (t = 5; t = 0 only starts the window) had no reward before it (target 0). Without their
    # terms the heads extrapolate the successors' 0 and 5 to them.
    model, params = _small_model()
    seq = _fixed_batch(jax.random.PRNGKey(1))
    seq = dict(seq, terminated=jnp.ones_like(seq["terminated"]),
               reward=jnp.full_like(seq["reward"], 5.0))
    loss = functools.partial(wm.loss_fn, model=model, kl_dyn=0.5, kl_rep=0.1, free_nats=1.0,
                             cont_scale=0.9)
    params, _ = _fit(loss, params, seq, optax.adam(1e-2), 60)
    start_post, _, _, post, _ = wm.observe(model, params, jax.tree_util.tree_map(
        lambda x: x[0], seq), jax.random.PRNGKey(3))
    heads = jax.vmap(lambda f: model.apply(params, f, method=wm.WorldModel.heads))
    _, start_rew, start_cont = heads(features(start_post))
    _, rew, cont = heads(features(post))
    assert float(jax.nn.sigmoid(cont).max()) < 0.1
    assert float(jax.nn.sigmoid(start_cont[jnp.array([0, 5])]).min()) > 0.7
    assert float(nets.SUPPORT.decode(rew).min()) > 4.0
    assert abs(float(nets.SUPPORT.decode(start_rew[5]))) < 1.0


@pytest.mark.slow
def test_recon_scale_weights_only_the_reconstruction_term():
    model, params = _small_model()
    key = jax.random.PRNGKey(0)
    seq = jax.tree_util.tree_map(lambda x: x[0], _fixed_batch(jax.random.PRNGKey(1)))
    kw = dict(kl_dyn=0.5, kl_rep=0.1, free_nats=1.0)
    base, (_, metrics) = wm.loss_fn(params, model, seq, key, **kw)
    scaled, (_, scaled_metrics) = wm.loss_fn(params, model, seq, key, recon_scale=7.0, **kw)
    # same key -> same samples; the reported recon_loss is the unscaled term
    assert float(scaled_metrics["recon_loss"]) == pytest.approx(float(metrics["recon_loss"]))
    assert float(scaled - base) == pytest.approx(6.0 * float(metrics["recon_loss"]), rel=1e-4)


def test_image_networks_scale_by_the_observation_range():
    assert [nets.image_stages(*s) for s in ((64, 64), (10, 10), (7, 7), (84, 84))] == [4, 1, 0, 2]
    enc = nets.CNNEncoder(2, (0.0, 1.0))
    planes = (jax.random.uniform(jax.random.PRNGKey(0), (10, 10, 3)) > 0.5).astype(jnp.float32)
    params = enc.init(jax.random.PRNGKey(1), planes)
    frames = (planes * 255).astype(jnp.uint8)  # the same image as 0-255 frames
    np.testing.assert_allclose(enc.apply(params, planes),
                               nets.CNNEncoder(2, (0.0, 255.0)).apply(params, frames), atol=1e-5)
    assert enc.apply(params, planes).shape == (5 * 5 * 4,)  # one stage: 10 -> 5, depth 2 x 2
    dec = nets.CNNDecoder((10, 10, 3), depth=2, deter=16, units=8)
    feat = jax.random.normal(jax.random.PRNGKey(2), (16 + 12,))
    image = dec.apply(dec.init(jax.random.PRNGKey(3), feat), feat)
    assert image.shape == (10, 10, 3) and float(image.min()) > 0 and float(image.max()) < 1
    # the loss compares the sigmoid output with the image on [0, 1], whatever its range
    half = jnp.full((10, 10, 3), 0.5)
    assert float(nets.image_recon_loss(half, planes, (0.0, 1.0))) == pytest.approx(75.0)
    assert float(nets.image_recon_loss(half, frames, (0.0, 255.0))) == pytest.approx(75.0)
