"""Robustness: fuzzed outside data and injected faults.

Every reader of outside data (COCO json, images, videos, configs, checkpoints, the compiled
NMS extension's inputs) either succeeds, recovers in a documented way (dropped annotations
counted in ``dataset.dropped``), or raises the library's one-line error; nothing else.
Faults: a training run killed with SIGKILL at random moments (also while a checkpoint is
being written) or stopped with SIGINT resumes to the same weights as an uninterrupted run; a
full disk and dying / failing DataLoader workers end with one ``error:`` line, and the last
good checkpoint survives.

The hypothesis tests are derandomized (the same examples every run) and small, to keep the
whole file well under 90 s on two shared cores.
"""

from __future__ import annotations

import copy
import errno
import io
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycocotools import mask as mask_utils

from tests.paths import ROOT
from yolact_lite import load_config
from yolact_lite.checkpoint.files import load_weights, model_checkpoint, read_state_file
from yolact_lite.cli import run_cli
from yolact_lite.cli.train import main as train_main
from yolact_lite.config import Config
from yolact_lite.data.coco import DROP_REASONS, CocoDataset, coco_subset
from yolact_lite.data.image_io import decode_image, read_image
from yolact_lite.data.sampling import TrainSamples
from yolact_lite.engine.schedule import build_schedule
from yolact_lite.errors import CheckpointError, ConfigError, DataError
from yolact_lite.inference.predictor import Predictor
from yolact_lite.inference.video import run_sequential, run_video
from yolact_lite.model import build_model
from yolact_lite.ops import nms as nms_mod

IMAGES = ROOT / "data" / "coco_mini" / "train" / "images"
TRAIN_JSON = ROOT / "data" / "coco_mini" / "train" / "annotations.json"
TRAIN_IDS = (262146, 483330, 352257)  # three bundled images with few, large instances
TINY = [
    "model.input_size=128",
    "model.anchors.scales=[[5],[11],[22],[44],[89]]",
    "model.fpn.num_features=32",
    "model.protonet_channels=32",
    "model.head_channels=32",
]
TRAIN_SETS = TINY + ["train.batch_size=2", "train.num_workers=0", "train.checkpoint_every_iters=1",
                     "loss.masks_to_train=2"]

FUZZ = dict(deadline=None, derandomize=True, database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                   HealthCheck.data_too_large, HealthCheck.filter_too_much])


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text and "\n" not in text and "Traceback" not in text, repr(text)
    return text


