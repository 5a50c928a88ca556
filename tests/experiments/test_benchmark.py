"""The benchmark writes the promised JSON fields with plausible values."""

import json

import pytest

from experiments import benchmark


def test_benchmark_json_fields(tmp_path):
    path = tmp_path / "bench.json"
    benchmark.main(["--agent", "random", "--env", "linear/scalar_a0.5", "--num-envs", "4",
                    "--scaling-envs", "1,8", "--scaling-seeds", "1,2", "--min-seconds", "0.05",
                    "--iterations", "2", "--json", str(path)])
    result = json.loads(path.read_text())
    for key in ("device", "env_steps_per_s", "updates_per_s", "compile_s", "peak_memory_bytes",
                "scaling"):
        assert key in result
    assert result["device"]["platform"] == "cpu"
    assert result["env_steps_per_s"] > 0 and result["peak_memory_bytes"] > 0
    assert [(r["num_envs"], r["num_seeds"]) for r in result["scaling"]] == [(1, 1), (8, 1), (4, 2)]
    assert all(r["env_steps_per_s"] > 0 for r in result["scaling"])
    assert result["complete"] is True


def test_throughput_row_reads_updates_per_second_chunk_by_chunk():
    program = benchmark.LoopProgram(train=None, init=None, keys=None, num_envs=4, num_seeds=2,
                                    env_steps=32, updates=8)
    row = benchmark.throughput_row(program, 1.5, 3.0, (2.0, 4.0))
    assert row["updates_per_s"] == pytest.approx(8 / 3.0)
    assert row["env_steps_per_s"] == pytest.approx(32 / 3.0)
    assert row["updates_per_s_readings"] == pytest.approx([4.0, 2.0])
    assert "updates_per_s_readings" not in benchmark.throughput_row(program, 1.5, 3.0)


def test_a_stopped_benchmark_keeps_the_rows_it_measured(tmp_path, monkeypatch):
    path = tmp_path / "bench.json"
    measure = benchmark.raw_env_throughput
    calls = []

    def stop_at_the_second_row(*args):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt  # what a time limit does to the run
        return measure(*args)

    monkeypatch.setattr(benchmark, "raw_env_throughput", stop_at_the_second_row)
    try:
        benchmark.main(["--agent", "random", "--env", "linear/scalar_a0.5", "--num-envs", "2",
                        "--scaling-envs", "1,8", "--scaling-seeds", "1", "--min-seconds",
                        "0.05", "--iterations", "2", "--json", str(path)])
    except KeyboardInterrupt:
        pass
    result = json.loads(path.read_text())
    assert result["complete"] is False
    assert [r["num_envs"] for r in result["scaling"]] == [1]
    assert result["scaling"][0]["env_steps_per_s"] > 0 and result["peak_memory_bytes"] > 0


def test_planner_suite_counts_flops_and_measures_the_ceiling(tmp_path):
    path = tmp_path / "planner.json"
    result = benchmark.main(["--suite", "planner", "--env", "linear/random_4x2", "--preset",
                             "tiny", "--num-envs", "1,2", "--min-seconds", "0.05",
                             "--matmul-sizes", "128", "--json", str(path)])
    assert json.loads(path.read_text())["suite"] == "planner"
    assert json.loads(path.read_text())["complete"] is True
    cfg = result["config"]
    # tiny: 4 + 2 inputs -> 32 -> 32 -> 2 * (4 + 1) outputs
    per_prediction = 2 * (6 * 32 + 32 * 32 + 32 * 10)
    assert [r["num_envs"] for r in result["runs"]] == [1, 2]
    for row in result["runs"]:
        predictions = (cfg["cem_iterations"] * cfg["population"] * cfg["num_particles"]
                       * cfg["horizon"] * row["num_envs"])
        assert row["model_predictions_per_call"] == predictions
        assert row["flops_per_call"] == predictions * per_prediction
        assert 0 < row["fraction_of_matmul_ceiling"] and row["seconds_per_action"] > 0
    assert result["matmul_flops_per_s"] == max(result["matmul_square"].values()) > 0


