"""diffit_hf.utils: seed mixing."""

import random

import numpy as np
import pytest
import torch

from diffit_hf.utils import mix_seed


@pytest.mark.parametrize("seed, keys", [(0, (4295, 0)), (0, (10**7, 3)), (1, (0, 0)), (2**31, (10**6, 7, 9))])
def test_mixed_seeds_are_accepted_by_every_seeded_library(seed, keys):
    # train_latent seeds each micro-step with accelerate's set_seed: Python, numpy (32 bits) and torch
    value = mix_seed(seed, *keys)
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)


def test_mixed_seeds_depend_on_every_key_and_keep_the_small_values_they_always_had():
    assert mix_seed(0, 4294, 0) == 4294 * 1_000_003  # what runs with seed 0 drew before the 32-bit range: unchanged
    assert mix_seed(0, 12) == 12
    values = {mix_seed(s, step, rank) for s in (0, 1) for step in range(2000) for rank in range(4)}
    assert len(values) == 2 * 2000 * 4
