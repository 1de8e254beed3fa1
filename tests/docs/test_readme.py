"""README.md runs as written. Every command line of its bash blocks, the commands in its prose and in its python
blocks' comments, and the bash commands of docs/training.md, docs/evaluation.md and docs/hub.md parse with the
launcher's own parser (`accelerate launch`, `torchrun`) and the script's own parser and checks, in this process and
without the work; the README's python blocks run, offline, in a temporary folder.

How a command line is read (`commands`):
- `\\` continuations are joined and `#` comments dropped (shlex); leading `NAME=value` words are its environment.
- A line that starts with a flag ("the same command plus" `--resume-from-checkpoint latest`) is checked as the
  command above it with those flags added.
- `...` stands for "the flags of the command above" and is dropped; an optional group such as `[--license mit]` is
  parsed without and with; `$NAME` takes its value from PLACEHOLDERS; a word such as `HOST` is a plain value.
- A word naming a path in one of the repository's own folders (`training/configs/demo_fmnist.yaml`) must exist;
  outputs such as `outputs/dit-fmnist` need not.
- The blocks after `<!-- ci:setup -->` and `<!-- ci:test -->` (`bash scripts/setup.sh`, ruff and pytest) are run by
  CI itself (.ci/run, verbatim), so they are skipped here; any other command this module cannot check fails it.

How a script's arguments are checked (`parse_script`): its `if __name__ == "__main__":` block, which must be the one
statement `main(...)`, runs with `sys.argv` set and `main` replaced: `main(parse_config(TrainConfig))` parses into
the config (its own `__post_init__` checks included) and stops there, and a `main()` that parses for itself runs
until its `parse_args` returns. A script's `check_config` (train_latent.py: presets, ranges, objective options), the
checks it makes "before any work", runs on the result.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import io
import json
import re
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any
from unittest.mock import patch

import pytest

from ..tiny import save_tiny_pixel_pipeline

ROOT = Path(__file__).resolve().parents[2]
PAGES = ("README.md", "docs/training.md", "docs/evaluation.md", "docs/hub.md")
PLACEHOLDERS = {"RANK": "0", "HEAD_IP": "10.0.0.1"}  # docs/training.md's two-node FSDP command
PYTHON, ACCELERATE, TORCHRUN = ("python", "python3"), ("accelerate",), ("torchrun",)
VENV = ".venv/bin/"  # scripts/setup.sh's virtualenv: its programs are the plain ones


class CommandError(Exception):
    """A documented command that would not run as written (names the page, line and reason)."""


@dataclass(frozen=True)
class Command:
    where: str  # "README.md:52", the line it starts on
    words: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.where}: {shlex.join(self.words)}"


#################################################################################
#                         Reading commands from a page                          #
#################################################################################


def fenced_blocks(text: str, language: str) -> list[tuple[int, str | None, str]]:
    """(first line number, `<!-- marker -->` just above or None, body) of each ```language block."""
    found = []
    for match in re.finditer(r"(?:<!-- ([\w:-]+) -->\n)?```(\w*)\n(.*?)^```", text, re.S | re.M):
        if match.group(2) == language:
            found.append((text.count("\n", 0, match.start(3)) + 1, match.group(1), match.group(3)))
    return found


def logical_lines(body: str, first: int) -> list[tuple[int, str]]:
    """(line number, text) of each line of a shell block, `\\` continuations joined onto the line they start."""
    lines = []
    for number, line in enumerate(body.splitlines(), first):
        if lines and lines[-1][1].endswith("\\"):
            lines[-1] = (lines[-1][0], lines[-1][1][:-1] + " " + line)
        else:
            lines.append((number, line))
    return lines


def is_command(words: list[str]) -> bool:
    """Whether `words` run python, `accelerate launch` or torchrun (the commands this module checks)."""
    program = words[0].removeprefix(VENV) if words else ""
    return program in PYTHON + TORCHRUN or (program in ACCELERATE and words[1:2] == ["launch"])


def commands(text: str, page: str) -> list[Command]:
    """Every command of the page's bash blocks (but CI's own), and, for the README (`page == "README.md"`), the
    whole commands in its prose's code spans and in its python blocks' comments."""
    found = []
    for first, marker, body in fenced_blocks(text, "bash"):
        if marker and marker.startswith("ci:"):
            continue  # bash scripts/setup.sh and the test command: .ci/run runs them verbatim
        previous = None
        for number, line in logical_lines(body, first):
            try:
                words = shlex.split(line, comments=True)
            except ValueError as err:
                raise CommandError(f"{page}:{number}: {line.strip()}: {err}") from err
            if not words:
                continue
            if words[0].startswith("-"):  # "the same command plus" these flags
                if previous is None:
                    raise CommandError(f"{page}:{number}: flags {line.strip()!r} with no command above them.")
                words = [*previous.words, *words]
            previous = Command(f"{page}:{number}", tuple(words))
            found.append(previous)
    if page == "README.md":
        found += prose_commands(text, page) + python_comment_commands(text, page)
    return sorted(found, key=lambda c: int(c.where.split(":")[1]))


def prose_commands(text: str, page: str) -> list[Command]:
    """Code spans of the prose that are whole commands: `python ...`, `accelerate launch ...`, or a repository script
    with flags (`pipelines/push_to_hub.py --folder ...`, run with python)."""
    prose = re.sub(r"^```.*?^```", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S | re.M)
    found = []
    for match in re.finditer(r"`([^`]+)`", prose):
        words = match.group(1).split()  # a span may wrap onto the next line
        if re.fullmatch(r"[\w-]+/[\w/-]+\.py", words[0]) and words[1:2] and words[1].startswith("-"):
            words = ["python", *words]
        if is_command(words):
            found.append(Command(f"{page}:{text.count(chr(10), 0, match.start()) + 1}", tuple(words)))
    return found


def python_comment_commands(text: str, page: str) -> list[Command]:
    """Commands written as comments in python blocks (`# python pipelines/generate.py ...`)."""
    found = []
    for first, _, body in fenced_blocks(text, "python"):
        for number, line in enumerate(body.splitlines(), first):
            comment = line.strip().removeprefix("#") if line.strip().startswith("#") else ""
            if is_command(comment.split()):  # (prose comments may hold an unpaired quote: split commands only)
                found.append(Command(f"{page}:{number}", tuple(shlex.split(comment))))
    return found


def variants(words: list[str]) -> list[list[str]]:
    """The command line without and with each optional `[...]` group (brackets removed)."""
    starts = [i for i, w in enumerate(words) if w.startswith("[")]
    if not starts:
        return [words]
    start = starts[0]
    end = next((i for i in range(start, len(words)) if words[i].endswith("]")), None)
    if end is None:
        raise CommandError(f"unclosed optional group {words[start]!r}")
    group = [w.removeprefix("[") if i == start else w for i, w in enumerate(words[start:end + 1], start)]
    group[-1] = group[-1].removesuffix("]")
    return variants(words[:start] + words[end + 1:]) + variants(words[:start] + group + words[end + 1:])


def resolve_placeholders(words: list[str]) -> list[str]:
    """Drops `...` words and fills `$NAME` from PLACEHOLDERS."""

    def value(match: re.Match) -> str:
        if match.group(1) not in PLACEHOLDERS:
            raise CommandError(f"${match.group(1)} has no value in PLACEHOLDERS (add one that parses)")
        return PLACEHOLDERS[match.group(1)]

    return [re.sub(r"\$\{?(\w+)\}?", value, w) for w in words if w != "..."]


#################################################################################
#                          Checking one command line                            #
#################################################################################


def repository_folders() -> set[str]:
    """The top-level folders that belong to the repository: not hidden, not excluded by .gitignore (outputs/)."""
    lines = (ROOT / ".gitignore").read_text().split()
    ignored = [line.rstrip("/") for line in lines if line.endswith("/")]
    return {d.name for d in ROOT.iterdir()
            if d.is_dir() and not d.name.startswith(".") and not any(fnmatch(d.name, p) for p in ignored)}


def check_repository_paths(words: list[str]) -> None:
    """A word (or `--flag=value`'s value) naming a path in a repository folder must exist there."""
    folders = repository_folders()
    for word in words:
        path = PurePosixPath(word.split("=", 1)[-1])
        if not path.is_absolute() and len(path.parts) > 1 and path.parts[0] in folders and not (ROOT / path).exists():
            raise CommandError(f"{path} does not exist in the repository")


def last_line(stream: io.StringIO) -> str:
    """The last line written to `stream` (argparse's "error: ..." after its usage)."""
    return (stream.getvalue().strip().splitlines() or ["exited"])[-1]


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """`parser.parse_args(argv)`; a usage error becomes a CommandError with argparse's message."""
    with contextlib.redirect_stderr(io.StringIO()) as err:
        try:
            return parser.parse_args(argv)
        except SystemExit as exit:
            raise CommandError(last_line(err)) from exit


def launch_target(words: list[str]) -> tuple[str, list[str], bool]:
    """(script path or module name, its arguments, whether it is a module), the launcher's own flags parsed by the
    launcher's own parser."""
    program, rest = words[0].removeprefix(VENV), words[1:]
    if program in PYTHON:
        if rest[:1] == ["-m"] and len(rest) > 1:
            return rest[1], rest[2:], True
        if rest and not rest[0].startswith("-"):
            return rest[0], rest[1:], False
        raise CommandError("python with neither a script nor -m module")
    if program in ACCELERATE and rest[:1] == ["launch"]:
        from accelerate.commands.launch import launch_command_parser

        args = parse(launch_command_parser(), rest[1:])
    elif program in TORCHRUN:
        from torch.distributed.run import get_args_parser

        args = parse(get_args_parser(), rest)
    else:
        raise CommandError(f"{words[0]} is not a command this test can check: extend launch_target, or mark a "
                           "block that CI runs itself with <!-- ci:... -->")
    if args.no_python:
        raise CommandError("--no_python: not a python script")
    return args.training_script, args.training_script_args, args.module


def load_target(name: str, is_module: bool, load: Callable[[str], ModuleType]) -> ModuleType:
    """The script (`load(path)`) or the module of this repository (a package: its `__main__`) that a command runs."""
    if is_module:
        if name.split(".")[0] not in repository_folders():
            raise CommandError(f"-m {name} is not a module of this repository")
        try:
            module = importlib.import_module(name)
            return importlib.import_module(f"{name}.__main__") if hasattr(module, "__path__") else module
        except ImportError as err:
            raise CommandError(f"-m {name}: {err}") from err
    if PurePosixPath(name).is_absolute() or not (ROOT / name).is_file():
        raise CommandError(f"{name} is not a script of this repository")
    with patch.object(sys, "path", [str((ROOT / name).parent), *sys.path]):  # python puts a script's folder first
        return load(name)


def main_block(source: str, filename: str) -> list[ast.stmt]:
    """The body of the module's `if __name__ == "__main__":` block, which must be the one statement `main(...)`."""
    blocks = [node for node in ast.parse(source).body
              if isinstance(node, ast.If) and ast.unparse(node.test) == "__name__ == '__main__'"]
    if len(blocks) != 1:
        raise CommandError(f"{filename} has no `if __name__ == \"__main__\":` block: importing it would run it")
    body = blocks[0].body
    call = body[0].value if len(body) == 1 and isinstance(body[0], ast.Expr) else None
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "main"):
        raise CommandError(f"{filename}: its __main__ block must be `main(...)`, the one call this test replaces")
    return body


class _Parsed(Exception):
    """Raised by `ArgumentParser.parse_args` in place of returning: the command line parsed, no work begun."""

    def __init__(self, namespace: argparse.Namespace):
        self.namespace = namespace


def parse_script(module: ModuleType, argv: list[str]) -> Any:
    """What the module's `main` would be given for `argv`: its `__main__` block runs with `main` replaced (a `main()`
    that parses for itself runs until its `parse_args` returns). Usage errors and refused values: CommandError."""
    body = main_block(Path(module.__file__).read_text(), module.__file__)
    given = []
    original_parse_args = argparse.ArgumentParser.parse_args

    def stop_after_parsing(self, *args, **kwargs):
        raise _Parsed(original_parse_args(self, *args, **kwargs))

    def main(*args):
        if args:
            given.append(args[0])
            return
        with patch.object(argparse.ArgumentParser, "parse_args", stop_after_parsing):
            try:
                module.main()
            except _Parsed as parsed:
                given.append(parsed.namespace)
                return
        raise CommandError(f"{module.__file__}: main() returned without parsing a command line")

    code = compile(ast.Module(body=body, type_ignores=[]), module.__file__, "exec")
    with patch.object(sys, "argv", [module.__file__, *argv]), contextlib.redirect_stderr(io.StringIO()) as err:
        try:
            exec(code, {**vars(module), "main": main})
            if hasattr(module, "check_config"):  # the script's own checks "before any work"
                module.check_config(given[0])
        except SystemExit as exit:
            raise CommandError(last_line(err)) from exit
        except (ValueError, OSError) as refused:
            raise CommandError(f"{Path(module.__file__).name}: {refused}") from refused
    return given[0]


def check_command(command: Command, load: Callable[[str], ModuleType]) -> list[tuple[str, Any]]:
    """Checks one documented command line (every variant of its optional groups); returns (script or module, what
    its `main` would be given) per variant. CommandError naming the line for anything that would not run."""
    results = []
    try:
        words = list(command.words)
        while words and re.fullmatch(r"[A-Za-z_]\w*=.*", words[0]):
            words.pop(0)  # the environment, e.g. ACCELERATE_USE_CPU=true
        for variant in variants(resolve_placeholders(words)):
            check_repository_paths(variant)
            target, args, is_module = launch_target(variant)
            results.append((target, parse_script(load_target(target, is_module, load), args)))
    except CommandError as err:
        raise CommandError(f"{command}\n    {err}") from err
    return results


#################################################################################
#                                     Tests                                     #
#################################################################################

# Documented commands that are wrong, reported and not yet mended on their page. Strict: once the line is mended
# (or moves), its test fails until the entry goes.
KNOWN_WRONG: dict[str, str] = {}  # "page:line" -> why; such a command must fail (strict xfail) until fixed


def documented() -> list:
    """Every command of PAGES as a test parameter named by its line; KNOWN_WRONG ones expected to fail (strict)."""
    params = []
    for page in PAGES:
        for command in commands((ROOT / page).read_text(), page):
            wrong = KNOWN_WRONG.get(command.where)
            marks = [pytest.mark.xfail(strict=True, raises=CommandError, reason=wrong)] if wrong else []
            params.append(pytest.param(command, id=command.where, marks=marks))
    return params


@pytest.fixture(scope="module")
def fresh_clone(tmp_path_factory) -> Path:
    """The repository root as a fresh clone sees it: its folders and files, without outputs/ or other ignored
    folders, so that a command naming outputs/... parses as on a new machine, whatever this checkout has built."""
    view = tmp_path_factory.mktemp("fresh-clone")
    folders = repository_folders()
    for entry in ROOT.iterdir():
        if entry.is_file() or entry.name in folders:
            (view / entry.name).symlink_to(entry)
    return view


@pytest.mark.parametrize("command", documented())
def test_documented_command_parses(command, script, fresh_clone, monkeypatch):
    monkeypatch.chdir(fresh_clone)  # the pages' commands run from the root of a fresh clone
    check_command(command, script)  # CommandError naming the line and the reason


def test_the_readme_commands_are_found():
    """Every bash block of the README but CI's yields commands, and CI's blocks are the two that .ci/run runs."""
    readme = (ROOT / "README.md").read_text()
    found = commands(readme, "README.md")
    for first, marker, body in fenced_blocks(readme, "bash"):
        last = first + body.count("\n")
        in_block = [c for c in found if first <= int(c.where.split(":")[1]) < last]
        assert (marker or "").startswith("ci:") or in_block, f"README.md:{first}: a bash block without commands"
    assert sorted(m for _, m, _ in fenced_blocks(readme, "bash") if m) == ["ci:setup", "ci:test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "extract ci:setup" in ci and "extract ci:test" in ci


# a broken line -> what the rejection must say
BROKEN = {
    ".venv/bin/accelerate launch training/train_latent.py --max-stepz 5": "unrecognized arguments: --max-stepz 5",
    "accelerate launch --num_procesess 2 training/train_latent.py": "unrecognized arguments: --num_procesess",
    "accelerate launch --multi_gpu --num_processes many training/train_latent.py": "invalid int value: 'many'",
    ".venv/bin/accelerate launch training/train_latent.py --config training/configs/nope.yaml":
        "training/configs/nope.yaml does not exist",
    ".venv/bin/python training/train_latnet.py --max-steps 5": "training/train_latnet.py does not exist",
    "accelerate launch training/train_latent.py --model DiT-XL/3": "DiT-XL/3",  # check_config: unknown preset
    "accelerate launch training/train_latent.py --ema-decay 1.5": "ema_decay must lie in",
    ".venv/bin/python pipelines/generate.py --model outputs/dit-fmnist --scheduler dmp": "invalid choice: 'dmp'",
    "python pipelines/push_to_hub.py --folder f --repo-id you/x [--licence mit]": "unrecognized arguments: --licence",
    "accelerate launch training/train_latent.py ... --resume-from-checkpont latest": "--resume-from-checkpont",
    ".venv/bin/python benchmarks/bench_data.py --scale-rowz 60000": "unrecognized arguments: --scale-rowz",
    ".venv/bin/python -m diffit_hf preset": "invalid choice: 'preset'",
    ".venv/bin/python benchmarks/common.py": "must be `main(...)`",
    "torchrun --nprocs_per_node 2 training/train_latent.py": "unrecognized arguments: --nprocs_per_node",
    "accelerate launch --machine_rank $NODE training/train_latent.py": "$NODE has no value",
    "make demo": "make is not a command this test can check",
    "python -c 'print(1)'": "neither a script nor -m module",
    "python -m pytest -q": "-m pytest is not a module of this repository",
}


@pytest.mark.parametrize("line, reason", BROKEN.items(), ids=list(BROKEN.values()))
def test_a_broken_command_is_rejected(line, reason, script, monkeypatch):
    monkeypatch.chdir(ROOT)
    (command,) = commands(f"```bash\n{line}\n```\n", "page.md")
    with pytest.raises(CommandError, match=f"^page\\.md:2: (?s:.*){re.escape(reason)}"):
        check_command(command, script)


def test_a_broken_continuation_is_rejected(script, monkeypatch):
    monkeypatch.chdir(ROOT)
    page = "```bash\naccelerate launch training/train_latent.py --model DiT-S/2 \\\n    --max-steps 5\n" \
           "# the same command plus\n    --resume-from-checkpont latest\n```\n"
    good, extended = commands(page, "page.md")
    assert check_command(good, script)[0][1].max_steps == 5
    with pytest.raises(CommandError, match=r"page\.md:5.*resume-from-checkpont"):
        check_command(extended, script)
    with pytest.raises(CommandError, match="no command above"):
        commands("```bash\n    --max-steps 5\n```\n", "page.md")


def test_a_script_without_a_main_guard_is_rejected():
    with pytest.raises(CommandError, match="no `if __name__"):
        main_block("def main():\n    pass\n\nmain()\n", "x.py")
    with pytest.raises(CommandError, match="must be `main"):
        main_block("if __name__ == '__main__':\n    train(parse_config(C))\n", "x.py")
    assert ast.unparse(main_block('if __name__ == "__main__":\n    main(parse_config(C))\n', "x.py")[0]) == \
        "main(parse_config(C))"


def test_what_a_checked_command_parses_into(script, monkeypatch):
    """The values reach the script's config: launcher, continuation, placeholder, optional group and `...` handling."""
    monkeypatch.chdir(ROOT)
    page = ("```bash\nACCELERATE_USE_CPU=true .venv/bin/accelerate launch --multi_gpu --num_processes 2 "
            "--machine_rank $RANK training/train_latent.py ... --max-steps 7 \\\n    --model DiT-S/4\n"
            ".venv/bin/python pipelines/push_to_hub.py --folder f --repo-id you/x [--license mit]\n"
            ".venv/bin/python -m diffit_hf presets\n"
            ".venv/bin/python benchmarks/bench_data.py --scale-rows 60000\n```\n")
    train, push, presets, bench = commands(page, "page.md")
    ((target, cfg),) = check_command(train, script)
    assert (target, cfg.max_steps, cfg.model) == ("training/train_latent.py", 7, "DiT-S/4")
    assert [cfg.license for _, cfg in check_command(push, script)] == [None, "mit"]
    assert check_command(presets, script)[0][1].command == "presets"
    assert check_command(bench, script)[0][1].scale_rows == 60000


#################################################################################
#                       The README's python blocks, run                         #
#################################################################################


def cache_hub_repo(cache: Path, repo_id: str, pipeline: Path) -> None:
    """Puts `pipeline`, staged as a push stages it, into the Hub cache `cache` as `repo_id`'s main revision."""
    from diffit_hf.pipelines.push import stage_for_hub

    repo = cache / f"models--{repo_id.replace('/', '--')}"
    revision = "0" * 40
    stage_for_hub(pipeline, repo / "snapshots" / revision, repo_id=repo_id)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    """Verbatim, in a temporary folder, offline: "Use a model" (Fashion-MNIST from the Debian package), then "The
    Hub", whose repo id is a tiny pipeline in a Hub cache (HF_HUB_OFFLINE=1: diffusers falls back to the cache), once
    with diffit_hf and once as plain diffusers' remote code."""
    import diffusers.utils.dynamic_modules_utils
    import huggingface_hub.constants

    blocks = [body for _, _, body in fenced_blocks((ROOT / "README.md").read_text(), "python")]
    assert len(blocks) == 2, "a new python block in the README: add it here"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(diffusers.utils.dynamic_modules_utils, "HF_MODULES_CACHE", str(tmp_path / "modules"))
    monkeypatch.setattr(sys, "path", list(sys.path))  # the remote-code loader appends its module folder
    tiny = save_tiny_pixel_pipeline(tmp_path / "tiny")
    for repo_id in set(re.findall(r'^[^#\n]*from_pretrained\("([\w-]+/[\w.-]+)"', "\n".join(blocks), re.M)):
        cache_hub_repo(tmp_path / "hub", repo_id, tiny)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    before = set(sys.modules)
    try:
        use = {"__name__": "__readme__"}
        exec(compile(blocks[0], "README.md (Use a model)", "exec"), use)
        hub = {"__name__": "__readme__"}
        exec(compile(blocks[1], "README.md (The Hub)", "exec"), hub)
    finally:
        for name in set(sys.modules) - before:
            if name.startswith("diffusers_modules"):
                del sys.modules[name]
    assert use["out"].shape == (2, 8, 32, 32)  # learned sigma: noise and variance channels
    assert json.loads((work / "dit-s2" / "config.json").read_text())["_class_name"] == "DiTModel"
    assert len(use["train"]) == 60_000 and use["train"][0]["pixel_values"].shape == (1, 32, 32)
    assert type(hub["pipe"]).__module__.startswith("diffusers_modules")  # plain diffusers ran the repo's own code
    assert hub["pipe"].transformer.config.num_classes == 10
