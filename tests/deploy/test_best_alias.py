"""A request may name the model 'best' when `odyssey serve` was started with the board's best (the default),
as the README's curl example does; served by explicit names, 'best' names nothing."""

from __future__ import annotations

import httpx

from tests.deploy.conftest import make_project, start_server, stop_server


def test_model_best_reaches_the_candidate_served_as_best(tmp_path):
    from odyssey.deploy.keys import create_key
    from odyssey.project import Project

    root = make_project(tmp_path / "p")
    store = Project.load(root).store
    key = create_key(store, "me").key
    store.close()
    proc, url = start_server(root, [], tmp_path / "serve.log")
    try:
        body = {"model": "best", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        r = httpx.post(url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=120)
        assert r.status_code == 200, r.text
        served = httpx.get(url + "/v1/models", headers={"Authorization": f"Bearer {key}"}).json()["data"]
        assert r.json()["model"] == served[0]["id"] != "best"
    finally:
        assert stop_server(proc) == 0
