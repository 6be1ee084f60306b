"""The ``yolact-lite`` entry point: dispatch, help, unknown commands, exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest

from yolact_lite.cli.main import COMMANDS, dispatch, main

ROOT = Path(__file__).resolve().parent.parent
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
    with pytest.raises(SystemExit) as exc:
        dispatch(command.split() + ["--help"])
    assert exc.value.code == 0
    assert f"yolact-lite {command}" in capsys.readouterr().out


def test_data_check_exit_codes_pass_through(tmp_path, capsys):
    assert dispatch(["data", "check", str(TRAIN / "annotations_person.json"), "--images", str(TRAIN / "images"),
                     "--no-image-read"]) == 0
    (tmp_path / "bad.json").write_text("{not json")
    assert dispatch(["data", "check", str(tmp_path / "bad.json"), "--images", str(tmp_path)]) == 2


def test_user_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--config", "no_such_config", "--train-json", str(TRAIN / "annotations_person.json"),
              "--train-images", str(TRAIN / "images"), "--out", str(tmp_path / "run")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: unknown config 'no_such_config'"), err
