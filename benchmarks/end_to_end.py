"""End-to-end latency of one 640x480 image: preprocess, network, detect (NMS), masks, for
every precision and runtime side by side in ONE run.

CPU (default): yolact_resnet50 at 550 with random weights whose class layer is biased so that
at least 100 detections survive NMS (the worst case for detect and masks, as the original's
measurement). Rows, same image and weights:

* original YOLACT: its measured end-to-end figure for THIS kind of CPU (736 ms on an Intel
  Xeon with AMX, 1103 ms on an AMD EPYC; none for other CPUs): a ratio is only valid against
  the original on the same CPU;
* plain: eager fp32 model, BatchNorm kept, contiguous NCHW, ``torch.no_grad``, the pure-torch
  reference Fast NMS, and full-image masks for every detection (the original's computation:
  the in-run yardstick);
* optimised (torch fp32): the :class:`~yolact_lite.Predictor` (BatchNorm folded,
  ``channels_last``, compiled Fast NMS, masks only inside each crop footprint), and with the
  display filter (``top_k=15``);
* CLI default: what ``yolact-lite predict`` runs with no flag (``precision="auto"`` on the
  fastest runtime);
* onnxruntime fp32, openvino fp32 (when installed): the Predictor with that backend;
* torch bf16, openvino bf16 (CPUs with native bf16), onnxruntime int8, openvino int8
  (static QDQ int8 calibrated on 16 coco_mini train images).

fp32 rows must give the plain path's detections (checked); bf16 / int8 rows report their
agreement, for the record only: with random weights it is no accuracy measure
(``benchmarks/precision.py`` measures that with trained weights).

With ``--device cuda``: FPS of yolact_resnet50 and yolact_base at 550, fp32 and fp16
(autocast), batches 1 and 8 (``--cuda-batches``), end to end on the same image.

    python -m benchmarks.end_to_end [--quick] [--repeats 5] [--threads 2] [--device cpu|cuda] [--config yolact_resnet50]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
import warnings
from pathlib import Path

import torch

from benchmarks._common import PHOTO, load_photo, machine_info, median_ms, write_results
from yolact_lite import load_config
from yolact_lite.checkpoint.files import model_checkpoint
from yolact_lite.data.preprocess import preprocess_image
from yolact_lite.errors import YolactError
from yolact_lite.hardware import cpu_info
from yolact_lite.inference.detection import detect
from yolact_lite.inference.mask_assembly import assemble_detections
from yolact_lite.inference.predictor import Predictor
from yolact_lite.model import build_model
from yolact_lite.model.outputs import decode_outputs, outputs_for_image
from yolact_lite.model.priors import anchor_scales_override
from yolact_lite.model.testing import detecting_model
from yolact_lite.ops import extension_available, fast_nms_reference

ROOT = Path(__file__).resolve().parent.parent

STAGES = ("preprocess", "network", "detect", "masks")
# The original YOLACT end to end (yolact_resnet50, 640x480 photo, 100 masks) per kind of CPU.
ORIGINAL_TOTAL_MS = {"amd_epyc": 1103.0, "intel_amx": 736.0}


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
            det = detect(outputs_for_image(decode_outputs(out), 0), inf, nms_fn=fast_nms_reference)
            t3 = time.perf_counter()
            dets = assemble_detections(det, out["prototypes"][0], geometry, inf,
                                       mask_iou_head=self.model.mask_iou_head, roi_resize=False)
        t4 = time.perf_counter()
        self.timings = {"preprocess": (t1 - t0) * 1e3, "network": (t2 - t1) * 1e3,
                        "detect": (t3 - t2) * 1e3, "masks": (t4 - t3) * 1e3}
        return dets


def time_interleaved(paths: dict, image, repeats: int, warmup: int) -> dict:
    """Median stage / total ms per path. ``paths``: label -> (object with ``predict`` and
    ``timings``, predict kwargs). Each round visits every path once, so a change of machine
    load (other processes) hits every path alike; ``total_min_ms`` is the least disturbed run."""
    for obj, kwargs in paths.values():
        for _ in range(warmup):
            obj.predict(image, **kwargs)
    per_stage = {label: {s: [] for s in STAGES} for label in paths}
    totals = {label: [] for label in paths}
    for _ in range(repeats):
        for label, (obj, kwargs) in paths.items():
            t0 = time.perf_counter()
            obj.predict(image, **kwargs)
            totals[label].append((time.perf_counter() - t0) * 1e3)
            for s in STAGES:
                per_stage[label][s].append(obj.timings[s])
    rows = {}
    for label in paths:
        row = {f"{s}_ms": statistics.median(v) for s, v in per_stage[label].items()}
        row["total_ms"] = statistics.median(totals[label])
        row["total_min_ms"] = min(totals[label])
        rows[label] = row
    return rows


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


def original_for_this_cpu():
    """(total ms, label) of the original YOLACT's end-to-end figure for this kind of CPU, or
    (None, reason): a ratio is only meaningful against the original on the same CPU."""
    cpu = cpu_info()
    if cpu.amx and "Intel" in cpu.model:
        return ORIGINAL_TOTAL_MS["intel_amx"], "original 736 ms, measured on an Intel Xeon with AMX (issue 14)"
    if "AMD EPYC" in cpu.model:
        return ORIGINAL_TOTAL_MS["amd_epyc"], (
            "original 1103 ms, measured on an AMD EPYC machine (docs/original_yolact.md, section 4) that is not "
            f"necessarily this one ({cpu.model}, flags {' '.join(cpu.flags)}): the ratio is approximate")
    return None, f"no measurement of the original on a {cpu.model}: use speedup_vs_plain (same run)"


def calibration_batches(config, count: int = 16):
    from yolact_lite.data import read_image

    m = config.model
    paths = sorted((ROOT / "data" / "coco_mini" / "train" / "images").glob("*.jpg"))[:count]
    return [preprocess_image(read_image(p), m.input_size, m.pixel_mean, m.pixel_std,
                             m.preserve_aspect_ratio)[0][None] for p in paths]


# (label, Predictor keyword arguments, ONNX file key): the precision rows of one run
CPU_PATHS = (
    ("optimised (torch fp32)", {}, None),
    ("CLI default (no flag)", {"precision": "auto", "fastest_runtime": True}, None),
    ("onnxruntime fp32", {"backend": "onnxruntime"}, "fp32"),
    ("openvino fp32", {"backend": "openvino", "precision": "fp32"}, "fp32"),
    ("torch bf16", {"precision": "bf16"}, None),
    ("openvino bf16", {"backend": "openvino", "precision": "bf16"}, "fp32"),
    ("onnxruntime int8", {"backend": "onnxruntime", "precision": "int8"}, "int8"),
    ("openvino int8", {"backend": "openvino", "precision": "int8"}, "int8"),
)


def run_cpu(args) -> None:
    import tempfile

    from yolact_lite.inference.agreement import match_detections, summarise_agreement
    from yolact_lite.inference.export import export_onnx, quantize_int8

    torch.set_num_threads(args.threads)
    repeats, warmup = (1, 0) if args.smoke else (2, 1) if args.quick else (args.repeats, 2)
    config = load_config(args.config, args.set)
    checkpoint = model_checkpoint(detecting_model(config), config.to_dict())
    image = load_photo()
    plain = PlainPath(config, checkpoint)
    folder = Path(tempfile.mkdtemp(prefix="yolact_e2e_"))
    files = {"fp32": export_onnx(plain.model, config, folder / "fp32.onnx")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        calibration = calibration_batches(config, 2 if args.smoke else 16)
        files["int8"] = quantize_int8(files["fp32"], folder / "int8.onnx", calibration)
    paths, skipped = {}, []
    for label, kwargs, onnx in CPU_PATHS:
        if kwargs.get("backend") == "openvino" and not importlib.util.find_spec("openvino"):
            skipped.append(f"{label}: openvino not installed")
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                paths[label] = Predictor(config, checkpoint, onnx_path=files[onnx] if onnx else None, **kwargs)
        except YolactError as exc:
            skipped.append(f"{label}: {exc}")
    for line in skipped:
        print(f"skipped {line}")

    ref_dets = plain.predict(image)
    if len(ref_dets) < 100:
        print("warning: fewer than 100 detections survive; the worst case is not reached")
    checks = {}
    for label, pred in paths.items():
        dets = pred.predict(image)
        if pred.precision == "fp32":
            checks[label] = "same as plain: " + same_detections(ref_dets, dets)
        else:
            agree = summarise_agreement([match_detections(ref_dets, dets)])
            checks[label] = (f"agreement with plain {agree['agreement']:.0%} (class + mask IoU >= 0.9, "
                             f"random weights: not an accuracy measure)")
        print(f"{label:24s} {len(dets)} detections; {checks[label]}", flush=True)

    total, original_label = original_for_this_cpu()
    rows = []
    if total is not None:
        rows.append({"path": "original YOLACT (this kind of CPU)", "total_ms": total, "detections": 100,
                     "check": original_label})
    timed = {"plain": (plain, {})}
    for label, pred in paths.items():
        timed[label] = (pred, {})
        if label == "optimised (torch fp32)":
            timed["optimised + display top_k=15"] = (pred, {"top_k": 15})
    times = time_interleaved(timed, image, repeats, warmup)
    plain_row = times["plain"]
    rows.append({"path": "plain (eager fp32, the original's computation)", **plain_row,
                 "detections": len(ref_dets), "speedup_vs_plain": 1.0, "check": "reference"})
    for label, (pred, kwargs) in timed.items():
        if label == "plain":
            continue
        row = times[label]
        rows.append({"path": label, "precision": pred.precision, **row,
                     "detections": 15 if kwargs else len(pred.predict(image)),
                     "speedup_vs_plain": plain_row["total_ms"] / row["total_ms"], "check": checks.get(label, "")})
    for row in rows:
        if total is not None and "preprocess_ms" in row:
            row["vs_original"] = total / row["total_ms"]
    print_table(rows)
    notes = (
        f"{args.config} {'with ' + ' '.join(args.set) if args.set else ''} at "
        f"{config.model.input_size}, random weights with a biased class layer (>= 100 detections), "
        f"640x480 photo `{PHOTO.name}`, torch threads {args.threads} (onnxruntime / OpenVINO the same), "
        f"median of {repeats} rounds after {warmup} warm-up(s); each round runs every path once, in turn "
        f"(total_min_ms: the fastest run). Compiled NMS extension: {extension_available()}. "
        f"Original's figure: {original_label}. In-run yardstick: the plain path (eager fp32, BatchNorm kept, "
        f"reference Fast NMS, whole-map masks), which reproduces the original's computation. fp32 rows must "
        f"give the plain path's detections (same count and classes, scores within 1e-4, boxes within 0.05 px, "
        f"mask pixels); bf16 / int8 rows report their agreement (random weights: their accuracy is measured by "
        f"benchmarks/precision.py with trained weights). int8: onnxruntime static quantisation (QDQ, "
        f"per-channel) calibrated on 16 coco_mini train images. Skipped: {'; '.join(skipped) or 'none'}."
        + (" QUICK RUN: numbers are indicative only." if args.quick else "")
    )
    csv_path, md_path = write_results(args.name or "end_to_end" + ("_quick" if args.quick else ""), rows, notes)
    print(f"wrote {csv_path} and {md_path}")


def run_cuda(args) -> None:
    if not torch.cuda.is_available():
        raise SystemExit("error: --device cuda requested but CUDA is not available")
    torch.backends.cudnn.benchmark = True
    repeats, warmup = (10, 5) if args.quick else (50, 10)
    image = load_photo()
    rows = []
    for name in ("yolact_resnet50", "yolact_base"):
        config = load_config(name, args.set)
        checkpoint = model_checkpoint(detecting_model(config), config.to_dict())
        for precision in ("fp32", "fp16"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pred = Predictor(config, checkpoint, device="cuda", precision=precision)
            for batch in args.cuda_batches:
                images = [image] * batch
                dets = pred.predict_batch(images)
                ms = median_ms(lambda p=pred, im=images: p.predict_batch(im), repeats=repeats, warmup=warmup,
                               device="cuda")
                stages = {f"{s}_ms": pred.timings[s] for s in STAGES}  # last call
                rows.append({"config": name, "precision": precision, "batch": batch, "total_ms": ms,
                             "fps": 1000.0 * batch / ms, **stages, "detections": len(dets[0])})
                print(rows[-1], flush=True)
            del pred
            torch.cuda.empty_cache()
    print_table(rows)
    notes = (f"{torch.cuda.get_device_name(0)}, 550 input, batches {args.cuda_batches} of the same 640x480 photo, "
             f"end to end incl. Fast NMS (compiled CUDA kernel when built), masks for all detections and the copy "
             f"to CPU; fps = images per second; random weights with >= 100 detections; median of {repeats} after "
             f"{warmup} warm-ups; per-stage columns are the last call's. fp16 = torch.autocast on the network only. "
             f"Reference (issue 14): 200 FPS for yolact_resnet50 fp16 at batch 8.")
    csv_path, md_path = write_results(args.name or "end_to_end_cuda" + ("_quick" if args.quick else ""), rows, notes)
    print(f"wrote {csv_path} and {md_path}")


def print_table(rows) -> None:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    fmt = lambda v: f"{v:.1f}" if isinstance(v, float) else str(v)  # noqa: E731
    widths = {c: max(len(c), *(len(fmt(r.get(c, ""))) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for r in rows:
        print("  ".join(fmt(r.get(c, "")).ljust(widths[c]) for c in columns))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 repeats after 1 warm-up (CPU)")
    parser.add_argument("--smoke", action="store_true",
                        help="yolact_effl0 at 128 px, 1 repeat, no warm-up, 2 calibration images: a test that it runs")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (CPU)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--config", default="yolact_resnet50")
    parser.add_argument("--set", action="append", default=[], help="config override (repeatable)")
    parser.add_argument("--cuda-batches", type=lambda v: [int(x) for x in v.split(",")], default=[1, 8],
                        help="CUDA: batch sizes, comma separated (default 1,8)")
    parser.add_argument("--name", default=None,
                        help="results file stem (default end_to_end[_cuda][_quick]); e.g. one per CPU kind")
    args = parser.parse_args(argv)
    if args.smoke:
        args.config, args.repeats, args.cuda_batches = "yolact_effl0", 1, [1]
        args.set = ["model.input_size=128", anchor_scales_override(128), *args.set]
    print(machine_info())
    if args.device == "cuda":
        run_cuda(args)
    else:
        run_cpu(args)


if __name__ == "__main__":
    main()
