"""The training loop under `accelerate launch` with 2 CPU processes (gloo): gradients are synchronised across
processes, frozen and newly unfrozen blocks cause no "unused parameters" failure, and accuracy matches one process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent("""
    import hashlib, json, os, sys
    from pathlib import Path
    import numpy as np, torch
    import transferkit

    rng = np.random.default_rng(0)
    n = 24
    x = np.concatenate([rng.integers(0, 90, (n, 24, 24, 3)), rng.integers(160, 255, (n, 24, 24, 3))])
    ds = transferkit.from_arrays(x.astype(np.uint8), ["dark"] * n + ["light"] * n, name="shades")
    torch.manual_seed(0)
    res = transferkit.fit(ds, sys.argv[1], "finetune", unfreeze=sys.argv[2], epochs=3, batch_size=8, lr=0.01,
                          patience=None, scratch=False, progress=False, out=sys.argv[3])
    state = res.model.state_dict()
    digest = hashlib.sha256(b"".join(v.detach().cpu().numpy().tobytes() for v in state.values())).hexdigest()
    rank = int(os.environ.get("RANK", "0"))
    # one file per process: two processes printing to one pipe can interleave their lines
    Path(sys.argv[4], f"rank-{rank}.json").write_text(json.dumps(
        {"rank": rank, "world": int(os.environ.get("WORLD_SIZE", "1")),
         "accuracy": res.metrics["transfer"]["accuracy"], "weights": digest}))
""")


def _results(folder: Path) -> list[dict]:
    return [json.loads(f.read_text()) for f in sorted(folder.glob("rank-*.json"))]


@pytest.mark.parametrize("unfreeze", ["gradual", "last:2"])
def test_two_cpu_processes_match_one(unfreeze, timm_dir, tmp_path):
    launcher = Path(sys.executable).with_name("accelerate")
    if not launcher.exists():
        launcher = shutil.which("accelerate")
    assert launcher, "accelerate's launcher is not installed"
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    results = {k: tmp_path / f"results-{k}" for k in ("one", "two")}
    for folder in results.values():
        folder.mkdir()
    one = subprocess.run(
        [sys.executable, str(script), str(timm_dir), unfreeze, str(tmp_path / "one"), str(results["one"])],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run(
        [
            str(launcher),
            "launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--main_process_port",
            "29517",
            str(script),
            str(timm_dir),
            unfreeze,
            str(tmp_path / "two"),
            str(results["two"]),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    assert "unused parameters" not in two.stderr
    (single,) = _results(results["one"])
    ranks = sorted(_results(results["two"]), key=lambda r: r["rank"])
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world"] == 2 for r in ranks)
    assert ranks[0]["weights"] == ranks[1]["weights"], "processes ended with different weights: gradients not synced"
    assert abs(ranks[0]["accuracy"] - single["accuracy"]) <= 0.1
    assert (tmp_path / "two" / "model" / "transferkit.json").is_file()  # one process wrote the run
    assert not (tmp_path / "two" / "checkpoint").exists()
