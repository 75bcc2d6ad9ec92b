"""Write the domain-shift pairs of ``transferkit.data.shifts`` as files the CLI takes: CSV files for the text
pairs, folders of PNGs for the image pair.

Run: .venv/bin/python benchmarks/domain_pairs.py [OUT]   (default runs/domain-pairs)
"""

from __future__ import annotations

import sys
from pathlib import Path

from transferkit.data.shifts import PAIRS, write_pair

if __name__ == "__main__":
    dest = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/domain-pairs")
    for pair in PAIRS:
        write_pair(pair, dest)
        print(f"wrote {dest / pair}")
