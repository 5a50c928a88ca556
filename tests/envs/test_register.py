"""A user's own environment registers from the user's code and trains from the command line."""

import sys
import textwrap

import numpy as np
import pytest

import envs
from envs import registry
from envs.api import EnvSpec
from experiments import train

# A module of the user's, not the library's: a 1-D point mass pushed towards the origin.
USER_MODULE = textwrap.dedent('''
    import jax.numpy as jnp
    import numpy as np

    import envs
    from envs.api import EnvSpec, Environment


    def point_mass(max_episode_steps=40, drag=0.9):
        def reset(key):
            import jax
            x = jax.random.uniform(key, (1,), jnp.float32, -1.0, 1.0)
            return x, x

        def reward(x, action, nxt):  # known to planners such as mpc
            return -jnp.sum(nxt ** 2)

        def step(x, action, key):
            nxt = drag * x + 0.1 * jnp.clip(action, -1.0, 1.0)
            return nxt, nxt, reward(x, action, nxt), jnp.array(False)

        spec = EnvSpec(env_id="mine/PointMass-v0", obs_shape=(1,), obs_dtype=np.float32,
                       action_shape=(1,), action_low=(-1.0,), action_high=(1.0,),
                       max_episode_steps=max_episode_steps)
        return Environment(spec=spec, adapter_reset=reset, adapter_step=step, reward_fn=reward)


    envs.register("mine/PointMass-v0", point_mass, overwrite=True)
''')


@pytest.fixture()
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_point_mass.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_point_mass"
    registry._REGISTERED.pop("mine/PointMass-v0", None)
    sys.modules.pop("my_point_mass", None)


def test_registered_environment_trains_from_the_command_line(user_module, tmp_path):
    logdir = str(tmp_path / "run")
    # (docs/extending.md's example, run by tests/test_docs.py, trains mpc on such an env.)
    summary = train.main(["--import", user_module, "--agent", "random",
                          "--env", "mine/PointMass-v0", "--env-option", "drag=0.8",
                          "--steps", "80", "--num-envs", "2", "--log-every", "40",
                          "--eval-every", "0", "--eval-episodes", "2", "--logdir", logdir,
                          "--no-progress"])
    assert summary["env_steps"] == 80 and np.isfinite(summary["eval_return_mean"])
    assert "mine/PointMass-v0" in envs.registered_ids()
    assert "mine/PointMass-v0" in envs.registered_ids("mine")
    env, _, _, record = train.load_run(logdir)  # rebuilt from the recorded --import
    assert env.spec.env_id == "mine/PointMass-v0" and record["env_options"] == {"drag": 0.8}


def test_register_refuses_built_in_ids_and_repeats():
    with pytest.raises(ValueError, match="built-in"):
        envs.register("linear/scalar_a1.1", lambda: None)
    with pytest.raises(ValueError, match="<family>/<name>"):
        envs.register("no_slash", lambda: None)
    envs.register("mine/Twice-v0", lambda: None)
    try:
        with pytest.raises(ValueError, match="overwrite=True"):
            envs.register("mine/Twice-v0", lambda: None)
    finally:
        registry._REGISTERED.pop("mine/Twice-v0", None)


@pytest.mark.parametrize("fields, message", [
    (dict(obs_shape=(4, 4, 3)), "image observations need obs_range"),
    (dict(obs_shape=(4,), obs_kind="image", obs_range=(0, 1)), "an image observation has shape"),
    (dict(obs_shape=(4,), obs_kind="pixels"), "obs_kind must be one of"),
    (dict(obs_shape=(4,), obs_range=(1.0, 1.0)), "obs_range must be"),
])
def test_env_spec_rejects_an_unusable_observation_description(fields, message):
    with pytest.raises(ValueError, match=message):
        EnvSpec(env_id="mine/Bad-v0", **fields)


def test_env_spec_defaults_the_observation_kind_and_uint8_range():
    frames = EnvSpec(env_id="mine/Frames-v0", obs_shape=(8, 8, 3), obs_dtype=np.uint8)
    assert frames.obs_kind == "image" and frames.obs_range == (0.0, 255.0)
    assert EnvSpec(env_id="mine/Vec-v0", obs_shape=(3,)).obs_kind == "vector"
