"""Training configs as dataclasses: the command line is generated from the fields (no hand-written argparse).

`parse_config(MyConfig)` accepts `--config file.yaml|json` whose values the other flags override; `save_config`
writes the resolved config next to the checkpoints.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def _base_type(tp: Any) -> tuple[Any, bool]:
    """(type without Optional, is_optional)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], len(args) < len(typing.get_args(tp))
    return tp, False


def _add_field(parser: argparse.ArgumentParser, field: dataclasses.Field, hints: dict[str, Any]) -> None:
    tp, optional = _base_type(hints[field.name])
    flag = "--" + field.name.replace("_", "-")
    help_text = field.metadata.get("help", "")
    default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
    kwargs: dict[str, Any] = {"dest": field.name, "default": argparse.SUPPRESS,
                              "help": f"{help_text} (default: {default})"}
    if tp is bool:
        parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
    elif typing.get_origin(tp) in (tuple, list):
        item = typing.get_args(tp)[0]
        parser.add_argument(flag, nargs="+", type=item, **kwargs)
    else:
        choices = field.metadata.get("choices")
        convert = (lambda s, t=tp: None if s.lower() == "none" else t(s)) if optional else tp
        parser.add_argument(flag, type=convert, choices=choices, **kwargs)


def parse_config(cls: type[T], argv: list[str] | None = None) -> T:
    """Builds `cls` from defaults, then an optional `--config` file, then the command line."""
    hints = typing.get_type_hints(cls)
    parser = argparse.ArgumentParser(description=cls.__doc__)
    parser.add_argument("--config", help="a .yaml or .json file of field values; flags given here override it")
    for field in dataclasses.fields(cls):
        _add_field(parser, field, hints)
    args = vars(parser.parse_args(argv))
    values: dict[str, Any] = {}
    config_file = args.pop("config", None)
    if config_file:
        values.update(load_config_file(config_file))
    values.update(args)
    return make_config(cls, values)


def load_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        return yaml.safe_load(text) or {}
    if path.suffix == ".json":
        return json.loads(text)
    raise ValueError(f"--config must be a .yaml, .yml or .json file, got {path}.")


def make_config(cls: type[T], values: dict[str, Any]) -> T:
    """`cls(**values)` with a clear error for unknown keys and lists turned into tuples where declared."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"Unknown config keys {unknown}; valid keys are {', '.join(sorted(names))}.")
    hints = typing.get_type_hints(cls)
    for key, value in list(values.items()):
        if typing.get_origin(_base_type(hints[key])[0]) is tuple and isinstance(value, list):
            values[key] = tuple(value)
    return cls(**values)


def save_config(config: Any, path: str | Path) -> None:
    Path(path).write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n")
