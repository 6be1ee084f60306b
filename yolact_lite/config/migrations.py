"""Old config layouts -> the current one: ONE ordered list of migrations.

Every config dict is migrated before it is built, whether it comes from a YAML file, a
``--set`` override or a checkpoint (our checkpoints carry their config; the checkpoint's
own ``format_version`` is a separate number, :mod:`yolact_lite.checkpoint.files`).

A dict says its layout with ``config_version`` (no key: version 1, every config written
before the version existed).  A :class:`Migration` from version ``v`` turns a version-``v``
dict into a version-``v + 1`` one; a dict of version ``n`` goes through every migration with
``from_version >= n``, in list order.  Each migration changes the dict in place and returns
one note per change (printed on stderr).  To change the layout: append migrations from the
current :data:`~.schema.CONFIG_VERSION`, then raise it by one.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..errors import ConfigError
from .schema import CONFIG_VERSION

__all__ = ["Migration", "MIGRATIONS", "migrate_config_dict", "config_version_of"]


@dataclass(frozen=True)
class Migration:
    """One change of the layout: ``apply(data) -> notes`` edits a nested dict in place."""

    from_version: int
    description: str
    apply: Callable[[dict], List[str]]


def _parent(data: dict, dotted: str, create: bool = False) -> Tuple[Optional[dict], str]:
    """``(the dict holding the last part of dotted, that part)``; None when a section is missing."""
    *path, leaf = dotted.split(".")
    node: Any = data
    for part in path:
        if create and isinstance(node, dict):
            node = node.setdefault(part, {})
        else:
            node = node.get(part) if isinstance(node, dict) else None
    return (node if isinstance(node, dict) else None), leaf


def moved(old: str, new: str) -> Migration:
    """The key ``old`` is now ``new`` (its value wins over one already at ``new``)."""

    def apply(data: dict) -> List[str]:
        node, leaf = _parent(data, old)
        if node is None or leaf not in node:
            return []
        value = node.pop(leaf)
        target, new_leaf = _parent(data, new, create=True)
        if target is None:
            raise ConfigError(f"config key {old} moved to {new}, but {new.rpartition('.')[0]} is not a section")
        target[new_leaf] = value
        return [f"note: config key {old} is now {new} (migrated)"]

    return Migration(1, f"{old} -> {new}", apply)


def changed_values(key: str, mapping: Dict[bool, str]) -> Migration:
    """The old true/false values of ``key`` are now the strings of ``mapping``."""

    def apply(data: dict) -> List[str]:
        node, leaf = _parent(data, key)
        value = node.get(leaf) if node is not None else None
        if not isinstance(value, bool) or value not in mapping:
            return []
        node[leaf] = mapping[value]
        return [f"note: config value {key}={str(value).lower()} is now {key}={mapping[value]} (migrated)"]

    return Migration(1, f"{key}: true/false -> {', '.join(mapping.values())}", apply)


def scalar_to_section(key: str, leaf_in_section: str) -> Migration:
    """``key`` became a section: an old scalar value moves to ``key.leaf_in_section``."""

    def apply(data: dict) -> List[str]:
        node, leaf = _parent(data, key)
        value = node.get(leaf) if node is not None else None
        if value is None or isinstance(value, dict):
            return []
        node[leaf] = {leaf_in_section: value}
        return [f"note: config value {key}={value} is now {key}.{leaf_in_section}={value} (migrated)"]

    return Migration(1, f"{key}: a value -> the section {key}.{leaf_in_section}", apply)


def removed(leaf: str, replacement: str) -> Migration:
    """A key without a one-to-one successor, in any section: a one-line error naming what
    replaces it (the user chooses; guessing would change results silently)."""

    def apply(data: dict) -> List[str]:
        for section, node in data.items():
            if isinstance(node, dict) and leaf in node:
                raise ConfigError(f"unknown config key {section}.{leaf} ({section}.{leaf} was replaced by "
                                  f"{replacement})")
        return []

    return Migration(1, f"{leaf} removed: {replacement}", apply)


# In order.  Version 1 -> 2: the layout before config_version existed.
MIGRATIONS: Tuple[Migration, ...] = (
    changed_values("train.augment", {True: "ssd", False: "none"}),
    scalar_to_section("train.augment", "chain"),
    moved("train.masks_to_train", "loss.masks_to_train"),
    moved("train.masks_selection", "loss.masks_selection"),
    moved("inference.conf_threshold", "inference.candidate_threshold"),
    moved("inference.score_threshold", "inference.detection_threshold"),
    removed("crop_masks", "crop_mode: hard | soft | none (crop_masks: false is crop_mode: none)"),
)


def config_version_of(data: dict) -> int:
    """The ``config_version`` a dict declares (1 without one); a one-line error for a value
    that is not a version this library knows."""
    version = data.get("config_version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= CONFIG_VERSION:
        raise ConfigError(f"config_version must be an integer from 1 to {CONFIG_VERSION} (this library's); "
                          f"got {version!r}")
    return version


def migrate_config_dict(data: dict) -> Tuple[dict, List[str]]:
    """``(migrated copy of data without config_version, notes)``: the migrations due for the
    dict's version, in order."""
    version = config_version_of(data)
    out = copy.deepcopy(data)
    out.pop("config_version", None)
    notes: List[str] = []
    for migration in MIGRATIONS:
        if migration.from_version >= version:
            notes += migration.apply(out)
    return out, notes
