import types

import pytest
import torch

from odyssey.align.ppo import AdaptiveKL, Policy, _ppo_step, gae, whiten
from odyssey.engines.transformers import generation_kwargs
from odyssey.models import load
from odyssey.spec import PPOSpec


def test_gae_matches_hand_computation():
    rewards = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    values = torch.tensor([[0.5, 0.4, 0.3, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=0.5)
    d2 = 1.0 - 0.3  # last response token: no next value
    d1 = 0.0 + 0.3 - 0.4
    d0 = 0.0 + 0.4 - 0.5
    a2, a1 = d2, d1 + 0.5 * d2
    a0 = d0 + 0.5 * a1
    assert adv[0].tolist() == pytest.approx([a0, a1, a2, 0.0])
    assert ret[0, :3].tolist() == pytest.approx([a0 + 0.5, a1 + 0.4, a2 + 0.3])


def test_whiten_and_adaptive_kl():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    m = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    w = whiten(x, m)
    assert w[0, 3] == 0 and (w * m).sum().abs() < 1e-5
    ctl = AdaptiveKL(0.1, target=1.0, horizon=100)
    assert ctl.update(kl=5.0, n_steps=10) > 0.1  # KL above target: penalize more
    ctl2 = AdaptiveKL(0.1, target=1.0, horizon=100)
    assert ctl2.update(kl=0.1, n_steps=10) < 0.1  # below target: penalize less
    fixed = AdaptiveKL(0.1, target=None)
    assert fixed.update(kl=50.0, n_steps=10) == 0.1


def test_ppo_step_moves_probability_towards_rewarded_answers():
    """One PPO step: answers given +1 become more likely under the policy, those given -1 less likely;
    the first step's KL is exactly 0 (the LoRA adapter starts as the identity)."""
    loaded = load("tiny:llama", dtype="float32")
    tok = loaded.tokenizer
    tok.padding_side = "left"
    cfg = PPOSpec(
        batch_size=4,
        mini_batch_size=4,
        ppo_epochs=4,
        learning_rate=3e-3,
        max_new_tokens=6,
        kl_coef=0.0,
        adaptive_kl=False,
        top_k=0,
    )
    policy = Policy(loaded, cfg.lora_r, cfg.lora_alpha, seed=0)
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.learning_rate)
    gen = generation_kwargs({"max_new_tokens": 6, "do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0}, tok)
    seen = []

    def reward_fn(prompts, texts):
        seen.extend(texts)
        return [1.0 if i % 2 == 0 else -1.0 for i in range(len(texts))]

    prompts = ["<s>user\nHello there</s>\n<s>assistant\n"] * 2 + ["<s>user\nSummarize this</s>\n<s>assistant\n"] * 2
    torch.manual_seed(0)
    stats = _ppo_step(
        policy,
        tok,
        prompts,
        reward_fn,
        opt,
        AdaptiveKL(0.0, None),
        cfg,
        gen,
        set(gen["eos_token_id"]),
        add_special=False,
    )
    assert stats["kl"] == pytest.approx(0.0, abs=1e-5)
    assert stats["reward"] == pytest.approx(0.0) and stats["length"] > 0

    from tests.align.logprobs import sequence_logprobs

    view = types.SimpleNamespace(tokenizer=tok, model=policy.model)
    after = sequence_logprobs(view, prompts, seen)
    with policy.model.disable_adapter():
        before = sequence_logprobs(view, prompts, seen)
    delta = [a - b for a, b in zip(after, before)]
    assert delta[0] + delta[2] > 0 > delta[1] + delta[3]


@pytest.mark.slow
def test_ppo_run_resumes_and_records_a_linked_candidate(tmp_path):
    from odyssey.align.ppo import train_ppo
    from odyssey.project import Project
    from tests.conftest import tiny_project

    root = tiny_project(tmp_path / "p")
    (root / "odyssey.yaml").write_text(
        (root / "odyssey.yaml").read_text()
        + (
            "align:\n  ppo: {batch_size: 2, mini_batch_size: 2, ppo_epochs: 1, max_new_tokens: 6, checkpoint_every: 1}\n"
        )
    )
    project = Project.load(root)
    first = train_ppo(project, reward="toxicity", steps=2, evaluate=False)
    assert [h["step"] for h in first.history] == [1, 2]
    again = train_ppo(project, reward="toxicity", steps=3, resume=True, evaluate=False)
    assert [h["step"] for h in again.history] == [1, 2, 3]
    assert again.history[:2] == first.history
    cand = project.store.candidate(again.candidate)
    assert cand["stage"] == "align" and cand["parent_id"] == project.store.candidate(again.parent)["id"]
    align = cand["config"]["align"]
    assert align["reward"] == "toxicity" and align["classifier"] == "profanity-check"
    loaded = load(cand["model_ref"])  # the merged checkpoint loads like any model
    assert loaded.family == "decoder-only"
    # before/after offensiveness on the held-out provocations, sampled at the given temperature
    from odyssey.align.evaluation import detox_report

    same = detox_report(
        project, again.parent, again.parent, samples=1, max_new_tokens=6, temperature=0.7, task_eval=False
    )
    assert same["temperature"] == 0.7 and same["prompts"] == 30
    m = same["metrics"]  # the same model, the same seeds: the same samples, no change, a zero-width interval
    assert m["toxicity_change"] == 0 and m["toxicity_change_ci_low"] == m["toxicity_change_ci_high"] == 0
    assert not same["ci_excludes_zero"] and 0 <= m["toxicity_before"] <= 1
    assert m["distinct2_before"] == m["distinct2_after"] > 0 and not same["warnings"]  # no collapse
    rep = detox_report(project, again.candidate, again.parent, samples=1, max_new_tokens=6, task_eval=False)
    assert rep["temperature"] == project.spec.align.ppo.temperature
    r = rep["metrics"]
    assert r["toxicity_change_ci_low"] <= r["toxicity_change"] <= r["toxicity_change_ci_high"]


def test_kl_estimate_samples_from_the_aligned_model(tmp_path):
    """A sharper copy of a model (final-norm weights x 8, so every logit x 8; the random tiny model is
    otherwise near-uniform) has drifted from it: the estimate on answers sampled from the aligned model is
    clearly positive both ways round (about 14 and 28 nats over 8 tokens), and exactly 0 against itself."""
    import types

    from odyssey.align.evaluation import kl_estimate

    loaded = load("tiny:llama", dtype="float32")
    for name, scale in (("parent", 1.0), ("sharp", 8.0)):
        with torch.no_grad():
            loaded.model.model.norm.weight.mul_(scale)
        loaded.model.save_pretrained(tmp_path / name)
        loaded.tokenizer.save_pretrained(tmp_path / name)
    project = types.SimpleNamespace(root=tmp_path)
    prompts = ["<s>user\nHello there</s>\n<s>assistant\n", "<s>user\nSummarize this</s>\n<s>assistant\n"] * 4
    p_ref, s_ref = str(tmp_path / "parent"), str(tmp_path / "sharp")

    assert kl_estimate(project, p_ref, p_ref, prompts, max_new_tokens=8) == pytest.approx(0.0, abs=1e-4)
    assert kl_estimate(project, s_ref, p_ref, prompts, max_new_tokens=8) > 5
    assert kl_estimate(project, p_ref, s_ref, prompts, max_new_tokens=8) > 5
