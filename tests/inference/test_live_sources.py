"""Live sources (stream URLs, cameras): open timeout, reconnect with backoff, newest frame.

A local HTTP server on 127.0.0.1 serves the bundled ``data/video/vtest_150.avi`` (FFmpeg reads
an AVI progressively over HTTP) and misbehaves on purpose: it drops the connection or stalls
part-way through the first request, or never answers at all. Timeouts are 1-2 s so the file
stays quick."""

from __future__ import annotations

import http.server
import socket
import threading
import time
import warnings

import cv2
import pytest

from tests.paths import ROOT
from yolact_lite import load_config
from yolact_lite.data.video_source import LivePolicy, LiveSource, open_video
from yolact_lite.errors import DataError
from yolact_lite.inference.predictor import Predictor
from yolact_lite.inference.video import run_sequential, run_video

VIDEO = (ROOT / "data" / "video" / "vtest_150.avi").read_bytes()
FRAMES = 150
CUT = int(len(VIDEO) * 0.4)  # the first connection of /drop and /stall ends here (61 frames)
TINY = ["model.input_size=128", "model.anchors.scales=[[5],[11],[22],[44],[89]]"]
SET_ARGS = [a for o in TINY for a in ("--set", o)]


class _Handler(http.server.BaseHTTPRequestHandler):
    """``/full.avi``: the whole file; ``/drop.avi``: first request cut at 40 %; ``/stall.avi``:
    first request sends 40 % and then nothing until the server closes; ``/lost.avi``: the
    first ``server.lives`` requests cut at 40 %, then 404 (a source that goes away)."""

    def log_message(self, *args):  # no request log in the test output
        pass

    def do_GET(self):
        server = self.server
        with server.lock:
            server.requests[self.path] = server.requests.get(self.path, 0) + 1
            count = server.requests[self.path]
        first = count == 1 or (self.path == "/lost.avi" and count <= server.lives)
        if self.path == "/lost.avi" and not first:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "video/x-msvideo")
        self.send_header("Content-Length", str(len(VIDEO)))
        self.end_headers()
        try:
            if first and self.path in ("/drop.avi", "/lost.avi"):
                self.wfile.write(VIDEO[:CUT])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
            elif first and self.path == "/stall.avi":
                self.wfile.write(VIDEO[:CUT])
                self.wfile.flush()
                server.closing.wait(60)
            else:
                self.wfile.write(VIDEO)
        except OSError:  # the client went away (a test that stops early)
            pass


@pytest.fixture
def server():
    """``(base URL, server)``; ``server.requests`` counts the GETs per path."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.lock, httpd.requests, httpd.closing, httpd.lives = threading.Lock(), {}, threading.Event(), 1
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", httpd
    httpd.closing.set()
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def silent_port():
    """A port that accepts TCP connections and never sends a byte."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held = []

    def accept():
        while True:
            try:
                held.append(listener.accept()[0])
            except OSError:  # closed at teardown
                return

    threading.Thread(target=accept, daemon=True).start()
    yield listener.getsockname()[1]
    listener.close()
    for conn in held:
        conn.close()


