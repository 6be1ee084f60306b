"""Small helpers shared by the command-line scripts.

* :func:`run_cli` turns user errors into ``error: <message>`` on stderr and exit code 2
  (no traceback), Ctrl-C into exit code 130; anything else is a bug and keeps its traceback.
* :func:`add_config_args` / :func:`config_from_args`: ``--config NAME_OR_PATH`` and repeatable
  ``--set section.key=value`` overrides; :func:`config_for_weights`: the same, or the config
  that ``--weights`` carries when ``--config`` is omitted.

Layer: cli, the top one (with the benchmarks and scripts outside the package).  May import
every layer; nothing in the package imports it but ``yolact_lite.__main__``.
"""

from __future__ import annotations

import argparse
import errno
import sys
from typing import Callable, Optional

from ..config import Config, load_config
from ..errors import YolactError

__all__ = ["run_cli", "add_config_args", "config_from_args", "config_for_weights", "fail", "EXIT_USER_ERROR",
           "EXIT_INTERRUPTED"]

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
# OS errors caused by the machine, not by a bug: disk full, quota exceeded, read-only file system.
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


def fail(message: str) -> "NoReturn":  # noqa: F821
    """Print ``error: message`` (one line) and exit with code 2."""
    text = " ".join(str(message).split()) or "unknown error"
    print(f"error: {text}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_USER_ERROR)


def run_cli(main_fn: Callable[..., Optional[int]], *args, **kwargs) -> None:
    """Run ``main_fn(*args, **kwargs)`` and exit with its return code (0 for None).

    :class:`YolactError` -> one ``error:`` line on stderr, exit 2; ``KeyboardInterrupt``
    -> exit 130; a ``FileNotFoundError`` / ``IsADirectoryError`` / ``PermissionError`` from
    opening a user-given path, a ``FileExistsError`` from making a folder where a file is,
    and a full disk / quota / read-only file system, are reported
    the same way as a YolactError.
    """
    try:
        code = main_fn(*args, **kwargs)
    except YolactError as exc:
        fail(str(exc))
    except FileExistsError as exc:  # only where a folder is wanted: makedirs with exist_ok
        fail(f"{exc.filename}: exists and is not a folder")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as exc:
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        fail(f"{where}{exc.strerror or exc}")
    except OSError as exc:
        if exc.errno not in _ENVIRONMENT_ERRNOS:
            raise
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        fail(f"{where}{exc.strerror or exc}")
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_INTERRUPTED) from None
    raise SystemExit(int(code or 0))


def add_config_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """``--config`` (bundled name such as ``yolact_effl0`` or a YAML path) and ``--set``."""
    parser.add_argument("--config", required=required,
                        help="config name (e.g. yolact_effl0, yolact_base) or path to a YAML file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set inference.nms=traditional (repeatable)")


def config_from_args(args: argparse.Namespace) -> Config:
    """The config named by ``args.config`` with ``args.overrides`` applied."""
    return load_config(getattr(args, "config", None), getattr(args, "overrides", None) or ())


def config_for_weights(args: argparse.Namespace) -> Config:
    """``--config`` (+ ``--set``), or the config our checkpoint ``--weights`` carries when it
    is omitted (an original YOLACT ``.pth`` carries none)."""
    from ..checkpoint.files import carried_config, read_state_file
    from ..config import with_overrides
    from ..errors import ConfigError

    if args.config:
        return config_from_args(args)
    saved = carried_config(read_state_file(args.weights)) if args.weights else None
    if saved is not None:
        return with_overrides(saved, args.overrides)
    raise ConfigError("--config is needed (the weights carry no config: an original YOLACT .pth, or none given)")
