"""End-to-end latency of one 640x480 image: preprocess, network, detect (NMS), masks.

CPU (default): yolact_resnet50 at 550 with random weights whose class layer is biased so that
at least 100 detections survive NMS (the worst case for detect and masks, as the original's
measurement in ORIGINAL_YOLACT.md section 10). Two paths on the same image and weights:

* plain: eager fp32 model, BatchNorm kept, contiguous NCHW, ``torch.no_grad``, the pure-torch
  reference Fast NMS, and full-image masks for every detection (like the original's
  postprocess: resize each whole prototype-resolution mask to the image);
* optimised: the :class:`~yolact_lite.Predictor`: ``torch.inference_mode``, BatchNorm folded,
  ``channels_last``, the compiled Fast NMS, masks computed only for kept detections and only
  inside each detection's crop footprint;
* optimised+display: the same with the usual display filter (``top_k=15``): only the drawn
  masks are built at full resolution;
* optimised, onnxruntime backend: the Predictor with the network exported to ONNX and run by
  onnxruntime (when installed); detect and masks as "optimised".

Both full paths must return the same detections (checked). Reference: the original measured
865 ms network + 115 ms Detect + 120 ms postprocess (100 masks) on this kind of machine;
target: optimised >= 1.5x faster than plain overall.

With ``--device cuda``: FPS of yolact_resnet50 and yolact_base at 550, batch 1, fp32 and fp16
(autocast), end to end (preprocess, network, NMS, masks, copy to CPU) on the same image.

    python benchmarks/end_to_end.py [--quick] [--threads 2] [--device cpu|cuda] [--config yolact_resnet50]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
for p in (str(ROOT), str(Path(__file__).resolve().parent)):
    if p not in sys.path:
        sys.path.insert(0, p)

from _common import PHOTO, load_photo, machine_info, median_ms, write_results  # noqa: E402

from yolact_lite import load_config  # noqa: E402
from yolact_lite.checkpoint import model_checkpoint  # noqa: E402
from yolact_lite.data.preprocess import preprocess_image  # noqa: E402
from yolact_lite.model import build_model, detecting_model  # noqa: E402
from yolact_lite.ops import extension_available, fast_nms_reference  # noqa: E402
from yolact_lite.postprocess import assemble_detections, detect, outputs_for_image  # noqa: E402
from yolact_lite.predictor import Predictor  # noqa: E402

STAGES = ("preprocess", "network", "detect", "masks")
ORIGINAL_MS = {"preprocess": 3.0, "network": 865.0, "detect": 115.0, "masks": 120.0}




class PlainPath:
    """The un-optimised reference path (see the module docstring)."""

    def __init__(self, config, checkpoint):
        self.config = config
        self.model = build_model(config, pretrained=False)
        self.model.load_state_dict(checkpoint["model"])
        self.model.eval()
        self.timings = {}

    def predict(self, image):
        m, inf = self.config.model, self.config.inference
        t0 = time.perf_counter()
        x, geometry = preprocess_image(image, m.input_size, m.pixel_mean, m.pixel_std, m.preserve_aspect_ratio)
        x = x[None]
        t1 = time.perf_counter()
        with torch.no_grad():
            out = self.model(x)
            t2 = time.perf_counter()
            det = detect(outputs_for_image(out, 0), inf, nms_fn=fast_nms_reference)
            t3 = time.perf_counter()
            dets = assemble_detections(det, out["prototypes"][0], geometry, inf,
                                       mask_iou_head=self.model.mask_iou_head, roi_resize=False)
        t4 = time.perf_counter()
        self.timings = {"preprocess": (t1 - t0) * 1e3, "network": (t2 - t1) * 1e3,
                        "detect": (t3 - t2) * 1e3, "masks": (t4 - t3) * 1e3}
        return dets


def time_stages(path, image, repeats: int, warmup: int, **kwargs) -> dict:
    for _ in range(warmup):
        path.predict(image, **kwargs)
    per_stage = {s: [] for s in STAGES}
    totals = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        path.predict(image, **kwargs)
        totals.append((time.perf_counter() - t0) * 1e3)
        for s in STAGES:
            per_stage[s].append(path.timings[s])
    row = {f"{s}_ms": statistics.median(v) for s, v in per_stage.items()}
    row["total_ms"] = statistics.median(totals)
    return row


def same_detections(a, b, score_tol: float = 1e-4, box_tol: float = 0.05) -> str:
    """Same detections up to the order of (numerically) tied scores: every detection of ``a``
    is matched to an unused one of ``b`` with the same class, score and box (within
    tolerances); matched masks are compared pixel by pixel."""
    if len(a) != len(b):
        return f"NO (counts {len(a)} vs {len(b)})"
    used = torch.zeros(len(b), dtype=torch.bool)
    differing = 0
    for i in range(len(a)):
        ok = (~used & (b.classes == a.classes[i]) & ((b.scores - a.scores[i]).abs() <= score_tol)
              & ((b.boxes - a.boxes[i]).abs().amax(1) <= box_tol))
        if not ok.any():
            return f"NO (detection {i}: class {int(a.classes[i])} score {float(a.scores[i]):.4f} unmatched)"
        j = int(ok.nonzero()[0])
        used[j] = True
        differing += int((a.masks[i] != b.masks[j]).sum())
    fraction = differing / max(a.masks.numel(), 1)
    if fraction > 1e-3:
        return f"NO (masks differ on {fraction:.2%} of pixels)"
    return f"yes ({len(a)} detections, mask pixels differing {fraction:.1e})"


def run_cpu(args) -> None:
    torch.set_num_threads(args.threads)
    repeats, warmup = (2, 1) if args.quick else (args.repeats, 2)
    config = load_config(args.config, args.set)
    checkpoint = model_checkpoint(detecting_model(config), config.to_dict())
    image = load_photo()
    plain = PlainPath(config, checkpoint)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fast = Predictor(config, checkpoint, fuse=True)
        ort = Predictor(config, checkpoint, backend="onnxruntime") if importlib.util.find_spec("onnxruntime") else None

    ref_dets = plain.predict(image)
    fast_dets = fast.predict(image)
    agree = same_detections(ref_dets, fast_dets)
    print(f"detections: plain {len(ref_dets)}, optimised {len(fast_dets)}; same: {agree}")
    ort_agree = "onnxruntime not installed"
    if ort is not None:
        ort_dets = ort.predict(image)
        ort_agree = same_detections(ref_dets, ort_dets)
        print(f"detections: onnxruntime {len(ort_dets)}; same as plain: {ort_agree}")
    if len(ref_dets) < 100:
        print("warning: fewer than 100 detections survive; the worst case is not reached")

    rows = []
    original = dict(ORIGINAL_MS)
    rows.append({"path": "original (measured, section 10)", **{f"{s}_ms": original[s] for s in STAGES},
                 "total_ms": sum(original.values()), "detections": 100, "speedup_vs_plain": ""})
    plain_row = time_stages(plain, image, repeats, warmup)
    rows.append({"path": "plain", **plain_row, "detections": len(ref_dets), "speedup_vs_plain": 1.0})
    fast_row = time_stages(fast, image, repeats, warmup)
    rows.append({"path": "optimised", **fast_row, "detections": len(fast_dets),
                 "speedup_vs_plain": plain_row["total_ms"] / fast_row["total_ms"]})
    disp_row = time_stages(fast, image, repeats, warmup, top_k=15)
    rows.append({"path": "optimised + display top_k=15", **disp_row, "detections": 15,
                 "speedup_vs_plain": plain_row["total_ms"] / disp_row["total_ms"]})
    if ort is not None:
        ort_row = time_stages(ort, image, repeats, warmup)
        rows.append({"path": "optimised, onnxruntime backend", **ort_row, "detections": len(ort_dets),
                     "speedup_vs_plain": plain_row["total_ms"] / ort_row["total_ms"]})
    for row in rows[1:]:
        row["vs_original"] = rows[0]["total_ms"] / row["total_ms"]
    print_table(rows)
    notes = (
        f"{args.config} {'with ' + ' '.join(args.set) if args.set else ''} at "
        f"{config.model.input_size}, random weights with a biased class layer (>= 100 detections), "
        f"640x480 photo `{PHOTO.name}`, torch threads {args.threads}, median of {repeats} after "
        f"{warmup} warm-up(s). Compiled NMS extension: {extension_available()}. "
        f"Same detections (plain vs optimised): {agree}; (plain vs onnxruntime): {ort_agree}. The 'original' row is the original "
        f"YOLACT measured on this kind of machine (ORIGINAL_YOLACT.md section 10: network 865, "
        f"Detect 115, postprocess 120 ms; preprocess ~3 ms)."
        + (" QUICK RUN: numbers are indicative only." if args.quick else "")
    )
    csv_path, md_path = write_results("end_to_end" + ("_quick" if args.quick else ""), rows, notes)
    print(f"wrote {csv_path} and {md_path}")


def run_cuda(args) -> None:
    if not torch.cuda.is_available():
        raise SystemExit("error: --device cuda requested but CUDA is not available")
    torch.backends.cudnn.benchmark = True
    repeats, warmup = (10, 5) if args.quick else (100, 20)
    image = load_photo()
    rows = []
    for name in ("yolact_resnet50", "yolact_base"):
        config = load_config(name, args.set)
        checkpoint = model_checkpoint(detecting_model(config), config.to_dict())
        for precision in ("fp32", "fp16"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pred = Predictor(config, checkpoint, device="cuda", precision=precision)
            dets = pred.predict(image)
            ms = median_ms(lambda: pred.predict(image), repeats=repeats, warmup=warmup, device="cuda")
            stages = {f"{s}_ms": pred.timings[s] for s in STAGES}  # last call
            rows.append({"config": name, "precision": precision, "batch": 1, "total_ms": ms, "fps": 1000.0 / ms,
                         **stages, "detections": len(dets)})
            print(rows[-1])
            del pred
            torch.cuda.empty_cache()
    print_table(rows)
    notes = (f"{torch.cuda.get_device_name(0)}, 550 input, batch 1, 640x480 photo, end to end incl. "
             f"Fast NMS (compiled CUDA kernel when built), masks for all detections and the copy to CPU; "
             f"random weights with >= 100 detections; median of {repeats} after {warmup} warm-ups; "
             f"per-stage columns are the last call's. fp16 = torch.autocast on the network only.")
    csv_path, md_path = write_results("end_to_end_cuda" + ("_quick" if args.quick else ""), rows, notes)
    print(f"wrote {csv_path} and {md_path}")


def print_table(rows) -> None:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    fmt = lambda v: f"{v:.1f}" if isinstance(v, float) else str(v)  # noqa: E731
    widths = {c: max(len(c), *(len(fmt(r.get(c, ""))) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for r in rows:
        print("  ".join(fmt(r.get(c, "")).ljust(widths[c]) for c in columns))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 repeats after 1 warm-up (CPU)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (CPU)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--config", default="yolact_resnet50")
    parser.add_argument("--set", action="append", default=[], help="config override (repeatable)")
    args = parser.parse_args()
    print(machine_info())
    if args.device == "cuda":
        run_cuda(args)
    else:
        run_cpu(args)


if __name__ == "__main__":
    main()
