"""The loop's hardware-chosen settings: FastDropout's mask law and gradients, the dropout swap, the optimizer."""

import torch

from odyssey.training import TrainConfig, train
from odyssey.training.speed import FastDropout, optimizer_kwargs, restore, swap_dropout


def test_fast_dropout_drops_at_rate_p_and_rescales():
    torch.manual_seed(0)
    layer = FastDropout(0.05).train()
    x = torch.ones(400, 1000)
    out = layer(x)
    dropped = float((out == 0).float().mean())
    assert abs(dropped - 0.05) < 0.002  # 400k Bernoulli draws: sd ~0.00035
    kept = out[out != 0]
    assert torch.allclose(kept, torch.full_like(kept, 1 / 0.95))
    assert abs(float(out.mean()) - 1.0) < 0.005  # unbiased, like nn.Dropout


def test_fast_dropout_lanes_are_independent_of_position():
    """Each of the four 16-bit lanes of a 64-bit draw must drop at the same rate (no biased lane)."""
    torch.manual_seed(1)
    out = FastDropout(0.25).train()(torch.ones(200_000, 4))
    rates = (out == 0).float().mean(0)
    assert torch.all((rates - 0.25).abs() < 0.006), rates


def test_fast_dropout_gradient_is_the_mask_and_eval_is_identity():
    torch.manual_seed(2)
    layer = FastDropout(0.5).train()
    x = torch.randn(64, 33, requires_grad=True)
    out = layer(x)
    out.sum().backward()
    mask = (out != 0).float()
    assert torch.allclose(x.grad, mask * 2.0)
    layer.eval()
    assert layer(x) is x


def test_fast_dropout_is_reproducible_from_the_seed():
    layer = FastDropout(0.1).train()
    torch.manual_seed(3)
    a = layer(torch.ones(1000))
    torch.manual_seed(3)
    b = layer(torch.ones(1000))
    assert torch.equal(a, b)


def test_swap_and_restore_dropout_modules():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.1), torch.nn.Dropout(0.0))
    swapped = swap_dropout(model)
    assert len(swapped) == 1 and isinstance(model[1], FastDropout) and type(model[2]) is torch.nn.Dropout
    restore(swapped)
    assert type(model[1]) is torch.nn.Dropout and model[1].p == 0.1


def test_optimizer_auto_is_fused_on_cpu_float():
    params = [torch.nn.Parameter(torch.zeros(3))]
    kwargs, name = optimizer_kwargs(params, "auto")
    assert name == "fused" and kwargs == {"fused": True}
    assert optimizer_kwargs(params, "for-loop") == ({"foreach": False}, "for-loop")


def _tiny_regression(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Dropout(0.2), torch.nn.Linear(16, 1))
    xs = torch.randn(32, 8)
    data = [{"x": xs[i], "y": xs[i].sum(0, keepdim=True)} for i in range(32)]

    def loss_fn(m, batch):
        return torch.nn.functional.mse_loss(m(batch["x"]), batch["y"]), {}

    return model, data, loss_fn


def test_train_states_its_settings_and_gives_the_dropout_back(tmp_path):
    model, data, loss_fn = _tiny_regression()
    result = train(model, data, loss_fn, TrainConfig(output_dir=tmp_path, max_steps=3, batch_size=8, save_every=None))
    settings = result.settings
    assert settings["precision"] == "fp32" and settings["optimizer"] == "adamw (fused)"
    assert settings["fast_dropout"] == 1 and settings["threads"] == torch.get_num_threads()
    assert type(model[1]) is torch.nn.Dropout  # swapped only for the run


def test_fused_and_for_loop_adamw_train_the_same(tmp_path):
    losses = {}
    for impl in ("fused", "for-loop"):
        model, data, loss_fn = _tiny_regression()
        config = TrainConfig(
            output_dir=tmp_path / impl, max_steps=6, batch_size=8, save_every=None, log_every=1, optimizer_impl=impl
        )
        losses[impl] = [h["loss"] for h in train(model, data, loss_fn, config).history if "loss" in h]
    assert len(losses["fused"]) == 6
    assert max(abs(a - b) for a, b in zip(losses["fused"], losses["for-loop"])) < 1e-5
