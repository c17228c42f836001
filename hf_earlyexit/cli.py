"""Command-line parsing shared by the example scripts: a YAML/JSON config file as the single positional argument,
plus flag overrides, into HfArgumentParser dataclasses.

The config file gives values, flags given on the command line win. Both go through one
``HfArgumentParser.parse_dict`` call, so the dataclasses' own ``__post_init__`` checks see the merged values and a
bad key or value fails with one line before anything heavy is loaded.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser

CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


class ConfigError(ValueError):
    """A bad config file, key or value; the message is one line naming it."""


def load_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist; expected a YAML or JSON file")
    text = path.read_text(encoding="utf-8")
    try:
        config = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        first = str(error).splitlines()[0]
        raise ConfigError(f"config file {str(path)!r} is not valid {path.suffix[1:].upper()}: {first}") from None
    config = {} if config is None else config
    if not isinstance(config, dict):
        raise ConfigError(f"config file {str(path)!r} holds a {type(config).__name__}; expected a mapping of keys")
    return config


def _override_parser(parser: HfArgumentParser, source: str) -> argparse.ArgumentParser:
    """The same flags, but a flag that is not given leaves no attribute, so only real overrides come back, and a bad
    flag raises one ConfigError line instead of argparse's usage block."""
    for action in parser._actions:
        if action.dest != "help":
            action.default = argparse.SUPPRESS
            action.required = False

    def error(message: str):
        raise ConfigError(f"{source}: {message}")

    parser.error = error
    return parser


def parse_config(
    dataclass_types: Sequence[type], argv: Sequence[str] | None = None, prog: str | None = None
) -> tuple[Any, ...]:
    """Parse ``[config.yaml|config.json] [--flag value ...]`` into instances of ``dataclass_types``.

    Raises ``ConfigError`` (one line) for a missing or malformed file, an unknown key, or a value the dataclasses
    reject. ``--help`` prints every field with its help text.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser(dataclass_types, prog=prog)
    config: dict[str, Any] = {}
    source = "command line"
    if argv and not argv[0].startswith("-"):
        if not argv[0].endswith(CONFIG_SUFFIXES):
            raise ConfigError(f"positional argument {argv[0]!r} is not a config file; expected *.yaml, *.yml or *.json")
        source = argv[0]
        config = load_config_file(argv.pop(0))
    known = {action.dest for action in parser._actions}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown config key(s) {unknown}; see --help for the accepted keys")
    overrides = vars(_override_parser(parser, "command line").parse_args(argv))
    merged = {**config, **overrides}
    try:
        return parser.parse_dict(merged)
    except (ValueError, TypeError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"{source}: {message}") from None


def main_guard(main):
    """Wrap an example's ``main(argv)`` so a ConfigError ends the process with its one line (exit code 2), and a
    failed push (everything else saved, the error already logged) with exit code 1."""

    def run(argv: Sequence[str] | None = None):
        try:
            result = main(argv)
        except ConfigError as error:
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(2) from None
        if isinstance(result, dict) and result.get("push_error"):
            raise SystemExit(1)
        return result

    return run
