"""Config migrations: one test per record of the one ordered list, the version they key on,
and the same list applied to YAML files, overrides and the configs inside checkpoints."""

import copy

import pytest
import yaml

from yolact_lite.checkpoint.files import carried_config
from yolact_lite.config import CONFIG_DIR, CONFIG_VERSION, MIGRATIONS, config_from_dict, load_config
from yolact_lite.config.migrations import migrate_config_dict
from yolact_lite.errors import ConfigError

# One case per migration, in list order: (old dict, (section, key, expected value), note).
CASES = [
    ({"train": {"augment": True}}, ("train", "augment", "ssd"), "train.augment=true is now train.augment=ssd"),
    ({"train": {"augment": "light"}}, ("train", "augment", {"chain": "light"}),
     "train.augment=light is now train.augment.chain=light"),
    ({"train": {"masks_to_train": 7}}, ("loss", "masks_to_train", 7),
     "train.masks_to_train is now loss.masks_to_train"),
    ({"train": {"masks_selection": "smallest_first"}}, ("loss", "masks_selection", "smallest_first"),
     "train.masks_selection is now loss.masks_selection"),
    ({"inference": {"conf_threshold": 0.2}}, ("inference", "candidate_threshold", 0.2),
     "inference.conf_threshold is now inference.candidate_threshold"),
    ({"inference": {"score_threshold": 0.3}}, ("inference", "detection_threshold", 0.3),
     "inference.score_threshold is now inference.detection_threshold"),
]


def test_there_is_one_case_per_migration():
    assert len(CASES) + 1 == len(MIGRATIONS)  # + crop_masks, a removal: its own test below
    assert all(1 <= m.from_version < CONFIG_VERSION and m.description for m in MIGRATIONS)


@pytest.mark.parametrize("index", range(len(CASES)))
def test_each_migration_on_its_own(index):
    old, (section, key, value), note = CASES[index]
    data = copy.deepcopy(old)
    notes = MIGRATIONS[index].apply(data)
    assert data[section][key] == value
    assert len(notes) == 1 and note in notes[0]
    assert MIGRATIONS[index].apply(data) == []  # a migrated dict is left alone


def test_crop_masks_is_a_one_line_error_naming_its_replacement():
    with pytest.raises(ConfigError, match=r"inference.crop_masks was replaced by crop_mode"):
        migrate_config_dict({"inference": {"crop_masks": False}})


def test_the_version_decides_which_migrations_run():
    assert config_from_dict({"train": {"augment": False}}, quiet=True).train.augment.chain == "none"
    # a version-2 dict is in the current layout: the old bool is a type error, not migrated
    with pytest.raises(ConfigError, match="train.augment: expected a mapping"):
        config_from_dict({"config_version": 2, "train": {"augment": False}})
    with pytest.raises(ConfigError, match="config_version must be an integer from 1 to"):
        config_from_dict({"config_version": CONFIG_VERSION + 1})


def test_config_version_is_written_and_read_back(tmp_path):
    config = load_config("yolact_effl0")
    data = config.to_dict()
    assert data["config_version"] == CONFIG_VERSION and list(data)[0] == "config_version"
    path = tmp_path / "saved.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert load_config(path) == config


def test_old_yaml_files_overrides_and_checkpoint_configs_migrate_alike(tmp_path, capsys):
    path = tmp_path / "old.yaml"
    path.write_text("base: " + str(CONFIG_DIR / "yolact_effl0.yaml")
                    + "\ntrain:\n  masks_to_train: 9\n")
    assert load_config(path).loss.masks_to_train == 9
    # a current file, an old name in --set: overrides carry no version, so it still migrates
    current = tmp_path / "current.yaml"
    current.write_text(yaml.safe_dump(load_config("yolact_effl0").to_dict()))
    assert load_config(current, ["inference.conf_threshold=0.3"]).inference.candidate_threshold == 0.3
    old_ckpt = {"format": "yolact_lite", "config": {"model": {"num_classes": 3}, "train": {"augment": "light"}}}
    assert carried_config(old_ckpt, quiet=True).train.augment.chain == "light"
    err = capsys.readouterr().err
    assert "train.masks_to_train is now loss.masks_to_train" in err
    assert "inference.conf_threshold is now inference.candidate_threshold" in err
