"""A run's log directory: what it records about the run, and whether a rerun may resume it.

``config.json`` holds the run's configuration record (agent, environment and its options,
preset, run and agent configs, command line) and its provenance (library version, git commit,
jax version, device kind). Rerunning a log directory resumes the run only when the fields that
define it are unchanged (:data:`IDENTITY`); the budget and cadence (steps, intervals, devices,
progress) may change between calls.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import subprocess
from typing import Any, Dict, List, Optional, Tuple

CONFIG_FILE = "config.json"
# Fields of a config record that define a run; a dotted name reads a nested field. The preset
# is compared through the configuration it gave (agent_config), not by its name, so a run
# resumes under a preset renamed since, and refuses one whose settings changed.
IDENTITY = ("agent", "env", "env_options", "agent_config", "run.seed", "run.num_seeds",
            "run.num_envs")


LOCK_FILE = ".writer.lock"


class RunMismatchError(ValueError):
    """The log directory holds a run with another configuration."""


class RunInUseError(ValueError):
    """Another live process is writing the log directory."""


class WriterLock:
    """The one writer of a log directory: an exclusive ``flock`` on ``<logdir>/.writer.lock``.

    Two processes on one log directory would interleave their metric lines and overwrite each
    other's checkpoints; the second to start is refused with :class:`RunInUseError`, which
    names the holder. The kernel drops the lock when its process ends, however it ends, so a
    killed run leaves nothing to clean up (the file stays, unlocked). Where there is no
    ``flock`` (Windows, or a file system without locks) the lock is skipped.
    """

    def __init__(self, logdir: str):
        self.logdir = logdir
        self.path = os.path.join(logdir, LOCK_FILE)
        self._file = None

    def acquire(self) -> "WriterLock":
        try:
            import fcntl
        except ImportError:
            return self
        os.makedirs(self.logdir, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise RunInUseError(
                f"{self.logdir} is being written by another run ({holder}); wait for it to end "
                f"or stop it (SIGTERM checkpoints it), or pass another --logdir") from None
        except OSError:  # no locks on this file system
            handle.close()
            return self
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {platform.node()}\n")
        handle.flush()
        self._file = handle
        return self

    def release(self) -> None:
        if self._file is not None:
            import fcntl

            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> "WriterLock":
        return self.acquire()

    def __exit__(self, *exc) -> bool:
        self.release()
        return False


def provenance() -> Dict[str, Any]:
    """Library version, git commit, jax version, device kind and time of this process."""
    import jax

    try:
        from importlib.metadata import version
        library = version("mbrl-jax")
    except Exception:  # not installed as a distribution
        library = None
    devices = jax.devices()
    return {"library_version": library, "git_commit": _git_commit(),
            "jax_version": jax.__version__, "device_kind": devices[0].device_kind,
            "platform": devices[0].platform, "device_count": len(devices),
            "process_count": jax.process_count(), "python": platform.python_version(),
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def _git_commit() -> Optional[str]:
    """The commit of the library's checkout (with ``+dirty`` for local changes), if any."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        commit = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "") if commit else None


