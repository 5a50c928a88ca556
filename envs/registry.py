"""String ids for every environment: ``<family>/<name>``.

Families are imported lazily, so ``linear/*`` does not pay for importing brax or MuJoCo.
Each family module exposes ``NAMES`` (a tuple of names) and ``make(name, **kwargs)``. A user's
own environment joins with :func:`register` from the user's code, no edit of the library
needed (``docs/extending.md``).
"""

from __future__ import annotations

import importlib
import numbers
from typing import Callable, Dict, Tuple

from envs.api import Environment

FAMILIES = {
    "linear": "envs.linear",
    "gymnax": "envs.gymnax_env",
    "brax": "envs.brax_env",
    "dmc": "envs.dmc",
    "pgx": "envs.pgx_env",
    "craftax": "envs.craftax_env",
}


# Ids registered at run time by user code: id -> factory(**options) -> Environment.
_REGISTERED: Dict[str, Callable[..., Environment]] = {}


def register(env_id: str, factory: Callable[..., Environment], *,
             overwrite: bool = False) -> None:
    """Makes ``envs.make(env_id, **options)`` return ``factory(**options)``.

    ``env_id`` is ``"<family>/<name>"`` (e.g. ``"mine/PointMass-v0"``); it may not shadow a
    built-in id, and registering an id twice needs ``overwrite=True``.
    """
    family, _, name = env_id.partition("/")
    if not family or not name:
        raise ValueError(f"environment ids look like '<family>/<name>', got {env_id!r}")
    if not callable(factory):
        raise ValueError(f"register({env_id!r}, factory): factory must be callable, got "
                         f"{type(factory).__name__}")
    if family in FAMILIES and name in _family_module(family).NAMES:
        raise ValueError(f"{env_id!r} is a built-in environment; register yours under another "
                         f"id, e.g. 'mine/{name}'")
    if env_id in _REGISTERED and not overwrite:
        raise ValueError(f"{env_id!r} is registered already; pass overwrite=True to replace it")
    _REGISTERED[env_id] = factory


def factory(env_id: str) -> Callable[..., Environment] | None:
    """The constructor :func:`register` holds for ``env_id``; None when none is registered."""
    return _REGISTERED.get(env_id)


def _family_module(family: str):
    return importlib.import_module(FAMILIES[family])


def registered_ids(family: str | None = None) -> Tuple[str, ...]:
    """All known ids, or those of one family."""
    families = [family] if family else list(FAMILIES)
    built_in = tuple(f"{fam}/{name}" for fam in families if fam in FAMILIES
                     for name in _family_module(fam).NAMES)
    user = tuple(i for i in _REGISTERED if family is None or i.split("/")[0] == family)
    return built_in + user


def make(env_id: str, **kwargs) -> Environment:
    """Builds the environment ``env_id`` (e.g. ``"gymnax/CartPole-v1"``, ``"linear/scalar"``).

    Keyword arguments go to the family's constructor (e.g. ``max_episode_steps``).
    Raises ValueError listing the known ids when ``env_id`` is unknown.
    """
    if env_id in _REGISTERED:
        factory = _REGISTERED[env_id]
    else:
        family, _, name = env_id.partition("/")
        if family not in FAMILIES or not name:
            raise ValueError(
                f"Unknown environment id {env_id!r}: ids look like '<family>/<name>' with "
                f"family one of {sorted(FAMILIES)}. Known ids: {', '.join(registered_ids())}.")
        module = _family_module(family)
        if name not in module.NAMES:
            raise ValueError(
                f"Unknown environment id {env_id!r}. Known {family} ids: "
                f"{', '.join(registered_ids(family))}.")
        factory = lambda **kw: module.make(name, **kw)  # noqa: E731
    limit = kwargs.get("max_episode_steps")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, numbers.Integral)):
        raise ValueError(f"{env_id}: max_episode_steps must be a whole number >= 1 (agent steps "
                         f"per episode), got {limit!r}")
    return factory(**kwargs)
