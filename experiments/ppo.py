"""A model-free PPO baseline for discrete-action tasks (gymnax classic control, MinAtar, craftax).

brax.training's PPO (:mod:`experiments.baselines`) only has continuous (tanh-Gaussian)
policies, so the MuZero and Dreamer comparisons on ``gymnax/*`` use this one: clipped-ratio
PPO (Schulman et al., 2017) with GAE, a categorical policy and a separate value head, written
as one jitted program that is vmapped over seeds (all seeds train together, as in
:mod:`core.runner`):

* every iteration collects ``num_steps`` vectorised steps of ``num_envs`` environments through
  :mod:`envs.api` (auto-reset, time limits as truncations), computes GAE(lambda) advantages
  and runs ``epochs`` passes of ``minibatches`` minibatch updates (Adam, global-norm clip,
  optional linear learning-rate decay);
* a time-limit truncation bootstraps with ``V(next_obs)``; a termination with 0;
* networks: an MLP (tanh) for vector observations, and for images (MinAtar's ``10 x 10 x C``)
  one 3x3 convolution of 16 channels followed by an MLP (ReLU);
* evaluation: :func:`core.loop.greedy_returns` (argmax action, one episode in each of
  ``eval_episodes`` environments) every ``eval_every`` environment steps; ``eval_episodes=0``
  logs only the training episodes (craftax's published numbers are those of training
  episodes, and a greedy craftax episode may last the whole 10,000-step time limit);
* training episodes: their mean return, and the means of the environment's own per-episode
  metrics (``TimeStep.episode_metrics``, e.g. craftax's ``achievement_<name>``) logged as
  ``<name>_mean``, as :mod:`core.runner` does.

``python -m experiments.ppo --env gymnax/CartPole-v1 --steps 200000 --seeds 3 --out runs/ppo``
writes ``<out>/metrics.jsonl`` (``env_steps``, ``eval_return_per_seed``, ``wall_time``), the
format :mod:`experiments.sample_efficiency` reads, and checkpoints: the same command again
resumes a run stopped by ``--max-seconds``, SIGTERM / Ctrl-C (which checkpoint at the end of
the running chunk) or a crash, and ends as the uninterrupted run would (see :func:`train`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from core import logger
from core.config import at_least, positive, require, within
from core.loop import EPISODE_METRIC_SUM, greedy_returns
from core.runner import StopOnSignal
from envs import registry
from envs.api import Environment, batch_reset, batch_step
from world_models.conv import Conv
from experiments import cli

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """PPO settings (defaults: CartPole-sized; ``PRESETS['minatar']`` for the MinAtar games).

    Attributes:
      num_envs, num_steps: environments per seed and vectorised steps per iteration.
      epochs, minibatches: passes over each iteration's batch and minibatches per pass.
      learning_rate, anneal_lr, max_grad_norm: Adam step (linearly decayed to 0 over the run
        when ``anneal_lr``) and global-norm clip.
      gamma, gae_lambda: discount and GAE lambda.
      clip_eps, entropy_coef, value_coef: PPO ratio clip, entropy bonus, value-loss weight.
      hidden, layers: MLP width and depth (torso of both heads).
      conv_channels: channels of the 3x3 convolution for image observations.
    """

    num_envs: int = 4
    num_steps: int = 128
    epochs: int = 4
    minibatches: int = 4
    learning_rate: float = 2.5e-4
    anneal_lr: bool = True
    max_grad_norm: float = 0.5
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_eps: float = 0.2
    entropy_coef: float = 0.01
    value_coef: float = 0.5
    hidden: int = 64
    layers: int = 2
    conv_channels: int = 16

    def __post_init__(self):
        require(self, [
            *at_least(self, ("num_envs", "num_steps", "epochs", "minibatches", "hidden",
                             "layers", "conv_channels"), 1),
            ("minibatches", (self.num_envs * self.num_steps) % self.minibatches == 0,
             f"a divisor of num_envs x num_steps = {self.num_envs * self.num_steps}"),
            *within(self, ("gamma", "gae_lambda"), 0.0, 1.0),
            *positive(self, ("learning_rate", "clip_eps")),
            *at_least(self, ("max_grad_norm", "entropy_coef", "value_coef"), 0),
        ])

    @property
    def batch_steps(self) -> int:
        """Environment steps per iteration (per seed)."""
        return self.num_envs * self.num_steps


PRESETS: Dict[str, PPOConfig] = {
    "default": PPOConfig(),
    "minatar": PPOConfig(num_envs=64, num_steps=128, epochs=4, minibatches=8,
                         learning_rate=5e-4, hidden=128, layers=1),
    "tiny": PPOConfig(num_envs=2, num_steps=16, epochs=1, minibatches=2, hidden=16, layers=1,
                      conv_channels=4),
    # Craftax's PPO baseline settings (1,024 environments x 64 steps, 4 epochs of 8
    # minibatches, learning rate 2e-4, GAE lambda 0.8, gradient clip 1.0), three tanh layers of
    # 512 per head; sized for an accelerator (``--set num_envs=64`` on a CPU).
    "craftax": PPOConfig(num_envs=1024, num_steps=64, epochs=4, minibatches=8,
                         learning_rate=2e-4, gae_lambda=0.8, max_grad_norm=1.0, hidden=512,
                         layers=3),
}


def preset_for(env_id: str) -> str:
    if env_id.startswith("craftax/"):
        return "craftax"
    return "minatar" if env_id.endswith("-MinAtar") else "default"


class ActorCritic(nn.Module):
    """``obs -> (logits [A], value)``; separate torsos for the two heads."""

    num_actions: int
    hidden: int
    layers: int
    conv_channels: int

    @nn.compact
    def __call__(self, obs):
        image = obs.ndim == 3

        def torso(x, name):
            act = jax.nn.relu if image else jnp.tanh
            if image:
                x = act(Conv(self.conv_channels, (3, 3), name=f"{name}_conv")(x)).reshape(-1)
            else:
                x = x.reshape(-1)  # vectors, and [H, W] grids such as Catch's
            for i in range(self.layers):
                x = act(nn.Dense(self.hidden, kernel_init=nn.initializers.orthogonal(np.sqrt(2)),
                                 name=f"{name}_{i}")(x))
            return x

        logits = nn.Dense(self.num_actions, kernel_init=nn.initializers.orthogonal(0.01),
                          name="policy")(torso(obs, "pi"))
        value = nn.Dense(1, kernel_init=nn.initializers.orthogonal(1.0),
                         name="value")(torso(obs, "v"))[0]
        return logits, value


def gae(rewards: Array, values: Array, next_values: Array, terminated: Array, done: Array,
        gamma: float, lambda_: float) -> Array:
    """GAE(lambda) advantages over time (axis 0) of ``[T, ...]`` arrays.

    ``delta_t = r_t + gamma (1 - terminated_t) V(next_obs_t) - V(obs_t)`` and
    ``A_t = delta_t + gamma lambda (1 - done_t) A_{t+1}``: a truncation bootstraps from the
    true successor but, like a termination, cuts the trace (the next row is a new episode).
    """
    deltas = rewards + gamma * (1.0 - terminated) * next_values - values

    def back(adv, x):
        delta, d = x
        adv = delta + gamma * lambda_ * (1.0 - d) * adv
        return adv, adv

    _, adv = jax.lax.scan(back, jnp.zeros_like(deltas[0]), (deltas, done), reverse=True)
    return adv


class PPO:
    """The pure functions of PPO for one environment (one seed; callers vmap over seeds)."""

    def __init__(self, cfg: PPOConfig, env: Environment, total_iterations: int):
        if not env.spec.discrete:
            raise ValueError(f"experiments.ppo handles discrete actions; {env.spec.env_id} is "
                             "continuous: use experiments.baselines (brax.training's PPO)")
        self.cfg, self.env = cfg, env
        self.net = ActorCritic(env.spec.num_actions, cfg.hidden, cfg.layers, cfg.conv_channels)
        updates = max(1, total_iterations) * cfg.epochs * cfg.minibatches
        lr = (optax.linear_schedule(cfg.learning_rate, 0.0, updates) if cfg.anneal_lr
              else cfg.learning_rate)
        self.opt = optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm),
                               optax.adam(lr, eps=1e-5))

    def init(self, key: Array) -> Dict[str, Any]:
        net_key, env_key, run_key = jax.random.split(key, 3)
        params = self.net.init(net_key, jnp.zeros(self.env.spec.obs_shape, jnp.float32))
        return {"params": params, "opt": self.opt.init(params),
                "env": batch_reset(self.env, env_key, self.cfg.num_envs), "key": run_key}

    def apply(self, params, obs):
        return jax.vmap(lambda o: self.net.apply(params, o))(obs)

    def act(self, params, obs, is_first, carry, key, explore: bool, *, legal_action_mask=None):
        """:class:`core.types.Agent`'s ``act`` signature (stateless: the carry is unused);
        illegal actions get no probability where the task has a legal-action mask."""
        del is_first
        logits, _ = self.apply(params, obs)
        if legal_action_mask is not None:
            logits = jnp.where(legal_action_mask, logits, -jnp.inf)
        if explore:
            action = jax.random.categorical(key, logits)
        else:
            action = jnp.argmax(logits, -1)
        return action.astype(jnp.int32), carry, {}

    def loss(self, params, batch):
        cfg = self.cfg
        logits, values = self.apply(params, batch["obs"])
        logp_all = jax.nn.log_softmax(logits)
        logp = jnp.take_along_axis(logp_all, batch["action"][:, None], -1)[:, 0]
        ratio = jnp.exp(logp - batch["logp"])
        adv = batch["adv"]
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        pg = -jnp.minimum(ratio * adv,
                          jnp.clip(ratio, 1 - cfg.clip_eps, 1 + cfg.clip_eps) * adv).mean()
        v_clipped = batch["value"] + jnp.clip(values - batch["value"], -cfg.clip_eps,
                                              cfg.clip_eps)
        v_loss = 0.5 * jnp.maximum(jnp.square(values - batch["target"]),
                                   jnp.square(v_clipped - batch["target"])).mean()
        entropy = -(jnp.exp(logp_all) * logp_all).sum(-1).mean()
        total = pg + cfg.value_coef * v_loss - cfg.entropy_coef * entropy
        return total, {"policy_loss": pg, "value_loss": v_loss, "entropy": entropy,
                       "approx_kl": ((ratio - 1) - jnp.log(ratio)).mean()}

    def iteration(self, state: Dict[str, Any], _) -> Tuple[Dict[str, Any], Dict[str, Array]]:
        cfg = self.cfg

        def step(c, _):
            env_state, key = c
            key, act_key, env_key = jax.random.split(key, 3)
            obs = env_state.obs
            logits, value = self.apply(state["params"], obs)
            action = jax.random.categorical(act_key, logits).astype(jnp.int32)
            logp = jnp.take_along_axis(jax.nn.log_softmax(logits), action[:, None], -1)[:, 0]
            env_state, ts = batch_step(self.env, env_state, action, env_key)
            row = {"obs": obs, "action": action, "logp": logp, "value": value,
                   "reward": ts.reward, "next_obs": ts.next_obs,
                   "terminated": ts.terminated.astype(jnp.float32),
                   "done": ts.done.astype(jnp.float32),
                   "episode_return": ts.episode_return, "episode_metrics": ts.episode_metrics}
            return (env_state, key), row

        key, roll_key, perm_key = jax.random.split(state["key"], 3)
        (env_state, _), rows = jax.lax.scan(step, (state["env"], roll_key), None,
                                            length=cfg.num_steps)
        _, next_values = jax.vmap(lambda o: self.apply(state["params"], o))(rows["next_obs"])
        adv = gae(rows["reward"], rows["value"], next_values, rows["terminated"], rows["done"],
                  cfg.gamma, cfg.gae_lambda)
        flat = {k: rows[k].reshape((-1,) + rows[k].shape[2:])
                for k in ("obs", "action", "logp", "value")}
        flat["adv"] = adv.reshape(-1)
        flat["target"] = flat["adv"] + flat["value"]

        def epoch(c, k):
            params, opt = c
            perm = jax.random.permutation(k, cfg.batch_steps)
            shuffled = jax.tree_util.tree_map(
                lambda x: x[perm].reshape((cfg.minibatches, -1) + x.shape[1:]), flat)

            def minibatch(c, batch):
                params, opt = c
                grad, metrics = jax.grad(self.loss, has_aux=True)(params, batch)
                updates, opt = self.opt.update(grad, opt, params)
                return (optax.apply_updates(params, updates), opt), metrics

            return jax.lax.scan(minibatch, (params, opt), shuffled)

        (params, opt), metrics = jax.lax.scan(epoch, (state["params"], state["opt"]),
                                              jax.random.split(perm_key, cfg.epochs))
        done = rows["done"]
        out = jax.tree_util.tree_map(jnp.mean, metrics)
        out["episodes"] = done.sum()
        out["episode_return_sum"] = (rows["episode_return"] * done).sum()
        for name, value in rows["episode_metrics"].items():  # craftax's achievements
            out[EPISODE_METRIC_SUM + name] = (value * done).sum()
        new = {"params": params, "opt": opt, "env": env_state, "key": key}
        return new, out


@functools.lru_cache(maxsize=8)
def _programs(env_id: str, factory, cfg: PPOConfig, iterations: int, eval_episodes: int):
    """The jitted init, chunk of iterations and evaluation of one configuration.

    Cached, so that further runs of the same configuration in one process (another ``seed``
    with the same number of seeds, a resumed or repeated run) reuse the compiled programs.
    ``factory`` is the id's registered constructor (None for a built-in id), so that
    re-registering an id with another constructor builds anew (one constructor object that
    builds something else on a later call is not detected).
    """
    del factory  # only part of the cache key
    env = registry.make(env_id)
    ppo = PPO(cfg, env, iterations)
    init = jax.jit(jax.vmap(ppo.init))

    @functools.partial(jax.jit, static_argnums=1)
    def run_chunk(state, length):
        return jax.vmap(lambda s: jax.lax.scan(ppo.iteration, s, None, length=length))(state)

    @jax.jit
    def evaluate(state, key):
        seeds = jax.tree_util.tree_leaves(state["params"])[0].shape[0]
        return jax.vmap(lambda p, k: greedy_returns(env, ppo.act, lambda n: (), p,
                                                    eval_episodes, k)["eval_return_mean"]
                        )(state["params"], jax.random.split(key, seeds))

    return init, run_chunk, evaluate


def train(env_id: str, *, steps: int, seeds: int = 1, seed: int = 0, eval_every: int = 0,
          eval_episodes: int = 10, out: Optional[str] = None, preset: Optional[str] = None,
          max_seconds: Optional[float] = None, fresh: bool = False,
          **overrides) -> List[Dict[str, Any]]:
    """Trains ``seeds`` PPO runs together; returns per-seed curves.

    Each curve is ``{"env_steps", "eval_return", "wall_time", "seed"}`` with an evaluation at
    step 0, then every ``eval_every`` steps (rounded up to whole iterations; 0: ten
    evaluations over the budget) and at the end. The run takes ``steps // (num_envs *
    num_steps)`` iterations (at least one), so it never exceeds ``steps`` unless ``steps`` is
    below one iteration. ``eval_episodes=0``: no evaluation (the curves stay empty;
    ``metrics.jsonl`` has the training episodes). ``max_seconds``: stop after the first chunk
    that ends past this many seconds of this call.

    ``out``: write ``config.json``, ``metrics.jsonl`` and checkpoints there (at most one a
    minute, and at the end or stop). A rerun with the same ``out`` resumes from the newest
    checkpoint, as :mod:`core.runner` does, and continues exactly as the uninterrupted run would
    have (a finished run just returns its curves); SIGTERM / SIGINT checkpoint at the end of the
    running chunk and exit the process with status 128 + the signal's number, as
    ``experiments.train`` does. A folder with another configuration is refused, and ``fresh``
    (or an earlier PPO run without a checkpoint) moves the old one to ``<out>.<time>`` first:
    nothing is overwritten; a folder holding anything else is refused.
    """
    if eval_episodes < 0:
        raise ValueError(f"eval_episodes must be >= 0 (0: no evaluation), got {eval_episodes}")
    for name, value, low in (("steps", steps, 1), ("seeds", seeds, 1),
                             ("eval_every", eval_every, 0), ("max_seconds", max_seconds or 0, 0)):
        if value < low:
            raise ValueError(f"{name} (--{name.replace('_', '-')}) must be >= {low}, got {value}")
    cfg = dataclasses.replace(PRESETS[preset or preset_for(env_id)], **overrides)
    iterations = max(1, int(steps) // cfg.batch_steps)
    eval_every = eval_every or max(1, steps // 10)
    chunk = max(1, min(iterations, -(-int(eval_every) // cfg.batch_steps)))
    program_key = (env_id, registry.factory(env_id), cfg, iterations, eval_episodes)
    try:
        hash(program_key)
    except TypeError:  # an override that cannot be hashed (an array): compile for this call
        init, run_chunk, evaluate = _programs.__wrapped__(*program_key)
    else:
        init, run_chunk, evaluate = _programs(*program_key)
    keys = jax.random.split(jax.random.PRNGKey(seed), seeds)
    record = {"env": env_id, "steps": steps, "seeds": seeds, "seed": seed,
              "preset": preset or preset_for(env_id), "eval_every": int(eval_every),
              "eval_episodes": eval_episodes, **dataclasses.asdict(cfg)}
    run = _RunDir(out, record, fresh) if out else None
    try:
        carry = {"state": None, "eval_key": jax.random.PRNGKey(seed + 10_000)}
        meta = run.restore(carry, lambda: init(keys)) if run else None
        carry["state"] = carry["state"] if meta else init(keys)
        done_iterations = meta["iterations"] if meta else 0
        start = time.time() - (meta["wall_time"] if meta else 0.0)  # of the logged wall_time
        call_start = time.time()  # max_seconds bounds one call, as in core.runner
        curves = [{"env_steps": [], "eval_return": [], "wall_time": [], "seed": seed + i}
                  for i in range(seeds)]
        for line in run.lines() if meta else []:  # the resumed run's curves so far
            if "eval_return_per_seed" in line:
                for c, value in zip(curves, line["eval_return_per_seed"]):
                    c["env_steps"].append(line["env_steps"])
                    c["eval_return"].append(value)
                    c["wall_time"].append(line["wall_time"])

        def log(metrics):
            line = {"env_steps": done_iterations * cfg.batch_steps}
            if eval_episodes:
                carry["eval_key"], k = jax.random.split(carry["eval_key"])
                returns = np.asarray(evaluate(carry["state"], k))
                line.update(eval_return_per_seed=returns.tolist(),
                            eval_return_mean=float(returns.mean()))
            line["wall_time"] = time.time() - start
            if done_iterations:
                line.update(_training_record(metrics))
            if eval_episodes:
                for i, c in enumerate(curves):
                    c["env_steps"].append(line["env_steps"])
                    c["eval_return"].append(float(returns[i]))
                    c["wall_time"].append(line["wall_time"])
                shown = f"eval return per seed {np.round(returns, 1).tolist()}"
            else:
                shown = f"training return {line.get('episode_return_mean', float('nan')):.2f}"
            print(f"[ppo] {env_id}: {line['env_steps']} steps, {shown} "
                  f"({line['wall_time']:.0f} s)", flush=True)
            if run:
                run.log(line)

        if not meta:
            log({})
        elif done_iterations >= iterations:
            print(f"[ppo] the run in {out} is complete ({done_iterations * cfg.batch_steps} "
                  f"steps); its curves are in {os.path.join(out, 'metrics.jsonl')}", flush=True)
        stop = StopOnSignal("[ppo]") if run else contextlib.nullcontext()
        with stop:
            while done_iterations < iterations:
                length = min(chunk, iterations - done_iterations)  # a shorter last one if needed
                carry["state"], metrics = run_chunk(carry["state"], length)
                done_iterations += length
                log(metrics)
                late = max_seconds is not None and time.time() - call_start >= max_seconds
                signalled = run is not None and stop.signum is not None
                last = done_iterations >= iterations or late or signalled
                if run:
                    run.save(done_iterations * cfg.batch_steps, carry,
                             {"iterations": done_iterations, "wall_time": time.time() - start},
                             force=last)
                again = "; rerun the same command to go on" if run else ""
                if signalled and done_iterations < iterations:
                    print(f"[ppo] stopped by {stop.name} at {done_iterations * cfg.batch_steps} "
                          f"steps{again}", flush=True)
                    raise SystemExit(128 + stop.signum)  # a stopped process, not a finished run
                if late and done_iterations < iterations:
                    print(f"[ppo] --max-seconds {max_seconds:g} reached at "
                          f"{done_iterations * cfg.batch_steps} of {iterations * cfg.batch_steps}"
                          f" steps{again}", flush=True)
                if last:
                    break
    finally:
        if run:
            run.close()
    return curves


class _RunDir:
    """``out`` of a PPO run: its writer lock, config, metric lines and checkpoints."""

    SAVE_EVERY_S = 60.0

    def __init__(self, out: str, record: Dict[str, Any], fresh: bool):
        from core import checkpoint, rundir
        if os.path.exists(out) and not os.path.isdir(out):
            raise cli.UsageError(f"--out {out} is a file; pass a directory path")
        if os.path.isdir(out) and os.listdir(out):
            found = rundir.read_config(out)
            names = set(os.listdir(out)) - {rundir.LOCK_FILE}
            ours = not names or (found is not None and "eval_every" in found
                                 and "env" in found) or bool(names & {"metrics.jsonl",
                                                                       "checkpoints"})
            if not ours:
                raise cli.UsageError(f"--out {out} holds files that are not a PPO run's; pass a "
                                     f"new or empty folder")
            resumable = found is not None and os.path.isdir(os.path.join(out, "checkpoints"))
            if resumable:
                probe = checkpoint.Checkpointer(out)
                resumable = probe.latest_step() is not None
                probe.close()
            if fresh or not resumable:
                target = rundir.aside_path(out)
                try:
                    with rundir.WriterLock(out):  # never move a folder another run is writing
                        os.rename(out, target)
                except rundir.RunInUseError as err:
                    raise cli.UsageError(str(err).replace("--logdir", "--out")) from None
                why = "--fresh" if fresh else "it holds no checkpoint to resume from"
                print(f"[ppo] moved the earlier run in {out} to {target} ({why})", flush=True)
            else:
                changed = [(k, found.get(k, "<absent>"), v) for k, v in record.items()
                           if json.loads(json.dumps(found.get(k, "<absent>")))
                           != json.loads(json.dumps(v))]
                if changed:
                    listed = "; ".join(f"{k}: {json.dumps(a)} -> {json.dumps(b)}"
                                       for k, a, b in changed)
                    raise cli.UsageError(
                        f"{out} holds a PPO run with another configuration ({listed}); pass a "
                        f"new --out to keep it, or --fresh to move it to "
                        f"{out.rstrip(os.sep)}.<time> and start over")
        self.out, self.record = out, record
        try:
            self.lock = rundir.WriterLock(out).acquire()
        except rundir.RunInUseError as err:
            raise cli.UsageError(str(err).replace("--logdir", "--out")) from None
        try:
            self.checkpointer = checkpoint.Checkpointer(out)
        except BaseException:
            self.lock.release()
            raise
        self.last_save = time.monotonic()

    def restore(self, carry: Dict[str, Any], init: Callable[[], Any]) -> Optional[Dict]:
        """Fills ``carry`` from the newest checkpoint and returns its meta (None: none)."""
        from core import checkpoint
        if self.checkpointer.latest_step() is None:
            with open(os.path.join(self.out, "config.json"), "w") as f:
                json.dump(self.record, f, indent=1)
            self.logger = logger.MetricsLogger(self.out, tensorboard=False)
            return None
        shapes = jax.eval_shape(lambda: {**carry, "state": init()})
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        abstract = checkpoint.abstract_like(
            shapes, jax.tree_util.tree_map(lambda _: device, shapes))
        restored, meta, step = self.checkpointer.restore_newest(
            abstract, report=lambda line: print(line.replace("[train]", "[ppo]"), flush=True))
        carry.update(restored)
        self.logger = logger.MetricsLogger(self.out, resume_env_steps=step, tensorboard=False)
        print(f"[ppo] resumed from {self.checkpointer.directory} at {step} steps", flush=True)
        return meta

    def lines(self) -> List[Dict]:
        return logger.read_metrics(self.out)

    def log(self, record: Dict) -> None:
        self.logger.log(record)

    def save(self, env_steps: int, carry: Dict, meta: Dict, force: bool) -> None:
        if force or time.monotonic() - self.last_save >= self.SAVE_EVERY_S:
            self.checkpointer.save(env_steps, carry, meta)
            self.last_save = time.monotonic()

    def close(self) -> None:
        try:
            self.checkpointer.close()
        finally:
            self.lock.release()


def _training_record(metrics: Dict[str, Any]) -> Dict[str, float]:
    """A chunk's metrics (leaves ``[seeds, chunk]``) as logged values: loss means, the means
    over the chunk's finished training episodes (all seeds pooled), and each seed's mean
    return (``episode_return_per_seed``, where every seed finished an episode)."""
    episodes = max(1.0, float(np.sum(metrics["episodes"])))
    out = {k: float(np.mean(v)) for k, v in metrics.items()
           if k not in ("episodes", "episode_return_sum") and not k.startswith(EPISODE_METRIC_SUM)}
    out["episodes"] = int(np.sum(metrics["episodes"]))
    out["episode_return_mean"] = float(np.sum(metrics["episode_return_sum"]) / episodes)
    per_seed = np.asarray(metrics["episodes"]).reshape(len(metrics["episodes"]), -1).sum(1)
    if per_seed.min() > 0:  # each seed's mean, as core.runner logs them
        sums = np.asarray(metrics["episode_return_sum"]).reshape(len(per_seed), -1).sum(1)
        out["episode_return_per_seed"] = [float(x) for x in sums / per_seed]
    if out["episodes"]:
        for k, v in metrics.items():
            if k.startswith(EPISODE_METRIC_SUM):
                out[k[len(EPISODE_METRIC_SUM):] + "_mean"] = float(np.sum(v) / episodes)
    return out


def main(argv: Optional[Sequence[str]] = None) -> List[Dict[str, Any]]:
    p = cli.ArgumentParser(prog="python -m experiments.ppo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="gymnax/CartPole-v1")
    p.add_argument("--steps", type=int, default=100_000)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=0)
    p.add_argument("--eval-episodes", type=int, default=10,
                   help="greedy episodes per evaluation (0: none, training episodes only)")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="stop after the first chunk that ends past this many seconds of "
                        "this call (the same command then goes on)")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None)
    p.add_argument("--out", default=None,
                   help="write config.json, metrics.jsonl and checkpoints here; a rerun with "
                        "the same --out resumes")
    p.add_argument("--fresh", action="store_true",
                   help="move an earlier run in --out to <out>.<time> and start over")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a PPOConfig field (repeatable)")
    args = p.parse_args(argv)
    fields = {f.name: f.type for f in dataclasses.fields(PPOConfig)}
    overrides = {}
    for item in args.set:
        name, _, value = item.partition("=")
        if name not in fields or not value:
            raise cli.UsageError(f"--set takes FIELD=VALUE with FIELD in {sorted(fields)}, "
                             f"got {item!r}")
        default = getattr(PPOConfig(), name)
        try:
            if isinstance(default, bool):
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(value)
                overrides[name] = value.lower() in ("true", "1")
            elif isinstance(default, int):
                if float(value) != int(float(value)):
                    raise ValueError(value)
                overrides[name] = int(float(value))
            else:
                overrides[name] = float(value)
        except ValueError:
            raise cli.UsageError(
                f"--set {name}: expected a {type(default).__name__}, got {value!r}") from None
    return train(args.env, steps=args.steps, seeds=args.seeds, seed=args.seed,
                 eval_every=args.eval_every, eval_episodes=args.eval_episodes, out=args.out,
                 preset=args.preset, max_seconds=args.max_seconds, fresh=args.fresh,
                 **overrides)


if __name__ == "__main__":
    cli.run(main)
