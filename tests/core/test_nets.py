"""core.nets: the shared MLP's options, and the parameter trees of the networks built from it.

The trees below were recorded from the separate MLP classes the shared one replaced (MuZero's,
Dreamer's, SAC's, PETS's value and the ensemble members): flax derives each parameter's initial
value from its path, and checkpoints restore by path, so these must not change.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict

from agents.dreamer import actor_critic
from agents.pets import value as pets_value
from agents.sac import networks as sac
from core import nets
from world_models import dreamer_nets, ensemble, muzero_nets

KEY = jax.random.PRNGKey(0)

EXPECTED_TREES = {
    "muzero": {
        "dynamics_trunk/Dense_0/bias": (6,), "dynamics_trunk/Dense_0/kernel": (8, 6),
        "dynamics_trunk/Dense_1/bias": (5,), "dynamics_trunk/Dense_1/kernel": (6, 5),
        "dynamics_trunk/LayerNorm_0/bias": (6,), "dynamics_trunk/LayerNorm_0/scale": (6,),
        "policy_head/Dense_0/bias": (6,), "policy_head/Dense_0/kernel": (5, 6),
        "policy_head/Dense_1/bias": (3,), "policy_head/Dense_1/kernel": (6, 3),
        "policy_head/LayerNorm_0/bias": (6,), "policy_head/LayerNorm_0/scale": (6,),
        "projection/Dense_0/bias": (6,), "projection/Dense_0/kernel": (5, 6),
        "projection/Dense_1/bias": (4,), "projection/Dense_1/kernel": (6, 4),
        "projection/LayerNorm_0/bias": (6,), "projection/LayerNorm_0/scale": (6,),
        "projection_predictor/Dense_0/bias": (6,), "projection_predictor/Dense_0/kernel": (4, 6),
        "projection_predictor/Dense_1/bias": (4,), "projection_predictor/Dense_1/kernel": (6, 4),
        "projection_predictor/LayerNorm_0/bias": (6,),
        "projection_predictor/LayerNorm_0/scale": (6,), "representation/Dense_0/bias": (6,),
        "representation/Dense_0/kernel": (4, 6), "representation/Dense_1/bias": (5,),
        "representation/Dense_1/kernel": (6, 5), "representation/LayerNorm_0/bias": (6,),
        "representation/LayerNorm_0/scale": (6,), "reward_head/Dense_0/bias": (6,),
        "reward_head/Dense_0/kernel": (5, 6), "reward_head/Dense_1/bias": (11,),
        "reward_head/Dense_1/kernel": (6, 11), "reward_head/LayerNorm_0/bias": (6,),
        "reward_head/LayerNorm_0/scale": (6,), "value_head/Dense_0/bias": (6,),
        "value_head/Dense_0/kernel": (5, 6), "value_head/Dense_1/bias": (9,),
        "value_head/Dense_1/kernel": (6, 9), "value_head/LayerNorm_0/bias": (6,),
        "value_head/LayerNorm_0/scale": (6,),
    },
    "dreamer_encoder": {
        "MLP_0/Dense_0/Dense_0/bias": (8,), "MLP_0/Dense_0/Dense_0/kernel": (3, 8),
        "MLP_0/Dense_0/Norm_0/RMSNorm_0/scale": (8,), "MLP_0/Dense_1/Dense_0/bias": (8,),
        "MLP_0/Dense_1/Dense_0/kernel": (8, 8), "MLP_0/Dense_1/Norm_0/RMSNorm_0/scale": (8,),
    },
    "dreamer_encoder_layer": {
        "MLP_0/Dense_0/Dense_0/bias": (8,), "MLP_0/Dense_0/Dense_0/kernel": (3, 8),
        "MLP_0/Dense_0/Norm_0/LayerNorm_0/bias": (8,),
        "MLP_0/Dense_0/Norm_0/LayerNorm_0/scale": (8,),
    },
    "dreamer_decoder": {
        "Dense_0/bias": (3,), "Dense_0/kernel": (8, 3), "MLP_0/Dense_0/Dense_0/bias": (8,),
        "MLP_0/Dense_0/Dense_0/kernel": (10, 8), "MLP_0/Dense_0/Norm_0/RMSNorm_0/scale": (8,),
    },
    "dreamer_two_hot": {
        "Dense_0/bias": (255,), "Dense_0/kernel": (8, 255), "MLP_0/Dense_0/Dense_0/bias": (8,),
        "MLP_0/Dense_0/Dense_0/kernel": (10, 8), "MLP_0/Dense_0/Norm_0/LayerNorm_0/bias": (8,),
        "MLP_0/Dense_0/Norm_0/LayerNorm_0/scale": (8,),
    },
    "dreamer_continue": {
        "Dense_0/bias": (1,), "Dense_0/kernel": (8, 1), "MLP_0/Dense_0/Dense_0/bias": (8,),
        "MLP_0/Dense_0/Dense_0/kernel": (10, 8), "MLP_0/Dense_0/Norm_0/RMSNorm_0/scale": (8,),
    },
    "dreamer_cnn_encoder": {
        "Conv_0/bias": (8,), "Conv_0/kernel": (5, 5, 3, 8), "LayerNorm_0/bias": (8,),
        "LayerNorm_0/scale": (8,),
    },
    "dreamer_actor": {
        "Dense_0/bias": (4,), "Dense_0/kernel": (8, 4), "MLP_0/Dense_0/Dense_0/bias": (8,),
        "MLP_0/Dense_0/Dense_0/kernel": (10, 8), "MLP_0/Dense_0/Norm_0/RMSNorm_0/scale": (8,),
        "MLP_0/Dense_1/Dense_0/bias": (8,), "MLP_0/Dense_1/Dense_0/kernel": (8, 8),
        "MLP_0/Dense_1/Norm_0/RMSNorm_0/scale": (8,),
    },
    "sac_actor": {
        "MLP_0/Dense_0/bias": (8,), "MLP_0/Dense_0/kernel": (4, 8), "MLP_0/Dense_1/bias": (6,),
        "MLP_0/Dense_1/kernel": (8, 6), "MLP_0/Dense_2/bias": (4,),
        "MLP_0/Dense_2/kernel": (6, 4),
    },
    "sac_critic": {
        "MLP_0/Dense_0/bias": (7,), "MLP_0/Dense_0/kernel": (6, 7), "MLP_0/Dense_1/bias": (1,),
        "MLP_0/Dense_1/kernel": (7, 1), "MLP_1/Dense_0/bias": (7,),
        "MLP_1/Dense_0/kernel": (6, 7), "MLP_1/Dense_1/bias": (1,),
        "MLP_1/Dense_1/kernel": (7, 1),
    },
    "pets_value": {
        "Dense_0/bias": (8,), "Dense_0/kernel": (4, 8), "Dense_1/bias": (6,),
        "Dense_1/kernel": (8, 6), "Dense_2/bias": (1,), "Dense_2/kernel": (6, 1),
    },
    "ensemble": {
        "max_logvar": (3, 5), "min_logvar": (3, 5), "network/Dense_0/bias": (3, 8),
        "network/Dense_0/kernel": (3, 6, 8), "network/Dense_1/bias": (3, 6),
        "network/Dense_1/kernel": (3, 8, 6), "network/Dense_2/bias": (3, 11),
        "network/Dense_2/kernel": (3, 6, 11),
    },
}


def _paths(tree):
    return {"/".join(k): tuple(v.shape) for k, v in flatten_dict(tree).items()}


def _init_tree(module, *args):
    return _paths(jax.eval_shape(module.init, KEY, *args)["params"])


def _converted_trees():
    z = jnp.zeros
    sac_nets = sac.make_networks(action_low=[-1, -1], action_high=[1, 1], actor_hidden=(8, 6),
                                 critic_hidden=(7,))
    ens_cfg = ensemble.EnsembleConfig(num_members=3, num_elites=2, hidden_sizes=(8, 6),
                                      predict_termination=True)
    muzero = muzero_nets.MuZeroNet(num_actions=3, latent_dim=5, hidden=(6,), value_bins=9,
                                   reward_bins=11, projection_dim=4)
    return {
        "muzero": lambda: _init_tree(muzero, z((4,)), z((), jnp.int32)),
        "dreamer_encoder": lambda: _init_tree(dreamer_nets.MLPEncoder(8, 2, "rms"), z((3,))),
        "dreamer_encoder_layer": lambda: _init_tree(dreamer_nets.MLPEncoder(8, 1, "layer"),
                                                    z((3,))),
        "dreamer_decoder": lambda: _init_tree(dreamer_nets.MLPDecoder((3,), 8, 1, "rms"),
                                              z((10,))),
        "dreamer_two_hot": lambda: _init_tree(dreamer_nets.TwoHotHead(8, 1, "layer"), z((10,))),
        "dreamer_continue": lambda: _init_tree(dreamer_nets.ContinueHead(8, 1, "rms"), z((10,))),
        "dreamer_cnn_encoder": lambda: _init_tree(dreamer_nets.CNNEncoder(4, norm="layer"),
                                                  z((8, 8, 3), jnp.uint8)),
        "dreamer_actor": lambda: _init_tree(actor_critic.Actor(2, False, 8, 2, "rms"), z((10,))),
        "sac_actor": lambda: _init_tree(sac_nets.actor, z((4,))),
        "sac_critic": lambda: _init_tree(sac_nets.critic, z((4,)), z((2,))),
        "pets_value": lambda: _paths(jax.eval_shape(
            lambda: pets_value.init(KEY, 4, (8, 6), 1e-3).params["params"])),
        "ensemble": lambda: _paths(jax.eval_shape(
            lambda: ensemble.init(KEY, 4, 2, ens_cfg).params)),
    }


@pytest.mark.parametrize("name", sorted(EXPECTED_TREES))
def test_converted_network_keeps_its_parameter_tree(name):
    assert _converted_trees()[name]() == EXPECTED_TREES[name]


def test_zero_outscale_gives_a_zero_output_layer():
    mlp = nets.MLP((8, 8), 5, norm="layer", outscale=0.0)
    x = jax.random.normal(KEY, (3, 4))
    params = mlp.init(KEY, x)
    np.testing.assert_array_equal(params["params"]["Dense_2"]["kernel"], np.zeros((8, 5)))
    np.testing.assert_array_equal(mlp.apply(params, x), np.zeros((3, 5)))
    assert np.abs(params["params"]["Dense_0"]["kernel"]).min() > 0


def test_outscale_multiplies_the_output_kernel_only():
    x = jnp.zeros((6,))
    full = nets.MLP((16,), 256).init(KEY, x)["params"]
    half = nets.MLP((16,), 256, outscale=0.5).init(KEY, x)["params"]
    np.testing.assert_array_equal(half["Dense_0"]["kernel"], full["Dense_0"]["kernel"])
    np.testing.assert_allclose(half["Dense_1"]["kernel"], 0.5 * full["Dense_1"]["kernel"],
                               rtol=1e-6)
    # lecun_normal: std 1 / sqrt(fan_in) = 1/4 for 16 inputs (4096 samples: within 5%)
    np.testing.assert_allclose(np.std(full["Dense_1"]["kernel"]), 0.25, rtol=0.05)
    np.testing.assert_allclose(np.std(half["Dense_1"]["kernel"]), 0.125, rtol=0.05)


def test_named_initialisers():
    shape = (64, 128)
    lecun = nets.initializer("lecun_normal")(KEY, shape)
    np.testing.assert_array_equal(nets.initializer("trunc_normal_in")(KEY, shape), lecun)
    assert np.abs(lecun).max() <= 2 / np.sqrt(64) * 1.1368 + 1e-6  # truncated at 2 std
    np.testing.assert_allclose(np.std(nets.initializer("normal_avg")(KEY, shape)),
                               np.sqrt(1 / 96), rtol=0.05)
    np.testing.assert_allclose(np.std(nets.initializer("trunc_normal_out", 3.0)(KEY, shape)),
                               3 / np.sqrt(128), rtol=0.05)
    np.testing.assert_array_equal(nets.initializer("zeros")(KEY, shape), np.zeros(shape))
    with pytest.raises(ValueError, match="initialiser"):
        nets.initializer("uniform_in")


def test_forward_matches_a_hand_written_network():
    x = jax.random.normal(KEY, (5, 3))
    for norm, eps in (("layer", 1e-3), ("rms", 1e-4), ("none", 0.0)):
        mlp = nets.MLP((4, 6), 2, norm=norm, norm_eps=eps, act="silu")
        p = jax.tree.map(np.asarray, mlp.init(KEY, x)["params"])
        h = np.asarray(x)
        for i in range(2):
            h = h @ p[f"Dense_{i}"]["kernel"] + p[f"Dense_{i}"]["bias"]
            if norm == "layer":
                ln = p[f"LayerNorm_{i}"]
                h = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + eps)
                h = h * ln["scale"] + ln["bias"]
            elif norm == "rms":
                h = h / np.sqrt((h ** 2).mean(-1, keepdims=True) + eps)
                h = h * p[f"RMSNorm_{i}"]["scale"]
            h = h / (1 + np.exp(-h))
        want = h @ p["Dense_2"]["kernel"] + p["Dense_2"]["bias"]
        np.testing.assert_allclose(mlp.apply({"params": p}, x), want, rtol=1e-4, atol=1e-5)


def test_norms_normalise_the_hidden_features():
    x = 3.0 + 5.0 * jax.random.normal(KEY, (7, 4))
    layer = nets.MLP((32,), norm="layer", act="none")
    y = layer.apply(layer.init(KEY, x), x)
    np.testing.assert_allclose(y.mean(-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.var(-1), 1.0, rtol=1e-3)
    rms = nets.MLP((32,), norm="rms", act="none")
    y = rms.apply(rms.init(KEY, x), x)
    np.testing.assert_allclose((y ** 2).mean(-1), 1.0, rtol=1e-3)


def test_norm_scale_and_bias_switches():
    x = jnp.zeros((3,))
    names = lambda **kw: set(_paths(nets.MLP((4,), **kw).init(KEY, x)["params"]))
    assert names(norm="layer") == {"Dense_0/kernel", "Dense_0/bias", "LayerNorm_0/scale",
                                   "LayerNorm_0/bias"}
    assert names(norm="layer", norm_bias=False) == {"Dense_0/kernel", "Dense_0/bias",
                                                    "LayerNorm_0/scale"}
    assert names(norm="rms", norm_scale=False, bias=False) == {"Dense_0/kernel"}
    assert names(norm="rms") == {"Dense_0/kernel", "Dense_0/bias", "RMSNorm_0/scale"}
    with pytest.raises(ValueError, match="norm"):
        nets.MLP((4,), norm="batch").init(KEY, x)


def test_activations():
    x = jax.random.normal(KEY, (50, 3))
    out = lambda act: (lambda m: m.apply(m.init(KEY, x), x))(nets.MLP((16,), act=act))
    assert out("relu").min() == 0.0 and out("relu").max() > 0
    assert np.abs(out("tanh")).max() < 1
    np.testing.assert_allclose(out(jnp.tanh), out("tanh"))
    np.testing.assert_allclose(out("relu"), np.maximum(out("none"), 0.0))
    np.testing.assert_allclose(out("silu"), jax.nn.silu(out("none")), rtol=1e-6)
    with pytest.raises(ValueError, match="activation"):
        out("swish_glu")


def test_layouts_name_the_same_function_differently():
    x = jax.random.normal(KEY, (2, 3))
    kw = dict(hidden=(4, 5), out_size=2, norm="rms", act="silu", bias=False)
    flat = nets.MLP(**kw).init(KEY, x)["params"]
    assert set(_paths(flat)) == {"Dense_0/kernel", "RMSNorm_0/scale", "Dense_1/kernel",
                                 "RMSNorm_1/scale", "Dense_2/kernel", "Dense_2/bias"}
    norm_scope = {"Dense_0": flat["Dense_0"], "Norm_0": {"RMSNorm_0": flat["RMSNorm_0"]},
                  "Dense_1": flat["Dense_1"], "Norm_1": {"RMSNorm_0": flat["RMSNorm_1"]},
                  "Dense_2": flat["Dense_2"]}
    layer_scope = {"Dense_0": {"Dense_0": flat["Dense_0"],
                               "Norm_0": {"RMSNorm_0": flat["RMSNorm_0"]}},
                   "Dense_1": {"Dense_0": flat["Dense_1"],
                               "Norm_0": {"RMSNorm_0": flat["RMSNorm_1"]}},
                   "Dense_2": flat["Dense_2"]}
    want = nets.MLP(**kw).apply({"params": flat}, x)
    for layout, params in (("norm_scope", norm_scope), ("layer_scope", layer_scope)):
        mlp = nets.MLP(**kw, layout=layout)
        assert _paths(mlp.init(KEY, x)["params"]) == _paths(params)
        np.testing.assert_array_equal(mlp.apply({"params": params}, x), want)


def test_shapes_depth_and_dtypes():
    x = jnp.ones((2, 3, 4))
    assert nets.MLP((8, 8, 8), 5).apply(nets.MLP((8, 8, 8), 5).init(KEY, x), x).shape == (2, 3, 5)
    hidden_only = nets.MLP((8, 6))
    assert hidden_only.apply(hidden_only.init(KEY, x), x).shape == (2, 3, 6)
    linear = nets.MLP((), 5)
    assert set(_paths(linear.init(KEY, x)["params"])) == {"Dense_0/kernel", "Dense_0/bias"}
    half = nets.MLP((8,), 5, norm="rms", dtype=jnp.bfloat16)
    params = half.init(KEY, x)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
    assert half.apply(params, x).dtype == jnp.bfloat16
    stored = nets.MLP((8,), 5, param_dtype=jnp.bfloat16).init(KEY, x)
    assert all(p.dtype == jnp.bfloat16 for p in jax.tree.leaves(stored))
