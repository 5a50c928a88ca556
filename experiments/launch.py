"""Start a multi-process run on this machine: ``python -m experiments.launch --processes 2 --
<train flags>``.

Starts ``--processes`` copies of ``python -m experiments.train --distributed <train flags>``
joined through a free local port (``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``,
``JAX_PROCESS_ID``), each with ``--local-devices`` fake CPU devices when given (``XLA_FLAGS=
--xla_force_host_platform_device_count``, ``JAX_PLATFORMS=cpu``). SIGINT and SIGTERM are
forwarded to every process (each saves its part of a checkpoint and stops). When a process
fails, the others are stopped (SIGTERM, then SIGKILL after ``--grace`` seconds) and the
launcher exits with the failed process's status (128 + N for a process killed by signal N):
a multi-process run cannot go on without one of its processes. It is how to try a multi-host
run before having a cluster, and how the tests run one; docs/distributed.md has the recipes
for SLURM and Cloud TPU, where the cluster starts the processes instead.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

from experiments import cli

TRAIN = [sys.executable, "-m", "experiments.train"]


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_env(process_id: int, processes: int, port: int, local_devices: int = 0,
                base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The environment of process ``process_id``: coordinator, process count and id, and
    ``local_devices`` fake CPU devices when > 0."""
    env = dict(os.environ if base is None else base)
    env.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES=str(processes),
               JAX_PROCESS_ID=str(process_id))
    if local_devices:
        flags = [f for f in env.get("XLA_FLAGS", "").split()
                 if not f.startswith("--xla_force_host_platform_device_count")]
        env["XLA_FLAGS"] = " ".join(flags + [
            f"--xla_force_host_platform_device_count={local_devices}"])
        env["JAX_PLATFORMS"] = "cpu"
    return env


def _die_with_the_launcher() -> None:
    """In a started process (Linux): SIGTERM when the launcher dies, even by SIGKILL, so that no
    training process outlives it."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except OSError:
            pass


def _status(returncode: int) -> int:
    """A child's exit status as a shell reports it (128 + N when killed by signal N)."""
    return 128 - returncode if returncode < 0 else returncode


class Launcher:
    """Starts, watches and stops the processes of one run."""

    def __init__(self, commands: Sequence[List[str]], envs: Sequence[Dict[str, str]],
                 grace: float = 10.0):
        self.commands, self.envs, self.grace = commands, envs, grace
        self.procs: List[subprocess.Popen] = []
        self.forwarded: Optional[int] = None

    def _forward(self, signum, frame):
        self.forwarded = signum
        name = signal.Signals(signum).name
        print(f"[launch] {name}: forwarding it to {len(self.procs)} processes", flush=True)
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    def _stop_rest(self) -> None:
        alive = [p for p in self.procs if p.poll() is None]
        for proc in alive:
            proc.send_signal(signal.SIGTERM)
        deadline = time.time() + self.grace
        while time.time() < deadline and any(p.poll() is None for p in alive):
            time.sleep(0.1)
        for proc in alive:
            if proc.poll() is None:
                proc.kill()
            proc.wait()

    def run(self) -> int:
        """Runs the processes to the end; returns the launcher's exit status."""
        previous = {s: signal.signal(s, self._forward) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            for command, env in zip(self.commands, self.envs):
                # A session of its own: a terminal's Ctrl-C reaches the launcher only, which
                # forwards it once (a second SIGINT would stop a process at once).
                self.procs.append(subprocess.Popen(command, env=env, start_new_session=True,
                                                   preexec_fn=_die_with_the_launcher))
            while True:
                codes = [p.poll() for p in self.procs]
                for i, code in enumerate(codes):
                    if code is None or code == 0:
                        continue
                    stopped = (self.forwarded is not None
                               and _status(code) == 128 + self.forwarded)
                    if not stopped:
                        print(f"[launch] process {i} exited with status {_status(code)}; "
                              f"stopping the others", flush=True)
                        self._stop_rest()
                        return _status(code)
                if all(code is not None for code in codes):
                    return max(_status(code) for code in codes)
                time.sleep(0.1)
        finally:
            for proc in self.procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def _parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(prog="python -m experiments.launch", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--processes", type=int, required=True, help="processes to start (>= 1)")
    p.add_argument("--local-devices", type=int, default=0,
                   help="fake CPU devices per process (0: the devices jax finds)")
    p.add_argument("--port", type=int, default=0, help="coordinator port (0: a free one)")
    p.add_argument("--grace", type=float, default=10.0,
                   help="seconds the others get to stop after one process fails")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv and not {"-h", "--help"} & set(argv):
        raise cli.UsageError("pass the training flags after --, e.g. python -m "
                             "experiments.launch --processes 2 -- --agent mpc --env "
                             "linear/scalar_a1.1")
    split = argv.index("--") if "--" in argv else len(argv)
    args = _parser().parse_args(argv[:split])
    train_args = argv[split + 1:]
    if args.processes < 1:
        raise cli.UsageError(f"--processes must be >= 1, got {args.processes}")
    if args.local_devices < 0:
        raise cli.UsageError(f"--local-devices must be >= 0, got {args.local_devices}")
    if "--distributed" not in train_args:
        train_args = ["--distributed", *train_args]
    port = args.port or free_port()
    envs = [process_env(i, args.processes, port, args.local_devices)
            for i in range(args.processes)]
    print(f"[launch] {args.processes} processes, coordinator 127.0.0.1:{port}"
          + (f", {args.local_devices} CPU devices each" if args.local_devices else ""),
          flush=True)
    status = Launcher([TRAIN + train_args] * args.processes, envs, grace=args.grace).run()
    raise SystemExit(status)


if __name__ == "__main__":
    cli.run(main)
