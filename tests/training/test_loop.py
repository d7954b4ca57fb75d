"""The training loop on small real models: learning, accumulation, token budgets, best/early stop, errors."""

from __future__ import annotations

import json

import pytest
import torch

from odyssey.errors import OdysseyError
from odyssey.training import TrainConfig, latest_checkpoint, make_batches, train


def _regression(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(4, 1, generator=g)
    xs = torch.randn(n, 4, generator=g)
    return [{"x": x, "y": x @ w} for x in xs]


def _loss(model, batch):
    pred = model(batch["x"])
    return torch.nn.functional.mse_loss(pred, batch["y"]), {"tokens": len(batch["x"])}


def _model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Linear(4, 1)


def test_training_reduces_the_loss_and_checkpoints_with_safetensors(tmp_path):
    data = _regression()
    model = _model()
    result = train(
        model,
        data,
        _loss,
        TrainConfig(
            output_dir=tmp_path,
            epochs=5,
            batch_size=8,
            learning_rate=0.05,
            log_every=1,
            save_every=10,
            lr_scheduler="constant",
        ),
    )
    losses = [h["loss"] for h in result.history]
    assert result.steps == 40 and len(losses) == 40  # 64 items / 8 per batch x 5 epochs
    assert losses[-1] < 0.1 * losses[0]
    assert result.tokens == 5 * 64
    assert result.trainable_params == 5 and result.total_params == 5
    assert result.final_path == tmp_path / "checkpoints" / "step-40"
    assert (result.final_path / "model.safetensors").exists()
    state = torch.load(result.final_path / "trainer_state.pt", weights_only=True)
    assert {"optimizer", "scheduler", "rng"} <= set(state)
    assert json.loads((result.final_path / "trainer_state.json").read_text())["step"] == 40
    # save_total_limit=2 keeps the newest periodic checkpoints only
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-30", "step-40"]


def test_gradient_accumulation_equals_a_bigger_batch(tmp_path):
    data = _regression(32)
    big, small = _model(), _model()
    train(
        big,
        data,
        _loss,
        TrainConfig(
            output_dir=tmp_path / "a", epochs=2, batch_size=8, learning_rate=0.05, max_grad_norm=None, save_every=None
        ),
    )
    train(
        small,
        data[:],
        _loss,
        TrainConfig(
            output_dir=tmp_path / "b",
            epochs=2,
            batch_size=4,
            grad_accum=2,
            learning_rate=0.05,
            max_grad_norm=None,
            save_every=None,
        ),
    )
    # not the same batches (shuffles of 4 vs 8), so compare against a run that differs for sure
    other = _model()
    train(
        other,
        data,
        _loss,
        TrainConfig(
            output_dir=tmp_path / "c", epochs=2, batch_size=4, learning_rate=0.05, max_grad_norm=None, save_every=None
        ),
    )
    # grad_accum=2 x 4 takes as many optimizer steps as batch 8 and ends near it; batch 4 alone takes twice as many
    assert torch.allclose(big.weight, small.weight, atol=0.15)
    steps_small = json.loads((latest_checkpoint(tmp_path / "b") / "trainer_state.json").read_text())["step"]
    steps_other = json.loads((latest_checkpoint(tmp_path / "c") / "trainer_state.json").read_text())["step"]
    assert steps_small == 8 and steps_other == 16


def test_accumulated_gradients_match_one_big_batch_exactly(tmp_path):
    """One step of 2 x 4 accumulated equals one step on the same 8 items at once."""
    data = _regression(8)
    one, two = _model(), _model()
    cfg = dict(
        max_steps=1, learning_rate=0.1, max_grad_norm=None, save_every=None, optimizer="sgd", lr_scheduler="constant"
    )
    train(one, data, _loss, TrainConfig(output_dir=tmp_path / "a", batch_size=8, **cfg))
    train(two, data, _loss, TrainConfig(output_dir=tmp_path / "b", batch_size=4, grad_accum=2, **cfg))
    assert torch.allclose(one.weight, two.weight, atol=1e-6)
    assert not torch.allclose(one.weight, _model().weight, atol=1e-3)


def test_token_budget_batches_respect_the_budget():
    lengths = [5, 30, 12, 7, 40, 3, 22, 9, 18, 11]
    config = TrainConfig(batch_tokens=45)
    batches = make_batches(len(lengths), config, epoch=0, lengths=lengths)
    assert sorted(i for b in batches for i in b) == list(range(10))
    for batch in batches:
        assert sum(lengths[i] for i in batch) <= 45 or len(batch) == 1
    assert batches != make_batches(len(lengths), config, epoch=1, lengths=lengths)  # reshuffled per epoch
    assert batches == make_batches(len(lengths), config, epoch=0, lengths=lengths)  # and reproducible


def test_early_stopping_keeps_and_restores_the_best_weights(tmp_path):
    data = _regression(32)
    model = _model()
    calls = []

    def eval_fn(m):
        calls.append(m.weight.detach().clone())
        # a validation metric that is best at the second evaluation and worse after
        return {"val_loss": [3.0, 1.0, 2.0, 2.5, 2.7, 2.9][len(calls) - 1]}

    result = train(
        model,
        data,
        _loss,
        TrainConfig(
            output_dir=tmp_path,
            max_steps=40,
            batch_size=4,
            eval_every=2,
            early_stopping_patience=2,
            learning_rate=0.05,
            save_every=None,
        ),
        eval_fn=eval_fn,
    )
    assert result.stopped_early
    assert result.steps == 8  # evals at 2, 4 (best), 6, 8 -> two without improvement
    assert result.best["step"] == 4 and result.best["value"] == 1.0
    assert (tmp_path / "best" / "model.safetensors").exists()
    assert torch.allclose(model.weight, calls[1])  # the best weights are loaded back at the end
    assert not torch.allclose(model.weight, calls[-1])


def test_frozen_parameters_are_not_trained_or_saved(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 1))
    model[0].requires_grad_(False)
    before = model[0].weight.detach().clone()
    result = train(
        model,
        _regression(16),
        lambda m, b: (torch.nn.functional.mse_loss(m(b["x"]), b["y"]), {}),
        TrainConfig(output_dir=tmp_path, max_steps=3, batch_size=4, learning_rate=0.1),
    )
    assert torch.equal(model[0].weight, before)
    assert result.trainable_params == 5 and result.total_params == 25
    from safetensors.torch import load_file

    assert set(load_file(str(result.final_path / "model.safetensors"))) == {"1.weight", "1.bias"}


def test_resume_with_changed_settings_is_a_clear_error(tmp_path):
    data = _regression(16)
    train(_model(), data, _loss, TrainConfig(output_dir=tmp_path, max_steps=2, batch_size=4))
    with pytest.raises(OdysseyError, match="learning_rate was 0.0002, now 0.1"):
        train(
            _model(),
            data,
            _loss,
            TrainConfig(output_dir=tmp_path, max_steps=4, batch_size=4, learning_rate=0.1),
            resume=True,
        )
    # same settings and more steps: continues from step 2
    result = train(_model(), data, _loss, TrainConfig(output_dir=tmp_path, max_steps=4, batch_size=4), resume=True)
    assert result.resumed_from == 2 and result.steps == 4


@pytest.mark.parametrize("field,value", [("batch_size", 0), ("precision", "fp8"), ("grad_accum", 0)])
def test_bad_settings_name_the_field(field, value):
    with pytest.raises(OdysseyError, match=field):
        TrainConfig(**{field: value})


def test_empty_data_is_a_clear_error(tmp_path):
    with pytest.raises(OdysseyError, match="empty"):
        train(_model(), [], _loss, TrainConfig(output_dir=tmp_path))
