"""One configurable multilayer perceptron (flax.linen), shared by every agent and world model.

:class:`MLP` maps ``x [..., d_in]`` to ``y [..., out_size]`` (or ``[..., hidden[-1]]`` when
``out_size`` is None, for a hidden stack whose output layer lives in the caller):

    h_0 = x,   h_{i+1} = act(norm(W_i h_i + b_i))   for i < L = len(hidden)
    y = W_L h_L + b_L

Its options are those of DreamerV3's ``MLP`` / ``Linear`` / ``Norm`` (``embodied/jax/nets.py``:
units, layers, norm 'rms', act 'silu', winit 'trunc_normal_in', outscale) and of the plainer
networks of SAC, PETS, MBPO and MuZero:

* ``hidden``: widths of the L hidden layers (depth = ``len(hidden)``; DreamerV3's ``layers``
  x ``units`` is ``(units,) * layers``).
* ``norm``: ``'none'``, ``'layer'`` (LayerNorm) or ``'rms'`` (RMSNorm) after each hidden linear
  map, with ``norm_eps``, ``norm_scale`` (learned scale) and ``norm_bias`` (learned shift,
  LayerNorm only).
* ``act``: a ``jax.nn`` function name (``'relu'``, ``'silu'``, ``'tanh'``, ...), ``'none'``, or a
  callable.
* ``bias``: biases of the hidden linear maps (DreamerV3 leaves them out before a norm); the output
  layer always has one (initialised to 0).
* ``kernel_init``: see :func:`initializer`; ``'lecun_normal'`` (flax's default) is the same
  distribution as DreamerV3's ``'trunc_normal_in'``.
* ``outscale``: the output kernel's initial values are multiplied by it (DreamerV3's
  ``outscale``); ``0`` gives a zero-initialised output layer whose first outputs are exactly 0.
* ``dtype`` / ``param_dtype``: computation and parameter dtypes (``dtype=None``: inferred from
  the inputs and parameters, as in flax).
* ``layout``: how the parameters are named; it does not change the function. ``'flat'``:
  ``Dense_i`` and ``LayerNorm_i`` / ``RMSNorm_i`` side by side; ``'norm_scope'``: each norm
  inside a :class:`Norm` scope, ``Norm_i/{LayerNorm_0 | RMSNorm_0}``; ``'layer_scope'``: each
  hidden layer its own scope ``Dense_i`` holding ``Dense_0`` and ``Norm_0/...`` (the Dreamer
  networks' checkpoints). The output layer is ``Dense_L`` in every layout.

Parameter shapes: hidden kernel ``[n_i, hidden[i]]`` (``n_0 = d_in``, ``n_i = hidden[i-1]``),
bias and norm scale/shift ``[hidden[i]]``, output kernel ``[n_L, out_size]``, bias ``[out_size]``.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
Initializer = Callable[..., Array]

NORMS = ("none", "layer", "rms")
NORM_NAMES = {"layer": "LayerNorm", "rms": "RMSNorm"}
LAYOUTS = ("flat", "norm_scope", "layer_scope")
FANS = {"in": "fan_in", "out": "fan_out", "avg": "fan_avg"}
DISTRIBUTIONS = {"trunc_normal": "truncated_normal", "normal": "normal"}


def initializer(init: Union[str, Initializer], scale: float = 1.0) -> Initializer:
    """A kernel initialiser whose samples are multiplied by ``scale``.

    ``init``: ``'lecun_normal'``, ``'zeros'``, ``'<dist>_<fan>'`` with dist ``trunc_normal``
    (normal truncated to two standard deviations and rescaled to variance ``1 / fan``) or
    ``normal`` (variance ``1 / fan``) and fan ``in``, ``out`` or ``avg``; or an initialiser.
    ``scale=0`` gives exact zeros.
    """
    if scale == 0.0 or init == "zeros":
        return nn.initializers.zeros
    if init == "lecun_normal":
        base = nn.initializers.lecun_normal()
    elif isinstance(init, str):
        dist, _, fan = init.rpartition("_")
        if dist not in DISTRIBUTIONS or fan not in FANS:
            raise ValueError(f"unknown initialiser {init!r}: use 'lecun_normal', 'zeros' or "
                             f"'<{'|'.join(DISTRIBUTIONS)}>_<{'|'.join(FANS)}>'")
        base = nn.initializers.variance_scaling(1.0, FANS[fan], DISTRIBUTIONS[dist])
    else:
        base = init
    if scale == 1.0:
        return base
    return lambda key, shape, dtype=jnp.float32: base(key, shape, dtype) * scale


def activation(act: Union[str, Callable[[Array], Array]]) -> Callable[[Array], Array]:
    """``'none'`` (identity), the name of a ``jax.nn`` function, or a callable."""
    if callable(act):
        return act
    if act == "none":
        return lambda x: x
    fn = getattr(jax.nn, act, None)
    if not callable(fn):
        raise ValueError(f"unknown activation {act!r}: use a jax.nn function name or 'none'")
    return fn


def dense(features: int, *, kernel_init: Union[str, Initializer] = "lecun_normal",
          outscale: float = 1.0, bias: bool = True, dtype: Any = None,
          param_dtype: Any = jnp.float32, name: Optional[str] = None) -> nn.Dense:
    """``nn.Dense`` with an :func:`initializer` kernel (its samples times ``outscale``)."""
    return nn.Dense(features, use_bias=bias, kernel_init=initializer(kernel_init, outscale),
                    dtype=dtype, param_dtype=param_dtype, name=name)


def norm_layer(kind: str, *, eps: float = 1e-6, scale: bool = True, bias: bool = True,
               dtype: Any = None, param_dtype: Any = jnp.float32,
               name: Optional[str] = None) -> Optional[nn.Module]:
    """The flax LayerNorm (``kind='layer'``) or RMSNorm (``'rms'``) over the last axis, or None."""
    if kind not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")
    if kind == "layer":
        return nn.LayerNorm(epsilon=eps, use_scale=scale, use_bias=bias, dtype=dtype,
                            param_dtype=param_dtype, name=name)
    if kind == "rms":
        return nn.RMSNorm(epsilon=eps, use_scale=scale, dtype=dtype, param_dtype=param_dtype,
                          name=name)
    return None


class Norm(nn.Module):
    """:func:`norm_layer` as its own scope (``LayerNorm_0`` or ``RMSNorm_0`` inside)."""

    kind: str = "rms"
    eps: float = 1e-6
    scale: bool = True
    bias: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        layer = norm_layer(self.kind, eps=self.eps, scale=self.scale, bias=self.bias,
                           dtype=self.dtype, param_dtype=self.param_dtype)
        return x if layer is None else layer(x)


class MLP(nn.Module):
    """``x [..., d_in] -> [..., out_size]``: L x (linear -> norm -> act), then linear (module doc).

    Attributes:
      hidden: hidden widths ``(n_1, ..., n_L)``.
      out_size: width of the output layer; None: no output layer.
      norm, norm_eps, norm_scale, norm_bias: normalisation after each hidden linear map.
      act: activation after each norm.
      bias: biases in the hidden linear maps.
      kernel_init: initialiser of every kernel (see :func:`initializer`).
      outscale: factor on the output kernel's initial values (0: zero-initialised output).
      dtype, param_dtype: computation and parameter dtypes.
      layout: parameter names, ``'flat'``, ``'norm_scope'`` or ``'layer_scope'``.
    """

    hidden: Sequence[int] = ()
    out_size: Optional[int] = None
    norm: str = "none"
    norm_eps: float = 1e-6
    norm_scale: bool = True
    norm_bias: bool = True
    act: Union[str, Callable[[Array], Array]] = "relu"
    bias: bool = True
    kernel_init: Union[str, Initializer] = "lecun_normal"
    outscale: float = 1.0
    dtype: Any = None
    param_dtype: Any = jnp.float32
    layout: str = "flat"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
        act = activation(self.act)
        types = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        for i, width in enumerate(self.hidden):
            if self.layout == "layer_scope":
                x = self.copy(hidden=(width,), out_size=None, layout="norm_scope",
                              name=f"Dense_{i}")(x)
                continue
            x = dense(width, kernel_init=self.kernel_init, bias=self.bias, name=f"Dense_{i}",
                      **types)(x)
            norm = dict(eps=self.norm_eps, scale=self.norm_scale, bias=self.norm_bias, **types)
            if self.layout == "norm_scope":
                x = Norm(self.norm, name=f"Norm_{i}", **norm)(x)
            elif self.norm != "none":
                x = norm_layer(self.norm, name=f"{NORM_NAMES[self.norm]}_{i}", **norm)(x)
            x = act(x)
        if self.out_size is None:
            return x
        return dense(self.out_size, kernel_init=self.kernel_init, outscale=self.outscale,
                     name=f"Dense_{len(self.hidden)}", **types)(x)
