"""Craftax environment throughput with and without optimistic resets:
``python -m experiments.benchmark --suite craftax [--num-envs 64,256] [--reset-ratios 1,16]``.

For each number of environments and each ``reset_ratio`` (``envs.craftax_env.make``; 1 generates
a fresh world per environment and step, ``r`` one per ``r`` environments, see
:mod:`envs.api`'s optimistic resets), the environment steps per second of a compiled scan of
batched steps with uniformly random actions, no agent and no replay
(:func:`experiments.benchmark.raw_env_throughput`), and its compile time. Rows run in the order
ratios-within-batch-sizes, so that two ratios of one batch size are timed close together on a
machine shared with other jobs. Writes one JSON object (``--json``) after every row.
"""

from __future__ import annotations

import argparse
from typing import Dict, List, Optional

from envs import craftax_env
from experiments import cli
from experiments.benchmark import _device, raw_env_throughput, write_json


def env_rows(name: str, num_envs: List[int], ratios: List[int], min_seconds: float,
             json_path: Optional[str] = None, result: Optional[Dict] = None) -> List[Dict]:
    """Rows ``{num_envs, reset_ratio, env_steps_per_s, compile_s}`` of ``craftax/<name>``."""
    rows: List[Dict] = []
    for n in num_envs:
        for ratio in ratios:
            env = craftax_env.make(name, reset_ratio=ratio)
            row = {"reset_ratio": ratio, "fresh_worlds_per_step": -(-n // ratio),
                   **raw_env_throughput(env, n, 1, min_seconds)}
            rows.append(row)
            print(f"  craftax/{name} envs={n:>5} reset_ratio={ratio:>3}: "
                  f"{row['env_steps_per_s']:>10,.0f} env steps/s  compile "
                  f"{row['compile_s']:.1f} s", flush=True)
            if result is not None:
                write_json(json_path, {**result, "rows": rows}, complete=False)
    return rows


def main(argv: Optional[List[str]] = None) -> Dict:
    p = cli.ArgumentParser(prog="python -m experiments.benchmark --suite craftax",
                           description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="Craftax-Classic-Symbolic-v1", choices=craftax_env.NAMES)
    p.add_argument("--num-envs", default="64,256")
    p.add_argument("--reset-ratios", default="1,16")
    p.add_argument("--min-seconds", type=float, default=3.0)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    cli.check_output_file(args.json, "--json")
    try:
        num_envs = [int(x) for x in args.num_envs.split(",") if x]
        ratios = [int(x) for x in args.reset_ratios.split(",") if x]
    except ValueError:
        raise cli.UsageError("--num-envs and --reset-ratios take comma-separated integers, "
                             "e.g. 64,256") from None
    if not num_envs or not ratios or min(num_envs + ratios) < 1:
        raise cli.UsageError("--num-envs and --reset-ratios need integers >= 1, e.g. 64,256")
    result: Dict = {"suite": "craftax", "env": f"craftax/{args.env}", "device": _device(),
                    "min_seconds": args.min_seconds}
    result["rows"] = env_rows(args.env, num_envs, ratios, args.min_seconds, args.json, result)
    write_json(args.json, result, complete=True)
    return result


if __name__ == "__main__":
    cli.run(main)
