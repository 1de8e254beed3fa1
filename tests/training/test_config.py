import json
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
    channels: tuple[int, ...] = (32, 64)
    resume: str | None = None
    loss: str = field(default="l1", metadata={"choices": ["l1", "mse"]})


def test_defaults_file_and_flags_override(tmp_path):
    assert parse_config(Example, []) == Example()
    (tmp_path / "c.yaml").write_text("steps: 5\nchannels: [8, 16, 32]\nname: from-file\n")
    cfg = parse_config(Example, ["--config", str(tmp_path / "c.yaml"), "--name", "cli", "--no-flag",
                                 "--resume", "latest", "--lr", "0.5"])
    assert cfg == Example(name="cli", steps=5, lr=0.5, flag=False, channels=(8, 16, 32), resume="latest")
    (tmp_path / "c.json").write_text(json.dumps({"loss": "mse"}))
    assert parse_config(Example, ["--config", str(tmp_path / "c.json"), "--channels", "1", "2"]).channels == (1, 2)


def test_bad_values_are_rejected(tmp_path):
    with pytest.raises(SystemExit):
        parse_config(Example, ["--loss", "huber"])
    with pytest.raises(SystemExit):
        parse_config(Example, ["--steps", "many"])
    with pytest.raises(ValueError, match="Unknown config keys \\['stpes'\\]"):
        make_config(Example, {"stpes": 3})
    (tmp_path / "c.toml").write_text("")
    with pytest.raises(ValueError, match=".yaml, .yml or .json"):
        parse_config(Example, ["--config", str(tmp_path / "c.toml")])


def test_saved_config_round_trips(tmp_path):
    cfg = Example(channels=(4,), resume="x")
    save_config(cfg, tmp_path / "cfg.json")
    assert parse_config(Example, ["--config", str(tmp_path / "cfg.json")]) == cfg
