"""The benchmark still runs: bench/run.py --quick on three cases, its JSON files well formed.

Not a measurement (the timings of a quick run on a shared machine mean nothing): a check that
the bench code keeps working as trainlab changes under it.
"""

import json
import math
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
