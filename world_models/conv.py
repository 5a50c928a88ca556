"""A 2-D convolution that stays fast inside loops on XLA's CPU backend.

On the CPU backend (jax 0.11), the gradient of ``lax.conv_general_dilated`` placed inside a
``while`` loop -- which is where every update of the shared training loop runs (a
``lax.scan`` over iterations) -- is 10-40x slower than the same convolution compiled at top
level (32 channels on 10 x 10 boards, batch 192: 8 ms at top level, 329 ms per iteration in a
``scan``). Written as patches + matrix multiply ("im2col"), the same convolution takes about
12 ms per iteration in the loop. :class:`Conv` computes exactly ``nn.Conv``'s function with
``nn.Conv``'s parameters (``kernel [kh, kw, in, out]``, ``bias [out]``) and picks the
implementation at trace time: ``impl="auto"`` uses patches on the CPU backend and
``lax.conv_general_dilated`` elsewhere (cuDNN on GPUs), so checkpoints move between the two.
"""

from __future__ import annotations

from typing import Any, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
IMPLS = ("auto", "patches", "lax")


def _same_pads(size: int, kernel: int, stride: int) -> Tuple[int, int]:
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def conv_patches(x: Array, kernel: Array, strides: Tuple[int, int], padding: str) -> Array:
    """``x [..., H, W, C_in]`` convolved with ``kernel [kh, kw, C_in, C_out]`` via im2col."""
    kh, kw = kernel.shape[:2]
    sh, sw = strides
    lead = x.shape[:-3]
    x = x.reshape((-1,) + x.shape[-3:])
    if padding == "SAME":
        ph, pw = _same_pads(x.shape[1], kh, sh), _same_pads(x.shape[2], kw, sw)
        x = jnp.pad(x, ((0, 0), ph, pw, (0, 0)))
    elif padding != "VALID":
        raise ValueError(f"padding must be 'SAME' or 'VALID', got {padding!r}")
    out_h = (x.shape[1] - kh) // sh + 1
    out_w = (x.shape[2] - kw) // sw + 1
    patches = jnp.concatenate(
        [x[:, i:i + (out_h - 1) * sh + 1:sh, j:j + (out_w - 1) * sw + 1:sw]
         for i in range(kh) for j in range(kw)], axis=-1)  # [N, out_h, out_w, kh kw C_in]
    y = patches @ kernel.reshape(-1, kernel.shape[-1])
    return y.reshape(lead + y.shape[1:])


class Conv(nn.Module):
    """``nn.Conv`` for ``[..., H, W, C]`` inputs with a loop-friendly CPU path (module doc).

    Attributes:
      features, kernel_size, strides, padding ('SAME' | 'VALID'), use_bias: as ``nn.Conv``.
      impl: 'auto' (patches on CPU, lax elsewhere), 'patches' or 'lax'.
      dtype: compute dtype (None: the input's); the float32 parameters are cast to it.
    """

    features: int
    kernel_size: Tuple[int, int] = (3, 3)
    strides: Tuple[int, int] = (1, 1)
    padding: str = "SAME"
    use_bias: bool = True
    impl: str = "auto"
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        if self.impl not in IMPLS:
            raise ValueError(f"Conv.impl must be one of {IMPLS}, got {self.impl!r}")
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            tuple(self.kernel_size) + (x.shape[-1], self.features))
        if self.dtype is not None:
            x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        impl = self.impl
        if impl == "auto":
            impl = "patches" if jax.default_backend() == "cpu" else "lax"
        if impl == "patches":
            y = conv_patches(x, kernel, tuple(self.strides), self.padding)
        else:
            lead = x.shape[:-3]
            y = jax.lax.conv_general_dilated(
                x.reshape((-1,) + x.shape[-3:]), kernel, tuple(self.strides), self.padding,
                dimension_numbers=("NHWC", "HWIO", "NHWC"))
            y = y.reshape(lead + y.shape[1:])
        if self.use_bias:
            bias = self.param("bias", nn.initializers.zeros, (self.features,))
            y = y + (bias if self.dtype is None else bias.astype(self.dtype))
        return y
