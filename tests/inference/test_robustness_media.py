"""Images and videos, fuzzed: truncated, flipped and odd files through ``read_image``, the
Predictor and the video loops end in a result or one DataError line, never a hang.

The hypothesis tests are derandomized (the same examples every run) and small."""

from __future__ import annotations

import threading
import warnings

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fuzzing import FUZZ, TINY, one_line
from yolact_lite import load_config
from yolact_lite.data.image_io import decode_image, read_image
from yolact_lite.errors import DataError
from yolact_lite.inference.predictor import Predictor
from yolact_lite.inference.video import run_sequential, run_video


@pytest.fixture(scope="module")
def quiet_predictor():
    """Tiny model with random weights (nothing detected: cheap masks)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Predictor(load_config("yolact_effl0", TINY))


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
                            lambda source, *timeouts: (_FrameSource([good, good, bad, good]), False, "fake"))
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
