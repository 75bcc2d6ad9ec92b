"""`kill -9` at points through a fine-tune (extraction, training, saving), then the same command with `--resume`:
the final metrics must equal an uninterrupted run's, the saved model must load, and no temp or half-written file
may be left.

Run: .venv/bin/python benchmarks/bench_kill.py [--per-class 10] [--points 0.15,0.35,0.55,0.75,0.95]
Every number printed comes from this one run (whole processes, as a user runs them).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
BIN = Path(sys.executable).parent


def _cmd(folder: Path, out: Path, *extra: str) -> list[str]:
    return [str(BIN / "transferkit"), "fit", str(folder), "--strategy", "finetune", "--epochs", "3",
            "--set", "patience=null", "--no-scratch", "--quiet", "--out", str(out), *extra]


def _leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if ".tmp" in p.name or p.name.endswith(".old"))


def _metrics(out: Path) -> dict:
    return json.loads((out / "run.json").read_text())["metrics"]["transfer"]


def _sleep(fraction: float, full_s: float) -> str:
    time.sleep(fraction * full_s)
    return f"{fraction:.0%} of {full_s:.0f} s"


def _wait_for_save(proc: subprocess.Popen, out: Path) -> str:
    """Return as soon as the final model's temp folder exists (polled every millisecond)."""
    while proc.poll() is None:
        if out.is_dir() and any(p.name.startswith(".model.tmp") for p in out.iterdir()):
            return "inside the final save (model temp folder present)"
        time.sleep(0.001)
    return "inside the final save: missed"


def main() -> None:
    from bench_process import write_folder

    ap = argparse.ArgumentParser()
    ap.add_argument("--per-class", type=int, default=10)
    ap.add_argument("--points", default="0.15,0.35,0.55,0.75,0.95,save",
                    help="kill times as fractions of a full run; `save`: the moment the final model's temp folder "
                    "appears (a kill inside the save itself)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = write_folder(root / "fashion", args.per_class)
        env = {**os.environ, "TRANSFERKIT_CACHE": str(root / "cache")}
        subprocess.run(_cmd(folder, root / "warm-up"), env=env, check=True, capture_output=True)  # cache features
        t0 = time.perf_counter()
        subprocess.run(_cmd(folder, root / "reference"), env=env, check=True, capture_output=True)
        full_s = time.perf_counter() - t0
        reference = _metrics(root / "reference")
        print(f"uninterrupted fine-tune (3 epochs, {args.per_class} images per class, features cached): "
              f"{full_s:.1f} s, test accuracy {100 * reference['accuracy']:.2f} %\n")
        print("| killed at | what the killed run had left | resumed: equal metrics | model loads | leftovers |")
        print("|---|---|---|---|---|")
        ok = True
        for point in args.points.split(","):
            out = root / f"kill-{point}"
            proc = subprocess.Popen(_cmd(folder, out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            when = _wait_for_save(proc, out) if point == "save" else _sleep(float(point), full_s)
            finished = proc.poll() is not None
            if not finished:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            left = sorted(p.name for p in out.iterdir()) if out.exists() else []
            done = subprocess.run(_cmd(folder, out, "--resume"), env=env, capture_output=True, text=True)
            equal = done.returncode == 0 and _metrics(out) == reference
            image = str(next(folder.rglob("*.png")))
            predict = [str(BIN / "transferkit"), "predict", str(out / "model"), image]
            loads = subprocess.run(predict, env=env, capture_output=True).returncode == 0
            junk = _leftovers(out)
            ok &= equal and loads and not junk
            print(f"| {when}{' (it had finished)' if finished else ''} | "
                  f"{', '.join(left) or 'nothing'} | {'yes' if equal else 'NO: ' + done.stderr.strip()[-200:]} | "
                  f"{'yes' if loads else 'NO'} | {', '.join(junk) or 'none'} |")
        print(f"\nall resumed runs equal to the uninterrupted one, loadable and clean: {'yes' if ok else 'NO'}")


if __name__ == "__main__":
    main()
