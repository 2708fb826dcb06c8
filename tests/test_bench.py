"""Smoke test of ``python -m npnorm.bench`` on tiny inputs: it runs, prints the table, writes the JSON
and the figure. Timings are never asserted (they depend on the machine and its load)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_cli_writes_json_and_plot(tmp_path):
    out_json, out_png = tmp_path / "bench.json", tmp_path / "bench.png"
    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    res = subprocess.run(
        [sys.executable, "-m", "npnorm.bench", "--sizes", "tiny", "--repeats", "2", "--no-torch",
         "--json", str(out_json), "--plot", str(out_png)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "copy bandwidth" in res.stdout and "preallocated" in res.stdout and "threads=" in res.stdout
    data = json.loads(out_json.read_text())
    assert data["meta"]["threads"] >= 1 and data["meta"]["copy_bandwidth_GBps"] > 0
    got = {(r["case"], r["dtype"], r["pass"], r["impl"]) for r in data["results"]}
    cases = {r["case"] for r in data["results"]}
    assert cases == {"LayerNorm", "RMSNorm", "GroupNorm G=32", "InstanceNorm2d", "BatchNorm2d train", "ScaleNorm",
                     "L2Norm", "QK RMSNorm per head", "DyT"}
    for case in cases:
        for dtype in ("float32", "float64"):
            for pss in ("forward", "forward+backward"):
                for impl in ("textbook", "reference", "numba"):
                    assert (case, dtype, pss, impl) in got
    for r in data["results"]:
        assert len(r["times"]) == 2 and r["min"] <= r["median"] <= r["max"]
    assert out_png.stat().st_size > 1000 and out_png.read_bytes()[:4] == b"\x89PNG"


def test_bench_rejects_bad_options(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, "-m", "npnorm.bench", "--dtypes", "float16", "--sizes", "tiny"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert res.returncode == 2 and "--dtypes" in res.stderr
