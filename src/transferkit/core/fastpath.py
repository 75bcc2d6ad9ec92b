"""How a frozen backbone runs during feature extraction: eager, or compiled when that pays on this machine.

``torch.compile`` with inductor freezing (BatchNorm folded into convolutions, elementwise ops fused) runs the pack
backbones 1.4-2x faster on a CPU, but compiling costs tens of seconds. The runner times the eager forward on the
job's first batches, estimates what compiling would save on the rest of the job (from this machine's earlier
measurements of the same backbone when there are some, conservatively otherwise), and compiles only when the
saving clearly exceeds the cost. A compiled copy is used only after its output on a real batch matched eager
within 1e-4 relative error, and dropped again if it turns out slower. Measurements are kept per machine in
``<cache>/tuning.json`` so the next job decides from facts.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .._files import merge_json
from ..backbones.base import Backbone
from ..errors import TransferkitError

COMPILE_ENV = "TRANSFERKIT_COMPILE"
MODES = ("auto", "always", "never")
MAX_REL_DIFF = 1e-4
DEFAULT_COMPILE_S = 40.0
"""Assumed compile time before this machine has compiled the backbone once (2 CPU cores: 20-40 s)."""
DEFAULT_SPEEDUP = 1.3
"""Assumed compiled/eager speed before it has been measured here (measured: 1.4x MiniLM, 1.9x EfficientNet)."""
MARGIN = 1.5
"""Compile only when the estimated saving exceeds the expected compile time by this factor."""


def compile_mode(mode: str | None = None) -> str:
    """``mode`` or ``$TRANSFERKIT_COMPILE`` or 'auto'; a bad value is a clear error."""
    value = (mode or os.environ.get(COMPILE_ENV) or "auto").strip().lower()
    value = {"1": "always", "true": "always", "0": "never", "false": "never"}.get(value, value)
    if value not in MODES:
        raise TransferkitError(
            f"Compile mode {value!r} (from {COMPILE_ENV} or compile=) is not one of auto, always, never."
        )
    return value


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else what platform knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def tuning_key(backbone: Backbone, batch_size: int, device: torch.device) -> str:
    """This backbone's weights x batch size x this machine and torch."""
    parts = [
        backbone.fingerprint(),
        str(batch_size),
        str(device),
        torch.__version__,
        cpu_name(),
        str(torch.get_num_threads()),
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


@dataclass
class Tuning:
    """What was measured for one backbone on this machine."""

    eager_items_s: float | None = None
    compiled_items_s: float | None = None
    compile_s: float | None = None
    max_rel_diff: float | None = None
    failed: str | None = None


def load_tuning(path: Path, key: str) -> Tuning:
    try:
        return Tuning(**json.loads(path.read_text()).get(key, {}))
    except (OSError, ValueError, TypeError):
        return Tuning()


def save_tuning(path: Path, key: str, tuning: Tuning) -> None:
    """Merge one record into the file (atomic replace; a lost race only loses a measurement)."""
    merge_json(path, key, asdict(tuning), indent=1)


def should_compile(remaining_s: float, tuning: Tuning) -> tuple[bool, str]:
    """Whether compiling pays for ``remaining_s`` seconds of eager work, and why."""
    if tuning.failed:
        return False, f"compiling failed here before ({tuning.failed})"
    speedup = DEFAULT_SPEEDUP
    if tuning.compiled_items_s and tuning.eager_items_s:
        speedup = tuning.compiled_items_s / tuning.eager_items_s
    cost = tuning.compile_s if tuning.compile_s is not None else DEFAULT_COMPILE_S
    saving = remaining_s * (1 - 1 / speedup) if speedup > 1 else 0.0
    why = f"~{remaining_s:.0f} s eager left; compiled (x{speedup:.2f}) would save ~{saving:.0f} s for ~{cost:.0f} s"
    return saving > MARGIN * cost, why


class Runner:
    """Calls the backbone on prepared batches; may switch to a verified compiled copy mid-job."""

    def __init__(
        self,
        backbone: Backbone,
        n_items: int,
        batch_size: int,
        device: torch.device,
        mode: str | None = None,
        tuning_path: Path | None = None,
    ) -> None:
        self.backbone, self.n_items, self.batch_size, self.device = backbone, n_items, batch_size, device
        self.mode = compile_mode(mode)
        self.tuning_path = tuning_path
        self.key = tuning_key(backbone, batch_size, device) if tuning_path is not None else ""
        self.tuning = load_tuning(tuning_path, self.key) if tuning_path is not None else Tuning()
        self.compiled: Callable[[Any], torch.Tensor] | None = None
        self.engine = "eager"
        self.reason = "not decided (job too short)"
        self.done = 0
        self.calls = 0
        self.decided = False
        self._compiled_timing: list[tuple[int, float]] = []

    def __call__(self, inputs: Any, n: int) -> torch.Tensor:
        """Features for one prepared batch of ``n`` items."""
        self.calls += 1
        if self.compiled is not None:
            out = self._run_compiled(inputs, n)
        else:
            t0 = time.perf_counter()
            out = self.backbone(inputs)
            if self.calls == 2:  # the first call carries one-off warm-up costs
                self.tuning.eager_items_s = n / max(time.perf_counter() - t0, 1e-9)
            self.done += n
            if not self.decided and (self.calls >= 2 or self.mode == "always"):
                self._decide(inputs, out)
        return out

    def _decide(self, inputs: Any, eager_out: torch.Tensor) -> None:
        self.decided = True
        if self.mode == "never":
            self.reason = f"{COMPILE_ENV}=never"
            return
        if self.device.type != "cpu" and self.mode == "auto":
            self.reason = "eager on GPU"
            return
        if self.mode == "auto":
            rate = self.tuning.eager_items_s or 1.0
            ok, self.reason = should_compile((self.n_items - self.done) / rate, self.tuning)
            if not ok:
                return
        else:
            self.reason = "compile forced"
        t0 = time.perf_counter()
        try:
            compiled = torch.compile(
                self.backbone, dynamic=self.backbone.modality == "text", options={"freezing": True}
            )
            out = compiled(self._pad(inputs))[: len(eager_out)]
        except Exception as e:  # noqa: BLE001 - any compiler failure means: stay eager, say why, remember
            self.tuning.failed = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            self.reason = f"compiling failed, eager ({self.tuning.failed})"
            self._save()
            return
        self.tuning.compile_s = time.perf_counter() - t0
        rel = float((out.float() - eager_out.float()).abs().max() / eager_out.float().abs().max().clamp(min=1e-12))
        self.tuning.max_rel_diff = rel
        if not rel <= MAX_REL_DIFF:
            self.tuning.failed = f"compiled features differ by {rel:.1e} relative (> {MAX_REL_DIFF:.0e})"
            self.reason = f"eager: {self.tuning.failed}"
            self._save()
            return
        self.compiled, self.engine = compiled, "compiled"
        self.reason += f"; compiled in {self.tuning.compile_s:.0f} s, matches eager within {rel:.1e}"

    def _pad(self, inputs: Any) -> Any:
        """Images: fill a short last batch to the batch size (one static shape, no recompilation)."""
        if isinstance(inputs, torch.Tensor) and inputs.shape[0] < self.batch_size:
            fill = inputs[-1:].expand(self.batch_size - inputs.shape[0], *inputs.shape[1:])
            return torch.cat([inputs, fill]).contiguous(memory_format=torch.channels_last)
        return inputs

    def _run_compiled(self, inputs: Any, n: int) -> torch.Tensor:
        assert self.compiled is not None
        t0 = time.perf_counter()
        out = self.compiled(self._pad(inputs))[:n]
        self.done += n
        self._compiled_timing.append((n, time.perf_counter() - t0))
        if len(self._compiled_timing) == 3:  # steady state: the first compiled call may still warm up
            items, secs = (sum(v) for v in zip(*self._compiled_timing[1:], strict=True))
            self.tuning.compiled_items_s = items / max(secs, 1e-9)
            self._save()
            if self.tuning.eager_items_s and self.tuning.compiled_items_s < self.tuning.eager_items_s:
                self.compiled, self.engine = None, "eager"
                self.reason += "; compiled turned out slower here, back to eager"
        return out

    def _save(self) -> None:
        if self.tuning_path is not None:
            save_tuning(self.tuning_path, self.key, self.tuning)

    def finish(self) -> dict[str, Any]:
        """What ran and why (goes into run.json)."""
        if self.compiled is not None and len(self._compiled_timing) < 3:
            self._save()  # keep the compile time even when the job ended before a steady-state measurement
        return {"engine": self.engine, "why": self.reason, **{k: v for k, v in asdict(self.tuning).items() if v}}
