"""Shared fixtures: a seconds-long offline world (the profile default is set in ../conftest.py)."""

import pytest


@pytest.fixture(scope="session")
def fast_world(tmp_path_factory):
    """The FAST recipe of the offline world (tiny budgets), built once per session in a temp cache."""
    from rlhf_helpers.fixture import FIXTURE_DIR
    from rlhf_helpers.offline import FAST, build_offline_world

    return build_offline_world(FAST, data_source=str(FIXTURE_DIR),
                               cache_dir=tmp_path_factory.mktemp("world"), verbose=False)
