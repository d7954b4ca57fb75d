"""The planner's machine probe (`odyssey plan`, measured once per ODYSSEY_HOME) takes most of a minute on
two busy cores; `odyssey run` asks the planner for every training step. These tests check the pipeline,
not the probe (tests/select/test_planner.py does), so the session's home gets a fixed probe."""

import pytest

STUB_PROBE = {
    "device": "cpu",
    "threads": 2,
    "matmul_flops": {"64": 1e10, "2048": 1e10},
    "matvec_bytes_per_s": 1e10,
    "runtime_gb": 0.5,
    "decode_fixed_s": 0.0,
    "decode_per_layer_s": 0.0,
    "train_fixed_s": 0.0,
    "train_per_layer_s": 0.0,
}


@pytest.fixture(autouse=True, scope="session")
def _fixed_probe(_odyssey_home):
    from odyssey.select import planner

    key = planner._probe_key("cpu")
    if key not in planner._load_cache():
        planner._save_cache(key, STUB_PROBE)
    yield
