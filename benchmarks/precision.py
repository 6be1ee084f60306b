"""Speed and accuracy of each inference precision, side by side in one run.

Paths (all through the Predictor; the same weights): torch fp32 (the reference), the CLI's
default (``precision="auto"`` on the fastest runtime: what ``yolact-lite predict`` runs with
no flag), torch bf16 (CPU with native bf16, or CUDA), onnxruntime fp32, onnxruntime int8
(static QDQ, per-channel, calibrated on ``--calib`` images), and with OpenVINO: OpenVINO
fp32, bf16 (native bf16 only) and int8 (the same int8 file). Paths this machine cannot run
are listed as skipped, with the reason.

For every path, on the bundled val images (``data/coco_mini/val``):

* agreement: the share of the fp32 path's detections with score > 0.3 that this path
  reproduces: same class and full-resolution mask IoU >= 0.9 (greedy, score order);
* box error (px, max corner) and score error of the matched pairs (mean / max);
* mask and box AP (pycocotools) on the val annotations, and its change from fp32;

and its speed on the 640x480 photo: median end to end (display filter score > 0.3, top 15)
and network-stage ms over ``--repeats`` rounds that visit every path in turn (so a change of
load hits every path alike).

The rule for a non-exact default (bf16 on CPU, fp16 on CUDA): mask and box AP within 1 point
of fp32 on all 90 val images (``gate``; agreement is reported beside it, not gated: see the
notes of the results file for why the two differ). It applies only to trained weights:
``--weights`` (default: the newest checkpoint in data/models/, where the bundled person
model goes). Without one the model is random with a biased class layer (detections exist,
AP is meaningless): those rows are labelled ``random weights: speed only`` and no gate is evaluated.

    python -m benchmarks.precision [--weights CKPT] [--config NAME] [--images 90] [--repeats 5] [--quick]

Writes results/precision{_quick}.csv/.md and a plot of AP against speed (.png).
Timing: run under the shared lock (``flock /tmp/yolact_bench.lock ...``).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

from benchmarks._common import PHOTO, RESULTS_DIR, load_photo, machine_info, write_results
from yolact_lite import load_config
from yolact_lite.checkpoint.files import carried_config, model_checkpoint, read_state_file
from yolact_lite.data import read_image
from yolact_lite.data.preprocess import preprocess_batch
from yolact_lite.errors import ConfigError, YolactError
from yolact_lite.hardware import bf16_supported
from yolact_lite.inference.agreement import match_detections, summarise_agreement
from yolact_lite.inference.export import export_onnx, quantize_int8
from yolact_lite.inference.predictor import Predictor
from yolact_lite.model import build_model
from yolact_lite.model.testing import detecting_model

ROOT = Path(__file__).resolve().parent.parent

MODELS_DIR = ROOT / "data" / "models"
VAL = ROOT / "data" / "coco_mini" / "val"
TRAIN_IMAGES = ROOT / "data" / "coco_mini" / "train" / "images"
DISPLAY = {"display_threshold": 0.3, "top_k": 15}
AP_GATE = 1.0  # points of AP (mask and box) from fp32
DEFAULT = "default (CLI, no flag)"
# (label, backend, precision, which ONNX file); backend None: the CLI's own choice
PATHS = (
    ("torch fp32", "torch", "fp32", None),
    (DEFAULT, None, "auto", None),
    ("torch bf16", "torch", "bf16", None),
    ("onnxruntime fp32", "onnxruntime", "fp32", "fp32"),
    ("onnxruntime int8", "onnxruntime", "int8", "int8"),
    ("openvino fp32", "openvino", "fp32", "fp32"),
    ("openvino bf16", "openvino", "bf16", "fp32"),
    ("openvino int8", "openvino", "int8", "int8"),
)


def default_weights():
    """The newest checkpoint in data/models/ (the bundled trained model), else None."""
    if not MODELS_DIR.is_dir():
        return None
    found = sorted((p for p in MODELS_DIR.iterdir() if p.suffix in (".pt", ".pth")), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def model_and_config(args):
    """(config, checkpoint dict, trained?)"""
    weights = Path(args.weights) if args.weights else default_weights()
    if weights is not None:
        data = read_state_file(weights)
        config = load_config(args.config) if args.config else carried_config(data, quiet=True)
        if config is None:
            raise ConfigError(f"{weights}: carries no config; pass --config")
        model = build_model(config, pretrained=False)
        from yolact_lite.checkpoint.files import load_weights

        load_weights(model, data)
        return config, {**data, "model": model.state_dict()}, str(weights)
    config = load_config(args.config or "yolact_resnet50")
    pretrained = config.model.backbone.name == "efficientnet_lite0"
    return config, model_checkpoint(detecting_model(config, pretrained=pretrained), config.to_dict()), None


def default_annotations(config) -> Path:
    """The person-only val json for a 1-class model (the bundled person model), else all classes."""
    person = VAL / "annotations_person.json"
    return person if config.model.num_classes == 1 and person.is_file() else VAL / "annotations.json"


def skip_reason(backend: str, precision: str, device: torch.device):
    if backend == "openvino" and importlib.util.find_spec("openvino") is None:
        return "openvino not installed (pip install openvino)"
    if precision == "bf16" and not bf16_supported(device):
        return "no native bf16 on this machine"
    if backend != "torch" and device.type == "cuda":
        return "CPU paths only on --device cuda"
    return None


class Recorder:
    """Wraps a Predictor for :func:`yolact_lite.evaluation.evaluate`: records each image's
    agreement with the reference detections (same order of images)."""

    def __init__(self, predictor, reference=None):
        self.predictor = predictor
        self.reference = reference  # list of fp32 Detections (score > 0.3 only), or None to record them
        self.kept, self.agreements, self.index = [], [], 0
        self.class_names, self.category_ids = predictor.class_names, predictor.category_ids

    @property
    def timings(self):
        return self.predictor.timings

    def predict(self, image):
        dets = self.predictor.predict(image)
        if self.reference is None:
            keep = torch.nonzero(dets.scores > 0.3).squeeze(1)
            self.kept.append(dets.select(keep))
        else:
            self.agreements.append(match_detections(self.reference[self.index], dets))
        self.index += 1
        return dets


def accuracy(recorder, images: int, annotations: Path) -> dict:
    from yolact_lite.evaluation.coco_eval import evaluate

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metrics = evaluate(recorder, annotations, VAL / "images", max_images=images, progress=False, leakage=False)
    return {"mask_ap": metrics["mask"]["AP"], "box_ap": metrics["box"]["AP"]}


def run(args) -> None:
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.smoke:
        args.calib_images = min(args.calib_images, 2)
    repeats = 1 if args.smoke else 2 if args.quick else args.repeats
    images = 2 if args.smoke else 5 if args.quick else args.images
    config, checkpoint, weights = model_and_config(args)
    trained = weights is not None
    label_weights = weights if trained else "random weights: speed only"
    print(f"{config.name} at {config.model.input_size}, weights: {label_weights}", flush=True)
    folder = Path(tempfile.mkdtemp(prefix="yolact_precision_"))
    model = build_model(config, pretrained=False)
    model.load_state_dict(checkpoint["model"])
    model.eval()
    files = {}
    t0 = time.perf_counter()
    files["fp32"] = export_onnx(model, config, folder / "fp32.onnx")
    m = config.model
    calib_paths = sorted(p for p in Path(args.calib).iterdir() if p.suffix.lower() in (".jpg", ".png"))
    calib_paths = calib_paths[:args.calib_images]
    calibration = [preprocess_batch([read_image(p)], m.input_size, m.pixel_mean, m.pixel_std,
                                    m.preserve_aspect_ratio)[0] for p in calib_paths]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        files["int8"] = quantize_int8(files["fp32"], folder / "int8.onnx", calibration)
    print(f"exported fp32 + int8 ONNX ({len(calibration)} calibration images) in {time.perf_counter() - t0:.0f} s",
          flush=True)

    predictors, rows = {}, []
    for label, backend, precision, onnx in PATHS:
        reason = skip_reason(backend, precision, device)
        if reason is None:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    predictors[label] = Predictor(config, checkpoint, device=str(device), backend=backend,
                                                  precision=precision, onnx_path=files[onnx] if onnx else None,
                                                  fastest_runtime=backend is None)
            except YolactError as exc:
                reason = str(exc)
        if reason is not None:
            print(f"{label:18s} skipped: {reason}", flush=True)
            rows.append({"path": label, "note": f"skipped: {reason}"})

    # speed: rounds over every path in turn
    photo = load_photo()
    e2e = {k: [] for k in predictors}
    net = {k: [] for k in predictors}
    for pred in predictors.values():
        pred.predict(photo, **DISPLAY)  # warm-up (lazy init)
    batch_cache = {k: p.preprocess([photo])[0] for k, p in predictors.items()}
    for _ in range(repeats):
        for label, pred in predictors.items():
            t = time.perf_counter()
            pred.predict(photo, **DISPLAY)
            e2e[label].append((time.perf_counter() - t) * 1e3)
            t = time.perf_counter()
            pred.network(batch_cache[label])
            net[label].append((time.perf_counter() - t) * 1e3)

    # accuracy: the fp32 reference first
    reference = Recorder(predictors["torch fp32"])
    annotations = Path(args.val_json) if args.val_json else default_annotations(config)
    ref_ap = accuracy(reference, images, annotations)
    measured = []
    for label, pred in predictors.items():
        if label == "torch fp32":
            agreement = {"agreement": 1.0, "reference": sum(len(d) for d in reference.kept), "matched": "",
                         "box_err_mean_px": 0.0, "box_err_max_px": 0.0, "score_err_mean": 0.0, "score_err_max": 0.0}
            ap = ref_ap
        else:
            rec = Recorder(pred, reference.kept)
            ap = accuracy(rec, images, annotations)
            agreement = summarise_agreement(rec.agreements)
        e2e_ms, net_ms = statistics.median(e2e[label]), statistics.median(net[label])
        row = {"path": label, "precision": pred.precision, "runtime": pred.network_impl.describe(),
               "e2e_ms": e2e_ms, "network_ms": net_ms,
               "speedup_vs_fp32": statistics.median(e2e["torch fp32"]) / e2e_ms,
               "agreement_pct": 100.0 * agreement["agreement"], "fp32_dets": agreement["reference"],
               "box_err_mean_px": agreement["box_err_mean_px"], "box_err_max_px": agreement["box_err_max_px"],
               "score_err_mean": agreement["score_err_mean"], "score_err_max": agreement["score_err_max"],
               "mask_ap": ap["mask_ap"], "box_ap": ap["box_ap"],
               "d_mask_ap": _delta(ap["mask_ap"], ref_ap["mask_ap"]),
               "d_box_ap": _delta(ap["box_ap"], ref_ap["box_ap"])}
        row["gate"] = gate(row, trained)
        measured.append(row)
        print(f"{label:18s} e2e {e2e_ms:7.1f} ms  network {net_ms:7.1f} ms  agreement {row['agreement_pct']:5.1f}%  "
              f"mask AP {_fmt(ap['mask_ap'])}  box AP {_fmt(ap['box_ap'])}  gate {row['gate']}", flush=True)
    rows = measured + rows

    failed = [r for r in measured if r["gate"].startswith("FAIL")]
    print("\ngates (" + ("trained weights" if trained else "random weights: not evaluated") + "):")
    for r in measured:
        print(f"  {r['path']:18s} {r['gate']}")
    notes = (
        f"{config.name} at {config.model.input_size}; weights: {label_weights}. Agreement and AP on the first "
        f"{images} images of data/coco_mini/val ({annotations.name}); agreement = share of the torch fp32 "
        f"detections with score > 0.3 "
        f"reproduced with the same class and mask IoU >= 0.9; errors over the matched pairs (box: max corner "
        f"difference in pixels). Speed: 640x480 photo `{PHOTO.name}`, median of {repeats} rounds visiting every "
        f"path in turn (e2e with the display filter score > 0.3, top 15; network stage alone), torch threads "
        f"{args.threads}, onnxruntime / OpenVINO the same. int8: onnxruntime quantize_static, QDQ, per-channel "
        f"int8 weights, int8 activations calibrated (min/max) on {len(calibration)} images of {args.calib}. "
        f"Gate (the rule for a non-exact default): mask and box AP within {AP_GATE:g} point of fp32"
        + ("" if trained else " -- NOT evaluated: random weights (rows are for speed only, AP is meaningless)")
        + f". Failed gates: {', '.join(r['path'] for r in failed) or 'none'}. Why agreement and AP differ: "
        "agreement counts the fp32 detections above 0.3 that come back with mask IoU >= 0.9, so a detection "
        "whose score moves across 0.3 or whose small mask moves by a pixel or two counts as lost in full; "
        "AP ranks every detection at every score and averages IoU thresholds 0.5-0.95, so such moves cost "
        "it almost nothing. AP is what a user sees; agreement is the stricter, noisier check."
        + (" QUICK RUN: indicative only." if args.quick else "")
    )
    name = args.name or "precision" + ("" if trained else "_random") + ("_quick" if args.quick else "")
    csv_path, md_path = write_results(name, rows, notes)
    plot(measured, RESULTS_DIR / f"{name}.png", label_weights)
    print(f"wrote {csv_path}, {md_path} and {RESULTS_DIR / (name + '.png')}")


def _delta(value, reference):
    return None if value is None or reference is None else value - reference


def _fmt(v):
    return "n/a" if v is None else f"{v:.1f}"


def gate(row: dict, trained: bool) -> str:
    if not trained:
        return "n/a (random weights: speed only)"
    problems = []
    for key in ("d_mask_ap", "d_box_ap"):
        if row[key] is not None and row[key] < -AP_GATE:
            problems.append(f"{key[2:]} {row[key]:+.1f} points")
    return "FAIL: " + "; ".join(problems) if problems else "PASS"


def plot(rows, path: Path, weights_label: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    timed = [r for r in rows if r.get("e2e_ms") is not None and r.get("mask_ap") is not None]
    for i, r in enumerate(timed):
        ax.scatter(r["e2e_ms"], r["mask_ap"], s=40)
        # staggered labels: exact paths share one AP
        ax.annotate(r["path"], (r["e2e_ms"], r["mask_ap"]), textcoords="offset points",
                    xytext=(4, 4 - 11 * (i % 3)), fontsize=8)
    reference = next((r["mask_ap"] for r in rows if r["path"] == "torch fp32"), None)
    if reference is not None:
        ax.axhline(reference - AP_GATE, color="grey", lw=0.6, ls="--", label=f"fp32 - {AP_GATE:g} AP (the rule)")
        ax.legend(fontsize=8)
    ax.set_xlabel("end-to-end ms on the 640x480 photo (lower is faster)")
    ax.set_ylabel("mask AP on the val images")
    ax.set_title(f"precision: mask AP vs speed ({weights_label})", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default=None, help="trained checkpoint (default: newest in data/models/)")
    parser.add_argument("--config", default=None, help="config (default: the checkpoint's, else yolact_resnet50)")
    parser.add_argument("--images", type=int, default=90, help="val images for agreement and AP (default all 90)")
    parser.add_argument("--val-json", default=None,
                        help="val annotations (default: annotations_person.json for a 1-class model, else all)")
    parser.add_argument("--repeats", type=int, default=5, help="timing rounds")
    parser.add_argument("--calib", default=str(TRAIN_IMAGES), help="int8 calibration images (folder)")
    parser.add_argument("--calib-images", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--quick", action="store_true", help="5 images, 2 rounds")
    parser.add_argument("--smoke", action="store_true",
                        help="2 images, 1 round, 2 calibration images: a test that it runs")
    parser.add_argument("--name", default=None,
                        help="results file stem (default precision[_random][_quick]); e.g. one per CPU kind")
    args = parser.parse_args(argv)
    print(machine_info(), flush=True)
    run(args)


if __name__ == "__main__":
    main()