def refused_port() -> int:
    """A port nothing listens on (bound here and closed again)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def live_reader(url: str, lines: list, **policy) -> LiveSource:
    policy = LivePolicy(report=lines.append, **{"open_timeout": 2.0, "backoff": 0.05, **policy})
    cap, live, label = policy.open(url)
    assert live
    return LiveSource(cap, label, lambda: policy.open(url)[0], policy)


def read_all(reader: LiveSource, limit: int = 10 * FRAMES) -> int:
    n = 0
    while n < limit and reader.read()[0]:
        n += 1
    reader.release()
    return n


# --------------------------------------------------------------------------- the source alone


def test_the_whole_stream_ends_normally(server):
    base, httpd = server
    lines = []
    reader = live_reader(f"{base}/full.avi", lines)
    assert read_all(reader) == FRAMES
    assert reader.lost is None and reader.reconnects == 0 and lines == []


def test_a_dropped_connection_is_reopened_and_the_run_goes_on(server):
    base, httpd = server
    lines = []
    reader = live_reader(f"{base}/drop.avi", lines)
    n = read_all(reader)
    first = reader.frames - FRAMES  # what the cut connection held
    assert 0 < first < FRAMES and n == first + FRAMES, n  # then the whole file on the second
    assert reader.reconnects == 1 and reader.lost is None
    assert len(lines) == 1 and "read failed or stalled" in lines[0] and "attempt 1 of 5" in lines[0], lines
    assert httpd.requests["/drop.avi"] == 2


def test_a_stall_hits_the_read_timeout_and_reconnects(server, capfd):
    base, httpd = server
    lines = []
    reader = live_reader(f"{base}/stall.avi", lines, read_timeout=1.0)
    start = time.monotonic()
    n = read_all(reader)
    assert n > FRAMES and reader.reconnects == 1 and reader.lost is None, (n, lines)
    assert len(lines) == 1 and "stalled" in lines[0]
    assert time.monotonic() - start < 10
    assert capfd.readouterr().err == ""  # FFmpeg's timeout WARN line is not shown


def test_a_lost_source_backs_off_then_gives_up_with_one_line(server):
    """The server goes away after the first connection: every reopen is refused."""
    base, httpd = server
    lines = []
    reader = live_reader(f"{base}/drop.avi", lines, reconnects=3, backoff=0.05, max_backoff=0.1)
    httpd.shutdown()
    httpd.server_close()
    n = read_all(reader)
    assert 0 < n < FRAMES and reader.reconnects == 0
    assert reader.lost == f"{base}/drop.avi: source lost after {n} frames and not reopened (3 reopen attempts failed)"
    assert [line.split("; reopening in ")[1] for line in lines] == [
        "0.05 s (attempt 1 of 3)", "0.1 s (attempt 2 of 3)", "0.1 s (attempt 3 of 3)"]
    assert "cannot open the stream" in lines[1]  # each retry says why the last one failed


def test_backoff_doubles_up_to_its_cap_and_zero_reconnects_is_allowed():
    policy = LivePolicy(backoff=0.5, max_backoff=3.0)
    assert [policy.delay(i) for i in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    with pytest.raises(DataError, match="reconnects must be >= 0"):
        LivePolicy(reconnects=-1)
    with pytest.raises(DataError, match="must be > 0 seconds"):
        LivePolicy(open_timeout=0)

    class Dead:
        def read(self):
            return False, None

        def get(self, prop):
            return 0.0

        def release(self):
            pass

    reader = LiveSource(Dead(), "camera 3", lambda: pytest.fail("reopened"), LivePolicy(reconnects=0))
    assert reader.read() == (False, None)
    assert reader.lost == "camera 3: source lost after 0 frames and not reopened (reconnect is off)"


def test_a_source_that_never_answers_fails_within_the_timeout(silent_port):
    start = time.monotonic()
    with pytest.raises(DataError, match=r"cannot open the stream \(no answer within 1 s\)$"):
        open_video(f"http://127.0.0.1:{silent_port}/v.avi", open_timeout=1.0)
    assert time.monotonic() - start < 1.0 + 2.0


def test_a_refused_port_fails_at_once():
    start = time.monotonic()
    with pytest.raises(DataError, match=r"cannot open the stream \(unreachable"):
        open_video(f"http://127.0.0.1:{refused_port()}/v.avi", open_timeout=5.0)
    assert time.monotonic() - start < 2.0


def test_an_open_that_hangs_past_the_deadline_is_abandoned(monkeypatch):
    """A backend that ignores FFmpeg's timeout: the helper thread is given up on."""
    import yolact_lite.data.video_source as vs

    release = threading.Event()

    class Slow:
        def __init__(self, *args):
            release.wait(10)

        def isOpened(self):
            return True

        def release(self):
            pass

    monkeypatch.setattr(vs.cv2, "VideoCapture", Slow)
    start = time.monotonic()
    try:
        with pytest.raises(DataError, match="camera 9 did not open within 0.5 s"):
            open_video(9, open_timeout=0.5)
    finally:
        release.set()
    assert time.monotonic() - start < 3.0


# --------------------------------------------------------------------------- the video runs


