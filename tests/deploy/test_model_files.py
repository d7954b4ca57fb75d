"""Model files as an attack: pickle checkpoints that run code (PyTorch CVE-2025-32434,
LLaMA-Factory CVE-2025-53002) and chat templates that escape Jinja (llama-cpp-python
CVE-2024-34359). SECURITY.md states the policies these tests hold to."""

from __future__ import annotations

import os

import pytest

from odyssey.errors import OdysseyError


class Evil:
    """Unpickling this runs a shell command: what a malicious checkpoint does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def tiny_folder(tmp_path):
    from odyssey.models.tiny import build_tiny

    return build_tiny("llama", tmp_path / "tiny")


def to_pickle(folder, extra=None):
    """The same model with its weights as pytorch_model.bin instead of safetensors."""
    import torch
    from safetensors.torch import load_file

    state = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    if extra is not None:
        state["extra"] = extra
    torch.save(state, folder / "pytorch_model.bin")
    return folder


def test_a_malicious_pickle_checkpoint_is_refused_and_runs_nothing(tiny_folder, tmp_path, monkeypatch):
    from odyssey.models import load
    from odyssey.models.loading import check_pickles

    monkeypatch.delenv("ODYSSEY_ALLOW_PICKLE", raising=False)
    marker = tmp_path / "pwned"
    folder = to_pickle(tiny_folder, Evil(marker))
    with pytest.raises(OdysseyError, match="does not load with weights_only=True") as err:
        load(str(folder))
    assert "allow_pickle" in err.value.hint and "safetensors" in err.value.hint
    assert "system" in str(err.value)  # the reason: the global it would have called
    assert not marker.exists()  # nothing ran
    assert check_pickles(folder, allow_pickle=True) is False  # allowed: loaded with weights_only=False
    assert not marker.exists()  # the check itself never unpickles code


def test_a_plain_pickle_checkpoint_of_tensors_still_loads(tiny_folder, monkeypatch):
    from odyssey.models import load
    from odyssey.models.loading import check_pickles

    monkeypatch.delenv("ODYSSEY_ALLOW_PICKLE", raising=False)
    folder = to_pickle(tiny_folder)
    assert check_pickles(folder) is True
    loaded = load(str(folder))
    assert loaded.n_params > 0


def test_safetensors_folders_are_never_unpickled(tiny_folder, tmp_path):
    from odyssey.models.loading import check_pickles

    marker = tmp_path / "pwned"
    import torch

    torch.save({"x": Evil(marker)}, tiny_folder / "optimizer.pt")  # a stray pickle beside safetensors
    assert check_pickles(tiny_folder) is True and not marker.exists()


EVIL_TEMPLATES = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ self._TemplateReference__context.cycler.__init__.__globals__.os.popen('id').read() }}",
    "{% for m in messages %}{{ m.__class__.__base__.__subclasses__() }}{% endfor %}",
    "{{ namespace.__init__.__globals__['os'].system('id') }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{{ (messages|first).content.__class__.__mro__ }}",
]


@pytest.mark.parametrize("template", EVIL_TEMPLATES)
def test_a_malicious_chat_template_cannot_reach_python(tmp_path, template):
    """A template in tokenizer files (as a downloaded model would carry) is rendered by transformers
    in Jinja's ImmutableSandboxedEnvironment: no attribute path reaches os or the class tree."""
    import jinja2
    from transformers import AutoTokenizer

    from odyssey.models.tiny import build_tokenizer

    tok = build_tokenizer(tmp_path / "tok")
    tok.chat_template = template
    tok.save_pretrained(tmp_path / "evil")
    loaded = AutoTokenizer.from_pretrained(tmp_path / "evil")
    assert loaded.chat_template == template
    try:
        out = loaded.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    except (jinja2.exceptions.SecurityError, jinja2.exceptions.UndefinedError, TypeError):
        return  # refused by the sandbox
    assert "<class" not in out and "uid=" not in out and "object" not in out, out[:300]


def test_transformers_renders_chat_templates_in_a_sandbox():
    import inspect

    from transformers.utils import chat_template_utils

    assert "ImmutableSandboxedEnvironment(" in inspect.getsource(chat_template_utils)


def test_a_template_error_is_a_400_not_a_500(tmp_path):
    """A chat template that raises (a model that refuses a system turn, or a sandboxed attribute
    access) answers 400 naming the reason, through the gateway's real app."""
    from starlette.testclient import TestClient

    from odyssey.deploy.backends import Backend
    from odyssey.deploy.keys import create_key
    from odyssey.deploy.server import Served, create_app
    from odyssey.models.tiny import build_tokenizer
    from odyssey.project import Project
    from tests.deploy.conftest import make_project

    tok = build_tokenizer(tmp_path / "tok")
    tok.chat_template = (
        "{% for m in messages %}{% if m.role == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}{{ m.content }}{% endfor %}"
    )

    class TemplateOnly(Backend):
        kind = "fake"
        tokenizer = tok

    project = Project.load(make_project(tmp_path / "p"))
    key = create_key(project.store, "k").key
    app = create_app(project, [Served("m", "tiny:llama", TemplateOnly(), mode="chat")], project.spec.deploy)
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.post(
            "/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]},
        )
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "chat_template_error" and "System role not supported" in err["message"]