@pytest.fixture(scope="module")
def quiet_predictor():
    """Tiny model with random weights (nothing detected: cheap masks)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Predictor(load_config("yolact_effl0", TINY))


# =========================================================================== COCO json

H, W = 24, 32


def _rle_string(mask: np.ndarray) -> str:
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode("ascii")


def _valid_coco() -> dict:
    blob = np.zeros((H, W), np.uint8)
    blob[6:18, 14:26] = 1
    column = np.zeros((H, W), np.uint8)
    column[:, 3:5] = 1
    flat = column.flatten(order="F")  # uncompressed RLE: runs over the column-major pixels
    runs, value, count = [], 0, 0
    for v in flat:
        if v == value:
            count += 1
        else:
            runs.append(count)
            value, count = v, 1
    runs.append(count)
    return {
        "images": [{"id": 1, "file_name": "a.png", "height": H, "width": W},
                   {"id": 2, "file_name": "b.png", "height": H, "width": W}],
        "categories": [{"id": 3, "name": "three"}, {"id": 7, "name": "seven"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "bbox": [2, 2, 10, 8], "iscrowd": 0,
             "segmentation": [[2, 2, 12, 2, 12, 10, 2, 10]]},
            {"id": 2, "image_id": 1, "category_id": 7, "bbox": [14, 6, 12, 12], "iscrowd": 1,
             "segmentation": {"size": [H, W], "counts": _rle_string(blob)}},
            {"id": 3, "image_id": 2, "category_id": 7, "bbox": [3, 0, 2, 24], "iscrowd": 1,
             "segmentation": {"size": [H, W], "counts": runs}},
            {"id": 4, "image_id": 2, "category_id": 3, "bbox": [10, 10, 20, 12], "iscrowd": 0,
             "segmentation": [[10, 10, 20, 10, 20, 20], [22, 12, 30, 12, 30, 22, 22, 22]]},
        ],
    }


@pytest.fixture(scope="module")
def coco_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("coco_fuzz")
    (folder / "img").mkdir()
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(folder / "img" / name), np.full((H, W, 3), 90, np.uint8))
    return folder


_numbers = st.one_of(st.integers(-60, 80), st.floats(-100, 100, allow_nan=False),
                     st.sampled_from([math.nan, math.inf, -math.inf, 10**400, -(10**40), 1e308]))
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(10**30), 10**30), _numbers,
                     st.text(max_size=6))
_weird = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5),
    st.dictionaries(st.sampled_from(["id", "size", "counts", "x"]), inner, max_size=3)), max_leaves=10)
_polygon = st.lists(_numbers, max_size=10)
_rle = st.fixed_dictionaries({
    "size": st.one_of(st.just([H, W]), st.just([W, H]), st.lists(st.integers(-2, 40), max_size=3), _weird),
    "counts": st.one_of(st.text(alphabet=[chr(c) for c in range(40, 116)] + ["\u00e9", " "], max_size=16),
                        st.lists(st.integers(-5, 800), max_size=6), _weird),
})
_values = st.one_of(_weird, _polygon, st.lists(_polygon, max_size=3), _rle)
_sections = st.sampled_from(["images", "annotations", "categories"])
_fields = st.sampled_from(["id", "image_id", "category_id", "bbox", "segmentation", "iscrowd",
                           "file_name", "height", "width", "name", "area", "extra"])
_mutation = st.one_of(
    st.tuples(st.just("set"), _sections, st.integers(0, 3), _fields, _values),
    st.tuples(st.just("del"), _sections, st.integers(0, 3), _fields),
    st.tuples(st.just("dup"), _sections, st.integers(0, 3)),
    st.tuples(st.just("replace"), _sections, _weird),
    st.tuples(st.just("drop"), _sections),
)


def _mutate(data: dict, mutation: tuple) -> None:
    kind, section = mutation[0], mutation[1]
    items = data.get(section)
    if kind == "drop":
        data.pop(section, None)
    elif kind == "replace":
        data[section] = mutation[2]
    elif not isinstance(items, list) or not items:
        return
    elif kind == "dup":
        items.append(copy.deepcopy(items[mutation[2] % len(items)]))
    elif isinstance(items[mutation[2] % len(items)], dict):
        item = items[mutation[2] % len(items)]
        if kind == "set":
            item[mutation[3]] = mutation[4]
        else:
            item.pop(mutation[3], None)


def test_valid_fuzz_base_loads_every_annotation(coco_dir):
    path = coco_dir / "base.json"
    path.write_text(json.dumps(_valid_coco()))
    ds = CocoDataset(path, coco_dir / "img")
    assert not ds.dropped and [ds.num_instances(i) for i in range(len(ds))] == [2, 2]
    masks = ds.raw_sample(0)["masks"]
    assert masks[1].sum() == 144 and masks[0].sum() > 0  # the compressed RLE blob, decoded


@settings(max_examples=100, **FUZZ)
@given(mutations=st.lists(_mutation, min_size=1, max_size=3))
def test_fuzz_coco_json(coco_dir, mutations):
    data = _valid_coco()
    for m in mutations:
        _mutate(data, m)
    path = coco_dir / "ann.json"
    path.write_text(json.dumps(data))
    try:
        ds = CocoDataset(path, coco_dir / "img")
        samples = [ds.raw_sample(i) for i in range(len(ds))]
    except DataError as exc:
        one_line(exc)
        return
    # recovered: every annotation is either kept or dropped with a documented reason
    assert set(ds.dropped) <= set(DROP_REASONS)
    kept = sum(ds.num_instances(i) for i in range(len(ds)))
    assert kept + sum(ds.dropped.values()) == len(data["annotations"])
    for s in samples:
        n = len(s["labels"])
        h, w = s["orig_size"]
        assert s["masks"].shape == (n, h, w) and s["boxes"].shape == (n, 4)
        assert np.isfinite(s["boxes"]).all() and (s["boxes"][:, 2:] > s["boxes"][:, :2]).all()
        assert (s["boxes"] >= 0).all() and (s["boxes"][:, [0, 2]] <= w).all() and (s["boxes"][:, [1, 3]] <= h).all()
        assert all(m.any() for m in s["masks"])


@settings(max_examples=60, **FUZZ)
@given(counts=st.one_of(st.text(alphabet=[chr(c) for c in range(44, 116)], max_size=24),
                        st.text(max_size=8)))
def test_fuzz_compressed_rle_strings(coco_dir, counts):
    """pycocotools reads past the end of some malformed strings: they are refused or dropped
    before it ever sees them."""
    data = _valid_coco()
    data["annotations"][1]["segmentation"]["counts"] = counts
    path = coco_dir / "rle.json"
    path.write_text(json.dumps(data))
    try:
        ds = CocoDataset(path, coco_dir / "img")
    except DataError as exc:
        assert "compressed RLE" in one_line(exc)
        return
    if ds.num_instances(0) == 2:  # accepted: decodes to exactly the image size
        assert ds.raw_sample(0)["masks"].shape == (2, H, W)
    else:
        assert sum(ds.dropped.values()) == 1 and set(ds.dropped) <= {"rle_size_mismatch", "empty_mask"}


@pytest.mark.parametrize("text, words", [
    ("[" * 50000 + "]" * 50000, "cannot parse JSON"),                   # nesting too deep
    ('{"images": ' + "7" * 5000 + "}", "cannot parse JSON"),             # over Python's digit limit
    (json.dumps({**_valid_coco(), "images": [{"id": 1, "file_name": "a.png", "height": 10**30,
                                              "width": W}]}), "'height' must be a positive integer"),
])
def test_json_parser_limits_are_data_errors(coco_dir, text, words):
    path = coco_dir / "limits.json"
    path.write_text(text)
    with pytest.raises(DataError, match=words) as info:
        CocoDataset(path, coco_dir / "img")
    assert str(path) in one_line(info.value)


# =========================================================================== images


def _encoded(kind: str) -> bytes:
    rng = np.random.default_rng(3)
    img = cv2.resize(rng.integers(0, 255, (4, 5, 3), dtype=np.uint8), (40, 30), interpolation=cv2.INTER_CUBIC)
    if kind == "jpg":
        return cv2.imencode(".jpg", img)[1].tobytes()
    if kind == "png16":
        return cv2.imencode(".png", img.astype(np.uint16) * 257)[1].tobytes()
    if kind == "gray_jpg":
        return cv2.imencode(".jpg", img[:, :, 0])[1].tobytes()
    return cv2.imencode(".png", img)[1].tobytes()


ENCODED = {k: _encoded(k) for k in ("jpg", "png", "png16", "gray_jpg")}


@settings(max_examples=80, **FUZZ)
@given(kind=st.sampled_from(sorted(ENCODED)), cut=st.floats(0, 1),
       flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=4))
def test_fuzz_image_bytes(kind, cut, flips):
    data = bytearray(ENCODED[kind][: int(len(ENCODED[kind]) * cut)])
    for where, value in flips:
        if data:
            data[min(int(where * len(data)), len(data) - 1)] = value
    try:
        image = decode_image(bytes(data), "fuzzed.img")
    except DataError as exc:
        assert "fuzzed.img" in one_line(exc)
        return
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert image.flags["C_CONTIGUOUS"] and image.shape[0] >= 1 and image.shape[1] >= 1


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels but holds almost no data (a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
            + chunk(b"IEND", b""))


def test_decompression_bomb_is_refused_without_allocating():
    with pytest.raises(DataError, match="image too large to decode") as info:
        decode_image(_png_header_only(100_000, 100_000), "bomb.png")
    assert one_line(info.value).startswith("bomb.png: ")


def test_odd_image_files_through_read_image_and_predictor(tmp_path, quiet_predictor):
    cases = {
        "png_named.jpg": ENCODED["png"],            # wrong extension: decoded by content
        "jpeg_named.png": ENCODED["jpg"],
        "gray.jpg": ENCODED["gray_jpg"],
        "deep.png": ENCODED["png16"],               # 16-bit colour
        "rgba16.png": cv2.imencode(".png", np.full((7, 9, 4), 40000, np.uint16))[1].tobytes(),
        "one.jpg": cv2.imencode(".jpg", np.full((1, 1, 3), 200, np.uint8))[1].tobytes(),
        "tall.png": cv2.imencode(".png", np.zeros((300, 1), np.uint8))[1].tobytes(),
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        image = read_image(tmp_path / name)
        assert image.dtype == np.uint8 and image.shape[2] == 3, name
        dets = quiet_predictor.predict(image)
        assert tuple(dets.masks.shape[1:]) == image.shape[:2], name
    assert read_image(tmp_path / "rgba16.png")[0, 0].tolist() == [156, 156, 156]  # 40000 / 257


def test_bad_arrays_given_to_the_predictor_are_data_errors(quiet_predictor):
    dtype = "expected uint8 \\(or float 0-255\\) pixels, got dtype "
    bad = [(np.empty((4, 4, 3), object), dtype + "object"), (np.ones((4, 4, 3), bool), dtype + "bool"),
           (np.ones((4, 4, 3), np.int16), dtype + "int16"), (np.ones((4, 4, 3), np.uint16), dtype + "uint16"),
           (np.full((4, 4, 3), np.nan), "NaN or infinite pixel values"),
           (np.ones((4, 4, 3), np.complex64), dtype + "complex64"),
           (np.ones((4, 4, 4), np.uint8), r"shape \[H, W, 3\], got \(4, 4, 4\)"),
           (np.ones((4, 4), np.uint8), r"shape \[H, W, 3\], got \(4, 4\)"),
           (np.zeros((0, 4, 3), np.uint8), r"empty image \(shape \(0, 4, 3\)\)"),
           ([[1, 2]], "expected a numpy BGR image, got list")]
    for array, message in bad:
        with pytest.raises(DataError, match=message) as info:
            quiet_predictor.predict(array)
        one_line(info.value)
    # float images with finite 0-255 values and non-contiguous views are fine
    assert len(quiet_predictor.predict(np.full((9, 11, 3), 100.0, np.float32)).scores) == 0
    assert len(quiet_predictor.predict(np.zeros((20, 30, 3), np.uint8)[::2, ::3]).scores) == 0


def test_huge_png_is_read_and_predicted(tmp_path, quiet_predictor):
    """A 10000x10000 PNG (mostly constant: ~100 KB on disk) decodes and runs through the
    predictor; full-size masks come back for it."""
    gray = np.full((10_000, 10_000), 100, np.uint8)
    gray[4000:6000, 3000:7000] = 220
    path = tmp_path / "huge.png"
    assert cv2.imwrite(str(path), gray, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    del gray
    assert path.stat().st_size < 2_000_000
    image = read_image(path)
    assert image.shape == (10_000, 10_000, 3) and image[5000, 5000, 1] == 220
    dets = quiet_predictor.predict(image)
    assert tuple(dets.masks.shape[1:]) == (10_000, 10_000)


# =========================================================================== videos


@pytest.fixture(scope="module")
def small_video(tmp_path_factory):
    path = tmp_path_factory.mktemp("video_fuzz") / "v.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for i in range(12):
        writer.write(np.full((48, 64, 3), 20 * i, np.uint8))
    writer.release()
    return path


@settings(max_examples=12, **FUZZ)
@given(cut=st.floats(0, 1), garbage=st.binary(max_size=64))
def test_fuzz_truncated_videos(small_video, quiet_predictor, tmp_path_factory, cut, garbage):
    data = small_video.read_bytes()
    path = tmp_path_factory.getbasetemp() / "cut.avi"
    path.write_bytes(data[: int(len(data) * cut)] + garbage)
    for runner in (run_sequential, run_video):
        try:
            summary = runner(quiet_predictor, path, max_frames=3)
        except DataError as exc:
            one_line(exc)
        else:
            assert 1 <= summary.frames <= 3


class _FrameSource:
    """A capture yielding given frames (or read() results) then the end of the stream."""

    def __init__(self, frames):
        self.frames = list(frames)

    def read(self):
        if not self.frames:
            return False, None
        item = self.frames.pop(0)
        return item if isinstance(item, tuple) else (True, item)

    def get(self, prop):
        return 0

    def isOpened(self):
        return True

    def release(self):
        pass


@pytest.mark.parametrize("bad", [np.zeros((48, 64), np.uint8), np.zeros((48, 64, 4), np.uint8),
                                 np.zeros((0, 0, 3), np.uint8), (True, None)],
                         ids=["gray", "bgra", "empty", "none"])
def test_bad_frame_mid_stream_is_a_data_error_not_a_hang(quiet_predictor, monkeypatch, bad):
    import yolact_lite.inference.video as video_module

    good = np.zeros((48, 64, 3), np.uint8)
    for runner in (run_video, run_sequential):
        monkeypatch.setattr(video_module, "open_video",
                            lambda source: (_FrameSource([good, good, bad, good]), False, "fake"))
        box = {}

        def target(runner=runner, box=box):
            try:
                runner(quiet_predictor, "fake")
            except BaseException as exc:  # handed to the test thread
                box["error"] = exc

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        thread.join(timeout=60)
        assert not thread.is_alive(), f"{runner.__name__} hangs on a bad frame"
        assert isinstance(box.get("error"), DataError), box
        one_line(box["error"])


# =========================================================================== configs


def _config_keys(node, prefix=""):
    import dataclasses

    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if dataclasses.is_dataclass(value):
            yield from _config_keys(value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}"


def _yaml_float(v: float) -> str:
    if math.isnan(v):
        return ".nan"
    if math.isinf(v):
        return ".inf" if v > 0 else "-.inf"
    return repr(v)


CONFIG_KEYS = sorted(_config_keys(Config()))
_yaml_values = st.one_of(
    st.integers(-3, 3).map(str), st.integers(-(10**20), 10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(_yaml_float),
    st.sampled_from(["null", "true", "false", "[]", "[[]]", "{}", "[[0]]", "[[-1], [2]]", "[1, 2]", "[1, 2, 3]",
                     "x", "'5'", "2020-01-01", "0x10", "1e-3", "[.nan, 1, 1]", "{a: 1}", "!!binary aGk=",
                     "!!python/object/apply:os.system ['echo pwned']", "&a [*a]", ""]),
    st.text(max_size=8),
)
_config_key = st.one_of(st.sampled_from(CONFIG_KEYS), st.sampled_from(CONFIG_KEYS).map(lambda k: k + ".x"),
                        st.sampled_from(CONFIG_KEYS).map(lambda k: k.rsplit(".", 1)[0]),
                        st.text(alphabet="abcz._", max_size=12))


@settings(max_examples=250, **FUZZ)
@given(overrides=st.lists(st.tuples(_config_key, _yaml_values), min_size=1, max_size=3))
def test_fuzz_config_overrides(overrides):
    items = [f"{k}={v}" for k, v in overrides]
    try:
        config = load_config("yolact_effl0", items)
    except ConfigError as exc:
        one_line(exc)
        return
    # a config that validates is usable: schedule and optimiser build, every float is finite
    schedule = build_schedule(config.train)
    t = config.train
    param = [torch.nn.Parameter(torch.zeros(2))]
    if t.optimizer == "sgd":
        torch.optim.SGD(param, lr=schedule.lr_at(0), momentum=t.momentum, weight_decay=t.weight_decay)
    else:
        torch.optim.AdamW(param, lr=schedule.lr_at(0), weight_decay=t.weight_decay)
    assert math.isfinite(schedule.lr_at(0))


@pytest.mark.parametrize("override, words", [
    ("model.num_prototypes=0", "model.num_prototypes must be >= 1"),
    ("train.lr=.nan", "train.lr must be a finite number"),
    ("model.anchors.scales=[[.inf], [1], [1], [1], [1]]", "must be a finite number"),
    ("train.reference_batch=0", "train.reference_batch must be >= 1"),
    ("train.momentum=-0.5", "train.momentum must be >= 0"),
    ("train.batch_size=100000000", "after autoscaling"),
])
def test_out_of_range_config_values(override, words):
    with pytest.raises(ConfigError, match=re.escape(words)) as info:
        config = load_config("yolact_effl0", [override])
        build_schedule(config.train)
    assert words in one_line(info.value)


# =========================================================================== checkpoints


@pytest.fixture(scope="module")
def tiny_model():
    config = load_config("yolact_effl0", TINY)
    torch.manual_seed(0)
    return build_model(config, pretrained=False)


@pytest.fixture(scope="module")
def small_checkpoint_bytes():
    """A few kilobytes in our checkpoint layout (cheap to fuzz the reader with)."""
    buffer = io.BytesIO()
    torch.save({"format": "yolact_lite", "config": {"model": {"num_classes": 3}},
                "model": {"a.weight": torch.arange(600.).view(20, 30), "a.bias": torch.zeros(20)},
                "class_names": ["x", "y", "z"]}, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def checkpoint_bytes(tiny_model):
    buffer = io.BytesIO()
    torch.save(model_checkpoint(tiny_model, load_config("yolact_effl0", TINY).to_dict(),
                                class_names=[f"c{i}" for i in range(80)]), buffer)
    return buffer.getvalue()


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch notes odd pickle protocols in corrupt files
@settings(max_examples=40, **FUZZ)
@given(cut=st.floats(0, 0.999), flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=3))
def test_fuzz_truncated_and_corrupted_checkpoints(tiny_model, small_checkpoint_bytes, tmp_path_factory, cut, flips):
    data = bytearray(small_checkpoint_bytes)
    for where, value in flips:
        data[min(int(where * len(data)), len(data) - 1)] = value
    data = data[: int(len(data) * cut)] if cut > 0 else data
    path = tmp_path_factory.getbasetemp() / "fuzzed.pt"
    path.write_bytes(bytes(data))
    unreadable_or_not_ours = ("checkpoint is corrupt or truncated|checkpoint is empty|refusing to load"
                              "|checkpoint does not match the model")
    with pytest.raises(CheckpointError, match=unreadable_or_not_ours) as info:
        load_weights(tiny_model, path)
    one_line(info.value)


def test_truncated_real_checkpoint(tmp_path, tiny_model, checkpoint_bytes):
    rng = random.Random(7)
    for cut in [0, 1, 100, len(checkpoint_bytes) // 2, len(checkpoint_bytes) - 1] + \
            [rng.randrange(len(checkpoint_bytes)) for _ in range(3)]:
        path = tmp_path / f"cut{cut}.pt"
        path.write_bytes(checkpoint_bytes[:cut])
        with pytest.raises(CheckpointError, match=re.escape(str(path))) as info:
            load_weights(tiny_model, path)
        assert str(path) in one_line(info.value)


def read_state_file_bytes(data: bytes) -> dict:
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


class _Payload:
    """Unpickling this would run code: it must never be executed."""

    def __reduce__(self):
        return (os.system, ("touch /tmp/yolact_lite_pwned",))


_objects = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=4), st.binary(max_size=4),
              st.just(torch.zeros(2)), st.just(torch.zeros(2, dtype=torch.complex64)), st.just({1, 2}),
              st.just(1j), st.just(slice(1)), st.just(_Payload()), st.just(print), st.just(Path("x"))),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.tuples(inner, inner),
                            st.dictionaries(st.one_of(st.text(max_size=6), st.integers()), inner, max_size=3)),
    max_leaves=8)
_checkpointish = st.fixed_dictionaries({}, optional={
    "format": st.sampled_from(["yolact_lite", "other"]), "model": _objects, "config": _objects,
    "class_names": _objects, "category_ids": _objects, "proto_net.0.weight": _objects})


@settings(max_examples=60, **FUZZ)
@given(obj=st.one_of(_objects, _checkpointish))
def test_fuzz_pickled_objects_are_refused_or_rejected(tiny_model, tmp_path_factory, obj):
    """What the Predictor does with a weights file: read, load, read class names / ids."""
    from yolact_lite.inference import predictor as P

    path = tmp_path_factory.getbasetemp() / "objects.pt"
    torch.save(obj, path)
    try:
        data = read_state_file(path)
        P._names_from(data.get("class_names"), 80)
        P._ids_from(data.get("category_ids"), 80)
        load_weights(tiny_model, data)
    except CheckpointError as exc:
        one_line(exc)
    assert not Path("/tmp/yolact_lite_pwned").exists()


def test_checkpoint_with_bad_class_names_or_ids(tmp_path, checkpoint_bytes):
    state = read_state_file_bytes(checkpoint_bytes)
    for extra, words in (({"class_names": 5}, "class_names"), ({"category_ids": ["a"] * 80}, "category_ids"),
                         ({"class_names": ["x"] * 3}, "3 class_names")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(CheckpointError, match=words) as info:
                Predictor(load_config("yolact_effl0", TINY), weights={**state, **extra})
        one_line(info.value)


@pytest.mark.parametrize("change", ["model.num_classes=3", "model.num_prototypes=8", "model.fpn.num_features=16"])
def test_checkpoint_of_another_architecture(tmp_path, checkpoint_bytes, change):
    path = tmp_path / "other.pt"
    path.write_bytes(checkpoint_bytes)
    model = build_model(load_config("yolact_effl0", TINY + [change]), pretrained=False)
    with pytest.raises(CheckpointError, match="does not match the model") as info:
        load_weights(model, path)
    assert change.split("=")[0] in one_line(info.value)  # names the config key that differs


# =========================================================================== compiled NMS inputs

needs_ext = pytest.mark.skipif(not nms_mod.extension_available(), reason="yolact_lite._C not built")
_dtypes = st.sampled_from([torch.float32, torch.float64, torch.float16, torch.int32, torch.int64, torch.bool,
                           torch.uint8, torch.complex64])


@needs_ext
@settings(max_examples=80, **FUZZ)
@given(box_shape=st.lists(st.integers(0, 6), min_size=0, max_size=3),
       score_shape=st.lists(st.integers(0, 6), min_size=0, max_size=3),
       box_dtype=_dtypes, score_dtype=_dtypes, transpose=st.booleans(),
       thr=st.sampled_from([0.5, -1.0, math.nan, 0.0, 1e9]), top_k=st.integers(-2, 5),
       max_det=st.integers(-2, 5), cross=st.booleans())
def test_fuzz_extension_inputs(box_shape, score_shape, box_dtype, score_dtype, transpose, thr, top_k, max_det, cross):
    boxes = torch.rand(*box_shape).to(box_dtype) if box_shape else torch.tensor(1.0).to(box_dtype)
    scores = torch.rand(*score_shape).to(score_dtype) if score_shape else torch.tensor(1.0).to(score_dtype)
    if transpose and scores.dim() == 2:
        scores = scores.t().contiguous().t()  # same values, column-major: non-contiguous
    try:
        idx, cls, sc = nms_mod._C.fast_nms_cpu(boxes, scores, thr, top_k, max_det, cross)
    except RuntimeError as exc:
        assert str(exc).startswith("fast_nms_cpu:"), str(exc)
        return
    assert idx.dtype == cls.dtype == torch.int64 and sc.dtype == torch.float32
    assert len(idx) == len(cls) == len(sc) <= scores.shape[1]


@needs_ext
def test_extension_rejects_wrong_device_and_argument_types():
    boxes, scores = torch.rand(3, 4), torch.rand(2, 3)
    with pytest.raises(RuntimeError, match="fast_nms_cpu: tensors must be on CPU"):
        nms_mod._C.fast_nms_cpu(boxes.to("meta"), scores.to("meta"), 0.5, 10, 10, False)
    with pytest.raises(RuntimeError, match="same device"):
        nms_mod._C.fast_nms_cpu(boxes, scores.to("meta"), 0.5, 10, 10, False)
    with pytest.raises(RuntimeError, match="boxes must be contiguous"):
        nms_mod._C.fast_nms_cpu(torch.rand(4, 3).t(), scores, 0.5, 10, 10, False)
    with pytest.raises(TypeError, match="incompatible function arguments"):
        nms_mod._C.fast_nms_cpu(boxes, scores, "0.5", 10, 10, False)
    with pytest.raises(TypeError, match="incompatible function arguments"):
        nms_mod._C.fast_nms_cpu(boxes.numpy(), scores, 0.5, 10, 10, False)


def test_nan_inputs_are_refused_by_the_wrapper():
    with pytest.raises(ValueError, match="NaN"):
        nms_mod.fast_nms(torch.rand(5, 4), torch.full((2, 5), math.nan))
    # fed directly to the kernel, NaN must not crash the process: checked in the child process
    # of test_kill_during_a_checkpoint_write_keeps_the_previous_one


def test_public_fast_nms_accepts_non_contiguous_inputs():
    torch.manual_seed(1)
    xy = torch.rand(50, 2) * 50
    boxes = torch.cat([xy, xy + torch.rand(50, 2) * 20 + 1], 1)
    scores = torch.rand(3, 50)
    boxes_nc = boxes.t().contiguous().t()  # column-major: not contiguous
    scores_nc = scores.t().contiguous().t()
    assert not boxes_nc.is_contiguous() and not scores_nc.is_contiguous()
    for cross in (False, True):
        expected = nms_mod.fast_nms(boxes, scores, 0.5, 20, 30, cross)
        got = nms_mod.fast_nms(boxes_nc, scores_nc, 0.5, 20, 30, cross)
        assert all(torch.equal(a, b) for a, b in zip(expected, got))
    strided = nms_mod.fast_nms(torch.cat([boxes, boxes], 1)[:, :4], scores[:, ::1], 0.5, 20, 30)
    assert all(torch.equal(a, b) for a, b in zip(nms_mod.fast_nms(boxes, scores, 0.5, 20, 30), strided))


# =========================================================================== faults: training


@pytest.fixture(scope="module")
def train3_json(tmp_path_factory) -> Path:
    data = json.loads(TRAIN_JSON.read_text())
    data = coco_subset(data, TRAIN_IDS)
    path = tmp_path_factory.mktemp("robust_train") / "three.json"
    path.write_text(json.dumps(data))
    return path


def _train_args(ann: Path, out: Path, steps: int, *extra: str, sets=()) -> list:
    args = ["--config", "yolact_effl0", "--train-json", str(ann), "--train-images", str(IMAGES),
            "--out", str(out), "--max-iter", str(steps), "--no-pretrained", "--no-progress"]
    for s in TRAIN_SETS + list(sets):
        args += ["--set", s]
    return args + list(extra)


def _main(argv) -> int:
    with pytest.raises(SystemExit, match="^[0-9]+$") as exc:  # a numeric exit code, never a message
        run_cli(train_main, argv)
    return exc.value.code


def _error_lines(err: str) -> list:
    assert "Traceback" not in err, err[-3000:]
    return [line for line in err.splitlines() if line.startswith("error:")]


CHILD_ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT))
STEPS = 6


def _spawn(ann: Path, out: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, str(ROOT / "scripts" / "train.py")] + _train_args(ann, out, STEPS, "--deterministic", *extra)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=CHILD_ENV,
                            cwd=str(ROOT))


def _wait_for_new_checkpoint(path: Path, after_ns: int, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if path.stat().st_mtime_ns > after_ns:
                return
        except FileNotFoundError:
            pass
        if proc.poll() is not None:
            return
        time.sleep(0.01)
    proc.kill()
    raise AssertionError("no checkpoint was written in time")


def _mtime(path: Path) -> int:
    return path.stat().st_mtime_ns if path.exists() else 0


def test_killed_and_interrupted_runs_resume_to_the_same_weights(train3_json, tmp_path):
    """SIGKILL at random moments (last.pt is written every step, so some kills land inside a
    write), then SIGINT (stops at the next iteration boundary and saves), then resume to the
    end: the final weights equal an uninterrupted run's, tensor for tensor."""
    full, run = tmp_path / "full", tmp_path / "run"
    reference = _spawn(train3_json, full)  # runs alongside (one thread each)
    rng = random.Random(20261122)
    steps_after_kill = []
    for attempt in range(2):
        before = _mtime(run / "last.pt")
        proc = _spawn(train3_json, run, *(["--resume"] if attempt else []))
        _wait_for_new_checkpoint(run / "last.pt", before, proc)
        time.sleep(rng.uniform(0.0, 0.6))
        proc.kill()
        proc.communicate()
        state = read_state_file(run / "last.pt")  # loadable after a kill at any moment
        steps_after_kill.append(int(state["step"]))
    assert steps_after_kill[0] < STEPS, "the first kill came too late to test anything"

    before = _mtime(run / "last.pt")
    proc = _spawn(train3_json, run, "--resume")
    _wait_for_new_checkpoint(run / "last.pt", before, proc)
    proc.send_signal(signal.SIGINT)  # normally mid-loop: stop at the next boundary and save
    _, err = proc.communicate(timeout=180)
    assert proc.returncode in (0, 130) and "Traceback" not in err, err[-3000:]  # 0: it had finished
    interrupted_at = int(read_state_file(run / "last.pt")["step"])

    proc = _spawn(train3_json, run, "--resume")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    _, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err[-3000:]

    a, b = read_state_file(full / "last.pt"), read_state_file(run / "last.pt")
    assert a["step"] == b["step"] == STEPS and interrupted_at >= steps_after_kill[-1]
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    def strip(p):
        return [",".join(r.split(",")[:10]) for r in (p / "log.csv").read_text().splitlines()]
    assert strip(run) == strip(full)
    assert not list(run.glob(".*.tmp")), "temp files of killed writes are cleaned up"


