"""The ``yolact-lite`` entry point: dispatch, help, unknown commands, exit codes."""

from __future__ import annotations

import pytest

from tests.paths import ROOT
from yolact_lite.cli.main import COMMANDS, dispatch, main

TRAIN = ROOT / "data" / "coco_mini" / "train"


def test_help_lists_every_command(capsys):
    assert dispatch(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)


def test_unknown_command_is_exit_2(capsys):
    assert dispatch(["trian"]) == 2
    assert "unknown command 'trian'" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["train", "eval", "data stats", "data check"])
def test_each_command_has_help_with_its_name(command, capsys):
    with pytest.raises(SystemExit, match="^0$") as exc:
        dispatch(command.split() + ["--help"])
    assert exc.value.code == 0
    assert f"yolact-lite {command}" in capsys.readouterr().out


def test_data_check_exit_codes_pass_through(tmp_path, capsys):
    assert dispatch(["data", "check", str(TRAIN / "annotations_person.json"), "--images", str(TRAIN / "images"),
                     "--no-image-read"]) == 0
    (tmp_path / "bad.json").write_text("{not json")
    assert dispatch(["data", "check", str(tmp_path / "bad.json"), "--images", str(tmp_path)]) == 2


def test_user_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit, match="^2$") as exc:
        main(["train", "--config", "no_such_config", "--train-json", str(TRAIN / "annotations_person.json"),
              "--train-images", str(TRAIN / "images"), "--out", str(tmp_path / "run")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: unknown config 'no_such_config'"), err


def test_progress_in_a_log_is_whole_lines():
    import io

    from yolact_lite.progress import LineProgress, progress_bar

    now = [0.0]
    out = io.StringIO()
    bar = LineProgress(total=10, desc="train", unit="it", file=out, interval_s=5.0, clock=lambda: now[0])
    for _ in range(10):
        now[0] += 1.0
        bar.update(1)
        bar.set_postfix_str("T 1.0")
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines == ["train: 5/10 it (1.00 it/s, 5 s) T 1.0", "train: 10/10 it (1.00 it/s, 10 s) T 1.0"]
    assert "\r" not in out.getvalue()
    assert list(progress_bar(range(3), total=3, file=io.StringIO())) == [0, 1, 2]  # not a TTY: lines
