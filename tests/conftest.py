"""Shared fixtures and the two test tiers.

- default tier: ``pytest`` (or ``make test-fast``) runs every test not marked ``slow``: under 3 minutes on 2 cores;
- full tier: ``pytest --full`` (``make test``, what CI runs) adds the ``@pytest.mark.slow`` tests.
"""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pytest_addoption(parser):
    parser.addoption("--full", action="store_true", default=False,
                     help="also run tests marked slow (the full tier; CI runs it)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--full") or config.getoption("-m"):
        return
    skip = pytest.mark.skip(reason="slow: part of the full tier (pytest --full, make test)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def toy_stream(tmp_path_factory):
    """A 4-step toy stream (64 train / 16 eval pairs per step, 32-px images)."""
    from ticlip.data.toy import make_toy_stream

    return make_toy_stream(str(tmp_path_factory.mktemp("toy")), steps=4)
