"""Command-line parsing shared by the example scripts: a YAML/JSON config file as the single positional argument,
plus flag overrides, into HfArgumentParser dataclasses.

The config file gives values, flags given on the command line win. Config-file values are converted by the same
type functions argparse applies to flags (HfArgumentParser's: ``float``, ``int``, ``string_to_bool``, choices, and a
scalar given for a list field becomes a one-element list), so YAML's ``2e-5`` (a string in YAML 1.1) is a float and
``"false"`` is False; a value that does not convert is refused naming the field. ``None`` / ``null`` (in the file or
as a flag, ``--field None``) resets a field whose type allows it. Both go through one ``HfArgumentParser.parse_dict``
call, so the dataclasses' own ``__post_init__`` checks see the merged values and a bad key or value fails with one
line before anything heavy is loaded.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from transformers import HfArgumentParser
from transformers.hf_argparser import string_to_bool

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


NULLS = ("None", "none", "null", "~")


def _nullable_fields(dataclass_types: Sequence[type]) -> set[str]:
    """Fields whose type allows None (``X | None``), the only ones ``None`` may reset."""
    nullable = set()
    for dtype in dataclass_types:
        hints = typing.get_type_hints(dtype)
        for f in dataclasses.fields(dtype):
            hint = hints.get(f.name, f.type)
            if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint):
                nullable.add(f.name)
    return nullable


def _expected(action: argparse.Action) -> str:
    if action.choices:
        return f"one of {', '.join(map(str, action.choices))}"
    names = {float: "a number", int: "an integer", str: "a string", string_to_bool: "true or false"}
    return names.get(action.type, "a value of the field's type")


def _convert(action: argparse.Action, value: Any, nullable: set[str]) -> Any:
    """A config-file value as argparse would have turned the same text given as a flag; ValueError if it does not."""
    key = action.dest
    if value is None or (isinstance(value, str) and value in NULLS and key in nullable):
        if key not in nullable:
            raise ValueError(f"{key}=None: expected {_expected(action)} (the field cannot be null)")
        return None
    if action.nargs in ("+", "*"):
        values = value if isinstance(value, list) else [value]
        return [_convert_one(action, f"{key}[{i}]", item) for i, item in enumerate(values)]
    if isinstance(value, (list, dict)) and action.type is not str:
        raise ValueError(f"{key}={value!r}: expected {_expected(action)}")
    return _convert_one(action, key, value)


def _convert_one(action: argparse.Action, name: str, value: Any) -> Any:
    kind = action.type
    if kind is None or (kind is str and not isinstance(value, bool)):
        return value  # str fields may also hold lists/dicts (layer_map, stages): the dataclass checks them
    if isinstance(value, bool) and kind is not string_to_bool:
        # YAML reads yes/no/on/off unquoted as booleans: `languages: [no]` is False, not Norwegian.
        raise ValueError(f"{name}={value!r}: expected {_expected(action)} (quote it in YAML if it is text)")
    if kind in (int, float) and isinstance(value, (int, float)):
        if kind is int and value != int(value):
            raise ValueError(f"{name}={value!r}: expected an integer")
        return kind(value)
    if kind is string_to_bool and not isinstance(value, (str, bool)):
        raise ValueError(f"{name}={value!r}: expected true or false")
    try:
        converted = kind(value if isinstance(value, str) else str(value))
    except (ValueError, TypeError, argparse.ArgumentTypeError):
        raise ValueError(f"{name}={value!r}: expected {_expected(action)}") from None
    if action.choices and converted not in action.choices:
        raise ValueError(f"{name}={value!r}: expected {_expected(action)}")
    return converted


def _override_parser(parser: HfArgumentParser, source: str, nullable: set[str]) -> argparse.ArgumentParser:
    """The same flags, but a flag that is not given leaves no attribute, so only real overrides come back, and a bad
    flag raises one ConfigError line instead of argparse's usage block. ``--help`` still shows each default, and
    ``--field None`` resets a field whose type allows None."""
    for action in parser._actions:
        if action.dest != "help":
            if action.default is not argparse.SUPPRESS and action.help is not argparse.SUPPRESS:
                action.help = f"{action.help or ''} (default: {action.default!r})".strip()
            action.default = argparse.SUPPRESS
            action.required = False
            if action.dest in nullable and action.type is not None:
                action.type = _null_or(action.type)

    def error(message: str):
        raise ConfigError(f"{source}: {message}")

    parser.error = error
    return parser


def _null_or(kind):
    def convert(text: str):
        return None if text in NULLS else kind(text)

    convert.__name__ = getattr(kind, "__name__", "value")  # argparse names the type in its messages
    return convert


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
    actions = {}
    for action in parser._actions:  # the field's own flag comes first, before HfArgumentParser's --no_<field>
        actions.setdefault(action.dest, action)
    unknown = sorted(set(config) - set(actions))
    if unknown:
        raise ConfigError(f"{source}: unknown config key(s) {unknown}; see --help for the accepted keys")
    nullable = _nullable_fields(dataclass_types)
    try:
        config = {key: _convert(actions[key], value, nullable) for key, value in config.items()}
    except ValueError as error:
        raise ConfigError(f"{source}: {error}") from None
    overrides = vars(_override_parser(parser, "command line", nullable).parse_args(argv))
    overrides = {key: None if value == [None] else value for key, value in overrides.items()}  # --list_field None
    merged = {**config, **overrides}
    try:
        return parser.parse_dict(merged)
    except (ValueError, TypeError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"{source}: {message}") from None


def check_local_or_hub_id(name: str, value: str | None, what: str = "model folder") -> None:
    """Refuse (one line) a path that names nothing: not an existing local path, and not shaped like a Hub id.

    Without this, a mistyped folder reaches ``from_pretrained`` and fails with the Hub's repo-id validation error."""
    if value is None or Path(value).expanduser().exists():
        return
    try:
        validate_repo_id(value)
        looks_local = value.startswith((".", "/", "~")) or "\\" in value
    except HFValidationError:
        looks_local = True
    if looks_local:
        raise ValueError(
            f"{name}={value!r} does not exist; expected an existing {what} or a Hub id like 'namespace/name'"
        )


@contextlib.contextmanager
def refusing_bad_input(what: str = "input"):
    """Inside: the set-up an example does before training (data checks, tokenizer and model loading, the trainer's
    own configuration checks). A ValueError or a missing file there is bad input: it becomes a one-line ConfigError
    instead of a traceback."""
    try:
        yield
    except ConfigError:
        raise
    except (ValueError, OSError) as error:
        text = str(error).strip()
        message = text.splitlines()[0] if text else type(error).__name__
        raise ConfigError(f"{what}: {message}") from None


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
