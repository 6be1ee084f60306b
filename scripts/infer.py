#!/usr/bin/env python
"""Instance segmentation of an image, a folder of images, a video file or a camera.

    python scripts/infer.py --config yolact_effl0 --weights W.pth --image photo.jpg --out result.png
    python scripts/infer.py --config yolact_effl0 --weights W.pth --images photos/ --out results/ --json dets.json
    python scripts/infer.py --config yolact_effl0 --weights W.pth --video clip.avi --out clip_out.mp4
    python scripts/infer.py --config yolact_effl0 --weights W.pth --video 0 --max-frames 300
    python scripts/infer.py --config yolact_effl0 --weights W.pth --onnx yolact.onnx --image photo.jpg
    python scripts/infer.py --config yolact_effl0 --weights W.pth --precision auto --image photo.jpg

* ``--image``: writes OUT (``.png`` added when OUT has no image extension; default
  ``<image name>_yolact.png`` in the current folder).
* ``--images DIR``: one drawn ``<name>.png`` per image into the folder OUT (required).
* ``--video FILE|CAMERA_INDEX``: threaded pipeline; writes OUT (mp4v) when ``--out`` is given
  and prints a summary (frames, FPS, per-stage ms). Camera mode may skip stale frames.
* ``--json OUT.json``: COCO-format results (``image_id``, ``category_id``, ``bbox`` xywh,
  ``segmentation`` RLE, ``score`` = box score, ``mask_score``). For images every detection
  is written (not only the drawn ones); for videos the drawn ones, with the frame index as
  ``image_id``. Category ids come from the checkpoint's ``category_ids``, else COCO's ids for
  80 classes, else label + 1. Image ids: the file name when it is an integer (COCO style),
  else the position in the sorted listing.
* ``--score-threshold`` / ``--top-k``: what is drawn (default 0.3 / 15).
* ``--tile PX [--tile-overlap 0.2]``: tiled inference for large frames (``yolact_lite.tiling``:
  overlapping PX-pixel tiles plus the full frame, merged); ``--roi X1,Y1,X2,Y2`` processes
  only that area. Images only; results stay in frame coordinates.
* ``--backend onnxruntime`` runs the network stage with onnxruntime: ``--onnx FILE`` from
  ``scripts/export.py`` (implies the backend; same config), else the model is exported to a
  temporary file first. ``--weights`` still gives class names and YOLACT++'s mask-IoU head.
  ``--compile``: ``torch.compile`` the network (torch backend; the first frame compiles).
  ``--backend openvino`` runs the same ONNX file with OpenVINO (``pip install 'yolact_lite[openvino]'``).
* ``--precision fp32|bf16|fp16|int8|auto``: bf16 needs a CPU with AMX or AVX512-BF16 (or
  CUDA), fp16 CUDA; int8 runs an ``--onnx`` file made by ``scripts/export.py --int8 --calib
  DIR``; ``auto`` picks the fastest float path of this machine and prints it.

Without ``--weights`` a randomly initialised model is used and a loud warning is printed:
its output is meaningless (with ``--onnx`` the network weights come from the file).
User errors end with one ``error: ...`` line and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from yolact_lite.cli import add_config_args, config_from_args, run_cli  # noqa: E402
from yolact_lite.errors import DataError  # noqa: E402

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--weights", help="our checkpoint or an original YOLACT .pth (omit: random weights)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", help="one image file")
    source.add_argument("--images", help="a folder of images")
    source.add_argument("--video", help="a video file, or a camera index such as 0")
    parser.add_argument("--out", help="output image / folder / .mp4")
    parser.add_argument("--json", help="write COCO-format results to this file")
    parser.add_argument("--max-frames", type=int, default=None, help="video: stop after N frames")
    parser.add_argument("--display-fps", action="store_true", help="video: draw the live FPS onto frames")
    parser.add_argument("--score-threshold", type=float, default=0.3, help="draw detections above this score")
    parser.add_argument("--top-k", type=int, default=15, help="draw at most this many detections")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--batch", type=int, default=1, help="images / video frames per network batch")
    parser.add_argument("--no-fuse", action="store_true", help="keep BatchNorm layers (debugging)")
    parser.add_argument("--no-progress", action="store_true", help="video: no progress bar")
    parser.add_argument("--backend", choices=("torch", "onnxruntime", "openvino"), default=None,
                        help="network runtime (default torch; onnxruntime when --onnx is given)")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16", "int8", "auto"), default=None,
                        help="network precision (default fp32, or int8 for an int8 --onnx file); bf16 needs a "
                             "CPU with AMX/AVX512-BF16 or CUDA, fp16 CUDA, int8 an --onnx file from "
                             "scripts/export.py --int8; auto = fastest float path here (printed)")
    parser.add_argument("--onnx", help="ONNX file from scripts/export.py for the onnxruntime backend")
    parser.add_argument("--compile", action="store_true", help="torch.compile the network (torch backend)")
    parser.add_argument("--tile", type=int, default=None, metavar="PX",
                        help="images: tiled inference, PX-pixel tiles plus the full frame (small objects in large frames)")
    parser.add_argument("--tile-overlap", type=float, default=0.2, help="fraction of a tile shared with its neighbours")
    parser.add_argument("--roi", default=None, metavar="X1,Y1,X2,Y2",
                        help="images: process only this area (results in frame coordinates)")
    return parser.parse_args(argv)


def build_predictor(args):
    from yolact_lite.predictor import RANDOM_WEIGHTS_WARNING, Predictor

    config = config_from_args(args)
    backend = args.backend or ("onnxruntime" if args.onnx else None)
    # with --onnx the network weights are in the file; only YOLACT++'s mask-IoU head would be random
    if args.weights is None and not (args.onnx and not config.model.mask_iou_head):
        bar = "!" * 78
        print(f"{bar}\nWARNING: {RANDOM_WEIGHTS_WARNING}\n{bar}", file=sys.stderr, flush=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        predictor = Predictor(config, args.weights, device=args.device, fuse=not args.no_fuse,
                              backend=backend, onnx_path=args.onnx, compile=args.compile, precision=args.precision)
    print(f"network: {predictor.network_impl.describe()} on {predictor.device}", flush=True)
    return predictor


def image_id_for(path: Path, position: int) -> int:
    return int(path.stem) if path.stem.isdigit() else position


def coco_results(image_id: int, dets, category_ids) -> list:
    import numpy as np
    from pycocotools import mask as mask_utils

    n = len(dets)
    if n == 0:
        return []
    masks = np.asfortranarray(dets.masks.numpy().transpose(1, 2, 0).astype(np.uint8))
    rles = mask_utils.encode(masks)
    out = []
    for i in range(n):
        x1, y1, x2, y2 = (float(v) for v in dets.boxes[i])
        rle = rles[i]
        rle["counts"] = rle["counts"].decode("ascii")
        out.append({
            "image_id": int(image_id),
            "category_id": int(category_ids[int(dets.classes[i])]),
            "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
            "segmentation": rle,
            "score": round(float(dets.scores[i]), 5),
            "mask_score": round(float(dets.mask_scores[i]), 5),
        })
    return out


def write_json(path: str, results: list) -> None:
    target = Path(path)
    if not target.parent.exists():
        raise DataError(f"{target}: folder {target.parent} does not exist")
    with open(target, "w") as f:
        json.dump(results, f)
    print(f"wrote {len(results)} results to {target}")


def describe(name: str, dets, class_names, shown: int) -> str:
    best = ", ".join(f"{class_names[int(c)]} {float(s):.2f}"
                     for c, s in zip(dets.classes[:3], dets.mask_scores[:3]))
    return f"{name}: {len(dets)} detections ({shown} drawn){': ' + best if best else ''}"


def write_image(path: Path, image) -> None:
    import cv2

    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        path = path.with_name(path.name + ".png")
    if not path.parent.exists():
        raise DataError(f"{path}: folder {path.parent} does not exist")
    if not cv2.imwrite(str(path), image):
        raise DataError(f"{path}: could not write the image")
    print(f"wrote {path}")


def run_images(args, predictor, paths, out_dir=None, out_file=None, preloaded=None) -> None:
    from yolact_lite.data import read_image
    from yolact_lite.visualize import draw_detections

    want_json = args.json is not None
    results = []
    batch = max(1, args.batch)
    for start in range(0, len(paths), batch):
        chunk = paths[start:start + batch]
        images = [preloaded[p] if preloaded and p in preloaded else read_image(p) for p in chunk]
        filters = {} if want_json else {"score_threshold": args.score_threshold, "top_k": args.top_k}
        if args.tile is not None or args.roi is not None:  # tiles / ROI: one image at a time
            dets_list = [predictor.predict(im, tile=args.tile, tile_overlap=args.tile_overlap, roi=args.roi,
                                           **filters) for im in images]
        elif want_json:  # every detection for the json; the drawing filters below
            dets_list = predictor.predict_batch(images)
        else:
            dets_list = predictor.predict_batch(images, **filters)
        for offset, (path, image, dets) in enumerate(zip(chunk, images, dets_list)):
            drawn = draw_detections(image, dets, args.score_threshold, args.top_k)
            shown = int((dets.mask_scores > args.score_threshold).sum().clamp(max=args.top_k))
            print(describe(str(path), dets, predictor.class_names, shown))
            if out_dir is not None:
                write_image(out_dir / f"{path.stem}.png", drawn)
            elif out_file is not None:
                write_image(out_file, drawn)
            if want_json:
                results += coco_results(image_id_for(path, start + offset), dets, predictor.category_ids)
        timings = ", ".join(f"{k} {v:.1f}" for k, v in predictor.timings.items())
        print(f"  ms ({len(chunk)} image{'s' if len(chunk) > 1 else ''}): {timings}")
    if want_json:
        write_json(args.json, results)


def list_images(folder: Path) -> list:
    if not folder.exists():
        raise DataError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder (use --image for a single file)")
    paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not paths:
        raise DataError(f"{folder}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return paths


def run_video_mode(args, predictor) -> None:
    from yolact_lite.video import run_video

    source = args.video
    out = None
    if args.out:
        out = Path(args.out)
        if out.suffix == "":
            out = out.with_suffix(".mp4")
    results = []
    callback = None
    if args.json is not None:
        def callback(index, frame, dets):
            results.extend(coco_results(index, dets, predictor.category_ids))
    summary = run_video(
        predictor, source, out, max_frames=args.max_frames, batch_size=max(1, args.batch),
        score_threshold=args.score_threshold, top_k=args.top_k, display_fps=args.display_fps,
        on_result=callback, progress=not args.no_progress,
    )
    print(summary.format())
    if args.json is not None:
        write_json(args.json, results)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.max_frames is not None and args.max_frames < 1:
        raise DataError("--max-frames must be >= 1")
    if args.top_k < 1:
        raise DataError("--top-k must be >= 1")
    if args.batch < 1:
        raise DataError("--batch must be >= 1")
    if args.tile is not None and args.tile < 32:
        raise DataError("--tile must be >= 32 px")
    if not 0.0 <= args.tile_overlap < 1.0:
        raise DataError("--tile-overlap must be in [0, 1)")
    if args.roi is not None:
        try:
            args.roi = tuple(float(v) for v in args.roi.split(","))
        except ValueError:
            args.roi = ()
        if len(args.roi) != 4 or not (args.roi[2] > args.roi[0] and args.roi[3] > args.roi[1]):
            raise DataError("--roi must be X1,Y1,X2,Y2 with X2 > X1 and Y2 > Y1 (frame pixels)")
    if args.video is not None and (args.tile is not None or args.roi is not None):
        raise DataError("--tile / --roi apply to --image / --images (not to --video)")
    # check the inputs before the (slow) model build
    if args.image is not None:
        from yolact_lite.data import read_image

        path = Path(args.image)
        pixels = read_image(path)  # unreadable / empty image: fail before the model build
        out_file = Path(args.out) if args.out else Path(f"{path.stem}_yolact.png")
        if not out_file.parent.exists():
            raise DataError(f"{out_file}: folder {out_file.parent} does not exist")
        predictor = build_predictor(args)
        run_images(args, predictor, [path], out_file=out_file, preloaded={path: pixels})
    elif args.images is not None:
        paths = list_images(Path(args.images))
        if not args.out:
            raise DataError("--images needs --out FOLDER for the drawn images")
        out_dir = Path(args.out)
        if out_dir.exists() and not out_dir.is_dir():
            raise DataError(f"{out_dir}: exists and is not a folder")
        out_dir.mkdir(parents=True, exist_ok=True)
        predictor = build_predictor(args)
        run_images(args, predictor, paths, out_dir=out_dir)
    else:
        from yolact_lite.video import is_camera_source, open_video

        if not is_camera_source(args.video):  # unreadable file: fail before the model build
            cap, _, _ = open_video(args.video)
            cap.release()
        predictor = build_predictor(args)
        run_video_mode(args, predictor)
    return 0


if __name__ == "__main__":
    run_cli(main)
