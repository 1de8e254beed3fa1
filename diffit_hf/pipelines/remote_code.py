"""Remote code: what a pushed repo ships so that plain diffusers loads it, and how the installed package reads the
pushed format back.

A pushed repo (or a `DiffiTPipeline.save_pretrained` folder) holds the pipeline folder plus the remote code plain
diffusers needs, generated here from the package's own modules at save time, never kept as a second copy:

    model_index.json           "_class_name": ["pipeline_diffit", "DiffiTPipeline"], "transformer": ["diffit_hf",
                               "DiTModel"] (`local_view` turns these back into the installed classes)
    pipeline_diffit.py         this package's pipeline modules as one file (`PIPELINE_MODULES`), without the
                               installed class's Hub I/O (`DiffiTHubMixin`): there the class saves, loads and
                               pushes as any diffusers pipeline does
    transformer/diffit_hf.py   this package's model modules as one file (diffusers looks for
                               `<component>/<library>.py` before importing the library)

`DiffusionPipeline.from_pretrained(repo_id, trust_remote_code=True)` runs that code; `DiffiTPipeline.from_pretrained`
ignores it and loads the installed package's classes through `local_view`. One file per component, because
diffusers fetches each `from .module import` of a remote module as a file of the repo and requires every absolute
import to be installed: the bundles import torch, numpy and diffusers only.
"""

from __future__ import annotations

import ast
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..models import DiffiTModel, DiffiTUNetModel, DiTModel
from ..utils import atomic_write_json, atomic_write_text

REMOTE_PIPELINE_MODULE = "pipeline_diffit"
REMOTE_MODEL_LIBRARY = "diffit_hf"
# the modules bundled into each remote-code file, in dependency order; each may import the earlier ones only
PIPELINE_MODULES = ("schedules", "labels", "pipeline_diffit")
MODEL_MODULES = ("validation", "embeddings", "layers", "transformer_dit", "transformer_diffit", "unet_diffit")
# modules of the installed pipeline only: the bundle drops their imports, and the class bases they give
INSTALLED_ONLY = ("hub_mixin",)
# the classes a pushed model_index.json may name as ["diffit_hf", class name]
MODEL_CLASSES = {cls.__name__: cls for cls in (DiTModel, DiffiTModel, DiffiTUNetModel)}
# `from_pretrained` arguments that only concern the download of a Hub repo
DOWNLOAD_KWARGS = ("revision", "token", "cache_dir", "force_download", "local_files_only", "proxies")
PACKAGE_DIR = Path(__file__).resolve().parents[1]


def _defined_names(tree: ast.Module) -> set[str]:
    """The names a module's top-level statements define (functions, classes, assignments)."""
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    return names


def bundle_modules(folder: str, modules: tuple[str, ...], title: str, installed_only: tuple[str, ...] = ()) -> str:
    """One self-contained module from `PACKAGE_DIR / folder / <module>.py` for each of `modules` (dependency
    order), as diffusers runs remote code: their top-level imports of other packages gathered in a header, their
    imports of each other dropped (the names live in the same file now), and the imports of `installed_only` modules
    dropped with the class bases they give (anything else they give may not be used). A `ValueError` for a relative
    import of a module that is not bundled, or a name defined by two of the modules."""
    imports, bodies, defined, installed_names = [], [], {}, set()
    for position, name in enumerate(modules):
        source = (PACKAGE_DIR / folder / f"{name}.py").read_text()
        lines = source.splitlines()
        tree = ast.parse(source)
        drop, replace = set(), {}
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):  # top-level imports move to the bundle's header
                span = range(node.lineno - 1, node.end_lineno)
                drop.update(span)
                if isinstance(node, ast.ImportFrom) and node.level > 0:
                    if node.level == 1 and node.module in installed_only:
                        installed_names.update(alias.asname or alias.name for alias in node.names)
                    elif node.level != 1 or node.module not in modules[:position]:
                        raise ValueError(f"{folder}/{name}.py imports {'.' * node.level}{node.module or ''}, which "
                                         "is not bundled before it: the remote code would lack it.")
                elif not (isinstance(node, ast.ImportFrom) and node.module == "__future__"):
                    imports.append("\n".join(lines[i] for i in span))
            elif isinstance(node, ast.ClassDef) and any(getattr(b, "id", None) in installed_names for b in node.bases):
                bases = [ast.unparse(b) for b in node.bases if getattr(b, "id", None) not in installed_names]
                header = range(node.lineno - 1, node.body[0].lineno - 1)  # `class Name(Mixin, Base):` lines
                drop.update(header)
                bases += [ast.unparse(keyword) for keyword in node.keywords]
                replace[header[0]] = f"class {node.name}({', '.join(bases)}):"
        for symbol in _defined_names(tree):
            if symbol in defined:
                raise ValueError(f"{symbol!r} is defined in both {defined[symbol]}.py and {name}.py, which are "
                                 "bundled into one remote-code file: rename one.")
            defined[symbol] = name
        kept = "\n".join(replace.get(i, line) for i, line in enumerate(lines) if i not in drop or i in replace)
        bodies.append(f"# ---- diffit_hf/{folder}/{name}.py ----\n{kept.strip()}\n")
    header = (f'"""{title} (generated at push time; edit the package, not this file)."""'
              "\n\nfrom __future__ import annotations\n\n")
    bundle = header + "\n".join(dict.fromkeys(imports)) + "\n\n\n" + "\n\n".join(bodies)
    used = {node.id for node in ast.walk(ast.parse(bundle)) if isinstance(node, ast.Name)} & installed_names
    if used:
        raise ValueError(f"The remote code uses {', '.join(sorted(used))}, which live in {', '.join(installed_only)} "
                         "(not shipped): move them into a bundled module.")
    return bundle