def test_kill_during_a_checkpoint_write_keeps_the_previous_one(tmp_path):
    """Deterministic version of the above: the child is killed while half of the new
    checkpoint is on disk; last.pt is still the previous, complete checkpoint.

    The same child first feeds NaN boxes/scores straight to the compiled kernel (the Python
    wrapper refuses them): a crash there would show here instead of taking pytest down."""
    path = tmp_path / "last.pt"
    code = (
        "import io, sys, time, torch\n"
        "from yolact_lite import checkpoint as C\n"
        "from yolact_lite.ops import nms\n"
        "if nms._C is not None:\n"
        "    torch.manual_seed(0)\n"
        "    for t in range(10):\n"
        "        s = torch.rand(3, 4000); b = torch.rand(4000, 4); b[:, 2:] += b[:, :2]\n"
        "        s[torch.rand(3, 4000) < 0.3] = float('nan'); b[torch.rand(4000, 4) < 0.05] = float('nan')\n"
        "        for cc in (False, True): nms._C.fast_nms_cpu(b, s, 0.5, 200, 100, cc)\n"
        "print('NAN-OK', flush=True)\n"
        f"path = {str(path)!r}\n"
        "C.save_atomic({'step': 1, 'w': torch.arange(300000.)}, path)\n"
        "real = torch.save\n"
        "def slow(obj, f, *a, **k):\n"
        "    buf = io.BytesIO(); real(obj, buf, *a, **k); data = buf.getvalue()\n"
        "    f.write(data[: len(data) // 2]); f.flush(); print('HALF', flush=True); time.sleep(120)\n"
        "torch.save = slow\n"
        "C.save_atomic({'step': 2, 'w': torch.arange(300000.) * 2}, path)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=CHILD_ENV)
    assert proc.stdout.readline().strip() == "NAN-OK"
    assert proc.stdout.readline().strip() == "HALF"
    proc.kill()
    proc.wait()
    proc.stdout.close()
    state = read_state_file(path)
    assert state["step"] == 1 and torch.equal(state["w"], torch.arange(300000.))
    assert len(list(tmp_path.glob(".last.pt.*.tmp"))) == 1  # the half-written temp file


def test_disk_full_fails_cleanly_and_keeps_the_last_checkpoint(train3_json, tmp_path, monkeypatch, capsys):
    out = tmp_path / "full_disk"
    real_save = torch.save
    calls = {"n": 0}

    def disk_full(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= 2:  # the second checkpoint: some bytes land, then the disk is full
            f.write(b"\0" * 4096)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", disk_full)
    assert _main(_train_args(train3_json, out, 3)) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "could not write checkpoint" in lines[0] and "No space left" in lines[0], lines
    assert read_state_file(out / "last.pt")["step"] == 1  # the last good checkpoint
    assert not list(out.glob(".*.tmp"))
    monkeypatch.undo()  # space freed: the run continues from there
    assert _main(_train_args(train3_json, out, 3, "--resume")) == 0
    assert read_state_file(out / "last.pt")["step"] == 3

    def log_full():
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(out / "log.csv"))

    with pytest.raises(SystemExit, match="^2$") as exc:
        run_cli(log_full)
    assert exc.value.code == 2
    assert _error_lines(capsys.readouterr().err) == [f"error: {out / 'log.csv'}: No space left on device"]


@pytest.mark.parametrize("failure", ["raise", "exit"])
def test_failing_dataloader_worker_is_one_line(train3_json, tmp_path, monkeypatch, capsys, failure):
    real = CocoDataset.raw_sample

    def broken(self, index):
        if torch.utils.data.get_worker_info() is not None:  # in the worker process
            if failure == "exit":
                os._exit(3)
            raise ValueError("simulated decoder failure")
        return real(self, index)

    monkeypatch.setattr(CocoDataset, "raw_sample", broken)
    out = tmp_path / failure
    code = _main(_train_args(train3_json, out, 4, sets=["train.num_workers=1"]))
    err = capsys.readouterr().err
    assert code == 2, err[-3000:]
    lines = _error_lines(err)
    assert len(lines) == 1, err[-3000:]
    if failure == "raise":
        assert "simulated decoder failure" in lines[0] and str(IMAGES) in lines[0], lines
        assert "(in a DataLoader worker)" in lines[0]
    else:
        assert "DataLoader worker" in lines[0] and "num_workers=0" in lines[0], lines


def test_data_error_mid_run_saves_the_finished_iterations(train3_json, tmp_path, monkeypatch, capsys):
    real = TrainSamples.__getitem__
    seen = {"n": 0}

    def corrupt_later(self, key):
        seen["n"] += 1
        if seen["n"] > 4:  # two steps of batch 2 load fine, then an image is unreadable
            path = self.dataset.image_path(int(key[0]))
            raise DataError(f"{path}: truncated or corrupt JPEG (no end-of-image marker)")
        return real(self, key)

    monkeypatch.setattr(TrainSamples, "__getitem__", corrupt_later)
    out = tmp_path / "mid"
    code = _main(_train_args(train3_json, out, 6, sets=["train.checkpoint_every_iters=0"]))
    err = capsys.readouterr().err
    assert code == 2 and len(_error_lines(err)) == 1 and "truncated" in _error_lines(err)[0], err[-3000:]
    assert "stopped by an error at step 2: saved" in err
    assert read_state_file(out / "last.pt")["step"] == 2  # no finished iteration lost
