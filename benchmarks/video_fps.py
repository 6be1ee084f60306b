"""Video FPS of the bundled person model on every inference path of this machine, in ONE run.

The user's command is ``yolact-lite predict --weights data/models/person_effl0.pt --input
data/video/vtest_150.avi --out o.mp4 --track``; this measures it as typed (a subprocess: model
load and start-up excluded only as far as the CLI's own FPS line excludes them), then the same
job through the Python API for each path:

* ``default``: what the CLI picks with no flag (``precision="auto"``, fastest runtime);
* ``fastest exact``: the CLI's ``--precision fp32``;
* ``torch fp32`` (the Python default), and each backend x precision this machine runs:
  onnxruntime fp32, OpenVINO fp32 / bf16, torch bf16 (bf16 only with native bf16 hardware);

each in the threaded pipeline and the plain sequential loop, with the tracker on, the top 15
detections drawn and an mp4v file written. FPS = frames / wall time; stage columns are median
ms per frame (pipeline stages overlap, so they do not add up). The default path's pipeline and
sequential runs must give the same detections (checked). Paths run one after another in the
order listed; every path is warmed up on two frames first. AP per path: ``benchmarks/precision.py``.

``--config NAME ...`` times bundled configs with random weights instead (the class layer biased
so every frame has detections: their count and cost are realistic, their content is not), e.g.
the paper's setting on a GPU: ``--device cuda --config yolact_resnet50 yolact_base`` (torch fp32
and fp16 at 550; the paper: 33 FPS for YOLACT-550 ResNet-101 on a Titan Xp).

    python -m benchmarks.video_fps [--quick] [--smoke] [--max-frames 150] [--threads 2] [--video V]
        [--weights CKPT | --config NAME ...] [--device cpu|cuda] [--set KEY=VALUE] [--no-cli] [--name STEM]

Writes results/video_fps{_quick}.csv/.md and a bar chart (.png).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import torch

from benchmarks._common import RESULTS_DIR, machine_info, off_main_thread, write_results
from yolact_lite.errors import YolactError
from yolact_lite.inference.predictor import Predictor
from yolact_lite.inference.tracking import Tracker
from yolact_lite.inference.video import run_sequential, run_video
from yolact_lite.model.priors import anchor_scales_override

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = ROOT / "data" / "models" / "person_effl0.pt"
VIDEO = ROOT / "data" / "video" / "vtest_150.avi"
TOP_K = 15
# (label, Predictor keyword arguments)
PATHS = (
    ("default (CLI, no flag)", {"precision": "auto", "fastest_runtime": True}),
    ("fastest exact (CLI --precision fp32)", {"precision": "fp32", "fastest_runtime": True}),
    ("torch fp32 (Python default)", {}),
    ("onnxruntime fp32", {"backend": "onnxruntime", "precision": "fp32"}),
    ("openvino fp32", {"backend": "openvino", "precision": "fp32"}),
    ("torch bf16", {"backend": "torch", "precision": "bf16"}),
    ("openvino bf16", {"backend": "openvino", "precision": "bf16"}),
)
CUDA_PATHS = (("torch fp32", {}), ("torch fp16", {"precision": "fp16"}))
STAGES = ("decode", "preprocess", "network", "detect", "masks", "track", "draw", "encode")


def build_paths(make, table, labels=None):
    """{label: Predictor} for the paths of ``table`` this machine runs (``make(**kwargs)``
    builds one), and the skipped ones' reasons."""
    paths, skipped = {}, []
    for label, kwargs in table:
        if labels and label not in labels:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                paths[label] = make(**kwargs)
        except YolactError as exc:
            skipped.append({"path": label, "note": f"skipped: {exc}"})
    return paths, skipped


