"""diffit_hf.training.config: the command line generated from a dataclass (HfArgumentParser), `--config` files and
the conversion of their values."""

import json
import re
from dataclasses import dataclass, field

import pytest

from diffit_hf.training.config import make_config, parse_config, save_config


@dataclass
class Example:
    """An example config."""

    name: str = "a"
    steps: int = 10
    lr: float = 1e-3
    flag: bool = True
    grayscale: bool = False
    channels: tuple[int, ...] = (32, 64)
    resume: str | None = None
    limit: int | None = 5
    max_steps: int = 100
    resume_from_checkpoint: str | None = None
    ema_warmup: bool = True
    block_out_channels: tuple[int, ...] = (16, 32)
    loss: str = field(default="l1", metadata={"choices": ["l1", "mse"], "help": "reconstruction loss"})


def write(path, text: str):
    path.write_text(text)
    return ["--config", str(path)]


def test_defaults_file_and_flags_override(tmp_path):
    assert parse_config(Example, []) == Example()
    from_file = write(tmp_path / "c.yaml", "steps: 5\nchannels: [8, 16, 32]\nname: from-file\nlr: 0.25\n")
    cfg = parse_config(Example, from_file + ["--name", "cli", "--no-flag", "--resume", "latest", "--lr", "0.5"])
    assert cfg == Example(name="cli", steps=5, lr=0.5, flag=False, channels=(8, 16, 32), resume="latest")
    # a flag given with the default's value still beats the file; the file beats the defaults either side of it
    assert parse_config(Example, ["--steps", "10"] + from_file) == Example(steps=10, channels=(8, 16, 32),
                                                                            name="from-file", lr=0.25)
    from_json = write(tmp_path / "c.json", json.dumps({"loss": "mse", "flag": False}))
    assert parse_config(Example, from_json + ["--channels", "1", "2"]) == Example(loss="mse", flag=False,
                                                                                   channels=(1, 2))
    assert parse_config(Example, from_json + ["--flag"]).flag is True


def test_multi_word_flags_take_both_spellings():
    hyphens = parse_config(Example, ["--max-steps", "7", "--resume-from-checkpoint", "latest",
                                     "--block-out-channels", "8", "16", "24"])
    underscores = parse_config(Example, ["--max_steps", "7", "--resume_from_checkpoint", "latest",
                                         "--block_out_channels", "8", "16", "24"])
    assert hyphens == underscores == Example(max_steps=7, resume_from_checkpoint="latest",
                                             block_out_channels=(8, 16, 24))


@pytest.mark.parametrize("argv, expected", [
    (["--no-ema-warmup"], {"ema_warmup": False}),
    (["--no_ema_warmup"], {"ema_warmup": False}),
    (["--ema-warmup", "false"], {"ema_warmup": False}),
    (["--grayscale"], {"grayscale": True}),
    (["--grayscale", "true"], {"grayscale": True}),
    (["--grayscale", "--no-grayscale"], {"grayscale": False}),  # the last one wins
    (["--grayscale", "--no_grayscale"], {"grayscale": False}),
    (["--no_flag", "--flag"], {"flag": True}),
])
def test_bool_flags(argv, expected):
    cfg = parse_config(Example, argv)
    assert {key: getattr(cfg, key) for key in expected} == expected


def test_optional_fields_read_none_and_tuples_take_several_values():
    cfg = parse_config(Example, ["--limit", "None", "--resume", "none"])
    assert cfg.limit is None and cfg.resume is None
    cfg = parse_config(Example, ["--channels", "8", "16", "--limit", "3"])
    assert cfg.channels == (8, 16) and isinstance(cfg.channels, tuple) and cfg.limit == 3


def test_file_values_are_converted_to_the_field_type(tmp_path):
    # YAML 1.1 reads 1e-3 (no dot) as a string; quoted numbers and booleans are strings too
    text = "lr: 1e-3\nsteps: '3'\nflag: 'false'\ngrayscale: true\nchannels: ['8', 16]\nlimit: None\nmax_steps: 1.0e3\n"
    cfg = parse_config(Example, write(tmp_path / "c.yaml", text))
    assert cfg == Example(lr=0.001, steps=3, flag=False, grayscale=True, channels=(8, 16), limit=None, max_steps=1000)
    assert type(cfg.lr) is float and type(cfg.steps) is int and type(cfg.max_steps) is int
    assert make_config(Example, {"lr": "1e-3", "steps": "3", "channels": [1]}) == Example(lr=0.001, steps=3,
                                                                                         channels=(1,))


@pytest.mark.parametrize("text, message", [
    ("steps: many", "'steps': cannot use 'many' as int"),
    ("steps: 2.5", "'steps': cannot use 2.5 as int"),
    ("steps: null", "'steps': got None, expected int"),
    ("lr: [1, 2]", "'lr': cannot use [1, 2] as float"),
    ("flag: maybe", "'flag': cannot use 'maybe' as bool"),
    ("flag: [true]", "'flag': cannot use [True] as bool"),
    ("channels: 8", "'channels': cannot use 8 as tuple[int, ...]"),
    ("channels: [8, x]", "'channels': cannot use [8, 'x'] as tuple[int, ...]"),
    ("name: no", "'name': cannot use False as str (YAML reads unquoted yes/no"),
])
def test_unconvertible_file_value_names_key_value_and_type(tmp_path, text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_config(Example, write(tmp_path / "c.yaml", text))


def test_unknown_keys_and_choices_are_checked_for_files_and_dicts(tmp_path):
    with pytest.raises(ValueError, match="Unknown config keys \\['stpes'\\]; valid keys are .*steps"):
        make_config(Example, {"stpes": 3})
    with pytest.raises(ValueError, match="Unknown config keys \\['stpes'\\]"):
        parse_config(Example, write(tmp_path / "c.yaml", "stpes: 3\n"))
    with pytest.raises(ValueError, match="'loss'.*'huber'.*l1, mse"):
        parse_config(Example, write(tmp_path / "d.yaml", "loss: huber\n"))
    with pytest.raises(ValueError, match="'loss'"):
        make_config(Example, {"loss": "huber"})


def test_bad_command_line_values_exit_with_usage_error(tmp_path):
    for argv in (["--loss", "huber"], ["--steps", "many"], ["--lr", "fast"], ["--grayscale", "maybe"],
                 ["--channels"], ["--stpes", "3"]):
        with pytest.raises(SystemExit):
            parse_config(Example, argv)
    with pytest.raises(ValueError, match=".yaml, .yml or .json"):
        parse_config(Example, write(tmp_path / "c.toml", ""))


def test_saved_config_round_trips(tmp_path):
    cfg = Example(name="b", steps=3, lr=0.5, flag=False, grayscale=True, channels=(4,), resume="x", limit=None,
                  loss="mse")
    save_config(cfg, tmp_path / "cfg.json")
    assert [p.name for p in tmp_path.iterdir()] == ["cfg.json"]  # no temporary file left behind
    assert parse_config(Example, ["--config", str(tmp_path / "cfg.json")]) == cfg
