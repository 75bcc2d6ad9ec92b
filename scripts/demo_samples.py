"""Write a few held-out Fashion-MNIST test images as PNG files for `make demo` to predict on."""

import sys
from pathlib import Path

from PIL import Image

from transferkit.data import load_builtin


def main(out: str) -> None:
    ds = load_builtin("fashion-mnist-small")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    test = [i for i, s in enumerate(ds.split or []) if s == "test"]
    for k, i in enumerate(test[::400][:5]):
        name = ds.labels[i].replace("/", "-").replace(" ", "-").lower()
        Image.fromarray(ds.items[i]).save(folder / f"{k}-{name}.png")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/demo/samples")
