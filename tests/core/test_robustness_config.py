"""Configs, fuzzed: any override either builds a usable config or raises one ConfigError line.

The hypothesis tests are derandomized (the same examples every run) and small."""

from __future__ import annotations

import math
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fuzzing import FUZZ, one_line
from yolact_lite import load_config
from yolact_lite.config import Config
from yolact_lite.engine.schedule import build_schedule
from yolact_lite.errors import ConfigError


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


def test_a_config_where_one_is_needed_and_files_that_are_not_configs(tmp_path):
    from yolact_lite.config import require_config
    from yolact_lite.model import build_model

    with pytest.raises(ConfigError, match="build_model takes a Config, got str 'yolact_effl0'.*load_config"):
        build_model("yolact_effl0")
    config = load_config("yolact_effl0")
    assert require_config(config, "x") is config
    binary = tmp_path / "photo.yaml"
    binary.write_bytes(b"\xff\xd8\xff\xe0 a jpeg")
    with pytest.raises(ConfigError, match="photo.yaml: not a text file, so not a YAML config"):
        load_config(binary)
    with pytest.raises(ConfigError, match="load_config takes a config name or a YAML path; got int"):
        load_config(123)
    with pytest.raises(ConfigError, match="already a Config"):
        load_config(config)
