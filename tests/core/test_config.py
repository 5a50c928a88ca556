"""The one config range check: each failing rule names the config, the field, the bound and
the value."""

import dataclasses

import pytest

from core.config import at_least, one_of, positive, require, widths, within


@dataclasses.dataclass(frozen=True)
class Example:
    steps: int = 1
    rate: float = 0.5
    mode: str = "a"
    layers: tuple = (4, 4)

    def __post_init__(self):
        require(self, [*at_least(self, ("steps",), 1), *positive(self, ("rate",)),
                       *within(self, ("rate",), 0.0, 1.0, "(]"), one_of(self, "mode", "ab"),
                       *widths(self, ("layers",))])


@pytest.mark.parametrize("kwargs, message", [
    (dict(steps=0), "Example.steps must be >= 1, got 0"),
    (dict(rate=0.0), "Example.rate must be > 0, got 0.0"),
    (dict(rate=1.5), r"Example.rate must be in \(0, 1\], got 1.5"),
    (dict(mode="c"), r"Example.mode must be one of \('a', 'b'\), got 'c'"),
    (dict(layers=()), "Example.layers must be positive widths, at least one, got ()"),
    (dict(layers=(4, 0)), r"Example.layers must be positive widths"),
])
def test_the_first_failing_rule_is_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Example(**kwargs)


def test_interval_ends():
    ex = Example()
    assert within(ex, ("rate",), 0.5, 1.0, "[)")[0][1]
    assert not within(ex, ("rate",), 0.5, 1.0, "()")[0][1]
    assert within(ex, ("rate",), 0.0, 0.5, "(]")[0][1]
    assert not within(ex, ("rate",), 0.0, 0.5, "[)")[0][1]
