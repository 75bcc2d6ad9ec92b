"""Integration: the report of a real small run, opened in headless Chromium (Debian package ``chromium``; ``make
test`` installs it where it can, and this test is skipped, saying why, where it is absent)."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.integration

BROWSER = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--enable-logging=stderr", "--v=0"]


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> Path:
    from typer.testing import CliRunner

    from transferkit.backbones.packs import PACKS
    from transferkit.cli import app

    if not PACKS["efficientnet-lite0"].installed():
        pytest.skip("the efficientnet-lite0 pack is not installed")
    out = tmp_path_factory.mktemp("browser") / "run"
    r = CliRunner().invoke(app, ["fit", "fashion-mnist-small", "--backbone", "pack:efficientnet-lite0", "--per-class",
                                 "20", "--max-test", "300", "--out", str(out), "--quiet", "--calibrate"])
    assert r.exit_code == 0, (r.output, r.exception)
    return out


@pytest.mark.skipif(BROWSER is None, reason="no headless browser: install the Debian package chromium")
def test_the_report_of_a_real_run_in_headless_chromium(real_run, tmp_path):
    from PIL import Image

    url = (real_run / "report.html").resolve().as_uri()
    dom = subprocess.run([BROWSER, *FLAGS, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    errors = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    assert not errors, errors  # the page loads with no console message at all

    # every chart has content and every image is a decodable, non-empty PNG
    charts = re.findall(r"<svg.*?</svg>", dom.stdout, re.S)
    assert len(charts) >= 3
    assert all(len(ET.fromstring(c)) > 2 for c in charts)
    images = re.findall(r'src="([^"]+)"', dom.stdout)
    assert images and all(src.startswith("data:image/png;base64,") for src in images)
    for src in images:
        im = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        assert im.width > 0 and im.height > 0

    # the numbers on the page are those of run.json
    record = json.loads((real_run / "run.json").read_text())
    shown = {float(v): text for v, text in re.findall(r'data-value="([^"]+)">([^<]*)<', dom.stdout)}
    for row in record["results"]:
        assert shown[row["accuracy"]] == f"{100 * row['accuracy']:.1f} %"
        assert shown[row["macro_f1"]] == f"{100 * row['macro_f1']:.1f} %"
    ev = record["test_evaluation"]
    for k, name in enumerate(ev["classes"]):
        assert shown[ev["recall"][k]] == f"{100 * ev['recall'][k]:.1f} %", name
    assert shown[ev["calibration"]["ece"]] == f"{100 * ev['calibration']['ece']:.1f} %"

    # a screenshot (phone width and desktop width) is not blank
    for width in (390, 1100):
        shot = tmp_path / f"shot-{width}.png"
        r = subprocess.run([BROWSER, *FLAGS, f"--window-size={width},2400", f"--screenshot={shot}", url],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and shot.is_file(), r.stderr[-2000:]
        pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
        assert pixels.std() > 10 and (pixels < 200).mean() > 0.02
