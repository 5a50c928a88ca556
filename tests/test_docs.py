"""The documentation's commands exist as written, and its Python examples run."""

import importlib
import os
import re

import pytest

from experiments import check_docs, cli

COMMANDS = check_docs.all_commands()
TRAIN = [c for c in COMMANDS if c["module"] == "experiments.train"]
OTHER = sorted({c["module"] for c in COMMANDS if c["module"] != "experiments.train"})


def _id(command):
    return f"{command['file']}:{command['line']}"


def test_the_docs_show_commands():
    files = {c["file"] for c in COMMANDS}
    assert "README.md" in files and len(TRAIN) >= 5


# Commands whose --logdir (or --out ...) is a run they write; experiments.launch runs train.
WRITERS = ("experiments.train", "experiments.ppo", "experiments.sample_efficiency",
           "experiments.demo", "experiments.launch")


def test_no_command_points_at_a_directory_the_docs_do_not_create():
    """A --logdir / --from-logs / --run read by a command is written by an earlier one."""
    made = set()
    for c in COMMANDS:
        argv = c["argv"]
        for flag in ("--logdir", "--out", "--json", "--plot"):
            if flag in argv and c["module"] in WRITERS:
                made.add(argv[argv.index(flag) + 1])
    for c in COMMANDS:
        argv = c["argv"]
        reads = []
        if c["module"] not in WRITERS and "--logdir" in argv:
            reads.append(argv[argv.index("--logdir") + 1])
        for i, item in enumerate(argv):
            if item == "--from-logs":
                reads += [d for d in argv[i + 1].partition("=")[2].split(",")]
            if item == "--run":  # plot_win_rates, craftax_report: NAME=LOGDIR
                reads.append(argv[i + 1].partition("=")[2])
        for path in reads:
            assert any(path == m or path.startswith(m.rstrip("/") + "/") for m in made), \
                f"{_id(c)} reads {path}, which no documented command writes"


@pytest.mark.parametrize("command", TRAIN, ids=[_id(c) for c in TRAIN])
def test_documented_train_command_builds(command):
    """Each flag, preset and environment id of the command exists (``--dry-run``'s build)."""
    check_docs.dry_run(command)


@pytest.mark.parametrize("module", OTHER)
def test_documented_module_answers_help(module, capsys):
    main = importlib.import_module(module).main
    with pytest.raises(SystemExit) as exit_:
        cli.run(main, ["--help"])
    assert exit_.value.code in (0, None)
    assert "usage" in capsys.readouterr().out.lower()


def _python_blocks(path):
    text = open(os.path.join(check_docs.ROOT, path)).read()
    return re.findall(r"```python\n(.*?)```", text, re.S)


@pytest.mark.parametrize("path", ["docs/extending.md", "README.md"])
def test_python_examples_run(path, tmp_path, monkeypatch):
    blocks = _python_blocks(path)
    assert blocks, f"{path} has no python example"
    monkeypatch.chdir(tmp_path)  # whatever an example writes lands here
    namespace = {"__name__": "__docs__"}
    for block in blocks:
        exec(compile(block, path, "exec"), namespace)
