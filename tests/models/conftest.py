import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny test models run faster on one thread (no OpenMP hand-offs) and the suite shares 2 cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
