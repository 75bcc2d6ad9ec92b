"""Property-based fuzzing of what users hand us as files: CSV / JSONL bytes and image bytes either load or fail
with a TransferkitError (one sentence), never another exception (issue 16)."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transferkit import TransferkitError
from transferkit.backbones.base import load_image
from transferkit.data import DataSpec, SplitSpec

FUZZ = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

cell = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
rows = st.lists(st.tuples(cell, st.sampled_from(["a", "b", "c", "", "a,b", '"q"'])), min_size=0, max_size=12)


def _load(data: bytes, suffix: str, **spec: object) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"data{suffix}"
        path.write_bytes(data)
        try:
            ds = DataSpec(**spec).load(str(path))
            SplitSpec(val_size=0.25, test_size=0.25).make(ds)
        except TransferkitError as e:
            assert str(e) and "\n" not in str(e).strip()


@FUZZ
@given(st.binary(max_size=400))
def test_random_bytes_as_csv_or_jsonl(data):
    _load(data, ".csv", text_column="text")
    _load(data, ".jsonl", text_column="text")


@FUZZ
@given(rows, st.sampled_from(["text,label", "label,text", "text,label,text", "text", "", "text;label"]))
def test_csv_shaped_text(body, header):
    lines = [header] + [f"{t},{y}" for t, y in body]
    _load("\n".join(lines).encode("utf-8", "surrogatepass"), ".csv", text_column="text")


@FUZZ
@given(rows)
def test_jsonl_shaped_text(body):
    import json

    lines = [json.dumps({"text": t, "label": y}) for t, y in body] + ["{not json", "[1, 2]", '{"text": 3}']
    _load("\n".join(lines[: len(body) + 1]).encode(), ".jsonl", text_column="text")


def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3)).save(buf, format="PNG")
    return buf.getvalue()


PNG = _png()


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_as_an_image(data):
    _image(data)


@FUZZ
@given(st.integers(0, len(PNG) - 1), st.integers(0, 255), st.integers(1, len(PNG)))
def test_a_damaged_png(pos, value, cut):
    data = bytearray(PNG)
    data[pos] = value
    _image(bytes(data[:cut]))


def _image(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.png"
        path.write_bytes(data)
        try:
            im = load_image(path)
            assert im.mode == "RGB"
        except TransferkitError as e:
            assert str(e)
