"""Script configs as dataclasses: `transformers.HfArgumentParser` generates the command line from the fields.

    @dataclass
    class MyConfig:
        max_steps: int = field(default=100, metadata={"help": "optimiser steps"})
        mixed_precision: str = field(default="no", metadata={"choices": ["no", "bf16", "fp16"]})

    cfg = parse_config(MyConfig)  # --max-steps 5 / --max_steps 5, --config file.yaml, --help

Precedence: the dataclass defaults, then an optional `--config file.yaml|yml|json`, then the flags given. File
values (and `make_config` dicts) are converted to the field's type and checked before any work; `save_config`
writes the resolved config, which `--config` reads back.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import os
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from transformers import HfArgumentParser
from transformers.hf_argparser import string_to_bool

from ..utils import atomic_write_json

T = TypeVar("T")

CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


def _unwrap_optional(hint: Any) -> tuple[Any, bool]:
    """(the type without `| None`, whether `None` is allowed)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0], len(args) < len(typing.get_args(hint))
    return hint, False


def _none_or(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse `type` that reads "none" (any case) as None and anything else with `convert`."""

    def parse(text: str) -> Any:
        return None if text.lower() == "none" else convert(text)

    parse.__name__ = getattr(convert, "__name__", "value")  # argparse names it in "invalid int value"
    return parse


class _ConfigParser(HfArgumentParser):
    """`HfArgumentParser` (`--a-b` and `--a_b`, `--flag [true|false]`, `--no-flag` for flags that default to True,
    `list[X]`, `metadata={"help", "choices"}`) plus, written here because it lacks them: `tuple[X, ...]` fields,
    "none" for optional fields, and `--no-flag` / `--no_flag` for flags that default to False."""

    @staticmethod
    def _parse_dataclass_field(parser: argparse.ArgumentParser, field: dataclasses.Field) -> None:
        field = copy.copy(field)  # HfArgumentParser narrows `X | None` to X in place: keep the dataclass intact
        tp, optional = _unwrap_optional(field.type)
        flags = list(dict.fromkeys([f"--{field.name}", f"--{field.name.replace('_', '-')}"]))
        if typing.get_origin(tp) is tuple:
            kwargs = dict(field.metadata)
            aliases = kwargs.pop("aliases", [])
            parser.add_argument(*flags, *([aliases] if isinstance(aliases, str) else aliases), dest=field.name,
                                type=typing.get_args(tp)[0], nargs="+", default=_field_default(field), **kwargs)
            return
        HfArgumentParser._parse_dataclass_field(parser, field)
        action = parser._option_string_actions[flags[0]]
        if optional and tp is not bool and typing.get_origin(tp) is None:
            action.type = _none_or(action.type)
            if action.choices is not None:
                action.choices = [*action.choices, None]
        if tp is bool and field.default is not True:
            parser.add_argument(*dict.fromkeys([f"--no_{field.name}", f"--no-{field.name.replace('_', '-')}"]),
                                dest=field.name, action="store_false", default=argparse.SUPPRESS,
                                help=f"set {field.name} to False")


def _field_default(field: dataclasses.Field) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None if field.default is dataclasses.MISSING else field.default


def show_library_logs(level: int = logging.INFO) -> None:
    """Sends the `diffit_hf` loggers' messages at `level` and up to stderr, once (what scripts show; a library user
    configures `logging.getLogger("diffit_hf")` as they like)."""
    library = logging.getLogger("diffit_hf")
    if not library.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        library.addHandler(handler)
        library.setLevel(level)


def parse_config(cls: type[T], argv: list[str] | None = None) -> T:
    """Builds `cls` from its defaults, then an optional `--config` file, then the flags in `argv` (default:
    `sys.argv[1:]`). Bad flags exit with argparse's usage error; bad file values raise `ValueError`.

    A config class with a field of its own named `config` keeps `--config` for that field and takes no file. As the
    entry point of every script, it also shows diffit_hf's `logging` messages (INFO and up) on stderr
    (`show_library_logs`); library code never prints.
    """
    show_library_logs()
    parser = _ConfigParser(cls, description=cls.__doc__)
    takes_file = "config" not in {f.name for f in dataclasses.fields(cls)}
    file_values: dict[str, Any] = {}
    if takes_file:
        parser.add_argument("--config", help="a .yaml, .yml or .json file of field values; flags given here win")
        pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
        pre.add_argument("--config")
        config_file = pre.parse_known_args(argv)[0].config
        if config_file:
            file_values = load_config_file(config_file)
    # argparse fills in a default only where the namespace has no value yet: file values beat defaults, flags win
    namespace = parser.parse_args(argv, namespace=argparse.Namespace(**file_values))
    values = vars(namespace)
    if takes_file:
        values.pop("config", None)
    return make_config(cls, values)


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """The field values in a .yaml, .yml or .json file (not yet converted: see `make_config`)."""
    path = Path(path)
    if path.suffix.lower() not in CONFIG_SUFFIXES:
        raise ValueError(f"--config must be a .yaml, .yml or .json file, got {path}.")
    text = path.read_text()
    if path.suffix.lower() == ".json":
        values = json.loads(text)
    else:
        import yaml

        values = yaml.safe_load(text) or {}
    if not isinstance(values, dict):
        raise ValueError(f"--config {path} must hold a mapping of field names to values, got {type(values).__name__}.")
    return values


def make_config(cls: type[T], values: dict[str, Any]) -> T:
    """`cls(**values)` with every value converted to its field's type and checked against its choices; unknown keys
    and values that do not convert (`max_steps: many`) raise a `ValueError` naming the key."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"Unknown config keys {unknown}; valid keys are {', '.join(sorted(fields))}.")
    hints = typing.get_type_hints(cls)
    converted = {key: _convert(key, value, hints[key], fields[key].metadata.get("choices"))
                 for key, value in values.items()}
    return cls(**converted)


