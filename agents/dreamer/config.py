"""DreamerV3 settings: one frozen config, named size presets and the 2023 / 2024 variants.

Sizes follow the official implementation (deter / hidden / classes / MLP units / CNN depth,
32 stochastic groups, 8 GRU blocks). ``variant`` (in :func:`sized`) sets the presets' values
where the 2023 paper and the 2024 revision differ:

* KL dyn / rep weights: 0.5 / 0.1 (2023), 1.0 / 0.1 (2024).
* optimizer: Adam, wm lr 1e-4, actor/critic 3e-5 (2023); AGC 0.3 -> RMS scaling (eps 1e-20) ->
  momentum 0.9 (LaProp order), lr 4e-5 with warm-up (2024).
* continuous actor gradient: dynamics backpropagation (2023); REINFORCE (2024).
* continue: target ``1 - terminal``, its mode times the discount in the returns (2023);
  ``contdisc``, target ``(1 - terminal)(1 - 1/333)`` and its probability as the discount (2024).
* discrete policy: 1% uniform mixed in (2023); a plain categorical (2024).

Both variants build the same networks (the official 2024 architecture, see
``docs/results/dreamer.md`` for what still differs from the official code).
"""

from __future__ import annotations

import dataclasses
from typing import Dict
from core.config import at_least, one_of, positive, require, within

# name: (deter, hidden, classes, units, cnn_depth)
SIZES = {
    "1m": (512, 64, 4, 64, 4),
    "12m": (2048, 256, 16, 256, 16),
    "25m": (3072, 384, 24, 384, 24),
    "50m": (4096, 512, 32, 512, 32),
    "100m": (6144, 768, 48, 768, 48),
    "200m": (8192, 1024, 64, 1024, 64),
}


@dataclasses.dataclass(frozen=True)
class DreamerConfig:
    """Settings of the DreamerV3 agent.

    Attributes:
      deter, hidden, groups, classes, blocks, norm, unimix: RSSM (see world_models.rssm).
      units, layers: width / depth of encoder, decoder, actor and critic MLPs; heads: 1 layer.
      cnn_depth: first conv depth for image observations.
      batch_size, seq_len: replayed sequences per update and their length.
      horizon: imagination steps from every posterior state.
      discount, lambda_: lambda-return settings (discount 1 - 1/333).
      kl_dyn, kl_rep, free_nats: KL balancing (loss dyn * max(free, KL_dyn) + rep * ...).
      recon_scale: weight of the reconstruction loss (the official ``loss_scales.dec``, 1).
      optimizer: 'laprop' (2024 chain) or 'adam' (2023).
      wm_lr, actor_lr, critic_lr, warmup: learning rates and linear warm-up updates.
      agc: adaptive gradient clipping (laprop); eps: RMS / Adam epsilon.
      wm_clip, ac_clip: global-norm clip for 'adam' (0: none).
      entropy: actor entropy bonus; ret_decay: EMA decay of the return percentiles.
      slow_rate, slow_reg: critic EMA rate and weight of the regulariser towards it.
      continuous_grad: 'reinforce' (2024) or 'backprop' (2023).
      repval: scale of the replay value loss (critic on replayed posteriors, bootstrapped on
        imagination returns, gradients into the world model; 2024: 0.3, 2023: none).
      contdisc: continue target ``discount (1 - terminal)`` and continue probabilities as the
        imagined discount (2024), or target ``1 - terminal`` and its mode times ``discount``.
      actor_unimix: uniform mixture of a discrete policy (2024: 0, 2023: 0.01).
      train_ratio: replayed steps per environment step (sets updates per env step).
      prefill_steps, buffer_size: random steps before learning; replay capacity (steps).
      compute_dtype: 'float32' or 'bfloat16' (the official ``jax.compute_dtype``): the dtype
        the networks compute in; parameters, optimiser states, the RSSM state, the
        distributions, norms' statistics and every loss stay float32.
      replay_context: the official ``replay_context: 1``: replay stores with every step the
        posterior of its observation (deterministic state in bfloat16, the categorical
        sample as class indices), written while acting and rewritten by every update that
        replays the step, and a training window starts from the state stored for its first
        step instead of a reset posterior of its first observation (an episode's first step
        is still reset). Each update rewrites the states of its windows' steps but the
        first. Costs ``2 deter + groups + 1`` bytes of replay per step (``4 groups`` for more
        than 256 classes). Off: every window starts from the reset state.
      obs_norm: standardise vector observations element by element, by the running mean and
        standard deviation (at least 0.01) of every replayed batch's observations, before the
        encoder and as the decoder's target (not in the official code, whose symlog-MSE
        weighs an element by its squared scale: an element that varies by 0.1 counts 1/100 of
        one that varies by 1, e.g. Craftax's inventory counts / 10 against its one-hot map).
        Evaluation decodes back to the task's scale. Vector observations only.
    """

    deter: int = 512
    hidden: int = 64
    groups: int = 32
    classes: int = 4
    blocks: int = 8
    norm: str = "rms"
    unimix: float = 0.01
    units: int = 64
    layers: int = 3
    cnn_depth: int = 4
    batch_size: int = 16
    seq_len: int = 64
    horizon: int = 15
    discount: float = 1.0 - 1.0 / 333.0
    lambda_: float = 0.95
    kl_dyn: float = 1.0
    kl_rep: float = 0.1
    free_nats: float = 1.0
    recon_scale: float = 1.0
    optimizer: str = "laprop"
    wm_lr: float = 4e-5
    actor_lr: float = 4e-5
    critic_lr: float = 4e-5
    warmup: int = 1000
    agc: float = 0.3
    eps: float = 1e-20
    wm_clip: float = 1000.0
    ac_clip: float = 100.0
    entropy: float = 3e-4
    ret_decay: float = 0.99
    slow_rate: float = 0.02
    slow_reg: float = 1.0
    continuous_grad: str = "reinforce"
    repval: float = 0.3
    contdisc: bool = True
    actor_unimix: float = 0.0
    train_ratio: float = 512.0
    prefill_steps: int = 1024
    buffer_size: int = 1_000_000
    compute_dtype: str = "float32"
    replay_context: bool = False
    obs_norm: bool = False

    def __post_init__(self):
        require(self, [
            *at_least(self, ("deter", "hidden", "groups", "classes", "blocks", "units", "layers",
                             "cnn_depth", "batch_size", "seq_len", "horizon"), 1),
            ("blocks", self.deter % self.blocks == 0, f"a divisor of deter={self.deter}"),
            one_of(self, "norm", ("rms", "layer")),
            *within(self, ("unimix", "actor_unimix"), 0.0, 1.0, "[)"),
            *within(self, ("discount",), 0.0, 1.0, "(]"),
            *within(self, ("lambda_",), 0.0, 1.0),
            *at_least(self, ("kl_dyn", "kl_rep", "free_nats", "recon_scale", "entropy", "repval",
                             "slow_reg", "warmup", "wm_clip", "ac_clip", "agc", "eps",
                             "prefill_steps"), 0),
            one_of(self, "optimizer", ("laprop", "adam")),
            *positive(self, ("wm_lr", "actor_lr", "critic_lr", "train_ratio")),
            *within(self, ("ret_decay",), 0.0, 1.0, "[)"),
            *within(self, ("slow_rate",), 0.0, 1.0, "(]"),
            one_of(self, "continuous_grad", ("reinforce", "backprop")),
            ("buffer_size", self.buffer_size >= self.seq_len, f">= seq_len={self.seq_len}"),
            one_of(self, "compute_dtype", ("float32", "bfloat16")),
        ])


