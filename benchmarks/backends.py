"""Latency and FPS per inference backend and per preset, end to end on a 640x480 photo.

Backends (all through the :class:`~yolact_lite.Predictor` stages: preprocess, network,
detect, masks):

* eager: BatchNorm kept, NCHW (``fuse=False``);
* eager+fused: BatchNorm folded, ``channels_last`` (the Predictor's default);
* compile: eager+fused with ``torch.compile`` on the network (compile time reported apart);
* torchscript: ``export_torchscript`` (traced, frozen), loaded with ``torch.jit.load``;
* onnxruntime: ``export_onnx`` run by onnxruntime (CPU provider; CUDA on ``--device cuda``
  when onnxruntime-gpu is installed);
* openvino: the same ONNX file compiled by OpenVINO for the CPU (when installed);
* precision rows: ``eager+fused bf16`` (torch, bf16 weights + channels_last) and ``openvino
  bf16`` on CPUs with native bf16 (AMX / AVX512-BF16); ``onnxruntime int8`` / ``openvino
  int8``: static QDQ int8 calibrated on 16 coco_mini train images. Their detections differ
  from fp32 by design (``same_as_eager`` reads NO): ``benchmarks/precision.py`` measures how much.

Presets: yolact_effl0_cpu, yolact_effl0, yolact_resnet50. Plus a ``candidates`` table:
the settings tried for the CPU preset (yolact_effl0 with smaller inputs and lighter
FPN / protonet / head), eager+fused, onnxruntime and OpenVINO (the CLI's CPU default). The
EfficientNet backbone has its (offline) ImageNet weights, the heads are random with a class
layer biased so that detections survive (ResNet-50: random backbone, no download).

Columns: median stage ms over ``repeats`` after warm-ups; ``e2e_ms`` / ``fps`` with the
video pipeline's display filter (score > 0.3, top 15: only drawn masks built at full
resolution), ``e2e_all_ms`` building every detection's mask (the Predictor's default);
``network_ms`` alone; ``same_as_eager``: same detection count, classes and boxes (within
0.5 px, up to the order of tied scores) as the eager backend.

    python -m benchmarks.backends [--quick] [--threads 2] [--device cpu|cuda]
        [--presets yolact_effl0_cpu,...] [--backends eager,onnxruntime,...] [--no-candidates]

On a busy machine ``OMP_WAIT_POLICY=PASSIVE`` keeps idle OpenMP threads from spinning.
Writes results/backends.{csv,md} (``backends_quick`` with ``--quick``; ``backends_cuda``).
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

from benchmarks._common import PHOTO, conv_macs, load_photo, machine_info, write_results
from yolact_lite import load_config, with_overrides
from yolact_lite.checkpoint.files import model_checkpoint
from yolact_lite.inference.export import export_onnx, export_torchscript, quantize_int8
from yolact_lite.inference.predictor import Predictor
from yolact_lite.inference.runtimes import TorchScriptNetwork
from yolact_lite.model import build_model
from yolact_lite.model.priors import anchor_scales_override
from yolact_lite.model.testing import detecting_model

ROOT = Path(__file__).resolve().parent.parent

STAGES = ("preprocess", "network", "detect", "masks")
PRESETS = ("yolact_effl0_cpu", "yolact_effl0", "yolact_resnet50")
BACKENDS = ("eager", "eager+fused", "compile", "torchscript", "onnxruntime", "openvino",
            "eager+fused bf16", "openvino bf16", "onnxruntime int8", "openvino int8")
DISPLAY = {"display_threshold": 0.3, "top_k": 15}

# CPU preset candidates: yolact_effl0 overrides (anchor scales int(s * S / 550))
def _candidate(size: int, channels: int) -> list:
    return [f"model.input_size={size}", anchor_scales_override(size),
            f"model.fpn.num_features={channels}", f"model.protonet_channels={channels}",
            f"model.head_channels={channels}"]


CANDIDATES = {
    "effl0 448 / 128 (yolact_effl0)": [],
    "effl0 448 / 96": _candidate(448, 96),
    "effl0 448 / 64": _candidate(448, 64),
    "effl0 352 / 96": _candidate(352, 96),
    "effl0 352 / 64": _candidate(352, 64),
    "effl0 320 / 96": _candidate(320, 96),
    "effl0 320 / 64": _candidate(320, 64),
}


# openvino: the CLI's CPU default without native bf16; openvino bf16: its default with it (skipped elsewhere)
CANDIDATE_BACKENDS = ("eager+fused", "onnxruntime", "openvino", "openvino bf16")


def forced_checkpoint(config) -> dict:
    """Detecting weights; the ImageNet backbone when its weights exist offline (EfficientNet-Lite0)."""
    pretrained = config.model.backbone.name == "efficientnet_lite0"
    return model_checkpoint(detecting_model(config, pretrained=pretrained), config.to_dict())


def _exported_model(config, checkpoint):
    model = build_model(config, pretrained=False)
    model.load_state_dict(checkpoint["model"])
    return model.eval()


def _calibration(config, count: int = 16):
    from yolact_lite.data import read_image
    from yolact_lite.data.preprocess import preprocess_batch

    m = config.model
    paths = sorted((ROOT / "data" / "coco_mini" / "train" / "images").glob("*.jpg"))[:count]
    return [preprocess_batch([read_image(p)], m.input_size, m.pixel_mean, m.pixel_std,
                             m.preserve_aspect_ratio)[0] for p in paths]


def make_predictor(backend: str, config, checkpoint, folder: Path, device: str, precision: str = "fp32"):
    """(predictor, seconds spent preparing: export / quantise / load; compile happens on the
    first call). ``backend`` may carry a precision: ``"openvino bf16"``, ``"onnxruntime int8"``.
    ``folder`` holds this model's exported files: one folder per (config, weights), since a file
    found there is reused by the model's other backends."""
    t0 = time.perf_counter()
    runtime, _, own_precision = backend.partition(" ")
    precision = own_precision or precision
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / config.name
    if runtime == "eager":
        pred = Predictor(config, checkpoint, device=device, fuse=False, precision=precision)
    elif runtime == "eager+fused":
        pred = Predictor(config, checkpoint, device=device, precision=precision)
    elif runtime == "compile":
        pred = Predictor(config, checkpoint, device=device, compile=True, precision=precision)
    elif runtime == "torchscript":
        path = export_torchscript(_exported_model(config, checkpoint), config, stem.with_suffix(".pt"))
        pred = Predictor(config, checkpoint, device=device, network=TorchScriptNetwork(path, device=device))
    elif runtime in ("onnxruntime", "openvino"):
        fp32 = stem.with_name(stem.name + "_fp32.onnx")
        if not fp32.exists():
            export_onnx(_exported_model(config, checkpoint), config, fp32)
        path = fp32
        if precision == "int8":
            path = stem.with_name(stem.name + "_int8.onnx")
            if not path.exists():
                quantize_int8(fp32, path, _calibration(config))
        pred = Predictor(config, checkpoint, device=device, backend=runtime, onnx_path=path, precision=precision)
    else:
        raise ValueError(backend)
    return pred, time.perf_counter() - t0


