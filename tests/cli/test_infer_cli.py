"""scripts/infer.py end to end (subprocess) plus its error paths (in-process, faster)."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.paths import ROOT
from yolact_lite import load_config
from yolact_lite.checkpoint.files import model_checkpoint, save_atomic
from yolact_lite.inference.predictor import COCO_CATEGORY_IDS
from yolact_lite.model.testing import detecting_model

SCRIPT = ROOT / "scripts" / "infer.py"
PHOTOS = ROOT / "data" / "photos"
TINY = ["model.input_size=128", "model.anchors.scales=[[5],[11],[22],[44],[89]]"]
SET_ARGS = [a for o in TINY for a in ("--set", o)]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    cfg = load_config("yolact_effl0", TINY)
    model = detecting_model(cfg)
    path = tmp_path_factory.mktemp("weights") / "forced.pth"
    save_atomic(model_checkpoint(model, cfg.to_dict()), path)
    return path


def run(args, cwd):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--config", "yolact_effl0", *SET_ARGS, *args],
                          cwd=cwd, capture_output=True, text=True, timeout=300)
    return proc


def check_coco_json(path, images):
    """``images``: {image_id: (height, width)}. Loads the results with pycocotools."""
    from pycocotools.coco import COCO

    results = json.loads(Path(path).read_text())
    assert results, "no detections written"
    gt = COCO()
    gt.dataset = {
        "images": [{"id": i, "height": h, "width": w} for i, (h, w) in images.items()],
        "categories": [{"id": c, "name": str(c)} for c in COCO_CATEGORY_IDS],
        "annotations": [],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dt = gt.loadRes(str(path))
    for ann in dt.dataset["annotations"]:
        assert ann["image_id"] in images
        assert ann["category_id"] in COCO_CATEGORY_IDS
        x, y, w, h = ann["bbox"]
        ih, iw = images[ann["image_id"]]
        assert 0 <= x <= iw and 0 <= y <= ih and w >= 0 and h >= 0
        assert ann["segmentation"]["size"] == [ih, iw]
        assert 0 <= ann["score"] <= 1
    return results


def test_single_image_with_json(weights, tmp_path):
    proc = run(["--weights", str(weights), "--image", str(PHOTOS / "messi5.jpg"),
                "--out", "drawn", "--json", "dets.json", "--top-k", "5", "--display-threshold", "0.01"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "WARNING" not in proc.stderr
    drawn = cv2.imread(str(tmp_path / "drawn.png"))
    original = cv2.imread(str(PHOTOS / "messi5.jpg"))
    assert drawn.shape == original.shape and not np.array_equal(drawn, original)
    results = check_coco_json(tmp_path / "dets.json", {0: original.shape[:2]})
    assert len(results) > 5  # the json has every detection, not only the drawn ones


def test_folder_with_json_and_random_weights_warning(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("messi5.jpg", "basketball1.png"):
        shutil.copy(PHOTOS / name, folder / name)
    (folder / "notes.txt").write_text("not an image")
    proc = run(["--images", str(folder), "--out", "out", "--json", "d.json", "--batch", "2"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "MEANINGLESS" in proc.stderr  # random weights are announced loudly
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["basketball1.png", "messi5.png"]
    assert json.loads((tmp_path / "d.json").read_text()) == []  # random init finds nothing


def test_video_with_max_frames(weights, tmp_path):
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (96, 64))
    for i in range(6):
        writer.write(np.full((64, 96, 3), 30 * i, np.uint8))
    writer.release()
    proc = run(["--weights", str(weights), "--video", str(video), "--out", "v.mp4", "--max-frames", "4",
                "--save-json", "v.jsonl", "--display-fps", "--no-progress", "--display-threshold", "0.01"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "4 frames" in proc.stdout and "FPS" in proc.stdout
    cap = cv2.VideoCapture(str(tmp_path / "v.mp4"))
    count = 0
    while cap.read()[0]:
        count += 1
    assert count == 4
    frames = [json.loads(line) for line in (tmp_path / "v.jsonl").read_text().splitlines()]
    assert [f["frame"] for f in frames] == [0, 1, 2, 3]  # one JSON line per frame
    assert [f["time_s"] for f in frames] == pytest.approx([0.0, 0.1, 0.2, 0.3])  # 10 FPS file
    assert all(f["height"] == 64 and f["width"] == 96 for f in frames)
    instances = [i for f in frames for i in f["instances"]]
    assert instances and all(i["polygons"] and len(i["box"]) == 4 for i in instances)


def test_bad_image_subprocess(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    proc = run(["--image", str(bad)], tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "broken.jpg" in lines[0]


# --------------------------------------------------------------------------- in-process errors


@pytest.fixture(scope="module")
def infer_module():
    spec = importlib.util.spec_from_file_location("infer_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_inprocess(module, args, capsys):
    from yolact_lite.cli import run_cli

    with pytest.raises(SystemExit, match="^[0-9]+$") as info:  # a numeric exit code, never a message
        run_cli(module.main, ["--config", "yolact_effl0", *SET_ARGS, *args])
    err = capsys.readouterr().err
    return info.value.code, [line for line in err.strip().splitlines() if line and "!!!!" not in line
                             and not line.startswith("WARNING: NO WEIGHTS")]


@pytest.mark.parametrize("case", ["empty_image", "missing_image", "camera", "mismatch", "no_images", "bad_video",
                                  "bad_set", "out_under_a_file", "threshold_above_1"])
def test_bad_inputs_exit_2_with_one_error_line(case, infer_module, weights, tmp_path, capsys):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    (tmp_path / "nothing").mkdir()
    (tmp_path / "junk.mp4").write_bytes(b"junk" * 100)
    args, message = {
        "empty_image": (["--image", str(empty)], "empty.png: empty file (0 bytes)"),
        "missing_image": (["--image", str(tmp_path / "nope.jpg")], "nope.jpg: no such file"),
        "camera": (["--weights", str(weights), "--video", "57", "--no-progress"], "camera 57 could not be opened"),
        "mismatch": (["--weights", str(weights), "--set", "model.num_classes=3", "--image",
                      str(PHOTOS / "messi5.jpg"), "--out", str(tmp_path / "x.png")],
                     "checkpoint does not match the model"),
        "no_images": (["--images", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")],
                      "nothing: no image files"),
        "bad_video": (["--weights", str(weights), "--video", str(tmp_path / "junk.mp4"), "--no-progress"],
                      "junk.mp4: cannot open as a video"),
        "bad_set": (["--set", "model.no_such_key=1", "--image", str(PHOTOS / "messi5.jpg")],
                    "unknown config key(s) model.no_such_key"),
        "out_under_a_file": (["--image", str(PHOTOS / "messi5.jpg"), "--out", str(empty / "x.png")],
                             "empty.png: exists and is not a folder"),
        "threshold_above_1": (["--set", "inference.detection_threshold=2", "--image", str(PHOTOS / "messi5.jpg")],
                              "inference.detection_threshold must be in [0, 1); got 2"),
    }[case]
    code, lines = run_inprocess(infer_module, args, capsys)
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


def test_an_unreadable_image_in_a_folder_is_skipped_and_the_rest_kept(infer_module, weights, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(PHOTOS / "messi5.jpg", folder / "a.jpg")
    (folder / "b.jpg").write_bytes((PHOTOS / "messi5.jpg").read_bytes()[:2000])  # truncated JPEG
    shutil.copy(PHOTOS / "basketball1.png", folder / "c.png")
    code, lines = run_inprocess(infer_module, ["--weights", str(weights), "--images", str(folder), "--out",
                                               str(tmp_path / "out"), "--json", str(tmp_path / "d.json"),
                                               "--batch", "2"], capsys)
    assert code == 1  # finished, but not every image
    assert [line for line in lines if "b.jpg" in line] == [lines[0]] and lines[0].startswith("skipped ")
    assert lines[-1] == "note: 1 of 3 images skipped (unreadable)"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "c.png"]
    results = json.loads((tmp_path / "d.json").read_text())
    assert results and {r["image_id"] for r in results} <= {0, 2}  # ids keep the images' positions


# Runs the CLI once per source in ONE interpreter (imports are the slow part), file descriptor 2
# pointed at a file per run, so that what OpenCV and FFmpeg write there directly is seen too.
_CLI_PER_SOURCE = """
import os, sys
from yolact_lite.cli import run_cli
from yolact_lite.cli.predict import main
weights, out = sys.argv[1], sys.argv[2]
for i, source in enumerate(sys.argv[3:]):
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.path.join(out, f"{i}.err"), "w") as err:
        os.dup2(err.fileno(), 2)
    try:
        run_cli(main, ["--weights", weights, *TINY, "--input", source, "--no-progress"])
    except SystemExit as stop:
        code = stop.code
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)
    print("exit", code)
