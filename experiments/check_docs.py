"""Checks the commands that README.md and docs/ show: ``python -m experiments.check_docs``.

Every ``python -m MODULE ...`` line inside a ```bash fence (with ``\\`` continuations joined)
is a documented command. Each ``experiments.train`` command is built with ``--dry-run`` (so
every flag, preset and environment id it shows exists); with ``--run-cheap`` the commands on
``linear/`` and classic-control ``gymnax/`` tasks also train for a few steps into a temporary
directory, and every other module is asked for ``--help`` (so the module and its parser load).
"""

from __future__ import annotations

import glob
import os
import re
import shlex
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional

from experiments import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_FENCE = re.compile(r"```(?:bash|sh|console)\n(.*?)```", re.S)
CHEAP_FAMILIES = ("linear/",)
CHEAP_ENVS = ("gymnax/CartPole-v1", "gymnax/Pendulum-v1", "gymnax/Acrobot-v1",
              "gymnax/MountainCar-v0", "gymnax/Catch-bsuite")


def doc_files(root: str = ROOT) -> List[str]:
    return [os.path.join(root, "README.md")] + sorted(
        glob.glob(os.path.join(root, "docs", "**", "*.md"), recursive=True))


def commands(path: str) -> List[Dict]:
    """``{"file", "line", "module", "argv"}`` for each ``python -m`` command in the file's
    bash fences (environment variables before ``python`` and ``.venv/bin/`` are dropped)."""
    text = open(path).read()
    out = []
    for fence in _FENCE.finditer(text):
        start = text[:fence.start()].count("\n") + 2
        joined = re.sub(r"\\\n\s*", " ", fence.group(1))
        for offset, line in enumerate(joined.splitlines()):
            line = line.split(" #")[0].strip()
            match = re.search(r"(?:^|\s)(?:\S*/)?python3? -m (\S+)(.*)$", line)
            if not match:
                continue
            out.append({"file": os.path.relpath(path, ROOT), "line": start + offset,
                        "module": match.group(1), "argv": shlex.split(match.group(2))})
    return out


def all_commands(root: str = ROOT) -> List[Dict]:
    return [c for path in doc_files(root) for c in commands(path)]


def _value(argv: List[str], flag: str) -> Optional[str]:
    return argv[argv.index(flag) + 1] if flag in argv and argv.index(flag) + 1 < len(argv) \
        else None


def is_cheap(command: Dict) -> bool:
    env = _value(command["argv"], "--env") or ""
    return command["module"] == "experiments.train" and (
        env.startswith(CHEAP_FAMILIES) or env in CHEAP_ENVS)


def dry_run(command: Dict) -> None:
    """Builds a train command's configuration, environment and agent (no training)."""
    from experiments import train
    train.build(command["argv"])


def tiny_run(command: Dict, logdir: str) -> None:
    """Trains a cheap train command for a few hundred steps in ``logdir``."""
    from core import runner
    from experiments import train
    argv = _without(command["argv"], ("--logdir", "--steps", "--eval-every", "--log-every",
                                      "--checkpoint-every", "--max-seconds"))
    # a few hundred steps past the agent's random prefill, so that it learns and evaluates
    _, agent, run_cfg, _ = train.build(argv + ["--steps", str(1 << 30)])
    prefill = runner.prefill_env_steps(agent.schedule, run_cfg.num_envs)
    train.main(argv + ["--logdir", logdir, "--steps", str(prefill + 200), "--log-every", "100",
                       "--eval-every", "0", "--eval-episodes", "1", "--no-progress"])


def _without(argv: List[str], flags) -> List[str]:
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
            continue
        if item in flags:
            skip = True
            continue
        out.append(item)
    return out


def main(argv: Optional[List[str]] = None) -> int:
    p = cli.ArgumentParser(prog="python -m experiments.check_docs", description=__doc__)
    p.add_argument("--run-cheap", action="store_true",
                   help="also train the cheap commands briefly and load every other module")
    args = p.parse_args(argv)
    failures = 0
    for command in all_commands():
        where = f"{command['file']}:{command['line']}"
        text = f"python -m {command['module']} {shlex.join(command['argv'])}"
        try:
            if command["module"] == "experiments.train":
                if args.run_cheap and is_cheap(command):
                    with tempfile.TemporaryDirectory() as tmp:
                        tiny_run(command, os.path.join(tmp, "run"))
                else:
                    dry_run(command)
            elif args.run_cheap:
                proc = subprocess.run([sys.executable, "-m", command["module"], "--help"],
                                      cwd=ROOT, capture_output=True, text=True, timeout=300)
                if proc.returncode != 0:
                    raise RuntimeError(proc.stderr.strip().splitlines()[-1:])
            print(f"ok    {where}  {text}", flush=True)
        except (Exception, SystemExit) as err:  # report every failing command, not the first
            failures += 1
            print(f"FAIL  {where}  {text}\n      {type(err).__name__}: {err}", flush=True)
    print(f"{failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(cli.run(main))