@pytest.fixture(scope="module")
def predictor():
    """Random weights at a tiny input size: only the frame flow matters here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Predictor(load_config("yolact_effl0", TINY))


def test_the_pipeline_goes_on_after_a_dropped_connection(server, predictor):
    base, httpd = server
    lines, seen = [], []
    summary = run_video(predictor, f"{base}/drop.avi", on_result=lambda i, f, d: seen.append(i),
                        live=LivePolicy(open_timeout=2.0, backoff=0.05, report=lines.append))
    assert summary.reconnects == 1 and summary.source_lost is None and len(lines) == 1
    first = 211 - FRAMES  # frames the cut connection held (61), then the whole file once more
    assert first == 61
    # live: every frame read is processed or counted as dropped for a newer one, never reordered,
    # and the frames after the reopen are processed too
    assert summary.frames + summary.skipped == first + FRAMES and summary.frames == len(seen)
    assert seen == sorted(seen) and seen[-1] >= first
    assert ", 1 reconnects" in summary.format()


class _FirstFrameOnly:
    """The predictor, with the first frame's network outputs for every frame (the read path is
    under test; 211 full-size frames through the network take too long on a shared CPU)."""

    def __init__(self, predictor):
        self.predictor, self.outputs = predictor, None

    def __getattr__(self, name):
        return getattr(self.predictor, name)

    def network(self, batch):
        if self.outputs is None:
            self.outputs = self.predictor.network(batch)
        return self.outputs


def test_sequential_reads_every_frame_across_the_reopen(server, predictor):
    base, httpd = server
    lines = []
    summary = run_sequential(_FirstFrameOnly(predictor), f"{base}/drop.avi",
                             live=LivePolicy(open_timeout=2.0, backoff=0.05, report=lines.append))
    assert summary.frames == 61 + FRAMES and summary.reconnects == 1 and len(lines) == 1


def test_a_lost_source_keeps_and_writes_the_frames_so_far(server, predictor, tmp_path):
    base, httpd = server
    lines = []
    out = tmp_path / "lost.mp4"
    summary = run_video(predictor, f"{base}/lost.avi", out,
                        live=LivePolicy(open_timeout=2.0, reconnects=2, backoff=0.05, report=lines.append))
    lost = f"{base}/lost.avi: source lost after 61 frames and not reopened (2 reopen attempts failed)"
    assert summary.source_lost == lost
    assert len(lines) == 2 and 0 < summary.frames <= 61
    cap = cv2.VideoCapture(str(out))  # finalised: readable, every processed frame in it
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == summary.frames
    cap.release()


def test_queues_hold_one_frame_for_a_live_source(predictor):
    from yolact_lite.inference.video import _DrawStep, _VideoStages

    live = _VideoStages(predictor, None, True, 30.0, None, 1, 4, _DrawStep())
    assert [q.maxsize for q in (live.frames, live.batches, live.detected, live.done)] == [1, 1, 1, 1]
    file = _VideoStages(predictor, None, False, 30.0, None, 1, 4, _DrawStep())
    assert [q.maxsize for q in (file.frames, file.batches, file.detected, file.done)] == [4, 2, 4, 4]


# --------------------------------------------------------------------------- the CLI


def _cli(args, capfd):
    """``(exit code, stdout lines, stderr lines)`` of ``yolact-lite predict`` run in-process."""
    from yolact_lite.cli import run_cli
    from yolact_lite.cli.predict import main

    with pytest.raises(SystemExit) as info:
        run_cli(main, ["--config", "yolact_effl0", *SET_ARGS, "--no-progress", *args])
    captured = capfd.readouterr()
    return info.value.code, captured.out.splitlines(), captured.err.splitlines()


def test_cli_source_that_never_answers_is_one_error_line(silent_port, capfd):
    url = f"http://127.0.0.1:{silent_port}/v.avi"
    start = time.monotonic()
    code, out, err = _cli(["--input", url, "--max-frames", "3", "--open-timeout", "1"], capfd)
    assert time.monotonic() - start < 1.0 + 3.0  # the open is checked before the model is built
    assert code == 2 and err == [f"error: {url}: cannot open the stream (no answer within 1 s)"], err


def test_cli_lost_source_prints_the_summary_then_one_error_line(server, capfd, tmp_path):
    base, httpd = server
    httpd.lives = 2  # the CLI opens a stream twice: its check before the model build, then the run
    url = f"{base}/lost.avi"
    code, out, err = _cli(["--input", url, "--reconnect", "1", "--open-timeout", "2",
                           "--out", str(tmp_path / "o.mp4")], capfd)
    assert code == 2
    assert any(line.startswith("pipeline: ") for line in out) and "written to" in out[-1], out
    # (the lines before: the random-weights warning banner)
    assert "reopening in 0.5 s (attempt 1 of 1)" in err[-2] and not any("Traceback" in line for line in err), err
    assert err[-1] == f"error: {url}: source lost after 61 frames and not reopened (1 reopen attempts failed)"


def test_cli_rejects_bad_live_flags(capfd):
    for flags, message in ((["--open-timeout", "0"], "--open-timeout must be > 0"),
                           (["--reconnect", "-1"], "--reconnect must be >= 0")):
        code, out, err = _cli(["--input", "0", *flags], capfd)
        assert code == 2 and err == [f"error: {message}" + (" seconds" if "timeout" in message else "")], err
