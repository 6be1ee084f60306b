"""``predict``: instance segmentation of images, folders, globs, videos, cameras or streams.

    yolact-lite predict --weights data/models/person_effl0.pt --input photo.jpg --out result.png
    yolact-lite predict --weights W.pt --input photos/ --out results/ --save-json dets.json
    yolact-lite predict --weights W.pt --input "shots/*.jpg" --out results/
    yolact-lite predict --weights W.pt --input clip.avi --out clip_out.mp4 --track --save-json tracks.jsonl
    yolact-lite predict --weights W.pt --input 0 --max-frames 300            # camera index
    yolact-lite predict --weights W.pt --input rtsp://host/stream --out live.mp4
    yolact-lite predict --config yolact_resnet50 --weights yolact_resnet50_54_800000.pth --input photo.jpg

* ``--input`` is an image file, a folder, a glob, a video file, a camera index or a stream URL
  (``--image`` / ``--images`` / ``--video`` name the kind explicitly).
* ``--config`` may be omitted when ``--weights`` is one of our checkpoints (it carries its
  config); it is needed for an original YOLACT ``.pth``.
* ``--save-json PATH``: images -> COCO results; videos -> one JSON line per frame (frame, time,
  instances with polygons or RLE, ``--json-masks``, and ``track_id`` with ``--track``).
* ``--track``: instance IDs that persist across video frames (:mod:`yolact_lite.inference.tracking`),
  drawn in a colour per ID with a short trail.

* ``--image``: writes OUT (``.png`` added when OUT has no image extension; default
  ``<image name>_yolact.png`` in the current folder).
* ``--images DIR``: one drawn ``<name>.png`` per image into the folder OUT (required).
* ``--video FILE|CAMERA_INDEX``: threaded pipeline; writes OUT (mp4v) when ``--out`` is given
  and prints a summary (frames, FPS, per-stage ms). A camera or stream works on the newest
  frame (stale ones are skipped and counted) and is reopened when it disconnects or stalls
  (``--reconnect N``, ``--open-timeout SECONDS``); one that cannot be reopened ends the run
  with the frames so far written, the summary, one ``error:`` line and exit code 2.
* ``--json OUT.json``: COCO-format results (``image_id``, ``category_id``, ``bbox`` xywh,
  ``segmentation`` RLE, ``score`` = box score, ``mask_score``). For images every detection
  is written (not only the drawn ones); for videos the drawn ones, with the frame index as
  ``image_id``. Category ids come from the checkpoint's ``category_ids``, else COCO's ids for
  80 classes, else label + 1. Image ids: the file name when it is an integer (COCO style),
  else the position in the sorted listing.
* ``--display-threshold`` / ``--top-k``: what is drawn (default 0.3 / 15).
* ``--tile PX [--tile-overlap 0.2]``: tiled inference for large frames (``yolact_lite.inference.tiling``:
  overlapping PX-pixel tiles plus the full frame, merged); ``--roi X1,Y1,X2,Y2`` processes
  only that area. Images only; results stay in frame coordinates.
* Runtime and precision: with neither flag, the fastest path of this machine that keeps AP
  (``auto``: OpenVINO bf16 on a CPU with native bf16, else OpenVINO fp32; fp16 on CUDA), printed
  in one line. ``--precision fp32`` is the fastest EXACT path (OpenVINO fp32 on the CPU when
  installed: detections equal torch's to ~1e-5); bf16 needs a CPU with AMX or AVX512-BF16 (or
  CUDA), fp16 CUDA; int8 runs an ``--onnx`` file made by ``yolact-lite export --int8 --calib DIR``.
* ``--backend torch|onnxruntime|openvino`` pins the runtime. onnxruntime runs ``--onnx FILE``
  from ``yolact-lite export`` (implies the backend; same config), else the model is exported to
  a temporary file first; OpenVINO converts the torch model directly and caches it per weights
  (``~/.cache/yolact_lite``, or ``$YOLACT_LITE_CACHE``). ``--weights`` still gives class names
  and YOLACT++'s mask-IoU head. ``--compile``: ``torch.compile`` the network (torch backend).

Without ``--weights`` a randomly initialised model is used and a loud warning is printed:
its output is meaningless (with ``--onnx`` the network weights come from the file).
User errors end with one ``error: ...`` line and exit code 2. In a folder or glob, an
unreadable image is skipped with one line and the rest are processed (``--save-json`` still
written); the exit code is then 1.
"""

from __future__ import annotations

import argparse
import glob
import sys
import warnings
from pathlib import Path

