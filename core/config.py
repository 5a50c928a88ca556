"""The one range check of every config dataclass: each config lists its bounds, this checks them.

A rule is ``(field, ok, requirement)``; :func:`require` raises ``ValueError("<Config>.<field>
must be <requirement>, got <value>")`` for the first rule that fails, so every config's error
reads the same and names the field, the bound and the offending value. The helpers build the
common rules for a group of fields.
"""

from __future__ import annotations

from typing import Any, Iterable, List, Sequence, Tuple

Rule = Tuple[str, bool, str]


def require(config: Any, rules: Iterable[Rule]) -> None:
    """Checks ``rules`` in order against the dataclass instance ``config``."""
    for field, ok, requirement in rules:
        if not ok:
            raise ValueError(f"{type(config).__name__}.{field} must be {requirement}, got "
                             f"{getattr(config, field, None)!r}")


def at_least(config: Any, fields: Sequence[str], low: float) -> List[Rule]:
    """``field >= low`` for each of ``fields``."""
    return [(f, getattr(config, f) >= low, f">= {low:g}") for f in fields]


def positive(config: Any, fields: Sequence[str]) -> List[Rule]:
    """``field > 0`` for each of ``fields``."""
    return [(f, getattr(config, f) > 0, "> 0") for f in fields]


def within(config: Any, fields: Sequence[str], low: float, high: float,
           closed: str = "[]") -> List[Rule]:
    """``low <= field <= high`` with the interval's ends open or closed as ``closed`` says
    (``"[]"``, ``"[)"``, ``"(]"``, ``"()"``)."""
    out = []
    for f in fields:
        v = getattr(config, f)
        above = v >= low if closed[0] == "[" else v > low
        below = v <= high if closed[1] == "]" else v < high
        out.append((f, above and below, f"in {closed[0]}{low:g}, {high:g}{closed[1]}"))
    return out


def one_of(config: Any, field: str, options: Sequence[Any]) -> Rule:
    return (field, getattr(config, field) in options, f"one of {tuple(options)}")


def widths(config: Any, fields: Sequence[str], allow_empty: bool = False) -> List[Rule]:
    """Layer widths: a sequence of positive integers (non-empty unless ``allow_empty``)."""
    out = []
    for f in fields:
        v = tuple(getattr(config, f))
        ok = (allow_empty or len(v) > 0) and all(int(w) >= 1 for w in v)
        out.append((f, ok, "positive widths" + (" (or empty)" if allow_empty else
                                                  ", at least one")))
    return out


__all__ = ["Rule", "at_least", "one_of", "positive", "require", "widths", "within"]
