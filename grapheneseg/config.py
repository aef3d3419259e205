"""Hydra compose-API configuration shared by the `simulate`, `train` and `evaluate` commands.

The YAML groups in `configs/` (installed as the `grapheneseg_configs` package) are the source of
truth; the command-line tools translate their `--flags` into Hydra overrides and pass any extra
`key=value` words through unchanged.
"""
from __future__ import annotations

import argparse

import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

CONFIG_MODULE = "grapheneseg_configs"
REAL_DIR_ENV = "GRAPHENESEG_REAL_DIR"
DEFAULT_REAL_DIR = Path("data") / "real"  # `evaluate fetch-real` puts the public set here


class ConfigError(ValueError):
    """A configuration value or override is invalid."""


def load_config(name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """Compose config `name` (e.g. "evaluate") with Hydra overrides like ["cv.folds=3"]."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
            return compose(config_name=name, overrides=list(overrides))
    except Exception as err:  # Hydra raises several types; callers want one with a clear message
        raise ConfigError(f"bad configuration override in {list(overrides)}: {err}") from err
    finally:
        GlobalHydra.instance().clear()


def add_debug(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """`--debug` on `parser` and on each of its subcommands (before or after the subcommand's name):
    an error then shows its full traceback instead of one `error:` line."""
    help_text = "on an error, show the full Python traceback (for a bug report) instead of one line"
    parser.add_argument("--debug", action="store_true", help=help_text)
    for action in parser._subparsers._group_actions if parser._subparsers else ():
        for sub in action.choices.values():
            sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=help_text)
    return parser


def run_command(command: Callable[[], int], interrupted: str = "interrupted", debug: bool = False) -> int:
    """Run one CLI command: a user error (ValueError, which DataError, ConfigError and
    CheckpointError are, or OSError) prints `error: ...` and returns 1, or with `debug` raises
    with its traceback; Ctrl-C returns 130."""
    try:
        return command()
    except (ValueError, OSError) as err:
        if debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"error: {interrupted}", file=sys.stderr)
        return 130


def flag_overrides(args: Any, mapping: dict[str, str]) -> list[str]:
    """Hydra overrides from the `--flags` that were given (attribute -> config key; strings are
    quoted so paths with spaces or '=' survive), then the free `key=value` words of `args.overrides`."""
    words = []
    for attr, key in mapping.items():
        value = getattr(args, attr, None)
        if value is not None:
            words.append(f"{key}={_quote(value) if isinstance(value, (str, Path)) else value}")
    for word in args.overrides:
        if "=" not in word:
            raise ConfigError(f"unexpected argument {word!r}: overrides look like key=value")
    return words + list(args.overrides)


def override(key: str, value: str | Path | None) -> str:
    """A Hydra override `key=value` with the value quoted (paths with spaces, '=' or commas
    survive), or `key=null` for None."""
    return f"{key}=null" if value is None else f"{key}={_quote(value)}"


def _quote(value: str | Path) -> str:
    text = str(value)
    return f'"{text}"' if "'" in text else f"'{text}'"


def to_plain(cfg: DictConfig) -> dict[str, Any]:
    """Resolved config as plain Python types (safe for JSON and torch checkpoints)."""
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def save_config(cfg: DictConfig, out_dir: Path, name: str = "config.yaml") -> Path:
    """Write the fully resolved config beside a run's outputs (as Hydra's .hydra/config.yaml)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / name
    path.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return path


def save_run_config(cfg: DictConfig, out_dir: Path) -> Path:
    """`save_config` for an output folder that several runs may share (predict, sort, atoms,
    suggest): the first run's config is config.yaml, each later run's config-<UTC time>-<pid>.yaml
    beside it; none is overwritten (created exclusively, so parallel runs cannot clash), and a run
    whose config is already there (a rerun that resumes) writes none and returns that file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    text = OmegaConf.to_yaml(cfg, resolve=True)
    for existing in sorted(out_dir.glob("config*.yaml")):
        if existing.read_text() == text:
            return existing
    stamp = f"config-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}"
    for name in ("config.yaml", f"{stamp}.yaml", *(f"{stamp}-{i}.yaml" for i in range(1, 100))):
        try:
            with (out_dir / name).open("x") as f:
                f.write(text)
            return out_dir / name
        except FileExistsError:
            continue
    raise FileExistsError(f"{out_dir}: could not write this run's config (config.yaml and {name} exist)")


def write_json(path: Path, data: Any) -> Path:
    """Write `data` as indented JSON, creating the parent folder (results beside a run's config)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
    return path


def default_real_dir() -> Path:
    """$GRAPHENESEG_REAL_DIR, else data/real (relative to the working directory)."""
    if os.environ.get(REAL_DIR_ENV):
        return Path(os.environ[REAL_DIR_ENV])
    return DEFAULT_REAL_DIR


def real_dir(cfg: DictConfig) -> Path:
    """The configured real-data folder (`data.real_dir`), falling back to `default_real_dir()`."""
    value = cfg.data.get("real_dir")
    return Path(value) if value else default_real_dir()
