"""Checkpoint files, fuzzed: truncated, corrupted or pickled-object files are refused with
one CheckpointError line.

The hypothesis tests are derandomized (the same examples every run) and small."""

from __future__ import annotations

import io
import os
import random
import re
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fuzzing import FUZZ, TINY, one_line
from yolact_lite import load_config
from yolact_lite.checkpoint.files import load_weights, model_checkpoint, read_state_file
from yolact_lite.errors import CheckpointError
from yolact_lite.inference.predictor import Predictor
from yolact_lite.model import build_model


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
    unreadable_or_not_ours = ("checkpoint is corrupt or truncated|checkpoint is empty|refusing to load|not a checkpoint"
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
        assert "miniz" not in str(info.value)  # torch's advice to its own developers stays out


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