def _skip_reason(backend: str, device: str):
    from yolact_lite.hardware import bf16_supported

    if backend.startswith("openvino") and importlib.util.find_spec("openvino") is None:
        return "openvino not installed (pip install 'yolact_lite[openvino]')"
    if backend.startswith("openvino") and device != "cpu":
        return "OpenVINO runs on the CPU here"
    if backend.endswith("int8") and device != "cpu":
        return "int8 rows are CPU rows"
    if backend.endswith("bf16") and not bf16_supported(device):
        return "no native bf16 on this machine"
    return None


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_predictor(pred, image, repeats: int, warmup: int, device: str) -> dict:
    """Median stage / total ms with the display filter, total with all masks, network alone
    (call once before: the first call compiles / initialises lazily)."""
    for _ in range(warmup):
        pred.predict(image, **DISPLAY)
    stages = {s: [] for s in STAGES}
    totals, totals_all, network = [], [], []
    batch, _ = pred.preprocess([image])
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        pred.predict(image, **DISPLAY)
        _sync(device)
        totals.append((time.perf_counter() - t) * 1e3)
        for s in STAGES:
            stages[s].append(pred.timings[s])
        t = time.perf_counter()
        pred.predict(image)
        _sync(device)
        totals_all.append((time.perf_counter() - t) * 1e3)
        t = time.perf_counter()
        pred.network(batch)
        _sync(device)
        network.append((time.perf_counter() - t) * 1e3)
    e2e = statistics.median(totals)
    row = {f"{s}_ms": statistics.median(v) for s, v in stages.items()}
    row.update({"e2e_ms": e2e, "fps": 1000.0 / e2e, "e2e_min_ms": min(totals),
                "e2e_all_ms": statistics.median(totals_all),
                "network_only_ms": statistics.median(network)})
    return row


