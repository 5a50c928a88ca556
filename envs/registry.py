"""String ids for every environment: ``<family>/<name>``.

Families are imported lazily, so ``linear/*`` does not pay for importing brax or MuJoCo.
Each family module exposes ``NAMES`` (a tuple of names) and ``make(name, **kwargs)``.
"""

from __future__ import annotations

import importlib
from typing import Tuple

from envs.api import Environment

FAMILIES = {
    "linear": "envs.linear",
    "gymnax": "envs.gymnax_env",
    "brax": "envs.brax_env",
    "dmc": "envs.dmc",
}


def _family_module(family: str):
    return importlib.import_module(FAMILIES[family])


def registered_ids(family: str | None = None) -> Tuple[str, ...]:
    """All known ids, or those of one family."""
    families = [family] if family else list(FAMILIES)
    return tuple(f"{fam}/{name}" for fam in families for name in _family_module(fam).NAMES)


def make(env_id: str, **kwargs) -> Environment:
    """Builds the environment ``env_id`` (e.g. ``"gymnax/CartPole-v1"``, ``"linear/scalar"``).

    Keyword arguments go to the family's constructor (e.g. ``max_episode_steps``).
    Raises ValueError listing the known ids when ``env_id`` is unknown.
    """
    family, _, name = env_id.partition("/")
    if family not in FAMILIES or not name:
        raise ValueError(
            f"Unknown environment id {env_id!r}: ids look like '<family>/<name>' with family "
            f"one of {sorted(FAMILIES)}. Known ids: {', '.join(registered_ids())}.")
    module = _family_module(family)
    if name not in module.NAMES:
        raise ValueError(
            f"Unknown environment id {env_id!r}. Known {family} ids: "
            f"{', '.join(registered_ids(family))}.")
    return module.make(name, **kwargs)