def makers(args):
    """(name, Predictor factory) per model under test: the weights file, or each --config
    with random detecting weights."""
    if not args.config:
        return [(args.weights.name, lambda **kw: Predictor.from_checkpoint(args.weights, args.set, device=args.device,
                                                                         **kw))]
    from yolact_lite import load_config
    from yolact_lite.checkpoint.files import model_checkpoint
    from yolact_lite.model.testing import detecting_model

    def factory(name):
        config = load_config(name, args.set)
        checkpoint = model_checkpoint(detecting_model(config, pretrained=False), config.to_dict())
        return lambda **kw: Predictor(config, checkpoint, device=args.device, **kw)

    return [(name, factory(name)) for name in args.config]


def collector(store):
    def callback(index, frame, dets):
        store.append((index, dets.classes.clone(), dets.scores.clone(), dets.boxes.clone()))
    return callback


def same(a, b) -> str:
    """Do two runs give the same detections, frame by frame (scores within 1e-4)?"""
    if len(a) != len(b):
        return f"NO ({len(a)} vs {len(b)} frames)"
    for (ia, ca, sa, ba), (ib, cb, sb, bb) in zip(a, b):
        if ia != ib or len(ca) != len(cb) or not torch.allclose(sa, sb, atol=1e-4) \
                or not torch.allclose(ba, bb, atol=0.05):
            return f"NO (frame {ia})"
    return f"yes ({len(a)} frames)"


def time_path(label, predictor, video: Path, frames: int, out_dir: Path, first_frame):
    """Rows (pipeline, sequential) of one path, and the pipeline's detections."""
    for _ in range(2):  # warm-up: oneDNN primitives, OpenVINO's first inference, the allocator
        off_main_thread(predictor.predict, first_frame, top_k=TOP_K)
    rows, collected = [], {}
    for mode, fn in (("pipeline", run_video), ("sequential", run_sequential)):
        got = []
        summary = off_main_thread(fn, predictor, video, out_dir / f"{mode}.mp4", max_frames=frames, top_k=TOP_K,
                                  display_threshold=0.3, tracker=Tracker(), on_result=collector(got), progress=False)
        collected[mode] = got
        row = {"path": label, "mode": mode, "network": predictor.network_impl.describe(),
               "frames": summary.frames, "wall_s": summary.wall_s, "fps": summary.frames / summary.wall_s}
        row.update({f"{k}_ms": summary.stage_ms.get(k) for k in STAGES})
        rows.append(row)
        print(f"{label:38s} {mode:10s} {row['fps']:6.1f} FPS  " + "  ".join(
            f"{k} {summary.stage_ms[k]:.1f}" for k in STAGES if k in summary.stage_ms), flush=True)
    return rows, collected


def cli_row(weights: Path, video: Path, frames: int, overrides, out_dir: Path):
    """The user's command, as typed, in a subprocess: its own FPS line."""
    cmd = [sys.executable, "-m", "yolact_lite", "predict", "--weights", str(weights), "--input", str(video),
           "--out", str(out_dir / "cli.mp4"), "--track", "--no-progress", "--max-frames", str(frames)]
    for item in overrides:
        cmd += ["--set", item]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    text = done.stdout + done.stderr
    fps = re.search(r"(\d+) frames in ([\d.]+) s -> ([\d.]+) FPS", text)
    network = re.search(r"^network: (.*)$", text, re.M)
    if done.returncode != 0 or fps is None:
        return {"path": "CLI command (no flag)", "note": f"failed: {text.strip().splitlines()[-1:]}"}
    return {"path": "CLI command (no flag)", "mode": "pipeline", "network": network.group(1) if network else "",
            "frames": int(fps.group(1)), "wall_s": float(fps.group(2)), "fps": float(fps.group(3))}


