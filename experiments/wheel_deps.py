"""Checks that a set of wheels carried to a machine without a package registry is closed under
its dependencies: ``python -m experiments.wheel_deps --image NAMES PIN [PIN ...]``.

Each ``PIN`` (``name==version``) is looked up among the distributions installed here (a
warning says where the installed version differs from the pin), and every
requirement it declares that applies on this interpreter (extras left out, environment markers
evaluated) must be another pin or a package of the target image (``--image``, names separated
by spaces or commas). Prints one line per missing requirement and exits with status 1 if any is
missing; ``scripts/gpu_suite.sh prepare`` runs it before the wheels travel.
"""

from __future__ import annotations

import argparse
import re
import sys
from importlib import metadata
from typing import Dict, Iterable, List, Tuple

from packaging.requirements import Requirement


def normalise(name: str) -> str:
    """The comparable form of a distribution name (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def missing_requirements(pins: Iterable[str], image: Iterable[str]) -> Dict[str, List[str]]:
    """``{pin: [requirement names neither pinned nor in the image]}``, read from the version
    installed here; a pin not installed here maps to
    ``["<not installed here: cannot read its requirements>"]``."""
    names = [normalise(p.split("==")[0]) for p in pins]
    have = set(names) | {normalise(n) for n in image}
    out: Dict[str, List[str]] = {}
    for name in names:
        try:
            declared = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            out[name] = ["<not installed here: cannot read its requirements>"]
            continue
        lacking = []
        for text in declared:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            if normalise(req.name) not in have:
                lacking.append(normalise(req.name))
        if lacking:
            out[name] = sorted(set(lacking))
    return out


def other_versions(pins: Iterable[str]) -> Dict[str, Tuple[str, str]]:
    """``{name: (installed here, pinned)}`` for the pins installed here at another version,
    whose requirements the check then read from that other version."""
    out = {}
    for pin in pins:
        name, _, wanted = pin.partition("==")
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        if wanted and installed != wanted:
            out[normalise(name)] = (installed, wanted)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.wheel_deps",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", required=True,
                        help="packages the target machine already has (space or comma separated)")
    parser.add_argument("pins", nargs="+", help="name==version of each carried wheel")
    args = parser.parse_args(argv)
    for name, (installed, wanted) in other_versions(args.pins).items():
        print(f"warning: {name} {installed} is installed here, {wanted} is carried; its "
              f"requirements were read from {installed}", file=sys.stderr)
    missing = missing_requirements(args.pins, re.split(r"[\s,]+", args.image.strip()))
    for name, reqs in missing.items():
        if reqs[0].startswith("<"):
            print(f"error: {name}: {reqs[0][1:-1]}; install it here (make setup) to check "
                  f"the wheels", file=sys.stderr)
        else:
            print(f"error: {name} requires {', '.join(reqs)}, neither carried nor in the "
                  f"image; add it to WHEELS in scripts/gpu_suite.sh", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
