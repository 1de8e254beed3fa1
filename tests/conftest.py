import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a Hub miss would otherwise stall ~23 s
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_and_threads():
    """Seeded, and the torch thread count restored: training scripts run in-process set it (`--cpu-threads`), and
    a later test comparing bits with a subprocess needs the default reduction order."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
