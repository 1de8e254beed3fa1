import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a Hub miss would otherwise stall ~23 s
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
