import importlib.util
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a Hub miss would otherwise stall ~23 s
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:  # `-n 2`: each worker (and its subprocesses) gets its share of the
    # cores; OpenMP threads of two workers fighting over the same cores slow both several-fold
    _share = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ.setdefault("OMP_NUM_THREADS", str(_share))

import pytest  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _seed_and_threads():
    """Seeded, and the torch thread count restored: training scripts run in-process set it (`--cpu-threads`), and
    a later test comparing bits with a subprocess needs the default reduction order."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def load_script(relative: str):
    """Imports a script (e.g. "training/train_latent.py") as a module, once, without touching sys.path. The benchmark
    scripts import `benchmarks/common.py` as `common` (their folder is sys.path[0] when they run): it is loaded from
    its file under that name first."""
    path = ROOT / relative
    if path.parent == ROOT / "benchmarks" and "common" not in sys.modules:
        _load(ROOT / "benchmarks" / "common.py", "common")
    name = "script_" + path.stem
    if name not in sys.modules:
        _load(path, name)
    return sys.modules[name]


def _load(path: Path, name: str) -> None:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)


@pytest.fixture(scope="session")
def script():
    """`script("training/train_latent.py")` -> the script's module: the one way tests load scripts."""
    return load_script


def _perturb(model, std: float = 0.05):
    """Adds seeded noise to every parameter (zero-initialised layers then matter) and returns the model in eval."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(std * torch.randn_like(p))
    return model.eval()


@pytest.fixture(scope="session")
def perturb():
    """`perturb(model, std=0.05)`: seeded noise on every parameter, model in eval mode."""
    return _perturb


@pytest.fixture(scope="session")
def fmnist_names() -> dict[int, str]:
    """Fashion-MNIST's id2label."""
    from diffit_hf.data import FASHION_MNIST_CLASSES

    return dict(enumerate(FASHION_MNIST_CLASSES))
