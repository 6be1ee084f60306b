#!/usr/bin/env python3
"""Long-run soak test (not a CI test): memory and speed stability over many frames and steps.

(a) Video: the threaded pipeline (:func:`yolact_lite.inference.video.run_video`) over ``--frames``
    frames, looping the video (one ``run_video`` call per pass, each writing an mp4v file
    that the next pass overwrites).  Model: ``yolact_effl0`` at a small CPU size
    (``--input-size``, anchor scales scaled from 550), random weights biased so that every
    frame has detections, top 15 drawn.  Reports the process RSS at the start, every 1,000
    frames and at the end, and the FPS of each 1,000-frame window.
(b) Training: ``--steps`` iterations of the engine on a tiny config (128 input, 3 bundled
    images, batch 2, a checkpoint every 100 steps), RSS every 100 steps.

Writes ``benchmarks/results/long_run.{csv,md}`` (machine recorded).

    python -m benchmarks.long_run [--frames 10000] [--steps 1000] [--input-size 192] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import torch

from benchmarks._common import SHARED_DATA, off_main_thread, write_results
from yolact_lite import load_config
from yolact_lite.checkpoint.files import model_checkpoint
from yolact_lite.data import coco_subset
from yolact_lite.engine.loop import HookBase
from yolact_lite.engine.trainer import Trainer, TrainOptions
from yolact_lite.inference.predictor import Predictor
from yolact_lite.inference.video import open_video, run_video
from yolact_lite.model.priors import anchor_scales_override
from yolact_lite.model.testing import detecting_model

ROOT = Path(__file__).resolve().parent.parent

SHARED_VIDEO = SHARED_DATA / "video" / "vtest.avi"
BUNDLED_VIDEO = ROOT / "data" / "video" / "vtest_150.avi"
TRAIN = ROOT / "data" / "coco_mini" / "train"
TRAIN_IMAGE_IDS = (262146, 483330, 352257)  # three bundled images with few, large instances
TOP_K = 15
WINDOW = 1000  # frames per FPS / RSS window
STEP_REPORT = 100  # training steps between RSS samples
BASE_SCALES = (24, 48, 96, 192, 384)  # the configs' anchor scales at input 550


def rss_mib() -> float:
    """Resident set size of this process in MiB (Linux /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource  # fallback: peak, not current

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def load_avg() -> float:
    """1-minute load average (other processes competing for the cores slow every window)."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else float("nan")


def scaled_anchors(size: int) -> str:
    return anchor_scales_override(size, BASE_SCALES)


def build_predictor(input_size: int) -> Predictor:
    config = load_config("yolact_effl0", [f"model.input_size={input_size}", scaled_anchors(input_size)])
    model = detecting_model(config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Predictor(config, model_checkpoint(model, config.to_dict()))


# --------------------------------------------------------------------------- (a) video


def video_run(video: Path, frames: int, input_size: int, log) -> dict:
    predictor = build_predictor(input_size)
    cap, _, _ = open_video(video)
    ok, frame = cap.read()
    cap.release()
    for _ in range(2):  # warm-up outside the measurement
        off_main_thread(predictor.predict, frame, top_k=TOP_K)

    state = {"done": 0, "t_window": time.perf_counter(), "cpu_window": time.process_time(), "detections": 0}
    samples = [{"part": "video", "at": 0, "rss_mib": round(rss_mib(), 1), "window_fps": "", "load_avg": load_avg()}]
    log(f"video: start RSS {samples[0]['rss_mib']} MiB")

    def on_result(index, drawn, dets):
        state["done"] += 1
        state["detections"] += len(dets.scores)
        if state["done"] % WINDOW == 0 or state["done"] == frames:
            now, cpu = time.perf_counter(), time.process_time()
            n = state["done"] % WINDOW or WINDOW
            fps = n / max(now - state["t_window"], 1e-9)
            cpu_ms = (cpu - state["cpu_window"]) * 1000.0 / n  # all threads of this process
            state["t_window"], state["cpu_window"] = now, cpu
            row = {"part": "video", "at": state["done"], "rss_mib": round(rss_mib(), 1),
                   "window_fps": round(fps, 2), "cpu_ms_per_item": round(cpu_ms, 1), "load_avg": load_avg()}
            samples.append(row)
            log(f"video: {row['at']} frames, RSS {row['rss_mib']} MiB, {row['window_fps']} FPS, "
                f"{row['cpu_ms_per_item']} CPU ms/frame, load {row['load_avg']}")

    passes = 0
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        while state["done"] < frames:
            off_main_thread(run_video, predictor, video, Path(tmp) / "out.mp4",
                            max_frames=frames - state["done"], top_k=TOP_K, on_result=on_result)
            passes += 1
    wall = time.perf_counter() - started
    return {"samples": samples, "passes": passes, "wall_s": wall, "frames": state["done"],
            "mean_detections": state["detections"] / max(state["done"], 1)}


# --------------------------------------------------------------------------- (b) training


class MemorySampler(HookBase):
    """Samples RSS, speed and loss every STEP_REPORT steps (a training hook)."""

    def __init__(self, steps: int, samples: list, log):
        self.steps, self.samples, self.log = steps, samples, log
        self.clock = {"t": time.perf_counter(), "cpu": time.process_time()}

    def after_step(self) -> None:
        step = self.trainer.iter
        if step % STEP_REPORT and step != self.steps:
            return
        now, cpu = time.perf_counter(), time.process_time()
        n = step % STEP_REPORT or STEP_REPORT
        r = {"part": "train", "at": step, "rss_mib": round(rss_mib(), 1),
             "steps_per_s": round(n / max(now - self.clock["t"], 1e-9), 2),
             "cpu_ms_per_item": round((cpu - self.clock["cpu"]) * 1000.0 / n, 1), "load_avg": load_avg(),
             "loss": round(float(self.state.last_step.terms.get("total", float("nan"))), 4)}
        self.clock["t"], self.clock["cpu"] = now, cpu
        self.samples.append(r)
        self.log(f"train: step {step}, RSS {r['rss_mib']} MiB, {r['steps_per_s']} steps/s, loss {r['loss']}")


def training_run(steps: int, log) -> dict:
    data = json.loads((TRAIN / "annotations.json").read_text())
    data = coco_subset(data, TRAIN_IMAGE_IDS)
    samples = []
    with tempfile.TemporaryDirectory() as tmp:
        ann = Path(tmp) / "subset.json"
        ann.write_text(json.dumps(data))
        overrides = ["model.input_size=128", "model.anchors.scales=[[5],[11],[22],[44],[89]]",
                     "model.fpn.num_features=32", "model.protonet_channels=32", "model.head_channels=32",
                     "train.batch_size=2", "train.num_workers=0", "train.checkpoint_every_iters=100",
                     "model.num_classes=" + str(len(data["categories"]))]
        config = load_config("yolact_effl0", overrides)
        options = TrainOptions(train_json=str(ann), train_images=str(TRAIN / "images"), out=str(Path(tmp) / "run"),
                               max_iter=steps, pretrained=False, progress=False)
        samples.append({"part": "train", "at": 0, "rss_mib": round(rss_mib(), 1), "load_avg": load_avg()})
        log(f"train: start RSS {samples[0]['rss_mib']} MiB")
        trainer = Trainer(config, options, extra_hooks=[MemorySampler(steps, samples, log)])
        started = time.perf_counter()
        result = off_main_thread(trainer.fit)
        wall = time.perf_counter() - started
    return {"samples": samples, "wall_s": wall, "steps": result.step, "skipped": result.skipped_steps}


def _growth(samples, first_after: int) -> str:
    """RSS change from the first sample at or after ``first_after`` to the last one."""
    base = [s for s in samples if s["at"] >= first_after]
    if len(base) < 2:
        return "n/a"
    return f"{base[-1]['rss_mib'] - base[0]['rss_mib']:+.1f} MiB"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=10_000, help="video frames (0: skip the video part)")
    parser.add_argument("--steps", type=int, default=1_000, help="training steps (0: skip the training part)")
    parser.add_argument("--input-size", type=int, default=192, help="network input size for the video part")
    parser.add_argument("--video", type=Path, default=None, help="video to loop (default: shared vtest.avi "
                        "when present, else the bundled 150-frame excerpt)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--name", default="long_run", help="results file name (benchmarks/results/NAME.*)")
    parser.add_argument("--smoke", action="store_true", help="4 frames of the bundled video at 128 px, 2 training "
                                                             "steps: a test that it runs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.frames, args.steps, args.input_size = 4, 2, 128
        args.video = args.video or BUNDLED_VIDEO
    torch.set_num_threads(args.threads)
    video = args.video or (SHARED_VIDEO if SHARED_VIDEO.is_file() else BUNDLED_VIDEO)

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    rows, notes = [], []
    if args.frames > 0:
        v = video_run(video, args.frames, args.input_size, log)
        rows += v["samples"]
        fps = [s["window_fps"] for s in v["samples"] if s["window_fps"] != ""]
        cpu = [s["cpu_ms_per_item"] for s in v["samples"] if "cpu_ms_per_item" in s]
        notes.append(
            f"Video: `{video.name}` looped ({v['passes']} passes of run_video, the threaded pipeline, mp4v "
            f"output overwritten each pass), {v['frames']} frames in {v['wall_s']:.0f} s; yolact_effl0 at "
            f"{args.input_size} (anchor scales int(s*{args.input_size}/550)), random weights biased to "
            f"detect ({v['mean_detections']:.1f} detections per frame on average), top {TOP_K} drawn. "
            f"RSS {v['samples'][0]['rss_mib']} -> {v['samples'][-1]['rss_mib']} MiB "
            f"(after the first window: {_growth(v['samples'], WINDOW)}); FPS per {WINDOW}-frame window "
            f"min {min(fps):.2f} / max {max(fps):.2f}; process CPU time per frame (all threads) "
            f"min {min(cpu):.0f} / max {max(cpu):.0f} ms. `load_avg` is the machine's 1-minute load "
            f"average: FPS falls when other processes take the cores, CPU ms per frame shows whether "
            f"the work itself grew.")
    if args.steps > 0:
        t = training_run(args.steps, log)
        rows += t["samples"]
        notes.append(
            f"Training: {t['steps']} steps of yolact_effl0 at 128 (tiny heads, 3 bundled images, batch 2, "
            f"no workers, last.pt every 100 steps) in {t['wall_s']:.0f} s, {t['skipped']} skipped steps; "
            f"RSS {t['samples'][0]['rss_mib']} -> {t['samples'][-1]['rss_mib']} MiB "
            f"(after step {STEP_REPORT}: {_growth(t['samples'], STEP_REPORT)}).")
    notes.append(f"torch threads {args.threads}; a machine shared with other work: FPS varies with its load.")
    csv_path, md_path = write_results(args.name, rows, "\n\n".join(notes))
    print("\n".join(notes))
    print(f"wrote {csv_path} and {md_path}")


if __name__ == "__main__":
    main()
