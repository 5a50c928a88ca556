"""experiments.launch: the environment of each process, the first failure's status, the others
stopped, signals forwarded (child processes that are plain Python, no jax)."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from experiments import cli, launch


def _python(code):
    return [sys.executable, "-c", textwrap.dedent(code)]


def test_process_env_sets_coordinator_id_and_fake_devices():
    env = launch.process_env(1, 3, 1234, local_devices=2,
                             base={"XLA_FLAGS": "--xla_force_host_platform_device_count=8 --foo"})
    assert env["JAX_COORDINATOR_ADDRESS"] == "127.0.0.1:1234"
    assert env["JAX_NUM_PROCESSES"] == "3" and env["JAX_PROCESS_ID"] == "1"
    assert env["XLA_FLAGS"] == "--foo --xla_force_host_platform_device_count=2"
    assert env["JAX_PLATFORMS"] == "cpu"
    assert "JAX_PLATFORMS" not in launch.process_env(0, 2, 1234, base={})


def test_a_failed_process_stops_the_others_and_sets_the_status():
    commands = [_python("import time; time.sleep(60)"),
                _python("import sys, time; time.sleep(0.5); sys.exit(3)")]
    start = time.time()
    status = launch.Launcher(commands, [None, None], grace=2).run()
    assert status == 3 and time.time() - start < 20


def test_a_process_killed_by_a_signal_is_128_plus_its_number():
    commands = [_python("import os, signal, time; time.sleep(0.3); "
                        "os.kill(os.getpid(), signal.SIGKILL)"),
                _python("import time; time.sleep(60)")]
    assert launch.Launcher(commands, [None, None], grace=2).run() == 128 + signal.SIGKILL


def test_sigterm_is_forwarded_once_and_the_stop_status_kept():
    child = """
        import signal, sys, time
        got = []
        signal.signal(signal.SIGTERM, lambda *a: got.append(1))
        print("ready", flush=True)
        while not got:
            time.sleep(0.05)
        time.sleep({delay})  # saving a checkpoint; the other must not be killed meanwhile
        sys.exit(128 + signal.SIGTERM if len(got) == 1 else 99)
    """
    commands = [_python(child.format(delay=0.1)), _python(child.format(delay=1.5))]
    launcher = launch.Launcher(commands, [None, None], grace=0.2)
    timer = threading.Timer(1.5, lambda: launcher._forward(signal.SIGTERM, None))
    timer.start()
    status = launcher.run()
    timer.join()
    assert status == 128 + signal.SIGTERM


def test_usage_errors(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.run(launch.main, ["--processes", "2", "--agent", "mpc"])
    assert exit_.value.code == 2 and "training flags after --" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        cli.run(launch.main, ["--processes", "0", "--", "--agent", "mpc"])
    assert exit_.value.code == 2 and "--processes must be >= 1" in capsys.readouterr().err


def test_help_runs():
    out = subprocess.run([sys.executable, "-m", "experiments.launch", "--help"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "--local-devices" in out.stdout


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_processes_end_when_the_launcher_is_killed(tmp_path):
    """A launcher killed by SIGKILL (a test's timeout, an out-of-memory kill) takes its
    processes with it instead of leaving them training."""
    pid_file = tmp_path / "pid"
    child = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    script = (f"from experiments import launch; "
              f"launch.Launcher([{_python(child)!r}], [None]).run()")
    launcher = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.time() + 30
    while not (pid_file.exists() and pid_file.read_text()) and time.time() < deadline:
        time.sleep(0.05)
    child_pid = int(pid_file.read_text())
    launcher.kill()
    launcher.wait()
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            os.kill(child_pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(child_pid, signal.SIGKILL)
    pytest.fail("the launcher's process outlived it")
