"""Sampled MuZero's policy loss: the visit-weighted log-likelihood of the sampled actions.

The search returns an improved policy over the K sampled actions, ``p_k`` (visit counts,
normalised; for the Gumbel search the improved policy over the samples). As in the paper
(Hubert et al., 2021, Section 4), the policy is trained towards it by maximum likelihood of
the samples weighted by it:

    l_policy = - sum_i p_i log pi(u_i | s),     pi(u | s) = N(u; mean(s), std(s)^2),

with ``u_i`` the pre-squash samples. The tanh Jacobian of the squash does not depend on the
parameters and is left out, so the loss is a log-density in pre-squash space (it can be
negative).
"""

from __future__ import annotations

import chex
import jax

from agents.muzero.targets import UnrollTargets
from world_models.muzero import gaussian_log_prob, gaussian_policy

Array = jax.Array


def sampled_policy_loss(policy_out: Array, targets: UnrollTargets, *, min_std: float) -> Array:
    """``policy_out [K+1, 2A]`` (the Gaussian head per unroll step), ``targets.policy
    [K+1, N]`` (weights over the N samples), ``targets.policy_actions [K+1, N, A]`` -> ``[K+1]``.
    """
    samples = targets.policy_actions
    chex.assert_rank([policy_out, targets.policy, samples], [2, 2, 3])
    mean, std = gaussian_policy(policy_out, min_std)
    log_pi = gaussian_log_prob(samples, mean[:, None], std[:, None])  # [K+1, N]
    return -(targets.policy * log_pi).sum(-1)
