"""Resume after a real kill: the same fine-tuning run uninterrupted, and killed (SIGKILL) after its second
epoch's checkpoint then resumed with --resume. Prints both runs' final metrics and whether they are identical.

Run: .venv/bin/python benchmarks/bench_resume.py
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ARGS = ["fashion-mnist-small", "--strategy", "finetune", "--unfreeze", "last:2", "--epochs", "4", "--per-class", "30",
        "--max-test", "300", "--set", "patience=null", "--no-scratch", "--quiet"]


def cli(out: Path, *extra: str) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("transferkit")
    return subprocess.Popen([str(exe), "fit", *ARGS, "--out", str(out), *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["TRANSFERKIT_CACHE"] = str(Path(tmp) / "cache")
        t0 = time.perf_counter()
        full = cli(Path(tmp) / "full")
        full.communicate()
        full_s = time.perf_counter() - t0
        killed = cli(Path(tmp) / "killed")
        state = Path(tmp) / "killed" / "checkpoint" / "trainer.json"
        while killed.poll() is None:
            if state.is_file() and json.loads(state.read_text())["next_epoch"] >= 2:
                killed.send_signal(signal.SIGKILL)
                break
            time.sleep(0.2)
        killed.wait()
        epochs_done = json.loads(state.read_text())["next_epoch"]
        resumed = cli(Path(tmp) / "killed", "--resume")
        resumed.communicate()
        a = json.loads((Path(tmp) / "full" / "run.json").read_text())
        b = json.loads((Path(tmp) / "killed" / "run.json").read_text())
        curve = [{k: v for k, v in r.items() if k != "seconds"} for r in a["strategy_info"]["learning_curve"]]
        curve_b = [{k: v for k, v in r.items() if k != "seconds"} for r in b["strategy_info"]["learning_curve"]]
        print(f"uninterrupted: {a['metrics']['transfer']} ({full_s:.0f} s)")
        print(f"killed (SIGKILL, return code {killed.returncode}) after {epochs_done} epochs, then --resume: "
              f"{b['metrics']['transfer']} (resumed from epoch {b['strategy_info']['resumed_from_epoch']})")
        print(f"identical metrics: {a['metrics'] == b['metrics']}; identical learning curve: {curve == curve_b}")


if __name__ == "__main__":
    main()
