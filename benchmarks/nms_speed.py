"""Fast NMS speed, worst case: every one of 19,248 priors is a candidate for
each of 80 classes (YOLACT-550 prior count, COCO classes).

Compares, on the same random input:
  * fast_nms via the compiled extension (the dispatcher, and the raw kernel),
  * fast_nms_reference (pure torch, builds the [C, k, k] IoU tensor),
  * torchvision batched_nms on the same top-200-per-class candidates,
  * the cross-class variants,
and checks that extension and reference outputs are identical. CUDA rows are
added when a GPU is available (--device auto/cuda).

    python -m benchmarks.nms_speed [--quick] [--device auto|cpu|cuda] [--threads 2]
"""
from __future__ import annotations

import argparse
import sys

import torch
import torchvision

from benchmarks._common import median_ms, write_results  # noqa: E402
from yolact_lite.ops import (  # noqa: E402
    cuda_extension_available,
    extension_available,
    fast_nms,
    fast_nms_reference,
    traditional_nms,
)

NUM_PRIORS, NUM_CLASSES, TOP_K, IMAGE = 19248, 80, 200, 550


def make_input(seed: int):
    """Boxes with uniform centres in a 550 image, sides 10-300 px; uniform scores."""
    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(NUM_PRIORS, 2, generator=g) * IMAGE
    size = 10 + torch.rand(NUM_PRIORS, 2, generator=g) * 290
    boxes = torch.cat([centre - size / 2, centre + size / 2], 1)
    scores = torch.rand(NUM_CLASSES, NUM_PRIORS, generator=g)
    return boxes, scores


def same(a, b) -> bool:
    return all(torch.equal(x.cpu(), y.cpu()) for x, y in zip(a, b))


def bench_device(device: str, boxes, scores, repeats: int, warmup: int) -> list[dict]:
    boxes, scores = boxes.to(device), scores.to(device)
    rows = []

    def add(impl, mode, fn, reference=None):
        out = fn()
        ms = median_ms(fn, repeats=repeats, warmup=warmup, device=device)
        rows.append({
            "implementation": impl, "device": device, "mode": mode,
            "median_ms": round(ms, 3), "detections": len(out[0]),
            "identical_to_reference": "" if reference is None else same(out, reference),
        })
        print(f"{impl:<44} {device:<5} {mode:<12} {ms:9.3f} ms  n={len(out[0])}"
              f"  identical={rows[-1]['identical_to_reference']}", flush=True)

    for cross in (False, True):
        mode = "cross-class" if cross else "per-class"
        ref = fast_nms_reference(boxes, scores, top_k=TOP_K, cross_class=cross)
        if device == "cpu" and extension_available():
            from yolact_lite import _C  # the compiled extension itself: its kernel alone is one row

            add("fast_nms (extension, incl. validation)", mode,
                lambda cross=cross: fast_nms(boxes, scores, top_k=TOP_K, cross_class=cross), ref)
            add("extension kernel only (_C.fast_nms_cpu)", mode,
                lambda cross=cross: _C.fast_nms_cpu(boxes, scores, 0.5, TOP_K, 100, cross), ref)
        if device == "cuda" and cuda_extension_available():
            add("fast_nms (extension CUDA)", mode,
                lambda cross=cross: fast_nms(boxes, scores, top_k=TOP_K, cross_class=cross), ref)
        add("fast_nms_reference (pure torch)", mode,
            lambda cross=cross: fast_nms_reference(boxes, scores, top_k=TOP_K, cross_class=cross))

    # traditional NMS on the same top-200-per-class candidates
    add("torchvision batched_nms (incl. top-200 select)", "per-class",
        lambda: traditional_nms(boxes, scores, candidate_threshold=float("-inf"), top_k=TOP_K))
    cand_scores, cand_idx = scores.topk(TOP_K, dim=1)
    cand_boxes = boxes[cand_idx.reshape(-1)]
    cand_cls = torch.arange(NUM_CLASSES, device=device).repeat_interleave(TOP_K)
    flat_scores = cand_scores.reshape(-1)

    def batched_only():
        keep = torchvision.ops.batched_nms(cand_boxes, flat_scores, cand_cls, 0.5)[:100]
        return keep, keep, keep

    add("torchvision batched_nms (candidates given)", "per-class", batched_only)
    best, _ = scores.max(0)
    top_best, top_idx = best.topk(TOP_K)
    top_boxes = boxes[top_idx]

    def nms_cross():
        keep = torchvision.ops.nms(top_boxes, top_best, 0.5)
        return keep, keep, keep

    add("torchvision nms (top-200 by best class)", "cross-class", nms_cross)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 repeats instead of 20")
    parser.add_argument("--smoke", action="store_true", help="1 repeat, no warm-up: a test that it runs")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto: CPU rows, plus CUDA rows when a GPU is available")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="nms_speed", help="results file stem")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    repeats, warmup = (1, 0) if args.smoke else (5, 1) if args.quick else (20, 3)
    devices = {"auto": ["cpu"] + (["cuda"] if torch.cuda.is_available() else []),
               "cpu": ["cpu"], "cuda": ["cuda"]}[args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device available")
    if not extension_available():
        print("warning: yolact_lite._C is not built; extension rows are skipped "
              "(pip install --no-build-isolation -e .)", file=sys.stderr)

    boxes, scores = make_input(args.seed)
    print(f"{NUM_PRIORS} priors x {NUM_CLASSES} classes, top_k={TOP_K}, "
          f"threads={torch.get_num_threads()}, repeats={repeats}")
    rows = []
    for device in devices:
        rows += bench_device(device, boxes, scores, repeats, warmup)
    for row in rows:
        row["threads"] = torch.get_num_threads()
    notes = (f"Worst case: {NUM_PRIORS} priors x {NUM_CLASSES} classes, every prior a "
             f"candidate, top_k={TOP_K}, iou_threshold=0.5, max_detections=100 (not applied "
             f"in cross-class mode). Boxes: uniform centres in a {IMAGE} px image, sides "
             f"10-300 px; scores uniform. Median of {repeats} runs after {warmup} warm-up, "
             f"torch threads={torch.get_num_threads()}. identical_to_reference: exact equality "
             "of (prior_index, class_id, score) with fast_nms_reference on the same device.")
    csv_path, md_path = write_results(args.name, rows, notes)
    print(f"wrote {csv_path} and {md_path}")
    mismatches = [r for r in rows if r["identical_to_reference"] is False]
    if mismatches:
        sys.exit(f"error: {len(mismatches)} implementation(s) differ from the reference")


if __name__ == "__main__":
    main()
