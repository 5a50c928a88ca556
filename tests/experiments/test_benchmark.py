"""The benchmark writes the promised JSON fields with plausible values."""

import json

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