def time_rounds(preds: dict, image, repeats: int, warmup: int, device: str) -> dict:
    """:func:`time_predictor` for several predictors in rounds (each visited once per round);
    medians over the rounds, ``e2e_min_ms`` the fastest display-filtered run."""
    for pred in preds.values():
        for _ in range(warmup):
            pred.predict(image, **DISPLAY)
    samples = {label: [] for label in preds}
    for _ in range(repeats):
        for label, pred in preds.items():
            samples[label].append(time_predictor(pred, image, 1, 0, device))
    out = {}
    for label, runs in samples.items():
        row = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        row["e2e_min_ms"] = min(r["e2e_ms"] for r in runs)
        row["fps"] = 1000.0 / row["e2e_ms"]
        out[label] = row
    return out


def same_detections(a, b, box_tol: float = 0.5, score_tol: float = 1e-3) -> str:
    """Same count, and every detection of ``a`` matches an unused one of ``b`` with the same
    class, score and box within tolerances (ties may come out in another order)."""
    if len(a) != len(b):
        return f"NO (count {len(a)} vs {len(b)})"
    used = torch.zeros(len(b), dtype=torch.bool)
    worst = 0.0
    for i in range(len(a)):
        diff = (b.boxes - a.boxes[i]).abs().amax(1)
        ok = ~used & (b.classes == a.classes[i]) & ((b.scores - a.scores[i]).abs() <= score_tol) & (diff <= box_tol)
        if not ok.any():
            return f"NO (detection {i} unmatched)"
        j = int(torch.nonzero(ok)[0])
        used[j] = True
        worst = max(worst, float(diff[j]))
    return f"yes ({len(a)}, max box diff {worst:.1e} px)"