def plot(rows, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(r["path"] for r in rows if "fps" in r))
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(labels) + 1.5))
    for offset, mode, color in ((-0.2, "pipeline", "tab:blue"), (0.2, "sequential", "tab:grey")):
        values = [next((r["fps"] for r in rows if r["path"] == lab and r.get("mode") == mode), 0) for lab in labels]
        ax.barh([i + offset for i in range(len(labels))], values, height=0.38, color=color, label=mode)
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("frames / wall second (higher is better)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="30 frames")
    parser.add_argument("--smoke", action="store_true", help="4 frames at 128 px, two paths: a test that it runs")
    parser.add_argument("--video", type=Path, default=VIDEO)
    parser.add_argument("--weights", type=Path, default=WEIGHTS)
    parser.add_argument("--config", nargs="+", help="bundled configs with random detecting weights instead")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--max-frames", type=int, default=150)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--set", action="append", default=[], help="config override (repeatable)")
    parser.add_argument("--no-cli", action="store_true", help="skip the subprocess run of the CLI command")
    parser.add_argument("--name", default=None, help="results file stem (default video_fps[_quick])")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    labels = None
    if args.smoke:
        args.set = ["model.input_size=128", anchor_scales_override(128), *args.set]
        labels = [PATHS[0][0], PATHS[2][0]]
    torch.set_num_threads(args.threads)
    frames = 4 if args.smoke else 30 if args.quick else args.max_frames
    info = machine_info()
    print(info, flush=True)
    import cv2

    cap = cv2.VideoCapture(str(args.video))
    ok, first = cap.read()
    size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    cap.release()
    if not ok:
        raise SystemExit(f"error: cannot read {args.video}")
    rows, collected, skipped, sizes = [], {}, [], {}
    table = CUDA_PATHS if args.device == "cuda" else PATHS
    with tempfile.TemporaryDirectory() as tmp:
        if not (args.no_cli or args.smoke or args.config or args.device == "cuda"):
            rows.append(cli_row(args.weights, args.video, frames, args.set, Path(tmp)))
            print(f"{'CLI command (no flag)':38s} pipeline   {rows[-1].get('fps', 0):6.1f} FPS", flush=True)
        for model_name, make in makers(args):
            paths, missing = build_paths(make, table, labels)
            skipped += [{**row, "model": model_name} for row in missing]
            for label in list(paths):
                predictor = paths.pop(label)  # one at a time in memory (GPU)
                sizes[model_name] = predictor.config.model.input_size
                got, collected[(model_name, label)] = time_path(label, predictor, args.video, frames, Path(tmp),
                                                                first)
                rows += [{"model": model_name, **row} for row in got]
                del predictor
    first_path = next(iter(collected))
    agree = same(collected[first_path]["sequential"], collected[first_path]["pipeline"])
    print(f"{first_path[1]}, pipeline vs sequential, same detections: {agree}")
    rows += skipped
    models = ", ".join(f"`{name}` ({size} px)" for name, size in sizes.items())
    notes = (
        f"Model {models}{'' if not args.config else ', random weights biased to detect'}, device {args.device}, video "
        f"`{args.video.name}` ({size[0]}x{size[1]}), first {frames} frames, tracker on, top {TOP_K} drawn above "
        f"0.3, mp4v written. FPS = frames / wall time; stage columns: median ms per frame. Torch threads "
        f"{args.threads}. Paths one after another in this order, each warmed up on two frames. The CLI row is "
        f"the command as a user types it (a subprocess; its own FPS line). {first_path[1]}, pipeline vs "
        f"sequential, same detections: {agree}. Targets (2 cores): default >= 30 FPS with native bf16, >= 22 without; "
        f"--precision fp32 >= 22." + (" QUICK RUN: indicative only." if args.quick else "")
    )
    stem = args.name or ("video_fps" + ("_smoke" if args.smoke else "_quick" if args.quick else ""))
    csv_path, md_path = write_results(stem, rows, notes)
    png = RESULTS_DIR / f"{stem}.png"
    plot(rows, png, f"{info['cpu']} ({info['isa_flags'] or 'no AVX-512'}), {frames} frames, {args.threads} threads")
    print(f"wrote {csv_path}, {md_path} and {png}")


if __name__ == "__main__":
    main()
