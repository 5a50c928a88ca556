"""How much of an observation one Dreamer latent carries (``experiments.latent_capacity``).

    python -m experiments.latent_capacity --env craftax/Craftax-Classic-Symbolic-v1 \
        [--preset default --updates 4000 --batch-size 512 --json PATH] [--FIELD VALUE ...]

Trains a Dreamer preset's encoder, posterior and decoder alone, as an autoencoder: an
observation goes through the world model's path from the reset state, ``o -> encoder ->
posterior sample (groups x classes) -> decoder`` (``WorldModel.__call__``; the deterministic
state is that of the reset state, the same for every observation), with the world model's
reconstruction loss and nothing else (no dynamics, no KL, no reward or continue heads), Adam
at ``--learning-rate`` for every preset. The observations are those of ``--num-envs`` x
``--length`` steps of a uniformly random policy (episodes reset as they end); one in eight is
held out. On the held-out ones it prints, per element of the observation, how well the
reconstruction follows the real value (the correlation; the median and the count below 0.5
over the elements that vary), overall and by the groups of elements a task names
(``craftax/Craftax-Classic-Symbolic-v1``: the map, the mobs, the inventory, ...;
:func:`envs.craftax_env.observation_groups`).

What a preset cannot carry through one latent sample here, its world model's posterior has to
carry through the deterministic state's history instead, or loses: a check of the preset's
sizes against a task's observation without a training run (the JSON records
``wall_seconds``). Any other ``--FIELD VALUE`` overrides a field of the Dreamer config, as in
``experiments.train``; the fields that shape the encoder, posterior and decoder take effect
(``units``, ``layers``, ``hidden``, ``groups``, ``classes``, ``deter``, ``blocks``, ``norm``,
``unimix``, ``compute_dtype``), the losses' and optimisers' do not, and ``--obs-norm`` is
refused (the probe reconstructs the observations as they are). Vector observations (images
are not scored per element). A user mistake prints one ``error: ...`` line and exits with
status 2.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Dict, List, Optional

from experiments import cli
from experiments.cli import UsageError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m experiments.latent_capacity", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Any other --FIELD VALUE overrides a field of the Dreamer config.")
    p.add_argument("--env", required=True, help="environment id with vector observations")
    p.add_argument("--preset", default=None,
                   help="Dreamer preset (default: the environment's preset if any, else "
                        "'default')")
    p.add_argument("--updates", type=int, default=4000)
    p.add_argument("--batch-size", type=int, default=512, help="observations per update")
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--num-envs", type=int, default=32, help="random-policy environments")
    p.add_argument("--length", type=int, default=500, help="steps per environment")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write the result here")
    p.add_argument(cli.DEBUG_FLAG, action="store_true",
                   help=f"show the traceback of a usage error (or set {cli.DEBUG_ENV}=1)")
    return p


def random_observations(env, key, num_envs: int, length: int):
    """``[num_envs * (length + 1), *obs_shape]`` observations of a uniformly random policy."""
    import jax

    from core import rollout

    def policy(env_state, is_first, carry, k):
        keys = jax.random.split(k, env_state.obs.shape[0])
        return jax.vmap(env.spec.sample_action)(keys), carry, None

    out = jax.jit(lambda k: rollout.play(env, policy, k, num_envs=num_envs, length=length,
                                         auto_reset=True))(key)
    obs = out.observations()
    return obs.reshape((-1,) + obs.shape[2:])


def probe(dreamer, obs, key, *, updates: int, batch_size: int, learning_rate: float,
          env_id: str) -> Dict:
    """Trains ``dreamer``'s encoder, posterior and decoder on ``obs [M, ...]`` (one in eight held
    out) and scores the held-out reconstructions (module doc)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from agents.dreamer import evaluation
    from world_models import dreamer_wm as wm

    model = dreamer.model
    obs = jnp.asarray(obs)
    init_key, split_key, loop_key, test_key = jax.random.split(key, 4)
    order = jax.random.permutation(split_key, obs.shape[0])
    held = max(1, obs.shape[0] // 8)
    test, train = obs[order[:held]], obs[order[held:]]
    zero_action = jnp.zeros((dreamer.action_dim,))
    params = dreamer.init(init_key).wm_params
    opt = optax.adam(learning_rate)

    def reconstruct(p, o, k):
        decoded, _, _ = model.apply(p, o, zero_action, k)
        return decoded

    def loss(p, batch, k):
        keys = jax.random.split(k, batch.shape[0])
        decoded = jax.vmap(lambda o, kk: reconstruct(p, o, kk))(batch, keys)
        return jax.vmap(lambda d, o: wm.recon_loss(model, d, o))(decoded, batch).mean()

    def step(carry, k):
        p, s = carry
        pick, sample = jax.random.split(k)
        batch = train[jax.random.randint(pick, (batch_size,), 0, train.shape[0])]
        value, grad = jax.value_and_grad(loss)(p, batch, sample)
        change, s = opt.update(grad, s, p)
        return (optax.apply_updates(p, change), s), value

    (params, _), losses = jax.jit(lambda p, k: jax.lax.scan(
        step, (p, opt.init(p)), jax.random.split(k, updates)))(params, loop_key)
    keys = jax.random.split(test_key, test.shape[0])
    decoded = jax.jit(jax.vmap(lambda o, k: reconstruct(params, o, k)))(test, keys)
    recon = np.asarray(evaluation.decode_observation(model, decoded))
    per_element = evaluation.element_correlations(recon, np.asarray(test))
    tail = np.asarray(losses[-max(1, updates // 10):])
    return {"final_loss": float(tail.mean()), "train_observations": int(train.shape[0]),
            "held_out_observations": int(held), "reconstruction_correlation": per_element,
            "summary": evaluation.correlation_summary(per_element, env_id)}


def main(argv: Optional[List[str]] = None) -> Dict:
    """The command line; returns the result that ``--json`` writes."""
    args, rest = _parser().parse_known_args(argv)
    for name in ("updates", "batch_size", "num_envs", "length"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got "
                             f"{getattr(args, name)}")
    if args.learning_rate <= 0:
        raise UsageError(f"--learning-rate must be > 0, got {args.learning_rate}")
    import jax

    from agents import registry as agents
    from agents.dreamer.agent import Dreamer
    from experiments import presets
    from experiments.train import _override, make_env

    env = make_env(args.env, {})
    preset = args.preset or presets.default_preset("dreamer", args.env)
    cfg = _override(agents.preset("dreamer", preset), rest, "dreamer")
    if cfg.obs_norm:
        raise UsageError("latent_capacity reconstructs the observations as they are; drop "
                         "--obs-norm")
    dreamer = Dreamer(cfg, env)
    if dreamer.model.image:
        raise UsageError(f"{args.env} has image observations {tuple(env.spec.obs_shape)}; "
                         "latent_capacity scores vector observations element by element")
    cli.check_output_file(args.json, "--json")
    start = time.time()
    obs_key, probe_key = jax.random.split(jax.random.PRNGKey(args.seed))
    obs = random_observations(env, obs_key, args.num_envs, args.length)
    result = probe(dreamer, obs, probe_key, updates=args.updates, batch_size=args.batch_size,
                   learning_rate=args.learning_rate, env_id=args.env)
    result["wall_seconds"] = time.time() - start
    from agents.dreamer import evaluation
    sizes = {k: getattr(cfg, k) for k in ("units", "layers", "hidden", "groups", "classes",
                                          "deter")}
    print(f"[latent_capacity] {args.env}, preset {preset} {sizes}: {args.updates} updates of "
          f"{args.batch_size}, final loss {result['final_loss']:.3f}, "
          f"{result['held_out_observations']} held-out observations")
    evaluation.print_correlation_summary(result["summary"], "reconstruction")
    result.update(env=args.env, preset=preset, sizes=sizes, updates=args.updates,
                  batch_size=args.batch_size, learning_rate=args.learning_rate, seed=args.seed)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    cli.run(main)