"""


def test_video_sources_that_fail_print_one_error_line_only(weights, tmp_path):
    """An unreachable stream (a closed port on 127.0.0.1), a corrupt video file and a missing
    camera: exit 2 and exactly one ``error:`` line on stderr, no OpenCV/FFmpeg line."""
    import socket

    with socket.socket() as probe:  # a port nothing listens on: bound here, closed before the run
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    corrupt = tmp_path / "corrupt.avi"
    corrupt.write_bytes(b"RIFF\x00\x10\x00\x00AVI LIST" + bytes(range(256)) * 16)
    cases = [(f"http://127.0.0.1:{port}/live.mp4", "cannot open the stream"),
             (str(corrupt), "corrupt.avi: cannot open as a video"),
             ("57", "camera 57 could not be opened")]
    code = _CLI_PER_SOURCE.replace("*TINY", ", ".join(repr(a) for a in SET_ARGS))
    proc = subprocess.run([sys.executable, "-c", code, str(weights), str(tmp_path), *(c[0] for c in cases)],
                          capture_output=True, text=True, timeout=300)
    assert [line for line in proc.stdout.splitlines() if line.startswith("exit ")] == ["exit 2"] * 3, proc.stderr
    for i, (source, message) in enumerate(cases):
        lines = (tmp_path / f"{i}.err").read_text().strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (source, lines)


def test_precision_flag(infer_module, weights, tmp_path, capsys):
    """--precision: fp16 on the CPU is a one-line error; auto says what it picked."""
    photo = ["--image", str(PHOTOS / "messi5.jpg"), "--out", str(tmp_path / "p.png")]
    code, lines = run_inprocess(infer_module, ["--weights", str(weights), "--precision", "fp16", *photo], capsys)
    assert code == 2 and len(lines) == 1 and "fp16" in lines[0] and "CUDA" in lines[0], lines
    from yolact_lite.cli import run_cli

    with pytest.raises(SystemExit, match="^0$") as info:
        run_cli(infer_module.main, ["--config", "yolact_effl0", *SET_ARGS, "--weights", str(weights),
                                    "--precision", "auto", *photo])
    assert info.value.code == 0
    network = [line for line in capsys.readouterr().out.splitlines() if line.startswith("network: ")]
    assert len(network) == 1 and "(auto: " in network[0] and (tmp_path / "p.png").is_file()


def test_input_glob_and_config_from_the_checkpoint(weights, tmp_path):
    """--input takes a glob; without --config the checkpoint's own config is used."""
    from yolact_lite.cli.predict import main

    out = tmp_path / "drawn"
    code = main(["--weights", str(weights), *SET_ARGS, "--input", str(PHOTOS / "*_z.jpg"), "--out", str(out),
                 "--save-json", str(tmp_path / "r.json")])
    assert code == 0
    drawn = sorted(p.name for p in out.iterdir())
    assert drawn == sorted(p.stem + ".png" for p in PHOTOS.glob("*_z.jpg")) and len(drawn) == 8
    assert json.loads((tmp_path / "r.json").read_text())


