"""Video FPS on CPU: the threaded pipeline vs a plain sequential loop over the same frames.

Model: ``yolact_effl0`` at a CPU-friendly 320 input (anchor scales scaled to match), random
weights with a class layer biased so that every frame has detections; the usual display
settings (top 15 detections drawn with masks, boxes and labels). Both runs decode the video,
run preprocess -> network -> NMS -> masks -> drawing, and encode an mp4v file (to a temporary
folder unless ``--out`` is given); both must give the same detections (checked frame by frame).

Video: ``../shared/data/video/vtest.avi`` (768x576, 10 fps) when present, else the bundled
``data/video/vtest_150.avi`` excerpt; ``--video`` picks another. Target: >= 10 FPS on 2 cores.

    python -m benchmarks.video_fps [--quick] [--max-frames 150] [--batch 1] [--threads 2] [--video V]
        [--backend torch|onnxruntime|openvino] [--precision fp32|bf16|auto] [--name STEM]
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import torch

from benchmarks._common import SHARED_DATA, machine_info, off_main_thread, write_results
from yolact_lite import load_config
from yolact_lite.checkpoint.files import model_checkpoint
from yolact_lite.inference.predictor import Predictor
from yolact_lite.inference.video import open_video, run_sequential, run_video
from yolact_lite.model.priors import anchor_scales_override
from yolact_lite.model.testing import detecting_model

ROOT = Path(__file__).resolve().parent.parent

OVERRIDES = ["model.input_size=320", anchor_scales_override(320)]
SHARED_VIDEO = SHARED_DATA / "video" / "vtest.avi"
BUNDLED_VIDEO = ROOT / "data" / "video" / "vtest_150.avi"
TOP_K = 15


def default_video() -> Path:
    return SHARED_VIDEO if SHARED_VIDEO.is_file() else BUNDLED_VIDEO


def build_predictor(overrides, backend=None, precision=None) -> Predictor:
    config = load_config("yolact_effl0", OVERRIDES + list(overrides))
    model = detecting_model(config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Predictor(config, model_checkpoint(model, config.to_dict()), backend=backend, precision=precision)


def collector(store):
    def callback(index, frame, dets):
        store.append((index, dets.classes.clone(), dets.scores.clone(), dets.boxes.clone()))
    return callback


def compare(a, b) -> str:
    if len(a) != len(b):
        return f"NO ({len(a)} vs {len(b)} frames)"
    for (ia, ca, sa, ba), (ib, cb, sb, bb) in zip(a, b):
        if ia != ib:
            return f"NO (frame order {ia} vs {ib})"
        if len(ca) != len(cb) or not torch.allclose(sa, sb, atol=1e-4):
            return f"NO (frame {ia}: scores differ)"
        # classes/boxes may only differ among numerically tied scores
        for k in range(len(ca)):
            tied = (sb - sa[k]).abs() <= 1e-4
            if not ((cb == ca[k]) & tied & ((bb - ba[k]).abs().amax(1) <= 0.05)).any():
                return f"NO (frame {ia}: detection {k} unmatched)"
    return f"yes ({len(a)} frames)"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="30 frames")
    parser.add_argument("--smoke", action="store_true",
                        help="4 frames of the bundled video at 128 px: a test that it runs")
    parser.add_argument("--video", type=Path, default=None)
    parser.add_argument("--max-frames", type=int, default=150)
    parser.add_argument("--batch", type=int, default=1, help="frames per network batch in the pipeline")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--out", type=Path, default=None, help="keep the written videos in this folder")
    parser.add_argument("--set", action="append", default=[], help="config override (repeatable)")
    parser.add_argument("--backend", choices=("torch", "onnxruntime", "openvino"), default=None,
                        help="network runtime (default torch)")
    parser.add_argument("--precision", choices=("fp32", "bf16", "auto"), default=None,
                        help="network precision (default fp32; auto = fastest float path here)")
    parser.add_argument("--name", default=None, help="results file stem (default video_fps[_quick])")
    args = parser.parse_args(argv)
    if args.smoke:
        args.video = args.video or BUNDLED_VIDEO
        args.set = ["model.input_size=128", anchor_scales_override(128), *args.set]
    torch.set_num_threads(args.threads)
    video = args.video or default_video()
    max_frames = 4 if args.smoke else 30 if args.quick else args.max_frames
    print(machine_info())

    cap, _, _ = open_video(video)
    width, height = int(cap.get(3)), int(cap.get(4))
    cap.release()
    predictor = build_predictor(args.set, args.backend, args.precision)
    # warm-up (oneDNN primitives, allocator) on one frame, outside both measurements
    cap, _, _ = open_video(video)
    ok, frame = cap.read()
    cap.release()
    for _ in range(2):
        off_main_thread(predictor.predict, frame, top_k=TOP_K)

    rows, collected = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = args.out or Path(tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        runs = [("sequential", run_sequential, {}), ("pipeline", run_video, {"batch_size": args.batch})]
        for name, fn, kwargs in runs:
            got = []
            summary = off_main_thread(fn, predictor, video, out_dir / f"{name}.mp4", max_frames=max_frames,
                                      top_k=TOP_K, on_result=collector(got), progress=False, **kwargs)
            collected[name] = got
            print(summary.format())
            row = {"mode": name, "network": predictor.network_impl.describe(), "batch": summary.batch_size,
                   "frames": summary.frames,
                   "wall_s": summary.wall_s, "mean_fps": summary.mean_fps, "median_fps": summary.median_fps}
            row.update({f"{k}_ms": v for k, v in summary.stage_ms.items()})
            rows.append(row)
    agree = compare(collected["sequential"], collected["pipeline"])
    rows[1]["speedup"] = rows[1]["mean_fps"] / rows[0]["mean_fps"] if rows[0]["mean_fps"] else 0.0
    rows[0]["speedup"] = 1.0
    print(f"same detections: {agree}")
    for r in rows:
        print("  ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()))
    notes = (
        f"Video `{video.name}` ({width}x{height}), first {max_frames} frames; yolact_effl0 at 320 "
        f"(scales int(s*320/550)), random weights biased to detect, top {TOP_K} drawn with masks; "
        f"mp4v encoding included; torch threads {args.threads}; two warm-up frames before both runs; "
        f"both runs execute off the main thread (see `off_main_thread`). "
        f"Stage columns: median ms per frame (pipeline stages overlap, so they do not add up to the "
        f"frame time). Network: {predictor.network_impl.describe()}. Same detections (sequential vs "
        f"pipeline): {agree}. Target >= 10 FPS on 2 cores."
        + (" QUICK RUN: numbers are indicative only." if args.quick else "")
    )
    stem = args.name or ("video_fps" + ("_quick" if args.quick else ""))
    csv_path, md_path = write_results(stem, rows, notes)
    print(f"wrote {csv_path} and {md_path}")


if __name__ == "__main__":
    main()
