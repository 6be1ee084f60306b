#!/usr/bin/env python3
"""The image grid of docs/augmentation.md: what each training augmentation makes of a few
bundled training images (masks tinted, boxes drawn, crowds in grey).

    python scripts/augmentation_grid.py [--out docs/augmentation_grid.png] [--images 3] [--seed 0]

Columns: the decoded image, the light chain's zoom (0.6-2), large-scale jitter (0.1-2),
copy-paste (paste scale 0.25-1), mosaic, and mosaic then copy-paste.  Rows: training images
of data/coco_mini/train (person annotations).  Every op draws from a Generator seeded with
(seed, row, column), so the grid is reproducible; padding is the pixel mean, as in training.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from yolact_lite.config import IMAGENET_MEAN_RGB
from yolact_lite.data import CocoDataset
from yolact_lite.data.mixing import SampleMixer
from yolact_lite.data.transforms import RandomZoom

ROOT = Path(__file__).resolve().parent.parent
TRAIN = ROOT / "data" / "coco_mini" / "train"
FILL_BGR = tuple(reversed(IMAGENET_MEAN_RGB))  # what training pads with (the pixel mean)
PANEL = 200  # pixels per panel side
HEADER = 22
PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)]  # RGB


def columns():
    """(title, op(sample, rng, dataset)) for each column."""
    def zoom(low, high):
        return lambda s, rng, ds: RandomZoom(low, high, fill_bgr=FILL_BGR)(s, rng)

    def mix(**kw):
        mixer = SampleMixer(fill_bgr=FILL_BGR, **kw)
        return lambda s, rng, ds: mixer(s, rng, ds)

    return [("decoded", lambda s, rng, ds: s),
            ("zoom 0.6-2 (light)", zoom(0.6, 2.0)),
            ("scale jitter 0.1-2", zoom(0.1, 2.0)),
            ("copy-paste", mix(copy_paste=1.0, paste_scale=(0.25, 1.0))),
            ("mosaic", mix(mosaic=1.0)),
            ("mosaic + copy-paste", mix(mosaic=1.0, copy_paste=1.0))]


def render(sample) -> np.ndarray:
    """RGB uint8 [PANEL, PANEL, 3]: the sample letterboxed, masks tinted, boxes outlined."""
    image = np.asarray(sample["image"], dtype=np.float32)[:, :, ::-1].copy()  # BGR -> RGB
    masks = np.asarray(sample["masks"], dtype=np.float32) >= 0.5
    for k, (mask, crowd) in enumerate(zip(masks, np.asarray(sample["is_crowd"]))):
        colour = np.array((128, 128, 128) if crowd else PALETTE[k % len(PALETTE)], dtype=np.float32)
        image[mask] = 0.45 * image[mask] + 0.55 * colour
    h, w = image.shape[:2]
    scale = PANEL / max(h, w)
    small = cv2.resize(np.clip(image, 0, 255).astype(np.uint8), (max(1, round(w * scale)), max(1, round(h * scale))),
                       interpolation=cv2.INTER_AREA)
    panel = np.full((PANEL, PANEL, 3), 255, dtype=np.uint8)
    panel[:small.shape[0], :small.shape[1]] = small
    for k, box in enumerate(np.asarray(sample["boxes"], dtype=np.float32).reshape(-1, 4)):
        x1, y1, x2, y2 = (int(round(v * scale)) for v in box)
        colour = (128, 128, 128) if sample["is_crowd"][k] else PALETTE[k % len(PALETTE)]
        cv2.rectangle(panel, (x1, y1), (max(x1, x2 - 1), max(y1, y2 - 1)), colour, 1)
    return panel


def grid(dataset: CocoDataset, indices, seed: int) -> np.ndarray:
    cols = columns()
    header = np.full((HEADER, PANEL * len(cols), 3), 255, dtype=np.uint8)
    for c, (title, _) in enumerate(cols):
        cv2.putText(header, title, (c * PANEL + 4, HEADER - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1,
                    cv2.LINE_AA)
    rows = [header]
    for r, index in enumerate(indices):
        raw = dataset.raw_sample(index)
        panels = [render(op(raw, np.random.default_rng([seed, r, c]), dataset)) for c, (_, op) in enumerate(cols)]
        rows.append(np.concatenate(panels, axis=1))
    return np.concatenate(rows, axis=0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "augmentation_grid.png")
    ap.add_argument("--images", type=int, default=3, help="rows (training images, every 17th)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    dataset = CocoDataset(TRAIN / "annotations_person.json", TRAIN / "images", skip_empty=True)
    indices = [(7 + 17 * k) % len(dataset) for k in range(args.images)]
    picture = grid(dataset, indices, args.seed)
    # a 128-colour palette keeps the PNG small enough for the docs
    Image.fromarray(picture).quantize(128, dither=Image.Dither.NONE).save(args.out, optimize=True)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KiB, {picture.shape[1]}x{picture.shape[0]})")


if __name__ == "__main__":
    main()
