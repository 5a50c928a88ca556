"""MuZero model: value transform, supports, normalisation, gradient scaling, true-model search."""

import dataclasses

import jax
import jax.numpy as jnp
import mctx
import numpy as np
import pytest

from agents.muzero import acting
from agents.muzero.config import MuZeroConfig
from core import rlmath
from world_models import muzero
from world_models.muzero_nets import min_max_normalise


def test_value_transform_hand_values_and_inverse():
    # h(3) = sqrt(4) - 1 + 0.003 = 1.003; h(-8) = -(3 - 1) - 0.008 = -2.008.
    x = jnp.array([3.0, -8.0, 0.0])
    np.testing.assert_allclose(rlmath.signed_hyperbolic(x), [1.003, -2.008, 0.0], atol=1e-6)
    grid = jnp.linspace(-500.0, 500.0, 101)
    np.testing.assert_allclose(rlmath.signed_parabolic(rlmath.signed_hyperbolic(grid)), grid,
                               rtol=1e-4, atol=1e-3)


def test_min_max_normalisation_per_example():
    s = jnp.array([[1.0, 3.0, 2.0], [-4.0, -4.0, 0.0]])
    np.testing.assert_allclose(min_max_normalise(s, 1), [[0, 1, 0.5], [0, 0, 1]], atol=1e-4)
    image = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 3, 4)) * 5 + 7
    out = min_max_normalise(image, 3)
    np.testing.assert_allclose(out.reshape(2, -1).min(1), 0.0, atol=1e-6)
    np.testing.assert_allclose(out.reshape(2, -1).max(1), 1.0, atol=1e-4)


def test_scale_gradient_halves_gradient_keeps_value():
    x = jnp.array([1.0, -2.0])
    np.testing.assert_allclose(muzero.scale_gradient(x, 0.5), x)
    grad = jax.grad(lambda v: jnp.sum(muzero.scale_gradient(v, 0.5) ** 2))(x)
    np.testing.assert_allclose(grad, 0.5 * 2 * x)


def _h(size, max_value):
    return muzero.Support(size, max_value, "signed_hyperbolic")


@pytest.mark.parametrize("obs_shape", [(4,), (5, 5, 2)])
def test_model_unroll_shapes_and_normalised_hidden_states(obs_shape):
    model = muzero.make_model(3, obs_shape, size="tiny", value_support=_h(11, 5.0),
                              reward_support=_h(7, 2.0))
    params = model.init(jax.random.PRNGKey(0), obs_shape)
    obs = jax.random.normal(jax.random.PRNGKey(1), obs_shape)
    out = model.unroll(params, obs, jnp.array([0, 2, 1]))
    assert out.policy_logits.shape == (4, 3)
    assert out.value_logits.shape == (4, 11) and out.reward_logits.shape == (4, 7)
    flat = out.hidden.reshape(4, -1)
    np.testing.assert_allclose(flat.min(1), 0.0, atol=1e-6)
    np.testing.assert_allclose(flat.max(1), 1.0, atol=1e-3)
    # Zero-initialised heads: the first predictions decode to exactly 0.
    np.testing.assert_allclose(model.value_support.decode(out.value_logits), 0.0, atol=1e-5)


# A small deterministic MDP. From position 0: action 0 pays 1 and ends; action 1 pays 0 and goes
# to position 1; action 2 pays 0.5 and ends. From position 1: action 1 pays 3, others pay 0;
# everything ends. Optimal first action: 1 (return 3 * discount). With zero leaf values and a
# uniform prior the greedy action 0 looks best until the search has looked two steps deep.
def _mdp_step(position, action):
    reward = jnp.where(position == 0, jnp.array([1.0, 0.0, 0.5])[action],
                       jnp.array([0.0, 3.0, 0.0])[action])
    next_position = jnp.where((position == 0) & (action == 1), 1, 2)
    terminated = ~((position == 0) & (action == 1))
    return next_position, reward, terminated


def _true_model(batch):
    recurrent_fn = muzero.make_env_recurrent_fn(_mdp_step, num_actions=3, discount=0.9)

    def root_fn(params, obs):
        del params
        return mctx.RootFnOutput(prior_logits=jnp.zeros((batch, 3)), value=jnp.zeros(batch),
                                 embedding=muzero.EnvEmbedding(jnp.zeros(batch, jnp.int32),
                                                               jnp.zeros(batch, bool)))

    return root_fn, recurrent_fn


@pytest.mark.parametrize("search,sims,q_norm", [("muzero", 300, "siblings"),
                                                 ("muzero", 300, "tree"),
                                                 ("gumbel", 32, "siblings")])
def test_search_with_true_model_picks_optimal_action(search, sims, q_norm):
    cfg = dataclasses.replace(MuZeroConfig(), search=search, num_simulations=sims,
                              q_normalisation=q_norm)
    root_fn, recurrent_fn = _true_model(4)
    out = jax.jit(lambda k: acting.search(cfg, root_fn, recurrent_fn, None, jnp.zeros((4, 1)),
                                          k, explore=False))(jax.random.PRNGKey(0))
    np.testing.assert_array_equal(out.action, [1, 1, 1, 1])
    assert np.all(np.argmax(out.policy, -1) == 1)
    # The greedy first step is worth 1; the search value moves towards 0.9 * 3 = 2.7.
    assert np.all(out.root_value > 1.2) and np.all(out.root_value < 2.71)