def remote_code_files() -> dict[str, str]:
    """{repo path: source} of the code a plain-diffusers load needs, generated from this package's modules."""
    return {
        f"{REMOTE_PIPELINE_MODULE}.py": bundle_modules("pipelines", PIPELINE_MODULES, "DiffiTPipeline from diffit_hf",
                                                      INSTALLED_ONLY),
        f"transformer/{REMOTE_MODEL_LIBRARY}.py": bundle_modules("models", MODEL_MODULES,
                                                                 "DiT / DiffiT models from diffit_hf"),
    }


def add_remote_code(folder: str | Path) -> Path:
    """Turns a `save_pretrained` pipeline folder, in place, into the format plain diffusers loads with
    `trust_remote_code=True`: model_index.json names `["pipeline_diffit", "DiffiTPipeline"]` and
    `["diffit_hf", <model class>]`, and the code files of `remote_code_files` are (re)written from this package.
    Idempotent; `DiffiTPipeline.from_pretrained` reads the result back through `local_view`."""
    folder = Path(folder)
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise FileNotFoundError(f"{folder} is not a saved pipeline (no model_index.json); run save_pretrained first.")
    index = json.loads(index_path.read_text())
    if index.get("_class_name") not in ("DiffiTPipeline", [REMOTE_PIPELINE_MODULE, "DiffiTPipeline"]):
        raise ValueError(f"{folder} holds a {index.get('_class_name')!r}, not a DiffiTPipeline.")
    index["_class_name"] = [REMOTE_PIPELINE_MODULE, "DiffiTPipeline"]
    for name, entry in index.items():  # ["diffit_hf.models.transformer_dit", "DiTModel"] -> ["diffit_hf", ...]
        if isinstance(entry, list) and len(entry) == 2 and str(entry[0]).split(".")[0] == REMOTE_MODEL_LIBRARY:
            if name != "transformer":
                raise ValueError(f"Component {name!r} is a diffit_hf class; only the transformer can ship as code.")
            if entry[1] not in MODEL_CLASSES:
                raise ValueError(f"{entry[1]!r} is not one of the model classes that ship as code: "
                                 f"{', '.join(MODEL_CLASSES)}.")
            index[name] = [REMOTE_MODEL_LIBRARY, entry[1]]
    atomic_write_json(index_path, index)
    for path, source in remote_code_files().items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / path, source)
    return folder



@contextmanager
def local_view(
    pretrained_model_name_or_path: str | os.PathLike,
    pipeline_class_name: str = "DiffiTPipeline",
    **download_kwargs: Any,
) -> Iterator[str]:
    """Yields a folder that `DiffusionPipeline.from_pretrained` loads with the installed diffit_hf classes.

    A Hub repo id is downloaded first (`download_kwargs`: see `DOWNLOAD_KWARGS`), without its code. A folder in the
    pushed format (`stage_for_hub`) is shown through a temporary view of symlinks whose model_index.json names
    `pipeline_class_name` and the installed model classes instead of the remote code; any other folder is yielded
    as it is. The folder itself is only read.
    """
    path = str(pretrained_model_name_or_path)
    if not os.path.isdir(path):
        from huggingface_hub import snapshot_download

        path = snapshot_download(path, ignore_patterns=["*.py", "*.bin", "*.ckpt"], **download_kwargs)
    try:
        index = json.loads((Path(path) / "model_index.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} has no readable model_index.json ({err}): it is not a saved pipeline.") from err
    for name, entry in index.items():  # every component the index lists must be there, named if it is not
        if not name.startswith("_") and isinstance(entry, list) and entry[0] is not None:
            if not (Path(path) / name / ("scheduler_config.json" if name == "scheduler" else "config.json")).is_file():
                raise FileNotFoundError(f"{path} lacks its '{name}' component (model_index.json lists "
                                        f"{entry[1]} in {name}/): restore that folder or save the pipeline again.")
    if not isinstance(index.get("_class_name"), list):  # a save_pretrained folder: diffusers reads it as it is
        yield path
        return
    index["_class_name"] = pipeline_class_name
    for name, entry in index.items():  # ["diffit_hf", "DiTModel"] -> ["diffit_hf.models.transformer_dit", "DiTModel"]
        if isinstance(entry, list) and len(entry) == 2 and entry[0] == REMOTE_MODEL_LIBRARY:
            if entry[1] not in MODEL_CLASSES:
                raise ValueError(f"{path} names the model class {entry[1]!r}, which this diffit_hf does not have; "
                                 f"it has {', '.join(MODEL_CLASSES)}.")
            index[name] = [MODEL_CLASSES[entry[1]].__module__, entry[1]]
    with tempfile.TemporaryDirectory(prefix="diffit-view-") as view:
        for item in Path(path).iterdir():  # everything but the index and the remote code, one folder deep
            if item.name == "model_index.json" or item.suffix == ".py":
                continue
            if item.is_dir():
                (Path(view) / item.name).mkdir()
                for sub in item.iterdir():
                    if sub.suffix != ".py":
                        (Path(view) / item.name / sub.name).symlink_to(sub.resolve())
            else:
                (Path(view) / item.name).symlink_to(item.resolve())
        (Path(view) / "model_index.json").write_text(json.dumps(index))
        yield view

