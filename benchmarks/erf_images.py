"""Write the 14 real photos that `mambaeye bench erf --images DIR` averaged over for the committed H100 results.

    python benchmarks/erf_images.py .erf_images && mambaeye bench erf --device cuda --images .erf_images --num-images 14

scikit-learn ships two photographs (china.jpg, flower.jpg, 427x640, BSD/CC licensed with the package); each is
written whole, as three 427x427 crops (left, right, centre) and their mirror images. No download needed.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image
from sklearn.datasets import load_sample_images


def main(out: str) -> None:
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    for k, array in enumerate(load_sample_images().images):
        photo = Image.fromarray(array)
        photo.save(folder / f"photo{k}.png")
        w, h = photo.size
        side = min(w, h)
        for i, x in enumerate((0, w - side, (w - side) // 2)):
            crop = photo.crop((x, 0, x + side, side))
            crop.save(folder / f"photo{k}_crop{i}.png")
            crop.transpose(Image.FLIP_LEFT_RIGHT).save(folder / f"photo{k}_crop{i}_flip.png")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".erf_images")