_V2023 = dict(kl_dyn=0.5, kl_rep=0.1, optimizer="adam", wm_lr=1e-4, actor_lr=3e-5,
              critic_lr=3e-5, eps=1e-8, warmup=0, continuous_grad="backprop", contdisc=False,
              actor_unimix=0.01, repval=0.0)


def sized(size: str, variant: str = "2024", **overrides) -> DreamerConfig:
    """The config of a named size (``1m`` ... ``200m``) and variant ('2023' | '2024')."""
    deter, hidden, classes, units, depth = SIZES[size]
    fields = dict(deter=deter, hidden=hidden, classes=classes, units=units, cnn_depth=depth)
    if variant == "2023":
        fields.update(_V2023)
    fields.update(overrides)
    return DreamerConfig(**fields)


def cpu_sized(**overrides) -> DreamerConfig:
    """The CPU-sized configuration: a small dense GRU (deter 64, 8 x 8 latents, MLPs of one
    64-unit layer), 16 x 32 windows, Adam with large steps, train ratio 128 (one update per 4
    environment steps at 16 x 32), 114k parameters on CartPole. ``recon_scale`` 100: on
    observations of small magnitude (CartPole's have a norm of about 0.3) the official scale 1
    cannot pay for more than the free nat of posterior information and the latent state stays
    imprecise (docs/results/dreamer.md)."""
    fields = dict(
        deter=64, hidden=32, groups=8, classes=8, blocks=1, units=64, layers=1,
        batch_size=16, seq_len=32, horizon=15, optimizer="adam", wm_lr=1e-3,
        actor_lr=3e-4, critic_lr=1e-3, eps=1e-5, warmup=0, kl_dyn=0.5, kl_rep=0.1,
        recon_scale=100.0, train_ratio=128.0, prefill_steps=1024, buffer_size=100_000)
    fields.update(overrides)
    return DreamerConfig(**fields)


def _presets() -> Dict[str, DreamerConfig]:
    out: Dict[str, DreamerConfig] = {}
    # The official sizes, for accelerators (docs/results/dreamer.md has their CPU rates).
    for size in SIZES:
        out[size] = sized(size)
        out[f"{size}_2023"] = sized(size, "2023")
    # DMC proprioceptive: 1m, train ratio 1024 (the official per-domain default; accelerator).
    for task in ("cartpole_swingup", "pendulum_swingup"):
        out[task] = sized("1m", train_ratio=1024.0)
    # CPU-sized (2 shared cores): the preset of a task no preset names, and CartPole's
    # (train ratio 128; 64 reached 450 on every seed only at 50,944 steps).
    out["default"] = cpu_sized()
    out["cartpole_v1"] = cpu_sized()
    out["tiny"] = DreamerConfig(
        deter=32, hidden=16, groups=4, classes=4, blocks=2, units=16, layers=1, cnn_depth=2,
        batch_size=4, seq_len=8, horizon=4, optimizer="adam", wm_lr=1e-3, actor_lr=3e-4,
        critic_lr=3e-4, eps=1e-6, warmup=0, train_ratio=64.0, prefill_steps=64,
        buffer_size=4096)
    return out


PRESETS: Dict[str, DreamerConfig] = _presets()
