"""Every user mistake on the command line is one ``error:`` line on stderr and exit status 2."""

import os
import subprocess
import sys

import jax.numpy as jnp
import pytest

from experiments import cli, train

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run_error(argv, capsys):
    """Runs ``experiments.train`` as its ``__main__`` does; returns stderr after exit 2."""
    with pytest.raises(SystemExit) as exit_:
        cli.run(train.main, argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    return lines[0]


MPC = ["--agent", "mpc", "--env", "linear/scalar_a1.1"]


@pytest.mark.parametrize("argv, needle", [
    (["--agent", "sac", "--env", "gymnax/CartPole-v1"], "CartPole"),
    (["--agent", "muzero", "--env", "gymnax/Pendulum-v1"], "discrete"),
    (["--agent", "mbpo", "--env", "gymnax/Acrobot-v1"], "Use a continuous task"),
    (MPC + ["--steps", "0"], "--steps must be >= 1"),
    (MPC + ["--num-seeds", "0"], "--num-seeds must be >= 1"),
    (MPC + ["--preset", "nope"], "known presets: default, tiny"),
    (["--agent", "mpc", "--env", "linear/nope"], "Known linear ids"),
    (["--agent", "nope", "--env", "linear/scalar_a1.1"], "known agents"),
    (["--agent", "mpc"], "--env is required"),
    (MPC + ["--horizn", "3"], "did you mean --horizon"),
    (MPC + ["--horizon", "abc"], "--horizon"),
    (MPC + ["--env-option", "nokey"], "KEY=VALUE"),
    (MPC + ["--env-option", "colour=3"], "unknown option(s) ['colour']"),
    (MPC + ["--steps", "ten"], "--steps"),
    (MPC + ["--import", "no_such_module_here"], "no_such_module_here"),
])
def test_mistakes_are_one_line(argv, needle, capsys):
    assert needle in _run_error(argv, capsys)


def test_logdir_naming_a_file(tmp_path, capsys):
    path = tmp_path / "a_file"
    path.write_text("x")
    line = _run_error(MPC + ["--logdir", str(path), "--steps", "100"], capsys)
    assert "is a file, not a directory" in line


def test_debug_shows_the_traceback():
    with pytest.raises(cli.UsageError, match="--steps must be >= 1"):
        cli.run(train.main, MPC + ["--steps", "0", "--debug"])


def test_failures_inside_jax_keep_their_traceback():
    def main(argv):
        return jnp.concatenate([])  # a ValueError raised inside jax

    with pytest.raises(ValueError):
        cli.run(main, [])


def test_condense_tyro_box():
    box = ("╭─ Unrecognized options ───╮\n│ Unrecognized options: --horizn, 5 │\n"
           "│ ────────── │\n│ Perhaps you meant: │\n│     --horizon INT │\n│   (default: 15) │\n"
           "│ ───── │\n│ For full helptext, run x --help │\n╰──────╯\n")
    assert cli.condense_tyro(box) == ("Unrecognized options: --horizn, 5 "
                                      "(did you mean --horizon?)")


def test_help_agent_needs_no_env(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.run(train.main, ["--agent", "mpc", "--help-agent"])
    assert exit_.value.code in (0, None)
    assert "--horizon" in capsys.readouterr().out


def test_dry_run_builds_and_prints(capsys, tmp_path):
    logdir = tmp_path / "never_written"
    assert train.main(MPC + ["--dry-run", "--logdir", str(logdir)]) == {}
    out = capsys.readouterr().out
    assert "preset default (the default for this task)" in out
    assert "observation (1,) float32" in out and '"horizon": 15' in out
    assert not logdir.exists()


@pytest.mark.parametrize("agent, env_id, preset", [
    ("muzero", "pgx/2048", "image"),  # image planes, no preset of its own: the image recipe
    ("gumbel_muzero", "pgx/2048", "image"),
    ("muzero", "gymnax/Acrobot-v1", "default"),  # vectors
    ("muzero", "gymnax/Breakout-MinAtar", "minatar"),
    ("muzero", "pgx/connect_four", "board_games"),  # a pattern comes before the image rule
    ("stochastic_muzero", "pgx/2048", "image"),
    ("stochastic_muzero", "gymnax/CartPole-v1", "default"),
    ("stochastic_muzero", "gymnax/Breakout-MinAtar", "minatar"),
    ("dreamer", "gymnax/Breakout-MinAtar", "default"),  # an agent without these presets
])
def test_the_default_preset_follows_the_observation_kind(capsys, agent, env_id, preset):
    assert train.main(["--agent", agent, "--env", env_id, "--dry-run"]) == {}
    assert f"preset {preset} (the default for this task)" in capsys.readouterr().out


def test_what_a_task_without_a_preset_gets_is_sized_for_a_cpu():
    """No agent's ``default`` preset is an accelerator-sized one, and every accelerator-sized
    preset named exists; a CPU run of one gets the one-line note, an accelerator run none."""
    from agents import registry
    from experiments import presets
    for agent, names in presets.ACCELERATOR_PRESETS.items():
        assert "default" not in names, agent
        assert set(names) <= set(registry.agent_module(agent).PRESETS), agent
    assert presets.hardware_note("pets", "paper", "cpu").startswith("preset 'paper' of pets")
    assert presets.hardware_note("pets", "default", "cpu") is None
    assert presets.hardware_note("pets", "paper", "gpu") is None


def test_a_default_budget_runs_past_the_prefill(capsys):
    """MBPO's ``paper`` preset collects 5,000 random steps; its default budget on linear/*
    is 1,000 steps: without --steps the run learns for those 1,000 after the prefill, and an
    explicit --steps within the prefill is still refused."""
    argv = ["--agent", "mbpo", "--env", "linear/scalar_a1.1", "--preset", "paper"]
    _, _, run_cfg, _ = train.build(argv)
    assert run_cfg.steps == 6000
    assert "--steps 1000 ends before learning starts" in _run_error(argv + ["--steps", "1000"],
                                                                     capsys)


def test_the_module_exits_2_with_one_line():
    """The real entry point, as a user runs it."""
    proc = subprocess.run([sys.executable, "-m", "experiments.train", "--agent", "mpc", "--env",
                           "linear/scalar_a1.1", "--steps", "0"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: --steps must be >= 1, got 0"


@pytest.mark.parametrize("module, argv, flag", [
    ("experiments.lesson", [], "--plot"),
    ("experiments.compounding", ["--env", "linear/scalar_a1.1"], "--json"),
    ("experiments.plot_win_rates", ["--run", "missing_run"], "--out"),
    ("experiments.oracle_mpc", ["--env", "linear/scalar_a1.1"], "--out"),
    ("experiments.baselines", ["--method", "ppo", "--env", "brax/reacher", "--steps", "1"],
     "--out"),
    ("experiments.compounding", ["--env", "linear/scalar_a1.1"], "--plot"),
    ("experiments.latent_capacity", ["--env", "gymnax/CartPole-v1"], "--json"),
    ("experiments.benchmark", ["--suite", "planner"], "--json"),
    ("experiments.demo", [], "--plot"),
])
def test_an_output_file_that_cannot_be_written_is_refused_before_the_work(
        module, argv, flag, tmp_path, capsys):
    """Each command makes a missing output folder (as train makes --logdir), and answers
    one that cannot be made in one line before it computes anything."""
    (tmp_path / "a_file").write_text("")
    main = __import__(module, fromlist=["main"]).main
    with pytest.raises(SystemExit) as exit_:
        cli.run(main, argv + [flag, str(tmp_path / "a_file" / "out")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {flag} ") and "cannot make directory" in err, err


@pytest.mark.parametrize("module, argv, needle", [
    ("experiments.sample_efficiency", ["--methods", "nope"], "unknown methods"),
    ("experiments.sample_efficiency", ["--env", "gymnax/Nope-v1", "--methods", "ppo"],
     "Unknown environment id 'gymnax/Nope-v1'"),
    ("experiments.benchmark", ["--suite", "nope"], "unknown benchmark suite"),
    ("experiments.ppo", ["--steps", "x"], "invalid int value"),
])
def test_other_commands_answer_mistakes_in_one_line(module, argv, needle, capsys):
    main = __import__(module, fromlist=["main"]).main
    with pytest.raises(SystemExit) as exit_:
        cli.run(main, argv)
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("error: ") and "\n" not in err and needle in err
    assert captured.out == ""  # refused before any work is announced


def test_output_file_is_checked_before_the_work(tmp_path):
    cli.check_output_file(None, "--json")  # not given: nothing to check
    cli.check_output_file(str(tmp_path / "out.json"), "--json")
    with pytest.raises(cli.UsageError, match="--json .* is a directory"):
        cli.check_output_file(str(tmp_path), "--json")
    cli.check_output_file(str(tmp_path / "missing" / "f.png"), "--out")  # made, as --logdir is
    assert (tmp_path / "missing").is_dir()
    (tmp_path / "a_file").write_text("")
    with pytest.raises(cli.UsageError, match="--out .*: cannot make directory"):
        cli.check_output_file(str(tmp_path / "a_file" / "f.png"), "--out")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if not os.access(locked, os.W_OK):  # root writes anywhere: nothing to refuse there
        with pytest.raises(cli.UsageError, match="not writable"):
            cli.check_output_file(str(locked / "f.json"), "--json")


# One task of each kind: continuous vectors (linear, gymnax, brax, dmc), discrete vectors,
# MinAtar images, a two-player board game, 2048 (single-player, legal-action masks) and
# Craftax's symbolic observation.
_TASK_KINDS = ("linear/random_4x2", "gymnax/Pendulum-v1", "gymnax/Acrobot-v1",
               "gymnax/MountainCarContinuous-v0", "gymnax/Breakout-MinAtar", "brax/reacher",
               "dmc/finger_spin", "pgx/tic_tac_toe", "pgx/2048",
               "craftax/Craftax-Classic-Symbolic-v1")


@pytest.mark.parametrize("agent", ["mpc", "pets", "sac", "mbpo", "dreamer", "muzero",
                                   "gumbel_muzero", "sampled_muzero", "stochastic_muzero",
                                   "random"])
def test_every_agent_builds_on_every_kind_of_task_or_says_why(agent, capsys, tmp_path):
    """With only --agent and --env, every pairing either builds a run whose default budget
    gets past the random prefill, or is refused in one line that names the problem."""
    built = 0
    for env_id in _TASK_KINDS:
        argv = ["--agent", agent, "--env", env_id, "--dry-run", "--logdir", str(tmp_path / "x")]
        try:
            assert cli.run(train.main, argv) == {}
            built += 1
        except SystemExit as exit_:
            assert exit_.code == 2, (env_id, exit_.code)
            err = [line for line in capsys.readouterr().err.splitlines()
                   if line.startswith("error: ")]
            # the agent's own refusal of this kind of task (not a failure of the build)
            assert len(err) == 1 and err[0].startswith(f"error: agent '{agent}' "), (env_id, err)
    assert built >= 1, agent  # every agent runs on some kind of task
