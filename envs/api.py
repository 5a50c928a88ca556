"""One functional environment API for every environment family.

An adapter implements three pure functions for ONE environment (no batch axis):

    reset(key)                    -> (inner_state, obs)
    step(inner_state, action, key) -> (inner_state, obs, reward, terminated)

and a static :class:`EnvSpec`. :class:`Environment` wraps an adapter with what every
family needs and none of them agree on: a time limit (truncation, kept apart from
termination), automatic reset, and on-device episode statistics. Callers vmap
:meth:`Environment.reset` / :meth:`Environment.step` over a batch of environments
(see :func:`batch_reset` / :func:`batch_step`).

Conventions
-----------
* ``TimeStep.obs`` is the observation the agent acts on next: after an episode ends
  it is already the first observation of the next episode.
* ``TimeStep.next_obs`` is the true successor of the transition (the final
  observation when the episode ended); replay and model learning use it.
* ``terminated``: the MDP reached an absorbing state (bootstrap with 0).
  ``truncated``: the time limit cut the episode (bootstrap with V(next_obs); in a two-player
  zero-sum game ``next_obs`` is the opponent's view, so with -V(next_obs) where the mover
  changed).
* ``episode_return`` / ``episode_length`` are the statistics of the episode that
  just ended, valid where ``done`` is true (zero elsewhere).

Legal actions and players
-------------------------
Board games restrict the actions of each state and alternate two players. An adapter says so
with two optional functions of its own state, given to :class:`Environment`:

* ``legal_action_mask_fn(inner) -> [num_actions] bool``: the actions allowed next
  (``EnvSpec.has_action_mask``). Families without one allow every action: the mask is all True.
  ``TimeStep.legal_action_mask`` sits on the observation side of a step: it is the mask for
  acting on ``TimeStep.obs`` (after an episode ended, the first state of the next one), and
  :meth:`Environment.legal_action_mask` gives it for an :class:`EnvState`. An agent that ignores
  the mask keeps working: what an illegal action does is the task's rule (in pgx the mover loses
  at once).
* ``current_player_fn(inner) -> () int32``: the player to act next (``EnvSpec.num_players``
  is 2). ``TimeStep.reward`` is the reward of the player who MOVED (the player to act on the
  observation the action was taken on), and the game is zero-sum, so the other player's reward
  is its negative. ``episode_return`` is player 0's return (+1 win, -1 loss, 0 draw in the pgx
  board games), whichever player moved first. Single-player tasks report player 0 throughout.

An optional ``episode_metrics_fn(inner) -> {name: () float32}`` reads statistics of the running
episode off the adapter's state (craftax's achievements unlocked so far);
``TimeStep.episode_metrics`` holds them for the episode that just ended, valid where ``done``.

The mask and the player are read off the adapter's state rather than stored in
:class:`EnvState`, so every family's state keeps one structure (saved run states restore) and
code that steps the adapter directly (``core.rollout`` without auto-reset) sees them too.

Optimistic resets
-----------------
Automatic reset computes a fresh start at every step (selected where an episode ended), which
costs as much as the step itself or more when a reset generates a whole world (craftax).
``Environment.reset_ratio = r > 1`` lets :func:`batch_step` draw only ``M = ceil(N / r)`` fresh
starts for a batch of ``N`` environments per step: start ``j`` from the reset key of
environment ``j`` (the key :meth:`Environment.step` would reset that environment with), and the
``k``-th environment whose episode ended in this step (in batch order) takes start ``k mod M``.
Every episode still starts from a draw of the reset distribution, independent of everything
before it, and environments whose episode did not end step exactly as with
:meth:`Environment.step`. The bias: episodes that start in the same step are no longer
independent, as two of them share a start when more than ``M`` episodes end at once (at most
``r`` share one). Craftax's own baselines reset this way ("optimistic resets", ratio 16).
With ``M == N`` (``r = 1``, or a single environment) :func:`batch_step` is exactly the vmap of
:meth:`Environment.step`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

Array = jax.Array


OBS_KINDS = ("vector", "image")
# Where a discrete action acts on an image observation's [H, W] grid (EnvSpec.action_layout).
ACTION_LAYOUTS = ("cells", "columns")


@dataclasses.dataclass(frozen=True)
class EnvSpec:
    """Static description of an environment's interface.

    Attributes:
      env_id: registry id, e.g. ``"gymnax/CartPole-v1"``.
      obs_shape: shape of one observation.
      obs_dtype: dtype of observations (``float32`` vectors, ``uint8``/``float32`` images).
      obs_kind: ``"vector"`` (flattened by networks) or ``"image"`` (``[H, W, C]`` frames or
        planes); networks pick their torso by it. Default: ``"image"`` for rank-3
        observations, else ``"vector"``.
      obs_range: ``(low, high)`` bounds of every observation entry, or None when unbounded:
        ``(0, 255)`` for uint8 frames, ``(0, 1)`` for MinAtar's 0/1 planes. Image observations
        need it (encoders and reconstruction targets scale by it); uint8 images default to
        ``(0, 255)``.
      discrete: True for a discrete action space ``{0, ..., num_actions - 1}``.
      num_actions: number of discrete actions (0 when continuous).
      action_shape: shape of one action (``()`` when discrete).
      action_low / action_high: bounds of continuous actions (tuples, same shape).
      max_episode_steps: time limit applied by :class:`Environment`.
      num_players: 1, or 2 for two-player zero-sum games that alternate moves (see the
        module doc: rewards are the mover's, ``episode_return`` player 0's).
      has_action_mask: True when the task restricts the actions of each state
        (:meth:`Environment.legal_action_mask`); False means every action is always legal.
      action_layout: where each discrete action acts on an image observation's ``[H, W]``
        grid, for networks that encode an action as a board plane
        (:func:`action_footprints`): ``"cells"`` (action ``a < H * W`` places on cell
        ``(a // W, a % W)``; later actions, such as a pass, act nowhere in particular),
        ``"columns"`` (action ``a`` drops into column ``a``; ``num_actions == W``), or None
        (no spatial meaning, e.g. a joystick).
    """

    env_id: str
    obs_shape: Tuple[int, ...]
    obs_dtype: Any = np.float32
    discrete: bool = False
    num_actions: int = 0
    action_shape: Tuple[int, ...] = ()
    action_low: Optional[Tuple[float, ...]] = None
    action_high: Optional[Tuple[float, ...]] = None
    max_episode_steps: int = 1000
    obs_kind: Optional[str] = None
    obs_range: Optional[Tuple[float, float]] = None
    num_players: int = 1
    has_action_mask: bool = False
    action_layout: Optional[str] = None

    def __post_init__(self):
        where = f"EnvSpec({self.env_id!r})"
        if self.obs_kind is None:  # frozen: fill the defaults in place
            object.__setattr__(self, "obs_kind", "image" if len(self.obs_shape) == 3 else "vector")
        if (self.obs_kind == "image" and self.obs_range is None
                and np.dtype(self.obs_dtype) == np.uint8):
            object.__setattr__(self, "obs_range", (0.0, 255.0))
        if self.obs_kind not in OBS_KINDS:
            raise ValueError(f"{where}.obs_kind must be one of {OBS_KINDS}, got {self.obs_kind!r}")
        if self.obs_kind == "image" and len(self.obs_shape) != 3:
            raise ValueError(f"{where}: an image observation has shape [H, W, C], got "
                             f"{tuple(self.obs_shape)}; use obs_kind='vector' otherwise.")
        if self.obs_kind == "image" and self.obs_range is None:
            raise ValueError(f"{where}: image observations need obs_range, e.g. (0, 255) for "
                             f"uint8 frames or (0, 1) for 0/1 planes.")
        if self.obs_range is not None and not float(self.obs_range[0]) < float(self.obs_range[1]):
            raise ValueError(f"{where}.obs_range must be (low, high) with low < high, got "
                             f"{self.obs_range!r}")
        if int(self.max_episode_steps) < 1:
            raise ValueError(f"{where}.max_episode_steps must be >= 1, got "
                             f"{self.max_episode_steps!r}")
        if self.num_players not in (1, 2):
            raise ValueError(f"{where}.num_players must be 1 or 2, got {self.num_players!r}")
        if (self.num_players == 2 or self.has_action_mask) and not self.discrete:
            raise ValueError(f"{where}: two players and action masks need discrete actions "
                             f"(discrete=True, num_actions=N)")
        if self.action_layout is not None:
            if self.action_layout not in ACTION_LAYOUTS:
                raise ValueError(f"{where}.action_layout must be one of "
                                 f"{', '.join(ACTION_LAYOUTS)} or None, got "
                                 f"{self.action_layout!r}")
            if not self.discrete or self.obs_kind != "image":
                raise ValueError(f"{where}: action_layout needs discrete actions and image "
                                 f"observations [H, W, C]; set action_layout=None")
            height, width = self.obs_shape[:2]
            if self.action_layout == "cells" and self.num_actions < height * width:
                raise ValueError(f"{where}: action_layout='cells' needs an action per cell "
                                 f"(num_actions >= {height} * {width}), got {self.num_actions}")
            if self.action_layout == "columns" and self.num_actions != width:
                raise ValueError(f"{where}: action_layout='columns' needs num_actions == the "
                                 f"grid's width {width}, got {self.num_actions}")

    def scale_image(self, obs: Array) -> Array:
        """An image observation mapped from ``obs_range`` to ``[-0.5, 0.5]`` (float32)."""
        low, high = self.obs_range
        return (jnp.asarray(obs, jnp.float32) - low) / (high - low) - 0.5

    def unscale_image(self, x: Array) -> Array:
        """The inverse of :meth:`scale_image`."""
        low, high = self.obs_range
        return (jnp.asarray(x, jnp.float32) + 0.5) * (high - low) + low

    @property
    def action_dim(self) -> int:
        """Size of the flat action vector (number of actions when discrete)."""
        return self.num_actions if self.discrete else int(np.prod(self.action_shape))

    @property
    def action_dtype(self):
        return np.int32 if self.discrete else np.float32

    def sample_action(self, key: Array, legal_action_mask: Optional[Array] = None) -> Array:
        """A uniformly random action (one example), among the legal ones when a
        ``[num_actions]`` bool ``legal_action_mask`` is given (discrete actions only)."""
        if self.discrete and legal_action_mask is not None:
            logits = jnp.where(legal_action_mask, 0.0, -jnp.inf)
            return jax.random.categorical(key, logits).astype(jnp.int32)
        if self.discrete:
            return jax.random.randint(key, (), 0, self.num_actions, dtype=jnp.int32)
        low = jnp.asarray(self.action_low, jnp.float32)
        high = jnp.asarray(self.action_high, jnp.float32)
        return jax.random.uniform(key, self.action_shape, jnp.float32, low, high)

    def check_action(self, action) -> None:
        """Raises ValueError naming the expected shape when one ``action`` does not fit."""
        shape = tuple(np.shape(action))
        if shape != tuple(self.action_shape):
            kind = (f"an integer in [0, {self.num_actions})" if self.discrete
                    else f"a float array of shape {self.action_shape}")
            raise ValueError(
                f"{self.env_id}: action has shape {shape}, expected shape "
                f"{tuple(self.action_shape)} ({kind}) for one environment; batch actions with "
                f"a leading axis and use batch_step.")


@struct.dataclass
class EnvState:
    """State of one wrapped environment."""

    inner: Any  # the adapter's own state pytree
    obs: Array  # obs_shape: the observation the agent acts on next
    episode_return: Array  # (): return accumulated in the running episode
    episode_length: Array  # () int32: steps taken in the running episode


@struct.dataclass
class TimeStep:
    """What one environment step returns (one example; leading env axis when batched)."""

    obs: Array  # obs_shape: next observation to act on (reset obs after an episode ended)
    next_obs: Array  # obs_shape: true successor observation of this transition
    reward: Array  # () float32
    terminated: Array  # () bool: absorbing state reached
    truncated: Array  # () bool: time limit reached (and not terminated)
    episode_return: Array  # () float32: return of the episode that just ended, else 0
    episode_length: Array  # () int32: length of the episode that just ended, else 0
    legal_action_mask: Array  # [num_actions] bool: actions allowed on ``obs`` (all True if no mask)
    current_player: Array  # () int32: the player to act on ``obs`` (0 in single-player tasks)
    episode_metrics: Dict[str, Array]  # name -> () float32 of the episode that just ended, else 0

    @property
    def done(self) -> Array:
        return jnp.logical_or(self.terminated, self.truncated)


ResetFn = Callable[[Array], Tuple[Any, Array]]
StepFn = Callable[[Any, Array, Array], Tuple[Any, Array, Array, Array]]
RewardFn = Callable[[Array, Array, Array], Array]
InnerFn = Callable[[Any], Any]  # a function of the adapter's state


@dataclasses.dataclass(frozen=True)
class Symmetry:
    """An exact symmetry of a discrete-action MDP, for data augmentation.

    ``obs`` maps one observation to its mirror image and action ``a`` becomes
    ``action_permutation[a]``; the environment must satisfy
    ``P(obs(s') | obs(s), perm[a]) = P(s' | s, a)`` with the same reward and termination
    (e.g. CartPole under ``x -> -x``: every position, velocity and angle negated, left and right
    swapped). Agents that learn from replay may train on mirrored copies of their samples
    (``MuZeroConfig.mirror_augmentation``): domain knowledge, off by default.
    """

    obs: Callable[[Array], Array]
    action_permutation: Tuple[int, ...]

    def action(self, action: Array) -> Array:
        """The mirrored discrete action(s)."""
        return jnp.asarray(self.action_permutation, jnp.int32)[action]

    def action_values(self, x: Array) -> Array:
        """A per-action array ``[..., num_actions]`` (policy, Q) of the mirrored state."""
        inverse = np.argsort(self.action_permutation)
        return x[..., inverse]


@dataclasses.dataclass(frozen=True)
class Environment:
    """An adapter wrapped with a time limit, auto-reset and episode statistics.

    Attributes:
      spec: the static interface.
      adapter_reset / adapter_step: the adapter's pure functions (see module doc).
      reward_fn: optional known reward ``r(obs, action, next_obs)`` for one example,
        for planners that use the true reward (as in the PETS paper); None if unknown.
      termination_fn: optional known ``terminated(obs, action, next_obs) -> bool`` for one
        example (MBPO's "static" termination functions); None if unknown or never terminating.
      symmetry: optional exact mirror symmetry (:class:`Symmetry`); None if none is declared.
      legal_action_mask_fn: ``inner -> [num_actions] bool``, the actions allowed next; given
        exactly when ``spec.has_action_mask``.
      current_player_fn: ``inner -> () int32``, the player to act next; needed when
        ``spec.num_players == 2``.
      episode_metrics_fn: ``inner -> {name: () float32}``, statistics of the running episode
        reported in ``TimeStep.episode_metrics`` when it ends; None for none.
      reset_ratio: environments per fresh start in :func:`batch_step` (optimistic resets,
        module doc); 1 (default): every environment resets with its own start.
    """

    spec: EnvSpec
    adapter_reset: ResetFn
    adapter_step: StepFn
    reward_fn: Optional[RewardFn] = None
    termination_fn: Optional[RewardFn] = None
    symmetry: Optional[Symmetry] = None
    legal_action_mask_fn: Optional[InnerFn] = None
    current_player_fn: Optional[InnerFn] = None
    episode_metrics_fn: Optional[InnerFn] = None
    reset_ratio: int = 1

    def __post_init__(self):
        where = f"Environment({self.spec.env_id!r})"
        if not (isinstance(self.reset_ratio, (int, np.integer)) and self.reset_ratio >= 1):
            raise ValueError(f"{where}: reset_ratio must be an integer >= 1 (1: no optimistic "
                             f"resets), got {self.reset_ratio!r}")
        if self.spec.has_action_mask != (self.legal_action_mask_fn is not None):
            raise ValueError(f"{where}: spec.has_action_mask={self.spec.has_action_mask} but "
                             f"legal_action_mask_fn is "
                             f"{'missing' if self.spec.has_action_mask else 'given'}; give the "
                             f"function exactly when the spec declares a mask.")
        if self.spec.num_players == 2 and self.current_player_fn is None:
            raise ValueError(f"{where}: a two-player game needs current_player_fn (the player "
                             f"to act next, from the adapter's state).")

    def _mask(self, inner: Any) -> Array:
        if self.legal_action_mask_fn is None:
            return jnp.ones((self.spec.num_actions,), bool)
        return jnp.asarray(self.legal_action_mask_fn(inner), bool)

    def _player(self, inner: Any) -> Array:
        if self.current_player_fn is None:
            return jnp.zeros((), jnp.int32)
        return jnp.asarray(self.current_player_fn(inner), jnp.int32)

    def legal_action_mask(self, state: EnvState) -> Array:
        """``[num_actions]`` bool: the actions allowed on ``state.obs`` (all True without a mask;
        shape ``(0,)`` for continuous actions). One environment: vmap over a batch."""
        return self._mask(state.inner)

    def current_player(self, state: EnvState) -> Array:
        """``()`` int32: the player to act on ``state.obs`` (0 in single-player tasks)."""
        return self._player(state.inner)

    def reset(self, key: Array) -> EnvState:
        inner, obs = self.adapter_reset(key)
        return EnvState(inner=inner, obs=obs,
                        episode_return=jnp.zeros((), jnp.float32),
                        episode_length=jnp.zeros((), jnp.int32))

    def step(self, state: EnvState, action: Array, key: Array) -> Tuple[EnvState, TimeStep]:
        """Steps one environment; resets it in place when the episode ends."""
        step_key, reset_key = jax.random.split(key)
        moved = self._advance(state, action, step_key)
        reset_inner, reset_obs = self.adapter_reset(reset_key)
        return self._finish(moved, reset_inner, reset_obs)

    def _advance(self, state: EnvState, action: Array, step_key: Array) -> "_Moved":
        """The adapter's step and the episode statistics, before any reset."""
        self.spec.check_action(action)
        mover = self._player(state.inner)  # the player acting now
        inner, next_obs, reward, terminated = self.adapter_step(state.inner, action, step_key)
        reward = jnp.asarray(reward, jnp.float32)
        terminated = jnp.asarray(terminated, bool)
        length = state.episode_length + 1
        if self.spec.num_players == 2:  # player 0's return: the game is zero-sum
            ret = state.episode_return + jnp.where(mover == 0, reward, -reward)
        else:
            ret = state.episode_return + reward
        truncated = jnp.logical_and(length >= self.spec.max_episode_steps, ~terminated)
        return _Moved(inner=inner, next_obs=next_obs, reward=reward, terminated=terminated,
                      truncated=truncated, episode_return=ret, episode_length=length)

    def _finish(self, moved: "_Moved", reset_inner: Any,
                reset_obs: Array) -> Tuple[EnvState, TimeStep]:
        """The state after the step: the given fresh start where the episode ended."""
        inner, next_obs, ret, length = (moved.inner, moved.next_obs, moved.episode_return,
                                        moved.episode_length)
        done = jnp.logical_or(moved.terminated, moved.truncated)
        pick = lambda fresh, old: jnp.where(done, fresh, old)  # noqa: E731
        new_inner = jax.tree_util.tree_map(pick, reset_inner, inner)
        obs = pick(reset_obs, next_obs)
        new_state = EnvState(inner=new_inner, obs=obs,
                             episode_return=jnp.where(done, 0.0, ret),
                             episode_length=jnp.where(done, 0, length))
        metrics = {} if self.episode_metrics_fn is None else self.episode_metrics_fn(inner)
        timestep = TimeStep(obs=obs, next_obs=next_obs, reward=moved.reward,
                            terminated=moved.terminated, truncated=moved.truncated,
                            episode_return=jnp.where(done, ret, 0.0),
                            episode_length=jnp.where(done, length, 0),
                            legal_action_mask=self._mask(new_inner),
                            current_player=self._player(new_inner),
                            episode_metrics={k: jnp.where(done, jnp.asarray(v, jnp.float32), 0.0)
                                             for k, v in metrics.items()})
        return new_state, timestep


@struct.dataclass
class _Moved:
    """One environment after the adapter's step, before the reset (:meth:`Environment.step`)."""

    inner: Any  # the adapter's state after the step
    next_obs: Array  # obs_shape: the true successor
    reward: Array  # () float32
    terminated: Array  # () bool
    truncated: Array  # () bool
    episode_return: Array  # (): the running episode's return, this step included
    episode_length: Array  # () int32: its length, this step included


def batch_reset(env: Environment, key: Array, num_envs: int) -> EnvState:
    """Resets ``num_envs`` environments; every leaf gains a leading axis of that size."""
    return jax.vmap(env.reset)(jax.random.split(key, num_envs))


def batch_step(env: Environment, state: EnvState, action: Array,
               key: Array) -> Tuple[EnvState, TimeStep]:
    """Steps a batch of environments with actions of shape ``[num_envs, *action_shape]``;
    environment ``n`` steps with ``split(key, num_envs)[n]`` (:func:`batch_step_keys`)."""
    num_envs = state.episode_length.shape[0]
    expected = (num_envs,) + tuple(env.spec.action_shape)
    if tuple(np.shape(action)) != expected:
        raise ValueError(
            f"{env.spec.env_id}: batched action has shape {tuple(np.shape(action))}, expected "
            f"{expected} (num_envs={num_envs}, action shape {tuple(env.spec.action_shape)}).")
    return batch_step_keys(env, state, action, jax.random.split(key, num_envs))


def batch_step_keys(env: Environment, state: EnvState, action: Array,
                    keys: Array) -> Tuple[EnvState, TimeStep]:
    """Steps a batch of ``N`` environments, environment ``n`` with ``keys[n]``: the vmap of
    :meth:`Environment.step`, or with ``env.reset_ratio > 1`` and more than one environment
    per fresh start, the optimistic resets of the module doc (``ceil(N / reset_ratio)`` fresh
    starts per step)."""
    num_envs = keys.shape[0]
    num_starts = -(-num_envs // env.reset_ratio)
    if num_starts == num_envs:
        return jax.vmap(env.step)(state, action, keys)
    split = jax.vmap(jax.random.split)(keys)  # [N, 2] keys: (step, reset) as in Environment.step
    moved = jax.vmap(env._advance)(state, action, split[:, 0])
    fresh_inner, fresh_obs = jax.vmap(env.adapter_reset)(split[:num_starts, 1])
    done = jnp.logical_or(moved.terminated, moved.truncated)
    # the k-th environment (in batch order) whose episode ended takes fresh start k mod M
    slot = jnp.where(done, (jnp.cumsum(done) - 1) % num_starts, 0)
    take = lambda x: x[slot]  # noqa: E731
    return jax.vmap(env._finish)(moved, jax.tree_util.tree_map(take, fresh_inner),
                                 take(fresh_obs))


# For adapters of packages whose own time limit is compared in int32 (gymnax, craftax): a limit
# that is never reached, so that :class:`Environment` alone truncates.
NEVER_REACHED = 2**30


def check_single_player(spec: EnvSpec, agent: str) -> None:
    """One-line error where ``agent``, which learns one player's return, is given a two-player
    game: there each reward is the mover's, so a return summed over plies mixes the two sides."""
    if spec.num_players == 2:
        raise ValueError(f"agent {agent!r} learns one player's return and does not play "
                         f"two-player games; {spec.env_id} is one (num_players=2). Use --agent "
                         f"muzero or --agent gumbel_muzero, which learn them by self-play.")


def as_arrays(tree: Any) -> Any:
    """Every leaf as a strong-typed array (Python scalars and weak types become plain dtypes),
    so that a package's reset and step return states of one tree type."""
    return jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.asarray(x).dtype), tree)


def cast_like(tree: Any, like: Any) -> Any:
    """``tree`` with each leaf cast to the dtype of the matching leaf of ``like``."""
    return jax.tree_util.tree_map(lambda x, ref: jnp.asarray(x, ref.dtype), tree, like)


def action_footprints(layout: Optional[str], num_actions: int, height: int,
                      width: int) -> np.ndarray:
    """``[num_actions, height, width]`` float32: where each action acts on the grid under an
    :attr:`EnvSpec.action_layout` (1 on its cell or column, 0 elsewhere; all 0 for an action
    with no cell, such as a pass, and for every action when ``layout`` is None)."""
    planes = np.zeros((num_actions, height, width), np.float32)
    if layout == "cells":
        cells = min(num_actions, height * width)
        planes.reshape(num_actions, -1)[np.arange(cells), np.arange(cells)] = 1.0
    elif layout == "columns":
        planes[np.arange(num_actions), :, np.arange(num_actions)] = 1.0
    elif layout is not None:
        raise ValueError(f"unknown action layout {layout!r}; known: {', '.join(ACTION_LAYOUTS)}")
    return planes
