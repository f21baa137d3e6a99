import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny models: thread start-up costs more than the maths, and CI shares two cores.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
