"""Pretraining from scratch with the three objectives, resume, continued pretraining, the candidate."""

from __future__ import annotations

import pytest

from tests.conftest import tiny_project

SMALL = {
    "steps": 8,
    "seq_len": 32,
    "batch_size": 4,
    "eval_every": 4,
    "vocab_size": 512,
    "warmup_steps": 0,
    "learning_rate": 3e-3,
}


def _project(tmp_path):
    """A project whose corpus is the first 150 documents of the shipped one (fast to tokenize)."""
    from odyssey.project import Project
    from odyssey.select.corpus_gen import corpus_dir
    from odyssey.select.curation import read_corpus

    root = tiny_project(tmp_path / "proj")
    docs = read_corpus(corpus_dir())[:150]
    (root / "corpus.txt").write_text("\n\n\n".join(d.text for d in docs))
    spec = root / "odyssey.yaml"
    spec.write_text(spec.read_text() + "select:\n  pretrain:\n    corpus: corpus.txt\n")
    return Project.load(root)


@pytest.mark.parametrize(
    "objective,family",
    [
        ("clm", "decoder-only"),
        pytest.param("mlm", "encoder-only", marks=pytest.mark.slow),
        pytest.param("span", "encoder-decoder", marks=pytest.mark.slow),
    ],
)
def test_pretrain_objective(tmp_path, objective, family):
    from odyssey.models import load
    from odyssey.select import pretrain

    project = _project(tmp_path)
    result = pretrain(project, objective=objective, size="tiny", **SMALL)
    assert result.steps == 8 and result.tokens > 0
    vals = [h["val_loss"] for h in result.curve if "val_loss" in h]
    assert len(vals) == 3 and vals[-1] < vals[0]  # before training, step 4, step 8
    assert result.val_perplexity == pytest.approx(2.718281828**result.val_loss, rel=1e-6)
    loaded = load(result.model_path)
    assert loaded.family == family and loaded.n_params == result.n_params
    cand = project.store.candidate(result.candidate)
    assert cand["model_ref"] == result.model_path and cand["config"]["pretrain"]["objective"] == objective
    assert "val_loss" in project.store.latest_metrics(cand["id"], "pretrain")
    report = (tmp_path / "proj" / ".odyssey" / "pretrain" / result.candidate / "report.md").read_text()
    assert "perplexity" in report
    assert (tmp_path / "proj" / ".odyssey" / "pretrain" / result.candidate / "loss.png").exists()
    assert result.sample


@pytest.mark.slow
def test_pretrain_resume_continues(tmp_path):
    from odyssey.select import pretrain

    project = _project(tmp_path)
    first = pretrain(project, objective="clm", **{**SMALL, "steps": 4})
    resumed = pretrain(project, objective="clm", resume=True, **{**SMALL, "steps": 4})
    assert resumed.resumed_from == 4 and resumed.steps == 4  # already done: nothing retrained
    more = pretrain(project, objective="clm", resume=True, **{**SMALL, "steps": 4})
    assert more.steps == 4
    assert first.val_loss == pytest.approx(resumed.val_loss, rel=1e-5)


@pytest.mark.slow
def test_continued_pretraining_from_a_model(tmp_path):
    from odyssey.select import pretrain

    project = _project(tmp_path)
    result = pretrain(project, objective="clm", init_from="tiny:llama", **SMALL)
    assert result.candidate == "continued-clm"
    vals = [h["val_loss"] for h in result.curve if "val_loss" in h]
    assert vals[-1] < vals[0]


def test_pretrain_bad_settings(tmp_path):
    from odyssey.errors import OdysseyError
    from odyssey.select import pretrain

    project = _project(tmp_path)
    with pytest.raises(OdysseyError, match="unknown size preset"):
        pretrain(project, size="huge")
    with pytest.raises(OdysseyError, match="needs decoder-only"):
        pretrain(project, objective="clm", init_from="tiny:bert", steps=1)
    with pytest.raises(Exception, match="objective"):
        pretrain(project, objective="diffusion")


def test_model_config_presets_build():
    from odyssey.select.pretraining import PRESETS, model_config

    ids = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
    for size in PRESETS:
        for objective in ("clm", "mlm", "span"):
            config = model_config(objective, size, 32000, 512, ids)
            assert config.vocab_size == 32000
    assert model_config("clm", "1b", 32000, 2048, ids).num_hidden_layers == 16
