"""Export a YOLACT model to ONNX or TorchScript and check the file against torch.

    yolact-lite export --config yolact_effl0 --weights W.pth --format onnx --out yolact.onnx
    yolact-lite export --config yolact_effl0 --weights W.pth --format onnx --with-nms --out yolact_nms.onnx
    yolact-lite export --config yolact_plus_resnet50 --weights W.pth --format onnx --out yolact_pp.onnx  # opset 19
    yolact-lite export --config yolact_effl0 --weights W.pth --format torchscript --out yolact.pt
    yolact-lite export --config yolact_effl0 --weights W.pth --format onnx --int8 \
        --calib data/coco_mini/train/images --out yolact_int8.onnx

The graph takes a normalised RGB batch [B, 3, S, S] at exactly the config's input size S
(the priors depend on it; the batch is dynamic) and returns decoded boxes, softmax
foreground scores, mask coefficients and prototypes (see ``yolact_lite/inference/export.py``);
``--with-nms`` exports the full-postprocess graph instead: Fast NMS exactly as the
Predictor's, mask assembly, crop and ``max_detections`` in ONNX ops; onnxruntime alone then
returns boxes, scores, classes and prototype-resolution masks (docs/onnx_outputs.md).
Default opset: 17, or 19 for YOLACT++ (ONNX DeformConv). After writing, the file is run
once on a photo (``--photo``; default a fixed synthetic image) and compared with torch:
the largest absolute difference per output is printed (exit 1 if above ``--tolerance``).
``--int8 --calib DIR``: static int8 quantisation (onnxruntime ``quantize_static``, QDQ,
per-channel int8 weights, activation ranges calibrated on up to ``--calib-images`` images of
DIR; convs only, decoding/softmax stay float). The check then reports the int8 graph's
difference from the fp32 graph (large in raw numbers: use ``benchmarks/precision.py`` for
what it does to detections) and never fails on it.
Without ``--weights`` the model is random (export still works; results are meaningless).
``--config`` may be omitted when ``--weights`` is one of our checkpoints (it carries its config).
User errors end with one ``error: ...`` line and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

from ..errors import ConfigError, DataError
from . import add_config_args, config_for_weights, run_cli

# onnxruntime calibration methods for --int8 (inference.export.quantize_int8 maps them).
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="yolact-lite export", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser, required=False)
    parser.add_argument("--weights", help="our checkpoint or an original YOLACT .pth (omit: random weights)")
    parser.add_argument("--format", required=True, choices=("onnx", "torchscript"))
    parser.add_argument("--out", required=True, help="output file (.onnx / .pt)")
    parser.add_argument("--with-nms", action="store_true",
                        help="onnx: the full-postprocess graph (Fast NMS + masks in ONNX ops)")
    parser.add_argument("--opset", type=int, default=None, help="onnx opset (default 17; 19 for YOLACT++)")
    parser.add_argument("--static-batch", action="store_true", help="onnx: fix the batch to 1")
    parser.add_argument("--int8", action="store_true", help="onnx: static int8 quantisation (needs --calib)")
    parser.add_argument("--calib", help="--int8: folder of calibration images like the deployment's")
    parser.add_argument("--calib-images", type=int, default=32, help="--int8: at most this many calibration images")
    parser.add_argument("--calib-method", choices=CALIBRATION_METHODS, default="minmax",
                        help="--int8: how activation ranges are set")
    parser.add_argument("--photo", default=None, help="image to verify the export on (default: a synthetic image)")
    parser.add_argument("--no-verify", action="store_true", help="skip running the exported file")
    parser.add_argument("--tolerance", type=float, default=1e-3, help="max abs difference accepted by the check")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def build_model_with_weights(config, weights):
    from ..checkpoint.files import load_weights
    from ..inference.predictor import RANDOM_WEIGHTS_WARNING
    from ..model import build_model

    model = build_model(config, pretrained=False)
    if weights is None:
        bar = "!" * 78
        print(f"{bar}\nWARNING: {RANDOM_WEIGHTS_WARNING}\n{bar}", file=sys.stderr, flush=True)
    else:
        load_weights(model, weights)
    return model.eval()


def photo_batch(config, photo):
    """The verification batch: ``photo``, or a fixed synthetic image when there is none."""
    import numpy as np

    from ..data import read_image
    from ..data.preprocess import preprocess_batch

    m = config.model
    image = read_image(photo) if photo is not None else np.random.default_rng(0).integers(0, 256, (480, 640, 3),
                                                                                          dtype=np.uint8)
    batch, _ = preprocess_batch([image], m.input_size, m.pixel_mean, m.pixel_std, m.preserve_aspect_ratio)
    return batch


IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def calibration_batches(config, folder: Path, limit: int):
    """Preprocessed [1, 3, S, S] batches of up to ``limit`` images of ``folder`` (sorted)."""
    from ..data import read_image
    from ..data.preprocess import preprocess_batch

    if not folder.is_dir():
        raise DataError(f"--calib {folder}: no such folder")
    if (folder / "images").is_dir():  # a COCO split folder (images/ + annotations.json)
        folder = folder / "images"
    if limit < 1:
        raise ConfigError("--calib-images must be >= 1")
    paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)[:limit]
    if not paths:
        raise DataError(f"--calib {folder}: no image files")
    m = config.model
    return [preprocess_batch([read_image(p)], m.input_size, m.pixel_mean, m.pixel_std,
                             m.preserve_aspect_ratio)[0] for p in paths]


def _max_diff(a, b) -> float:
    if a.shape != b.shape:
        return float("inf")
    return float((a.float() - b.float()).abs().max()) if a.numel() else 0.0


def verify(args, config, model, path: Path, batch) -> bool:
    import torch

    from ..inference.export import (
        FULL_OUTPUT_NAMES,
        OUTPUT_NAMES,
        ExportWrapper,
        FullPostprocessWrapper,
    )
    from ..inference.runtimes import OnnxRuntimeNetwork
    from ..model.fuse import fuse_for_inference

    reference = ExportWrapper(fuse_for_inference(model, channels_last=False), config).eval()
    names = OUTPUT_NAMES
    if args.with_nms:
        reference = FullPostprocessWrapper(reference, config.inference).eval()
        names = FULL_OUTPUT_NAMES
    with torch.no_grad():
        expected = dict(zip(names, reference(batch)))
    if args.format == "onnx":
        network = OnnxRuntimeNetwork(path)
        got = network(batch)
        runner = f"onnxruntime ({network.providers[0]})"
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated but works
            loaded = torch.jit.load(str(path))
        with torch.no_grad():
            got = dict(zip(names, loaded(batch)))
        runner = "torch.jit.load"
    if args.with_nms:
        n, n_ref = int(got["num_detections"][0]), int(expected["num_detections"][0])
        same = n == n_ref and torch.equal(got["det_classes"][0, :n], expected["det_classes"][0, :n])
        print(f"  full postprocess kept {n} detections (torch: {n_ref}); same classes: {'yes' if same else 'NO'}")
        if not same:
            return False
        names = [name for name in names if name not in ("num_detections", "det_classes")]
        got = {k: got[k][:, :n] for k in names}
        expected = {k: expected[k][:, :n] for k in names}
    worst = 0.0
    for name in names:
        diff = _max_diff(expected[name], got[name])
        worst = max(worst, diff)
        print(f"  {name:17s} {tuple(got[name].shape)!s:20s} max abs diff vs torch {diff:.2e}")
    if args.int8:
        print(f"int8 graph run with {runner} on {args.photo or 'a synthetic image'}: max abs diff vs fp32 torch "
              f"{worst:.2e} (quantisation error, not checked: measure detections with benchmarks/precision.py)")
        return True
    ok = worst <= args.tolerance
    print(f"verified with {runner} on {args.photo or 'a synthetic image'}: {'OK' if ok else 'MISMATCH'} "
          f"(max abs diff {worst:.2e}, tolerance {args.tolerance:g})")
    return ok


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.format != "onnx" and (args.with_nms or args.opset is not None or args.static_batch):
        raise ConfigError("--with-nms, --opset and --static-batch apply to --format onnx only")
    out = Path(args.out)
    if out.is_dir():
        raise DataError(f"{out}: is a folder (give a file name)")
    if not out.parent.exists():
        raise DataError(f"{out}: folder {out.parent} does not exist")
    if args.tolerance <= 0:
        raise ConfigError("--tolerance must be > 0")
    if args.int8 and (args.format != "onnx" or args.with_nms):
        raise ConfigError("--int8 applies to the plain --format onnx graph (no --with-nms)")
    if args.int8 and not args.calib:
        raise ConfigError("--int8 needs --calib DIR (calibration images)")
    if args.calib and not args.int8:
        raise ConfigError("--calib applies to --int8")
    config = config_for_weights(args)
    calibration = calibration_batches(config, Path(args.calib), args.calib_images) if args.int8 else None
    batch = None
    if not args.no_verify:  # unreadable photo: fail before the (slow) export
        batch = photo_batch(config, Path(args.photo) if args.photo else None)

    import torch

    from ..inference.export import default_opset, export_onnx, export_torchscript, quantize_int8

    model = build_model_with_weights(config, args.weights)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        if args.format == "onnx":
            opset = args.opset if args.opset is not None else default_opset(model)
            if args.int8:
                with tempfile.TemporaryDirectory(prefix="yolact_export_") as folder:
                    fp32 = export_onnx(model, config, Path(folder) / "fp32.onnx", opset=opset,
                                       dynamic_batch=not args.static_batch)
                    print(f"calibrating int8 on {len(calibration)} images ({args.calib_method}) ...", flush=True)
                    quantize_int8(fp32, out, calibration, method=args.calib_method)
                what = f"ONNX opset {opset}, int8 (QDQ, per-channel, {len(calibration)} calibration images)"
            else:
                export_onnx(model, config, out, opset=opset, with_nms=args.with_nms,
                            dynamic_batch=not args.static_batch)
                what = f"ONNX opset {opset}{', full postprocess (Fast NMS + masks)' if args.with_nms else ''}"
        else:
            export_torchscript(model, config, out)
            what = "TorchScript (traced, frozen)"
    size = config.model.input_size
    batch_text = "1" if args.static_batch else "B"
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MB): {what}, input [{batch_text}, 3, {size}, {size}]")
    if batch is None:
        return 0
    torch.set_grad_enabled(False)
    return 0 if verify(args, config, model, out, batch) else 1


if __name__ == "__main__":
    run_cli(main)