def test_track_writes_track_ids_per_frame(tmp_path):
    """The bundled person model on the bundled street video: IDs persist from frame to frame."""
    from yolact_lite.cli.predict import main

    code = main(["--weights", str(ROOT / "data" / "models" / "person_effl0.pt"), "--max-frames", "8",
                 "--input", str(ROOT / "data" / "video" / "vtest_150.avi"), "--track", "--track-score", "0.2",
                 "--no-progress",
                 "--save-json", str(tmp_path / "t.jsonl"), "--json-masks", "rle", "--out", str(tmp_path / "t.mp4")])
    assert code == 0
    frames = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert len(frames) == 8
    ids = [[i["track_id"] for i in f["instances"]] for f in frames]
    assert all(isinstance(t, int) for frame in ids for t in frame)
    assert set(ids[3]) & set(ids[-1]), ids  # the same people keep their IDs


def test_stream_url_from_a_local_http_server(weights, tmp_path):
    """A stream URL goes through OpenCV; served from 127.0.0.1 only, the bundled video."""
    import functools
    import http.server
    import threading

    from yolact_lite.cli.predict import main

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(ROOT / "data" / "video"))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/vtest_150.avi"
        code = main(["--weights", str(weights), *SET_ARGS, "--input", url, "--max-frames", "5", "--no-progress",
                     "--display-threshold", "0.01", "--save-json", str(tmp_path / "s.jsonl")])
    finally:
        server.shutdown()
        server.server_close()
    assert code == 0
    frames = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert len(frames) == 5 and all(f["height"] == 576 and f["width"] == 768 for f in frames)
    # a stream is live: frames the pipeline falls behind on are dropped, so the numbers only increase
    numbers = [f["frame"] for f in frames]
    assert numbers == sorted(set(numbers)) and numbers[0] >= 0
    assert all(f["time_s"] is None for f in frames)  # no file FPS to time a live source by
    assert all(f["instances"] for f in frames)


