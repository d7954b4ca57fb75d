"""The planner's machine probe (`odyssey plan`, measured once per ODYSSEY_HOME) takes most of a minute on
two busy cores; `odyssey run` asks the planner for every training step. These tests check the pipeline,
not the probe (tests/select/test_planner.py does), so the session's home gets a fixed probe."""

import pytest

from tests.conftest import FIXED_PROBE as STUB_PROBE


@pytest.fixture(autouse=True, scope="session")
def _fixed_probe(_odyssey_home):
    from odyssey.select import planner

    key = planner._probe_key("cpu")
    if key not in planner._load_cache():
        planner._save_cache(key, STUB_PROBE)
    yield