def run(args) -> None:
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda requested but CUDA is not available")
    torch.set_num_threads(args.threads)
    repeats, warmup = (1, 0) if args.smoke else (3, 1) if args.quick else (args.repeats, 3)
    candidates = dict(list(CANDIDATES.items())[:1]) if args.smoke else CANDIDATES
    candidate_backends = ("eager+fused",) if args.smoke else CANDIDATE_BACKENDS
    image = load_photo()
    presets = [p for p in args.presets.split(",") if p]
    backends = [b for b in args.backends.split(",") if b]
    folder = Path(tempfile.mkdtemp(prefix="yolact_bench_"))
    rows, candidate_rows = [], []

    if not args.no_candidates and device == "cpu":
        base = load_config("yolact_effl0")
        for number, (label, overrides) in enumerate(candidates.items()):
            config = with_overrides(base, overrides)
            size = config.model.input_size
            model = build_model(config, pretrained=False).eval()
            gmacs = sum(conv_macs(model, torch.zeros(1, 3, size, size)).values()) / 1e9
            del model
            checkpoint = forced_checkpoint(config)
            for backend in candidate_backends:
                if _skip_reason(backend, device):
                    continue
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    pred, _ = make_predictor(backend, config, checkpoint, folder / f"candidate{number}", device)
                pred.predict(image)
                r = time_predictor(pred, image, repeats, warmup, device)
                candidate_rows.append({"candidate": label, "backend": backend, "input": config.model.input_size,
                                       "channels": config.model.fpn.num_features, "conv_gmacs": round(gmacs, 2),
                                       **r})
                print(f"{label:34s} {backend:12s} e2e {r['e2e_ms']:7.1f} ms  {r['fps']:5.1f} FPS  "
                      f"network {r['network_only_ms']:7.1f} ms", flush=True)
                del pred

    precisions = ["fp32"] + (["fp16"] if device == "cuda" else [])
    for preset in presets:
        config = load_config(preset)
        checkpoint = forced_checkpoint(config)
        reference = None
        built = {}
        for backend in backends:
            for precision in precisions:
                if precision == "fp16" and backend not in ("eager+fused", "compile"):
                    continue  # fp16 = autocast: a torch-backend option
                label = backend + (" fp16" if precision == "fp16" else "")
                reason = _skip_reason(backend, device)
                if reason:
                    print(f"{preset:18s} {label:16s} skipped: {reason}", flush=True)
                    rows.append({"preset": preset, "backend": label, "note": f"skipped: {reason}"})
                    continue
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        pred, prep_s = make_predictor(backend, config, checkpoint, folder / preset, device,
                                                      precision)
                except Exception as exc:  # e.g. no CUDA provider in onnxruntime: report, go on
                    print(f"{preset:18s} {label:16s} skipped: {str(exc).splitlines()[0]}", flush=True)
                    rows.append({"preset": preset, "backend": label, "note": f"skipped: {str(exc).splitlines()[0]}"})
                    continue
                t0 = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # dynamo's notes while compiling
                    dets = pred.predict(image)  # first call: torch.compile compiles here
                first_s = time.perf_counter() - t0
                if reference is None:
                    reference = dets
                agree = "reference" if dets is reference else same_detections(reference, dets)
                built[label] = (pred, {"preset": preset, "backend": label, "precision": pred.precision,
                                       "input": config.model.input_size, "prepare_s": prep_s,
                                       "first_call_s": first_s, "detections": len(dets), "same_as_eager": agree})
        # every backend of the preset once per round: a change of load hits them alike
        timed = time_rounds({label: pred for label, (pred, _) in built.items()}, image, repeats, warmup, device)
        for label, (_, info) in built.items():
            r = timed[label]
            rows.append({**info, **r})
            print(f"{preset:18s} {label:16s} e2e {r['e2e_ms']:7.1f} ms  {r['fps']:5.1f} FPS  "
                  f"network {r['network_only_ms']:7.1f} ms  first call {info['first_call_s']:6.1f} s  "
                  f"same: {info['same_as_eager']}", flush=True)
        built.clear()
        if device == "cuda":
            torch.cuda.empty_cache()

    notes = (
        f"640x480 photo `{PHOTO.name}`, device {device}, torch threads {args.threads} (onnxruntime intra-op "
        f"threads the same), median of {repeats} rounds after {warmup} warm-up(s); each round times every backend "
        f"of a preset once, in turn. e2e_ms / fps: preprocess + network "
        f"+ detect + masks with the video display filter (score > 0.3, top 15); e2e_all_ms: masks for every "
        f"detection; e2e_min_ms: the fastest display-filtered run (less sensitive to other load); "
        f"network_only_ms: the network stage alone; first_call_s: the first predict (torch.compile compiles "
        f"there); prepare_s: export / load before it. same_as_eager: detections vs the eager backend "
        f"(count, class, score within 1e-3, box within 0.5 px). EfficientNet backbones with ImageNet weights, random "
        f"heads biased so that detections survive; ResNet-50 random."
        + (" QUICK RUN: numbers are indicative only." if args.quick else "")
    )
    suffix = ("_cuda" if device == "cuda" else "") + ("_quick" if args.quick else "")
    if candidate_rows:
        notes += ("\n\nCPU preset candidates (yolact_effl0 overrides; 'channels' = FPN, protonet and head "
                  "channels), eager+fused, onnxruntime and OpenVINO, same timing:\n\n" + _markdown(candidate_rows))
    csv_path, md_path = write_results((args.name or "backends") + suffix, rows, notes)
    if candidate_rows:
        stem = args.name or "backends"
        write_results(f"{stem}_candidates{suffix}", candidate_rows, f"CPU preset candidates, see {stem}{suffix}.md")
    print(f"wrote {csv_path} and {md_path}")


def _markdown(rows) -> str:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    fmt = lambda v: (f"{v:.1f}" if isinstance(v, float) else str(v))  # noqa: E731
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats after 1 warm-up")
    parser.add_argument("--smoke", action="store_true",
                        help="1 repeat, no warm-up, preset yolact_effl0_cpu, one candidate (eager+fused), the "
                             "backends that build in seconds (no compile, no int8): a test that it runs")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--presets", default=",".join(PRESETS))
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--no-candidates", action="store_true", help="skip the CPU preset candidates table")
    parser.add_argument("--name", default=None, help="results file stem (default backends)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.presets, args.backends = "yolact_effl0_cpu", "eager,eager+fused,torchscript,onnxruntime,openvino"
    print(machine_info(), flush=True)
    run(args)


if __name__ == "__main__":
    main()