def test_tree_min_max_qtransform_by_hand():
    """After a search on the MDP above, the root's children are scaled by the min and max of
    r + gamma v over every visited edge of the tree (not only the root's)."""
    root_fn, recurrent_fn = _true_model(2)
    out = mctx.muzero_policy(None, jax.random.PRNGKey(0), root_fn(None, jnp.zeros((2, 1))),
                             recurrent_fn, 300, dirichlet_fraction=0.0)
    tree = jax.tree_util.tree_map(lambda x: x[0], out.search_tree)
    q = np.asarray(tree.children_rewards + tree.children_discounts * tree.children_values)
    seen = np.asarray(tree.children_visits) > 0
    low, high = q[seen].min(), q[seen].max()
    root = tree.ROOT_INDEX
    expected = np.where(seen[root], (q[root] - low) / (high - low), 0.0)
    got = acting.qtransform_by_tree_min_max(tree, jnp.asarray(root))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # The deeper edge (position 1, action 1: reward 3, then the end) sets the maximum, so the
    # root's best child (Q near 0.9 * 3 = 2.7) scales below 1, unlike with siblings only.
    np.testing.assert_allclose(high, 3.0, rtol=1e-5)
    assert seen[root].all() and float(got.max()) < 0.95


def test_gumbel_value_scale_weighs_the_action_values():
    """sigma(q) = (c_visit + max N) c_scale q: with c_scale = 0 the gumbel policy target is the
    prior (uniform here); with the default 0.1 the search's values tilt it towards action 1."""
    root_fn, recurrent_fn = _true_model(2)
    policies = {}
    for scale in (0.0, 0.1):
        cfg = dataclasses.replace(MuZeroConfig(), search="gumbel", num_simulations=32,
                                  gumbel_value_scale=scale)
        policies[scale] = np.asarray(acting.search(cfg, root_fn, recurrent_fn, None,
                                                   jnp.zeros((2, 1)), jax.random.PRNGKey(0),
                                                   explore=False).policy)
    np.testing.assert_allclose(policies[0.0], 1.0 / 3.0, atol=1e-6)
    assert np.all(np.argmax(policies[0.1], -1) == 1) and np.all(policies[0.1][:, 1] > 0.5)


def test_gumbel_temperature_scales_the_acting_noise():
    """With ``gumbel_temperature`` the gumbel search's acting noise is ``gumbel_scale * T``:
    at T = 0 every exploring search takes the greedy action; at T = 1 (and without the option
    at any T) the noise over a uniform prior with c_scale = 0 picks each action sometimes."""
    root_fn, recurrent_fn = _true_model(64)
    base = dataclasses.replace(MuZeroConfig(), search="gumbel", num_simulations=8,
                               gumbel_value_scale=0.0, max_num_considered_actions=1)

    def actions(cfg, temp, explore=True):
        return np.asarray(acting.search(cfg, root_fn, recurrent_fn, None, jnp.zeros((64, 1)),
                                        jax.random.PRNGKey(1), explore=explore,
                                        temp=jnp.float32(temp)).action)

    tempered = dataclasses.replace(base, gumbel_temperature=True)
    greedy = actions(tempered, 1.0, explore=False)
    np.testing.assert_array_equal(actions(tempered, 0.0), greedy)
    for cfg, temp in ((tempered, 1.0), (base, 0.0)):
        assert len(np.unique(actions(cfg, temp))) == 3, (cfg.gumbel_temperature, temp)


@pytest.mark.parametrize("layout", [None, "cells"])
def test_board_plane_tells_the_moves_apart(layout):
    """With an action layout the residual dynamics also sees a board plane marking the move's
    cell: with the weights of the one-hot planes zeroed, the moves still give different next
    states through that plane alone (and all the same state without it)."""
    kwargs = {} if layout is None else {"action_layout": layout}
    model = muzero.make_model(9, (3, 3, 2), size="tiny", **kwargs)
    params = model.init(jax.random.PRNGKey(0), (3, 3, 2))
    kernel = params["params"]["dynamics_trunk"]["layers_0"]["kernel"]
    latent = model.net.latent_dim
    assert kernel.shape[-2] == latent + 9 + (layout is not None)
    params = jax.tree_util.tree_map(lambda x: x, params)
    params["params"]["dynamics_trunk"]["layers_0"]["kernel"] = kernel.at[
        ..., latent:latent + 9, :].set(0.0)
    s = model.represent(params, jax.random.uniform(jax.random.PRNGKey(1), (9, 3, 3, 2)))
    s = jnp.broadcast_to(s[:1], s.shape)  # one state, every move
    _, s_next = model.dynamics(params, s, jnp.arange(9))
    spread = float(jnp.abs(s_next - s_next[:1]).max())
    if layout is None:
        assert spread < 1e-6
    else:
        assert spread > 1e-3
