#!/usr/bin/env python
"""Export a YOLACT model to ONNX or TorchScript and check the file against torch.

    python scripts/export.py --config yolact_effl0 --weights W.pth --format onnx --out yolact.onnx
    python scripts/export.py --config yolact_effl0 --weights W.pth --format onnx --with-nms --out yolact_nms.onnx
    python scripts/export.py --config yolact_plus_resnet50 --weights W.pth --format onnx --out yolact_pp.onnx  # opset 19
    python scripts/export.py --config yolact_effl0 --weights W.pth --format torchscript --out yolact.pt

The graph takes a normalised RGB batch [B, 3, S, S] at exactly the config's input size S
(the priors depend on it; the batch is dynamic) and returns decoded boxes, softmax
foreground scores, mask coefficients and prototypes (see ``yolact_lite/export.py``);
``--with-nms`` appends ONNX NonMaxSuppression (greedy per-class NMS, not Fast NMS).
Default opset: 17, or 19 for YOLACT++ (ONNX DeformConv). After writing, the file is run
once on a real photo (``--photo``, default one from data/photos) and compared with torch:
the largest absolute difference per output is printed (exit 1 if above ``--tolerance``).
Without ``--weights`` the model is random (export still works; results are meaningless).
User errors end with one ``error: ...`` line and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from yolact_lite.cli import add_config_args, config_from_args, run_cli  # noqa: E402
from yolact_lite.errors import ConfigError, DataError  # noqa: E402

DEFAULT_PHOTO = ROOT / "data" / "photos" / "messi5.jpg"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--weights", help="our checkpoint or an original YOLACT .pth (omit: random weights)")
    parser.add_argument("--format", required=True, choices=("onnx", "torchscript"))
    parser.add_argument("--out", required=True, help="output file (.onnx / .pt)")
    parser.add_argument("--with-nms", action="store_true", help="onnx: append NonMaxSuppression to the graph")
    parser.add_argument("--opset", type=int, default=None, help="onnx opset (default 17; 19 for YOLACT++)")
    parser.add_argument("--static-batch", action="store_true", help="onnx: fix the batch to 1")
    parser.add_argument("--photo", default=None, help="image used to verify the export (default: a bundled photo)")
    parser.add_argument("--no-verify", action="store_true", help="skip running the exported file")
    parser.add_argument("--tolerance", type=float, default=1e-3, help="max abs difference accepted by the check")
    return parser.parse_args(argv)


def build_model_with_weights(config, weights):
    from yolact_lite.checkpoint import load_weights
    from yolact_lite.model import build_model
    from yolact_lite.predictor import RANDOM_WEIGHTS_WARNING

    model = build_model(config, pretrained=False)
    if weights is None:
        bar = "!" * 78
        print(f"{bar}\nWARNING: {RANDOM_WEIGHTS_WARNING}\n{bar}", file=sys.stderr, flush=True)
    else:
        load_weights(model, weights)
    return model.eval()


def photo_batch(config, photo):
    from yolact_lite.data import read_image
    from yolact_lite.data.preprocess import preprocess_batch

    m = config.model
    image = read_image(photo)
    batch, _ = preprocess_batch([image], m.input_size, m.pixel_mean, m.pixel_std, m.preserve_aspect_ratio)
    return batch


def _max_diff(a, b) -> float:
    if a.shape != b.shape:
        return float("inf")
    return float((a.float() - b.float()).abs().max()) if a.numel() else 0.0


def verify(args, config, model, path: Path, batch) -> bool:
    import torch

    from yolact_lite.export import (NMS_OUTPUT_NAMES, OUTPUT_NAMES, ExportWrapper, NMSExportWrapper,
                                    OnnxRuntimeNetwork)
    from yolact_lite.model.fuse import fuse_for_inference

    reference = ExportWrapper(fuse_for_inference(model, channels_last=False), config).eval()
    names = OUTPUT_NAMES
    if args.with_nms:
        reference = NMSExportWrapper(reference, config.inference).eval()
        names = NMS_OUTPUT_NAMES
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
        # same selection up to the order of tied scores: compare sorted by (batch, class, prior)
        def order(sel):
            return torch.argsort((sel[:, 0] * config.model.num_classes + sel[:, 1]) * (1 << 32) + sel[:, 2])

        same = expected["selected_indices"].shape == got["selected_indices"].shape
        if same:
            oe, og = order(expected["selected_indices"]), order(got["selected_indices"])
            same = torch.equal(expected["selected_indices"][oe], got["selected_indices"][og])
        print(f"  NMS kept {len(got['selected_indices'])} boxes (torch: {len(expected['selected_indices'])}); "
              f"same selection: {'yes' if same else 'NO'}")
        if not same:
            return False
        expected = {k: v[oe] if k != "prototypes" else v for k, v in expected.items()}
        got = {k: v[og] if k != "prototypes" else v for k, v in got.items()}
    worst = 0.0
    for name in names:
        if name == "selected_indices":
            continue
        diff = _max_diff(expected[name], got[name])
        worst = max(worst, diff)
        print(f"  {name:17s} {tuple(got[name].shape)!s:20s} max abs diff vs torch {diff:.2e}")
    ok = worst <= args.tolerance
    print(f"verified with {runner} on {args.photo or DEFAULT_PHOTO}: {'OK' if ok else 'MISMATCH'} "
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
    config = config_from_args(args)
    batch = None
    if not args.no_verify:  # unreadable photo: fail before the (slow) export
        photo = Path(args.photo) if args.photo else DEFAULT_PHOTO
        batch = photo_batch(config, photo)

    import torch

    from yolact_lite.export import default_opset, export_onnx, export_torchscript

    model = build_model_with_weights(config, args.weights)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        if args.format == "onnx":
            opset = args.opset if args.opset is not None else default_opset(model)
            export_onnx(model, config, out, opset=opset, with_nms=args.with_nms,
                        dynamic_batch=not args.static_batch)
            what = f"ONNX opset {opset}{' with NonMaxSuppression' if args.with_nms else ''}"
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