def test_image_json_masks_option(weights, tmp_path):
    """--json-masks applies to images as to videos: COCO results with RLE (default), polygons or none."""
    from pycocotools import mask as mask_utils

    from yolact_lite.cli.predict import main

    written = {}
    for kind in ("default", "polygons", "none"):
        extra = [] if kind == "default" else ["--json-masks", kind]
        code = main(["--weights", str(weights), *SET_ARGS, "--input", str(PHOTOS / "messi5.jpg"),
                     "--out", str(tmp_path / f"{kind}.png"), "--save-json", str(tmp_path / f"{kind}.json"),
                     "--display-threshold", "0.01", *extra])
        assert code == 0
        written[kind] = json.loads((tmp_path / f"{kind}.json").read_text())
    rle, polygons, boxes = written["default"], written["polygons"], written["none"]
    assert rle and len(rle) == len(polygons) == len(boxes)
    assert [r["bbox"] for r in rle] == [r["bbox"] for r in polygons] == [r["bbox"] for r in boxes]
    assert all(isinstance(r["segmentation"], dict) for r in rle)
    assert all("segmentation" not in r for r in boxes)
    h, w = cv2.imread(str(PHOTOS / "messi5.jpg")).shape[:2]
    for a, b in zip(rle, polygons):
        if not b["segmentation"]:
            continue
        poly = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(b["segmentation"], h, w))).astype(bool)
        exact = mask_utils.decode({"size": a["segmentation"]["size"],
                                   "counts": a["segmentation"]["counts"].encode()}).astype(bool)
        assert (poly & exact).sum() / max((poly | exact).sum(), 1) > 0.8  # the same mask, outlined