def check_positive(config: Any, names: tuple[str, ...]) -> None:
    """`ValueError` naming the first of the fields `names` of `config` below 1 (counts of steps, samples, ...)."""
    for name in names:
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}.")


def json_object(value: str | dict, flag: str) -> dict:
    """The JSON object a flag gives as text (or a mapping, from a config file); `ValueError` naming `flag` if not."""
    try:
        parsed = json.loads(value) if isinstance(value, str) else dict(value)
    except json.JSONDecodeError as err:
        raise ValueError(f"{flag} must be a JSON object, got {value!r} ({err}).") from err
    if not isinstance(parsed, dict):
        raise ValueError(f"{flag} must be a JSON object, got {value!r}.")
    return parsed


def save_config(config: Any, path: str | os.PathLike) -> None:
    """Writes the dataclass `config` as JSON, atomically; `--config path` reads it back."""
    atomic_write_json(path, dataclasses.asdict(config))


#################################################################################
#           Converting file values (HfArgumentParser.parse_dict does not)        #
#################################################################################


def _convert(key: str, value: Any, hint: Any, choices: list | None) -> Any:
    """`value` (from a file, a dict or argparse) as the field's type, or a ValueError naming key, value and type."""
    tp, optional = _unwrap_optional(hint)
    if value is None or (optional and isinstance(value, str) and value.lower() == "none"):
        if optional:
            return None
        raise ValueError(f"Config key {key!r}: got {value!r}, expected {_type_name(hint)}.")
    try:
        if typing.get_origin(tp) in (tuple, list):
            if not isinstance(value, (list, tuple)):
                raise TypeError("not a list")
            item = typing.get_args(tp)[0]
            result = typing.get_origin(tp)(_convert_scalar(v, item) for v in value)
        else:
            result = _convert_scalar(value, tp)
    except (TypeError, ValueError, argparse.ArgumentTypeError) as err:
        quote = isinstance(value, bool) and tp is str
        hint_text = " (YAML reads unquoted yes/no/on/off as booleans: quote it)" if quote else ""
        raise ValueError(f"Config key {key!r}: cannot use {value!r} as {_type_name(hint)}{hint_text}.") from err
    if choices is not None:
        for item in result if isinstance(result, (list, tuple)) else [result]:
            if item not in choices:
                raise ValueError(f"Config key {key!r}: {item!r} is not one of {', '.join(map(str, choices))}.")
    return result


def _convert_scalar(value: Any, tp: Any) -> Any:
    if tp is bool:
        if isinstance(value, (bool, str)):
            return string_to_bool(value)
        raise TypeError("not a bool")
    if isinstance(value, bool) and tp in (int, float, str):
        raise TypeError("a bool")
    if tp is int:
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                value = float(value)  # "1e3"
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int):
            return value
        raise TypeError("not an int")
    if tp is float:
        if isinstance(value, (int, float, str)):
            return float(value)  # YAML reads 1e-3 (no dot) as the string "1e-3"
        raise TypeError("not a float")
    if tp is str:
        if isinstance(value, dict):
            return json.dumps(value)  # e.g. `model_config: {num_layers: 6}` for a JSON-text field
        if isinstance(value, (str, int, float, os.PathLike)):
            return os.fspath(value) if isinstance(value, os.PathLike) else str(value)
        raise TypeError("not a str")
    return value  # other annotations: as given


def _type_name(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint)


def refuse_preset_overrides(config: Any, preset: str | None, owned: tuple[str, ...]) -> None:
    """A sampling preset owns the fields `owned`: refuse a config that also changes one from its default (the preset
    would silently override it), naming the flags."""
    if preset is None:
        return
    changed = [f"--{f.name.replace('_', '-')}" for f in dataclasses.fields(config)
               if f.name in owned and getattr(config, f.name) != f.default]
    if changed:
        raise ValueError(f"--preset {preset} sets the sampling settings; drop {', '.join(changed)} or the preset.")