from ..errors import DataError
from ..formats import JSON_MASK_FORMATS
from ..inference.runtime_choice import BACKENDS, PRECISIONS
from . import add_config_args, config_for_weights, run_cli

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="yolact-lite predict", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser, required=False)
    parser.add_argument("--weights", help="our checkpoint or an original YOLACT .pth (omit: random weights)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", help="image, folder, glob, video file, camera index or stream URL")
    source.add_argument("--image", help="one image file")
    source.add_argument("--images", help="a folder of images")
    source.add_argument("--video", help="a video file, or a camera index such as 0")
    parser.add_argument("--out", help="output image / folder / .mp4")
    parser.add_argument("--save-json", "--json", dest="json", metavar="PATH",
                        help="images: COCO-format results; videos: one JSON line per frame")
    parser.add_argument("--json-masks", choices=JSON_MASK_FORMATS, default=None,
                        help="how --save-json writes each mask: images default rle (COCO results, exact; polygons: "
                             "COCO polygons, holes filled), videos default polygons (with holes); none: boxes only")
    parser.add_argument("--track", action="store_true", help="videos: persistent instance IDs (mask-IoU tracker)")
    parser.add_argument("--track-score", type=float, default=0.5,
                        help="tracker: detections above this score are matched first and start tracks "
                             "(lower it for a weak model; default 0.5)")
    parser.add_argument("--max-frames", type=int, default=None, help="video: stop after N frames")
    parser.add_argument("--open-timeout", type=float, default=10.0, metavar="SECONDS",
                        help="camera / stream: give up when it does not open, or a stream sends nothing, "
                             "for this long (default 10)")
    parser.add_argument("--reconnect", type=int, default=5, metavar="N",
                        help="camera / stream: reopen a source that disconnects or stalls up to N times in a "
                             "row, waiting 0.5 s, 1 s, 2 s ... (max 8 s) between attempts; 0: never (default 5)")
    parser.add_argument("--display-fps", action="store_true", help="video: draw the live FPS onto frames")
    parser.add_argument("--display-threshold", "--score-threshold", type=float, default=0.3,
                        help="draw detections whose mask score is above this (drawing only; "
                             "--set inference.detection_threshold=X drops detections from every output)")
    parser.add_argument("--top-k", type=int, default=15, help="draw at most this many detections")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--batch", type=int, default=1, help="images / video frames per network batch")
    parser.add_argument("--no-fuse", action="store_true", help="keep BatchNorm layers (debugging)")
    parser.add_argument("--no-progress", action="store_true", help="video: no progress bar")
    parser.add_argument("--backend", choices=BACKENDS, default=None,
                        help="pin the network runtime (default: the fastest for --precision; onnxruntime with --onnx)")
    parser.add_argument("--precision", choices=PRECISIONS, default=None,
                        help="network precision (default auto: the fastest path here that keeps AP, printed; "
                             "fp32: the fastest exact path); bf16 needs a CPU with AMX/AVX512-BF16 or CUDA, fp16 "
                             "CUDA, int8 an --onnx file from yolact-lite export --int8")
    parser.add_argument("--onnx", help="ONNX file from yolact-lite export for the onnxruntime backend")
    parser.add_argument("--compile", action="store_true", help="torch.compile the network (torch backend)")
    parser.add_argument("--tile", type=int, default=None, metavar="PX",
                        help="images: tiled inference, PX-pixel tiles + the full frame (small objects in large frames)")
    parser.add_argument("--tile-overlap", type=float, default=0.2, help="fraction of a tile shared with its neighbours")
    parser.add_argument("--roi", default=None, metavar="X1,Y1,X2,Y2",
                        help="images: process only this area (results in frame coordinates)")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def build_predictor(args):
    from ..inference.predictor import RANDOM_WEIGHTS_WARNING, Predictor

    config = config_for_weights(args)
    backend = args.backend or ("onnxruntime" if args.onnx else None)
    # with --onnx the network weights are in the file; only YOLACT++'s mask-IoU head would be random
    if args.weights is None and not (args.onnx and not config.model.mask_iou_head):
        bar = "!" * 78
        print(f"{bar}\nWARNING: {RANDOM_WEIGHTS_WARNING}\n{bar}", file=sys.stderr, flush=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        predictor = Predictor(config, args.weights, device=args.device, fuse=not args.no_fuse,
                              backend=backend, onnx_path=args.onnx, compile=args.compile,
                              precision=default_precision(args), fastest_runtime=True)
    why = f" ({predictor.precision_reason})" if backend is None else ""  # the runtime was ours to choose
    print(f"network: {predictor.network_impl.describe()} on {predictor.device}{why}", flush=True)
    return predictor


def default_precision(args):
    """No --precision: ``auto`` (the fastest path that keeps AP, docs/inference.md), unless a
    runtime was pinned by --backend, --onnx or --compile (then that runtime's own default)."""
    if args.precision is not None or args.backend or args.onnx or args.compile:
        return args.precision
    return "auto"


def image_id_for(path: Path, position: int) -> int:
    return int(path.stem) if path.stem.isdigit() else position


def write_json(path: str, results: list) -> None:
    from ..io_utils import write_json_atomic

    target = Path(path)
    if not target.parent.exists():
        raise DataError(f"{target}: folder {target.parent} does not exist")
    write_json_atomic(target, results)
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


def run_images(args, predictor, paths, out_dir=None, out_file=None, preloaded=None) -> int:
    """Predict, draw and (``--save-json``) collect every image; an unreadable image of a folder
    or glob is skipped with one line, the others go on.  Returns how many were skipped."""
    from ..data import read_image
    from ..inference.visualize import draw_detections

    want_json = args.json is not None
    results = []
    batch = max(1, args.batch)
    skipped = 0
    for start in range(0, len(paths), batch):
        chunk, images, positions = [], [], []
        for position, path in enumerate(paths[start:start + batch], start):
            try:
                images.append(preloaded[path] if preloaded and path in preloaded else read_image(path))
            except DataError as exc:
                skipped += 1
                print(f"skipped {exc}", file=sys.stderr, flush=True)
                continue
            chunk.append(path)
            positions.append(position)
        if not chunk:
            continue
        filters = {} if want_json else {"display_threshold": args.display_threshold, "top_k": args.top_k}
        if args.tile is not None or args.roi is not None:  # tiles / ROI: one image at a time
            dets_list = [predictor.predict(im, tile=args.tile, tile_overlap=args.tile_overlap, roi=args.roi,
                                           **filters) for im in images]
        elif want_json:  # every detection for the json; the drawing filters below
            dets_list = predictor.predict_batch(images)
        else:
            dets_list = predictor.predict_batch(images, **filters)
        for position, path, image, dets in zip(positions, chunk, images, dets_list):
            drawn = draw_detections(image, dets, args.display_threshold, args.top_k)
            shown = int((dets.mask_scores > args.display_threshold).sum().clamp(max=args.top_k))
            print(describe(str(path), dets, predictor.class_names, shown))
            if out_dir is not None:
                write_image(out_dir / f"{path.stem}.png", drawn)
            elif out_file is not None:
                write_image(out_file, drawn)
            if want_json:
                results += dets.to_coco(image_id_for(path, position), predictor.category_ids,
                                        masks=args.json_masks)
        timings = ", ".join(f"{k} {v:.1f}" for k, v in predictor.timings.items())
        print(f"  ms ({len(chunk)} image{'s' if len(chunk) > 1 else ''}): {timings}")
    if want_json:
        write_json(args.json, results)
    if skipped:
        print(f"note: {skipped} of {len(paths)} images skipped (unreadable)", file=sys.stderr, flush=True)
    return skipped


def list_images(folder: Path) -> list:
    if not folder.exists():
        raise DataError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder (use --image for a single file)")
    paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not paths:
        raise DataError(f"{folder}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return paths


def run_video_mode(args, predictor, source) -> None:
    from ..data.video_source import LivePolicy, is_camera_source, is_stream_source, open_video
    from ..formats import frame_record, write_json_line
    from ..inference.track_records import TrackJsonLines
    from ..inference.tracking import Tracker, TrackerSettings
    from ..inference.video import run_video

    out = None
    if args.out:
        out = Path(args.out)
        if out.suffix == "":
            out = out.with_suffix(".mp4")
    live = is_camera_source(source) or is_stream_source(source)
    fps = 0.0
    if not live:  # frame times for files (a live source is not opened once more just for this)
        cap, _, _ = open_video(source)
        fps = cap.get(5) or 0.0  # CAP_PROP_FPS
        cap.release()
    tracker = None
    if args.track:
        high = args.track_score
        tracker = Tracker(TrackerSettings(high_score=high, low_score=min(0.1, high),
                                          new_track_score=min(1.0, high + 0.1)))
    on_tracks = on_result = stream = None
    if args.json is not None and tracker is not None:
        on_tracks = TrackJsonLines(args.json, masks=args.json_masks, category_ids=predictor.category_ids)
    elif args.json is not None:
        if not Path(args.json).parent.exists():
            raise DataError(f"{args.json}: folder {Path(args.json).parent} does not exist")
        stream = open(args.json, "w", encoding="utf-8")

        def on_result(index, frame, dets):
            time_s = index / fps if fps > 0 and not live else None
            write_json_line(stream, frame_record(dets, index, time_s, masks=args.json_masks,
                                                 category_ids=predictor.category_ids))
    try:
        summary = run_video(
            predictor, source, out, max_frames=args.max_frames, batch_size=max(1, args.batch),
            display_threshold=args.display_threshold, top_k=args.top_k, display_fps=args.display_fps,
            on_result=on_result, progress=not args.no_progress, tracker=tracker, on_tracks=on_tracks,
            live=LivePolicy(open_timeout=args.open_timeout, reconnects=args.reconnect))
    finally:
        for f in (stream, on_tracks):
            if f is not None:
                f.close()
    print(summary.format())
    if args.json is not None:
        print(f"wrote one JSON line per frame to {args.json}")
    if summary.source_lost:  # the frames so far are written; the run still failed
        raise DataError(summary.source_lost)


def classify_input(value: str):
    """``("image" | "images" | "video", value or [paths])`` for ``--input``."""
    from ..data.video_source import is_camera_source, is_stream_source

    if is_camera_source(value) or is_stream_source(value):
        return "video", value
    path = Path(value)
    if path.is_dir():
        return "images", value
    if any(c in value for c in "*?[") and not path.exists():
        matches = sorted(Path(p) for p in glob.glob(value, recursive=True))
        matches = [p for p in matches if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
        if not matches:
            raise DataError(f"{value}: the pattern matches no image file")
        return "glob", matches
    return ("image" if path.suffix.lower() in IMAGE_EXTENSIONS else "video"), value


def main(argv=None) -> int:
    args = parse_args(argv)
    globbed = None
    if args.input is not None:
        kind, value = classify_input(args.input)
        if kind == "glob":
            args.images, globbed = args.input, value
        else:
            setattr(args, kind, value)
    if args.json_masks is None:  # COCO results are exact as RLE; JSON lines read best as polygons
        args.json_masks = "polygons" if args.video is not None else "rle"
    if args.max_frames is not None and args.max_frames < 1:
        raise DataError("--max-frames must be >= 1")
    if not args.open_timeout > 0:
        raise DataError("--open-timeout must be > 0 seconds")
    if args.reconnect < 0:
        raise DataError("--reconnect must be >= 0")
    if args.top_k < 1:
        raise DataError("--top-k must be >= 1")
    if not 0.0 <= args.display_threshold <= 1.0:  # also NaN
        raise DataError(f"--display-threshold must be a score in [0, 1]; got {args.display_threshold}")
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
    if args.track and args.video is None:
        raise DataError("--track applies to videos, cameras and streams")
    if args.video is not None and (args.tile is not None or args.roi is not None):
        raise DataError("--tile / --roi apply to --image / --images (not to --video)")
    for target in (args.out, args.json):  # e.g. runs/...: the first output of a fresh checkout
        if target:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
    # check the inputs before the (slow) model build
    if args.image is not None:
        from ..data import read_image

        path = Path(args.image)
        pixels = read_image(path)  # unreadable / empty image: fail before the model build
        out_file = Path(args.out) if args.out else Path(f"{path.stem}_yolact.png")
        if not out_file.parent.exists():
            raise DataError(f"{out_file}: folder {out_file.parent} does not exist")
        predictor = build_predictor(args)
        run_images(args, predictor, [path], out_file=out_file, preloaded={path: pixels})
    elif args.images is not None:
        paths = globbed if globbed is not None else list_images(Path(args.images))
        if not args.out:
            raise DataError("--images needs --out FOLDER for the drawn images")
        out_dir = Path(args.out)
        if out_dir.exists() and not out_dir.is_dir():
            raise DataError(f"{out_dir}: exists and is not a folder")
        out_dir.mkdir(parents=True, exist_ok=True)
        predictor = build_predictor(args)
        if run_images(args, predictor, paths, out_dir=out_dir):
            return 1  # finished, but not every image
    else:
        from ..data.video_source import is_camera_source, open_video

        if not is_camera_source(args.video):  # unreadable file or stream: fail before the model build
            cap, _, _ = open_video(args.video, args.open_timeout)
            cap.release()
        predictor = build_predictor(args)
        run_video_mode(args, predictor, args.video)
    return 0


if __name__ == "__main__":
    run_cli(main)