def read_config(logdir: str) -> Optional[Dict]:
    path = os.path.join(logdir, CONFIG_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _normalised(value: Any) -> Any:
    """The value as it reads back from JSON (tuples -> lists, objects -> strings)."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _flatten(name: str, value: Any, out: Dict[str, Any]) -> None:
    if isinstance(value, dict):  # an empty one adds nothing
        for key, item in value.items():
            _flatten(f"{name}.{key}", item, out)
    else:
        out[name] = value


def _lookup(record: Dict, dotted: str) -> Tuple[bool, Any]:
    value: Any = record
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return False, None
        value = value[part]
    return True, value


def differences(old: Dict, new: Dict) -> List[Tuple[str, Any, Any]]:
    """``(field, old value, new value)`` for each identity field that differs (a field absent
    from either record is not compared).

    ``new["defaults"]`` (optional) maps an identity field to what each of its entries did
    before it existed (e.g. ``{"agent_config": {...}}``, written by
    :func:`experiments.train.field_defaults`: the default, or the value a config class names in
    ``VALUES_BEFORE_FIELDS`` where the default changed behaviour): an entry that the old record
    lacks, because the version that wrote it did not have it yet, is no difference when the
    new value is that one.
    """
    out = []
    for name in IDENTITY:
        (has_old, a), (has_new, b) = _lookup(old, name), _lookup(new, name)
        if not (has_old and has_new):
            continue
        flat_a, flat_b, flat_default = {}, {}, {}
        _flatten(name, _normalised(a), flat_a)
        _flatten(name, _normalised(b), flat_b)
        _, default = _lookup(new.get("defaults") or {}, name)
        if default is not None:
            _flatten(name, _normalised(default), flat_default)
        for key in sorted(set(flat_a) | set(flat_b)):
            if key not in flat_a and key in flat_default and flat_default[key] == flat_b.get(key):
                continue
            if flat_a.get(key, "<absent>") != flat_b.get(key, "<absent>"):
                out.append((key, flat_a.get(key, "<absent>"), flat_b.get(key, "<absent>")))
    return out


def aside_path(logdir: str) -> str:
    """``<logdir>.<UTC time>``, made unique with a counter."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    path = f"{logdir.rstrip(os.sep)}.{stamp}"
    candidate, i = path, 1
    while os.path.exists(candidate):
        candidate, i = f"{path}-{i}", i + 1
    return candidate


def check_logdir(logdir: str, record: Optional[Dict], fresh: bool = False,
                 presets: Optional[Dict[str, Dict]] = None) -> Optional[str]:
    """Checks ``logdir`` before a run starts or resumes; returns where an old run was moved.

    A file is refused. With ``fresh`` an existing directory is moved aside to
    :func:`aside_path` (never deleted), unless another run is writing it
    (:class:`RunInUseError`). Otherwise, when the directory holds a run whose
    identity fields differ from ``record``'s, raises :class:`RunMismatchError` naming each
    field with its old and new value and the two ways forward, and the flags that resume it
    where there are some: ``--preset NAME`` where the old run's agent config is that of
    ``presets[NAME]`` (name -> agent config as a dict, e.g. the agent's presets), else its
    changed fields' flags.
    """
    if os.path.exists(logdir) and not os.path.isdir(logdir):
        raise RunMismatchError(f"--logdir {logdir} is a file, not a directory; pass a directory "
                               f"path (it is created if missing)")
    if not os.path.isdir(logdir):
        return None
    if fresh:
        target = aside_path(logdir)
        with WriterLock(logdir):  # never move a directory another run is writing
            os.rename(logdir, target)
        return target
    old = read_config(logdir)
    if old is None or record is None:
        return None
    diffs = differences(old, record)
    if diffs:
        listed = "; ".join(f"{k}: {json.dumps(a)} -> {json.dumps(b)}" for k, a, b in diffs)
        flags = _preset_flag(old, record, presets) or _resume_flags(diffs, record)
        resume = f"; it resumes with {' '.join(flags)}" if flags else ""
        raise RunMismatchError(
            f"{logdir} holds a run with another configuration ({listed}){resume}; pass a new "
            f"--logdir to keep it, or --fresh to move it to {logdir.rstrip(os.sep)}.<time> and "
            f"start over")
    return None


def _preset_flag(old: Dict, record: Dict, presets: Optional[Dict[str, Dict]]) -> List[str]:
    """``["--preset NAME"]`` where ``record``'s agent config is its own preset's (no field
    flags, which ``--preset NAME`` would not undo) and the old run is the run ``record``
    describes with the agent config of ``presets[NAME]``."""
    own = (presets or {}).get(record.get("preset"))
    if own is None or differences({"agent_config": own},
                                  {"agent_config": record.get("agent_config")}):
        return []
    for name, config in presets.items():
        if name != record.get("preset") and not differences(
                old, {**record, "agent_config": config}):
            return [f"--preset {shlex.quote(name)}"]
    return []


def _resume_flags(diffs: List[Tuple[str, Any, Any]], record: Dict) -> List[str]:
    """The flags that make this command resume the old run, or none where some difference has
    no flag named here (another agent, task or seed; a field removed since; a list or None).

    An agent config field whose value changed (a preset's new default, or another flag) is
    named at its old value; a field that the old run's version lacked, at its value before the
    field existed (``record["defaults"]``). Numbers and strings as ``--field value``, booleans
    as ``--field`` / ``--no-field``."""
    _, before = _lookup(record.get("defaults") or {}, "agent_config")
    flags = []
    for key, old, new in diffs:
        field = key.partition(".")[2]
        if not key.startswith("agent_config.") or "." in field or new == "<absent>":
            return []
        if old == "<absent>":
            if not (before and field in before):
                return []
            old = before[field]
        flag = field.replace("_", "-")
        if isinstance(old, bool):
            flags.append(f"--{flag}" if old else f"--no-{flag}")
        elif isinstance(old, (int, float, str)):
            flags.append(f"--{flag} {shlex.quote(str(old))}")
        else:
            return []
    return flags


def write_config(logdir: str, record: Dict, resumed: bool) -> None:
    """Writes ``config.json``: ``record`` with this process's provenance; on resume the first
    run's provenance is kept and this one is appended to ``resumes``."""
    os.makedirs(logdir, exist_ok=True)
    out = dict(record)
    here = provenance()
    old = read_config(logdir) if resumed else None
    if old is not None:
        out["provenance"] = old.get("provenance", here)
        out["resumes"] = list(old.get("resumes", [])) + [here]
    else:
        out["provenance"] = here
    path = os.path.join(logdir, CONFIG_FILE)
    with open(path + ".tmp", "w") as f:
        json.dump(out, f, indent=2, sort_keys=True, default=str)
    os.replace(path + ".tmp", path)


__all__ = ["CONFIG_FILE", "IDENTITY", "LOCK_FILE", "RunInUseError", "RunMismatchError",
           "WriterLock", "aside_path", "check_logdir", "differences", "provenance",
           "read_config", "write_config"]
