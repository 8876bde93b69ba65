import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every model test on one torch thread (the fixture in tests/conftest.py)."""
    yield
