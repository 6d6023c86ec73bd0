"""deblur_unet tests run single-threaded: the CI box is two cores shared with other jobs, where
torch's default of one spinning thread per core makes every op wait on the others."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
