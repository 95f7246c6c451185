"""The benchmark still runs: bench/run.py --quick on three cases, its JSON files well formed.

Not a measurement (the timings of a quick run on a shared machine mean nothing): a check that
the bench code keeps working as trainlab changes under it.
"""

import json
import math
import os
import subprocess
import sys

from conftest import ROOT


def positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_bench_quick_runs_and_writes_results(tmp_path, fashion_available):
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench/run.py"), "--quick", "--cases", "1,2,5", "--repeats", "1",
         "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == [
        "case1_seed_loop.json", "case2_tensordataset.json", "case5_flops.json", "table.md"]

    for name, other in (("case1_seed_loop", "reference"), ("case2_tensordataset", "tensordataset")):
        result = json.loads((out / f"{name}.json").read_text())
        assert {"case", "title", "settings", "env", "contenders", "tables", "notes", "speedup"} <= set(result)
        assert result["settings"]["quick"] is True and result["settings"]["epochs"] == 1
        for key in (other, "trainlab"):
            c = result["contenders"][key]
            assert positive(c["median_epoch_seconds"]), c
            assert 0 < c["median_test_accuracy"] <= 1, c
            assert len(c["runs"]) == 1 and len(c["runs"][0]["epoch_seconds"]) == 1
        assert positive(result["speedup"])

    flops = json.loads((out / "case5_flops.json").read_text())
    assert positive(flops["peak_gflops"]) and positive(flops["epoch_gflop"])
    for b in (64, 512, 4096):
        c = flops["contenders"][f"batch {b}"]
        assert positive(c["median_epoch_seconds"]) and positive(c["gflops"]) and positive(c["percent_of_peak"])

    table = (out / "table.md").read_text()
    assert table in proc.stdout
    assert "| trainlab train (examples/seed_mlp.yaml) |" in table and "% of peak" in table


def test_search_bench_quick_with_bound(tmp_path, fashion_available):
    """bench/search_bench.py --quick on the small lr grid, packed and the no-update bound.

    The bound must really do no update: every one of its trials ends with the same validation
    accuracy (the initial weights'), while the packed search's trials differ with their lr.
    """
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench/search_bench.py"), "--quick", "--grids", "16", "--contenders", "packed",
         "--bound", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "search_bench.json").read_text())
    (grid,) = result["grids"]
    rows = {r["name"]: r for r in grid["contenders"]}
    assert set(rows) == {"packed", "packed-no-step"}
    for r in rows.values():
        assert r["trials"] == 4 and len(r["values"]) == 4
        assert positive(r["loop_seconds"]) and r["loop_seconds"] < r["seconds"], r
        # One run per contender (--repeats 1): the median of one value, the same float64 subtraction:
        # equal; isclose's rel_tol=1e-9 is margin only.
        assert math.isclose(r["outside_seconds"], r["seconds"] - r["loop_seconds"])
    assert len({v["value"] for v in rows["packed-no-step"]["values"]}) == 1
    assert len({v["value"] for v in rows["packed"]["values"]}) > 1
    table = (out / "search_table.md").read_text()
    assert "| packed-no-step |" in table and "(learns nothing: a bound)" in table


def test_wrapper_bench_quick_times_ddp_and_fsdp_against_the_plain_step(tmp_path, fashion_available):
    # bench/gpu.sh runs it on CUDA; here the same code on the CPU (gloo), a world of one process.
    proc = subprocess.run([sys.executable, str(ROOT / "bench/wrapper_bench.py"), "--quick", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "wrapper_bench.json").read_text())
    assert {case["wrapper"] for case in report["cases"].values()} == {"ddp", "fsdp"}
    for case in report["cases"].values():
        assert positive(case["step_ms_median"]["plain"]) and positive(case["ratio"])
        assert len(case["step_ms_rounds"][case["wrapper"]]) == report["rounds"]