def test_unknown_suite_is_named():
    import pytest
    from experiments import cli
    with pytest.raises(cli.UsageError, match="unknown benchmark suite 'nope'"):
        benchmark.main(["--suite", "nope"])


@pytest.mark.slow
def test_muzero_suite_measures_acting_training_and_seed_scaling(tmp_path):
    path = tmp_path / "muzero.json"
    result = benchmark.main(["--suite", "muzero", "--preset", "tiny", "--simulations", "2",
                             "--batches", "1,3", "--num-envs", "2", "--batch-size", "12",
                             "--updates-per-iteration", "2", "--update-batch-sizes",
                             "8", "--scaling-seeds", "2", "--iterations", "1",
                             "--min-seconds", "0.01", "--json", str(path)])
    written = json.loads(path.read_text())
    assert written["suite"] == "muzero" and written["complete"] is True
    assert [(r["num_simulations"], r["num_envs"]) for r in result["acting"]] == [(2, 1), (2, 3)]
    assert all(r["searches_per_s"] > 0 and r["compile_s"] > 0 for r in result["acting"])
    assert written["config"]["batch_size"] == 12 and written["config"]["updates_per_iteration"] == 2
    assert [r["batch_size"] for r in result["training_by_batch"]] == [12, 8]  # --batch-size, 8
    assert all(r["updates_per_s"] > 0 for r in result["training_by_batch"])
    assert [r["num_seeds"] for r in result["seed_scaling"]] == [2]
    assert all(r["env_steps_per_s"] > 0 for r in result["seed_scaling"])
    assert written["peak_memory_bytes"] > 0


def test_dreamer_suite_times_a_preset_in_the_compute_dtype_asked_for(monkeypatch):
    from agents.dreamer.config import PRESETS
    from experiments import bench_dreamer, cli

    timed = []

    def throughput(agent, env, cfg, num_envs, num_seeds, iterations, min_seconds):
        timed.append(cfg.compute_dtype)
        return {"updates_per_s": 1.0, "env_steps_per_s": 1.0, "compile_s": 0.0}

    monkeypatch.setattr(bench_dreamer, "agent_throughput", throughput)
    result = bench_dreamer.main(["--compute-dtype", "bfloat16", "--no-profile", "--seeds", "1"])
    assert timed == ["bfloat16"] and result["sizes"]["1m"]["compute_dtype"] == "bfloat16"

    cfg = bench_dreamer.preset("1m", 512.0, "bfloat16")
    assert (cfg.train_ratio, cfg.compute_dtype) == (512.0, "bfloat16")
    assert cfg.deter == PRESETS["1m"].deter
    assert bench_dreamer.preset("1m", 1024.0).compute_dtype == PRESETS["1m"].compute_dtype
    with pytest.raises(cli.UsageError, match="--compute-dtype: invalid choice: 'float16'"):
        bench_dreamer.main(["--compute-dtype", "float16"])


@pytest.mark.slow
def test_dreamer_profile_parts_add_up_to_the_update():
    """The profile compiles and times three nested programs (three compiles of a Dreamer update:
    slow); the parts are their differences."""
    import dataclasses

    import envs
    from agents.dreamer.config import PRESETS
    from experiments import bench_dreamer

    cfg = dataclasses.replace(PRESETS["tiny"], batch_size=2, seq_len=4, horizon=2)
    out = bench_dreamer.profile_update(cfg, envs.make("gymnax/CartPole-v1"), min_seconds=0.0,
                                       calls=2)
    assert out["world_model_s"] > 0 and out["update_s"] > 0
    assert out["world_model_s"] + out["imagination_s"] + out["actor_critic_s"] == \
        pytest.approx(out["update_s"])
    assert out["updates_per_call"] == 2
    assert all(out[f"{name}_program_compile_s"] > 0
               for name in ("world_model", "imagination", "update"))
