"""RLHF with PPO and a KL penalty to the frozen reference model, written out in one readable file.

Why by hand: TRL 1.16 removed ``PPOTrainer`` and ``AutoModelForCausalLMWithValueHead`` (they are in
neither ``trl`` nor ``trl.experimental``), and its online trainers (RLOO, GRPO; offered as ``--algo``)
have no value function and no per-token KL reward. So this file is the classic recipe of Ziegler et
al. (2019) / Ouyang et al. (2022), on top of transformers + peft:

1. rollout: sample a response for each prompt from the policy;
2. reward: score each response (reward model, normalized; or 1 - offensiveness for a detox run);
3. per-token reward: -kl_coef * (log pi(y_t) - log pi_ref(y_t)) at every response token, plus the
   score at the last one; pi_ref is the same network with the LoRA adapter switched off, so policy
   and reference share one base model in memory;
4. advantages by GAE (gamma, lambda) from a value head on the policy's last hidden state;
5. a few epochs of minibatch updates of the clipped policy loss and the clipped value loss;
6. the KL coefficient is fixed or adapted towards ``target_kl`` (Ziegler et al.'s proportional controller).

Every step logs mean reward, KL, entropy and response length. The run stops (with a warning in the
result) when the mean KL passes ``kl_bound``: past that, the policy is usually exploiting the reward
model rather than getting better. Checkpoints (adapter, value head, optimizer, RNG, step, KL
coefficient) are written every ``checkpoint_every`` steps in the training loop's format
(``odyssey.training.checkpoint``: ``checkpoints/step-N/``); ``resume=True`` continues from the last.
"""

from __future__ import annotations

import hashlib
import json
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from odyssey.align.common import AlignResult
from odyssey.align.online import compare_with_parent, reward_function, training_prompts
from odyssey.errors import OdysseyError


class AdaptiveKL:
    """Ziegler et al. 2019: kl_coef *= 1 + clip(KL / target - 1, -0.2, 0.2) * n_steps / horizon."""

    def __init__(self, coef: float, target: float | None, horizon: int = 10000):
        self.value, self.target, self.horizon = coef, target, horizon

    def update(self, kl: float, n_steps: int) -> float:
        if self.target:
            error = max(min(kl / self.target - 1, 0.2), -0.2)
            self.value *= 1 + error * n_steps / self.horizon
        return self.value


def gae(rewards, values, mask, gamma: float, lam: float):
    """Generalized advantage estimation over each response's tokens (mask: 1 on response tokens)."""
    import torch

    advantages = torch.zeros_like(rewards)
    last = torch.zeros(rewards.shape[0], device=rewards.device)
    T = rewards.shape[1]
    for t in reversed(range(T)):
        next_value = values[:, t + 1] * mask[:, t + 1] if t + 1 < T else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = delta + gamma * lam * last * (mask[:, t + 1] if t + 1 < T else 0)
        advantages[:, t] = last * mask[:, t]
    returns = advantages + values
    return advantages * mask, returns * mask


def whiten(x, mask, eps: float = 1e-8):
    mean = (x * mask).sum() / mask.sum()
    var = (((x - mean) ** 2) * mask).sum() / mask.sum()
    return (x - mean) * (var + eps).rsqrt() * mask


def masked_mean(x, mask):
    return (x * mask).sum() / mask.sum().clamp(min=1)


class Policy:
    """A causal LM with a LoRA adapter (the policy), the same LM with the adapter off (the reference),
    and a scalar value head on the last hidden state."""

    def __init__(self, loaded, lora_r: int, lora_alpha: int, seed: int = 0):
        import torch
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(seed)
        self.tokenizer = loaded.tokenizer
        config = LoraConfig(
            task_type="CAUSAL_LM", r=lora_r, lora_alpha=lora_alpha, lora_dropout=0.0, target_modules="all-linear"
        )
        self.model = get_peft_model(loaded.model, config)
        hidden = loaded.model.config.get_text_config().hidden_size
        self.value_head = torch.nn.Linear(hidden, 1).to(loaded.model.device)
        torch.nn.init.normal_(self.value_head.weight, std=1 / (hidden + 1) ** 0.5)
        torch.nn.init.zeros_(self.value_head.bias)
        self.device = loaded.model.device

    def parameters(self):
        return [p for p in self.model.parameters() if p.requires_grad] + list(self.value_head.parameters())

    def forward(
        self,
        input_ids,
        attention_mask,
        n_response: int,
        temperature: float,
        values: bool = True,
        reference: bool = False,
    ):
        """Log-probs (and entropy, values) of the last ``n_response`` tokens given everything before them."""
        import contextlib

        import torch

        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        ctx = self.model.disable_adapter() if reference else contextlib.nullcontext()
        with ctx:
            out = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                output_hidden_states=values,
                use_cache=False,
            )
        logits = out.logits[:, -n_response - 1 : -1].float() / temperature
        logp_all = torch.log_softmax(logits, -1)
        targets = input_ids[:, -n_response:]
        logp = logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        entropy = -(logp_all.exp() * logp_all).sum(-1)
        value = None
        if values:
            hidden = out.hidden_states[-1][:, -n_response - 1 : -1].float()
            value = self.value_head(hidden).squeeze(-1)
        return logp, entropy, value

    def adapter_state(self) -> dict:
        from peft import get_peft_model_state_dict

        adapter = get_peft_model_state_dict(self.model)
        state = {f"adapter.{k}": v.detach().cpu().contiguous() for k, v in adapter.items()}
        head = self.value_head.state_dict()
        state.update({f"value_head.{k}": v.detach().cpu().contiguous() for k, v in head.items()})
        return state

    def load_adapter_state(self, state: dict):
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(self.model, {k[8:]: v for k, v in state.items() if k.startswith("adapter.")})
        self.value_head.load_state_dict({k[11:]: v for k, v in state.items() if k.startswith("value_head.")})


def _save_checkpoint(work: Path, policy: Policy, optimizer, cfg, kl: AdaptiveKL, history: list[dict]) -> None:
    """The loop's checkpoint format (``odyssey.training.checkpoint``): adapter + value head as the
    weights, optimizer and RNG, the step, history and KL coefficient in the state; only the newest kept."""
    from odyssey.training.checkpoint import CHECKPOINTS, TrainState, prune_checkpoints, write_checkpoint

    step = history[-1]["step"]
    state = TrainState(step=step, history=history, extra={"kl_coef": kl.value})
    folder = work / CHECKPOINTS / f"step-{step}"
    write_checkpoint(folder, "resume", state, policy.adapter_state(), cfg.model_dump(), optimizer)
    prune_checkpoints(work, keep=1)


def _load_checkpoint(work: Path, policy: Policy, optimizer, cfg, kl: AdaptiveKL) -> tuple[int, list[dict]] | None:
    """(step, history) of the newest checkpoint under ``work``, restored into policy, optimizer, RNG
    and KL controller; None when there is none."""
    from safetensors.torch import load_file

    from odyssey.training.checkpoint import latest_checkpoint, read_checkpoint

    folder = latest_checkpoint(work)
    if folder is None:
        return None
    state = read_checkpoint(
        folder, cfg.model_dump(), lambda path: policy.load_adapter_state(load_file(str(path))), optimizer
    )
    kl.value = float(state.extra["kl_coef"])
    return state.step, state.history


def plot_history(history: list[dict], out: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [
        ("reward", "mean reward"),
        ("kl", "KL to reference (nats/response)"),
        ("entropy", "entropy (nats/token)"),
        ("length", "response length (tokens)"),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.2))
    steps = [h["step"] for h in history]
    for ax, (key, label) in zip(axes, keys):
        ax.plot(steps, [h[key] for h in history], marker=".")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("PPO step")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def train_ppo(
    project,
    *,
    reward: str = "model",
    reward_model: int | str | None = None,
    start: str | None = None,
    steps: int | None = None,
    resume: bool = False,
    evaluate: bool = True,
    name: str | None = None,
    **overrides,
) -> AlignResult:
    """Run PPO from the starting candidate; record the aligned candidate; compare it with its parent."""
    from odyssey import ui
    from odyssey.align.common import ensure_candidate_row, load_trainable_start, save_merged, starting_candidate

    cfg = project.spec.align.ppo.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    if steps:
        cfg = cfg.model_copy(update={"steps": steps})
    begin = starting_candidate(project, start)
    parent_id = ensure_candidate_row(project, begin)
    reward_fn, reward_info = reward_function(project, reward, reward_model)
    with ui.status(f"loading {begin.model_ref}"):
        loaded = load_trainable_start(project, begin)
    prompts = training_prompts(project, begin, loaded, reward)
    if not prompts:
        raise OdysseyError("no training prompts for PPO", hint="check the train split of scope.data")
    ppo = _PPORun.prepare(loaded, cfg, prompts, reward_fn)
    work = _work_dir(project, begin, reward_info, cfg, prompts)
    random.seed(cfg.seed)
    first = ppo.resume(work) if resume else 0
    settings = {
        "action": "ppo",
        "start": begin.as_dict(),
        **reward_info,
        "ppo": cfg.model_dump(),
        "prompts": len(prompts),
        "resumed_from": first,
    }
    t0 = time.perf_counter()
    with project.store.run("align", project.spec.as_dict(), settings) as run:
        warnings = ppo.train(first, work)
        wall = time.perf_counter() - t0
        history = ppo.history
        _save_history(run, history, f"PPO from {begin.name} (reward: {reward_info['reward']})")
        ppo.policy.model.eval()
        out = save_merged(ppo.policy.model, ppo.tok, run.artifacts_dir / "model")
        method = "detox" if reward == "toxicity" else "ppo"
        cand_name = name or f"{begin.name}+{method}"
        metrics = _final_metrics(history, wall, ppo.kl_ctl.value)
        config = _candidate_config(begin, reward_info, cfg, len(history), run.id)
        cand_id = project.store.upsert_candidate(cand_name, "align", str(out), config, parent_id, run.id)
        run.log_metrics(metrics, candidate_id=cand_id)
        run.set_summary({"candidate": cand_name, "metrics": metrics, "warnings": warnings, "start_note": begin.note})
    del ppo, loaded  # the policy, its optimizer and the model: the comparison loads the candidates it compares
    result = AlignResult(
        cand_name, cand_id, begin.name, "ppo", str(out), run.id, history, metrics, warnings, wall_s=wall
    )
    if evaluate:
        compare_with_parent(project, result, reward, reward_model, cfg.temperature)
    return result


def _work_dir(project, begin, reward_info: dict, cfg, prompts: list[str]) -> Path:
    """The run's folder (its checkpoints): one per start, reward, settings other than steps, and prompts."""
    key_src = json.dumps(
        [
            begin.model_ref,
            reward_info,
            cfg.model_dump(exclude={"steps"}),
            len(prompts),
            hashlib.sha256("\n".join(prompts).encode()).hexdigest(),
        ],
        sort_keys=True,
        default=str,
    )
    return project.state_dir / "align" / f"ppo-{hashlib.sha256(key_src.encode()).hexdigest()[:12]}"


@dataclass
class _PPORun:
    """What the PPO steps share: the policy with its optimizer and KL controller, the sampling settings,
    the prompts in their shuffled order, the reward and the history so far."""

    policy: Policy
    tok: Any
    optimizer: Any
    kl_ctl: AdaptiveKL
    cfg: Any
    gen_kwargs: dict
    stop_ids: set
    add_special: bool
    prompts: list[str]
    order: list[int]
    reward_fn: Callable
    history: list[dict] = field(default_factory=list)

    @classmethod
    def prepare(cls, loaded, cfg, prompts: list[str], reward_fn) -> _PPORun:
        import torch

        from odyssey.engines.transformers import generation_kwargs
        from odyssey.prompts import has_chat_template

        tok = loaded.tokenizer
        tok.padding_side = "left"
        add_special = not has_chat_template(tok)
        policy = Policy(loaded, cfg.lora_r, cfg.lora_alpha, cfg.seed)
        optimizer = torch.optim.AdamW(policy.parameters(), lr=cfg.learning_rate)
        kl_ctl = AdaptiveKL(cfg.kl_coef, cfg.target_kl if cfg.adaptive_kl else None)
        gen_kwargs = generation_kwargs(
            {
                "max_new_tokens": cfg.max_new_tokens,
                "do_sample": True,
                "temperature": cfg.temperature,
                "top_k": cfg.top_k,
                "top_p": 1.0,
            },
            tok,
        )
        stop_ids = set(gen_kwargs.get("eos_token_id") or [])
        order = list(range(len(prompts)))
        random.Random(cfg.seed).shuffle(order)
        return cls(policy, tok, optimizer, kl_ctl, cfg, gen_kwargs, stop_ids, add_special, prompts, order, reward_fn)

    def resume(self, work: Path) -> int:
        """The step to start at: the newest checkpoint's (restored), else 0."""
        from odyssey import ui

        restored = _load_checkpoint(work, self.policy, self.optimizer, self.cfg, self.kl_ctl)
        if restored is None:
            return 0
        first, self.history = restored
        ui.say(f"resuming PPO at step {first} from {work}")
        return first

    def batch(self, step: int) -> list[str]:
        offset = step * self.cfg.batch_size
        return [self.prompts[self.order[(offset + i) % len(self.order)]] for i in range(self.cfg.batch_size)]

    def save(self, work: Path) -> None:
        _save_checkpoint(work, self.policy, self.optimizer, self.cfg, self.kl_ctl, self.history)

    def train(self, first: int, work: Path) -> list[str]:
        """Steps ``first`` to ``cfg.steps``, checkpointed every ``checkpoint_every``; stops early, with a
        warning, when the KL to the reference passes ``kl_bound``. Returns the warnings."""
        from odyssey import ui

        cfg = self.cfg
        warnings: list[str] = []
        with ui.progress("PPO", total=cfg.steps) as bar:
            bar.advance(first)
            for step in range(first, cfg.steps):
                stats = _ppo_step(
                    self.policy,
                    self.tok,
                    self.batch(step),
                    self.reward_fn,
                    self.optimizer,
                    self.kl_ctl,
                    cfg,
                    self.gen_kwargs,
                    self.stop_ids,
                    self.add_special,
                )
                stats["step"] = step + 1
                self.history.append(stats)
                bar.advance(1, reward=stats["reward"], kl=stats["kl"])
                past_bound = stats["kl"] > cfg.kl_bound  # stop here, with this step checkpointed
                if past_bound or (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
                    self.save(work)
                if past_bound:
                    warnings.append(
                        f"stopped at step {step + 1}: KL to the reference {stats['kl']:.2f} passed "
                        f"align.ppo.kl_bound={cfg.kl_bound:g}; the policy may be gaming the reward"
                    )
                    break
        return warnings


def _save_history(run, history: list[dict], title: str) -> None:
    """The per-step stats as JSONL and, when there are any, their curves, as the run's artifacts."""
    (run.artifacts_dir).mkdir(parents=True, exist_ok=True)
    hist_path = run.artifacts_dir / "ppo-history.jsonl"
    hist_path.write_text("".join(json.dumps(h) + "\n" for h in history))
    run.add_artifact(hist_path, "history")
    if history:
        run.add_artifact(plot_history(history, run.artifacts_dir / "ppo-curves.png", title), "plot")


def _final_metrics(history: list[dict], wall: float, kl_coef: float) -> dict:
    """The last three steps' mean reward, KL, entropy and length (``train_*``), the steps done and the time."""
    final = (
        {k: statistics.fmean(h[k] for h in history[-3:]) for k in ("reward", "kl", "entropy", "length")}
        if history
        else {}
    )
    metrics = {f"train_{k}": v for k, v in final.items()}
    metrics.update(steps_done=len(history), wall_s=wall, kl_coef_final=kl_coef)
    return metrics


def _candidate_config(begin, reward_info: dict, cfg, steps_done: int, run_id: int) -> dict:
    return {
        "prompt": begin.prompt.as_dict(),
        "align": {
            "method": "ppo",
            "parent": begin.name,
            **reward_info,
            "steps": steps_done,
            "kl_coef": cfg.kl_coef,
            "adaptive_kl": cfg.adaptive_kl,
            "run_id": run_id,
            "start_note": begin.note,
        },
    }


def _ppo_step(
    policy: Policy,
    tok,
    prompts: list[str],
    reward_fn,
    optimizer,
    kl_ctl: AdaptiveKL,
    cfg,
    gen_kwargs,
    stop_ids: set,
    add_special: bool,
) -> dict:
    """One PPO step on a batch of prompts: rollout, reward, advantages, ``ppo_epochs`` epochs of
    minibatch updates; returns the step's stats."""
    import torch

    input_ids, attention, mask, texts = _rollout(policy, tok, prompts, gen_kwargs, stop_ids, add_special)
    scores = torch.tensor(reward_fn(prompts, texts), dtype=torch.float32, device=policy.device)
    batch = _advantages(policy, input_ids, attention, mask, scores, kl_ctl.value, cfg)
    policy.model.train()
    n = len(prompts)
    losses = _update(policy, optimizer, batch, n, cfg)
    kl_seq = batch.kl_tokens.sum(-1).mean().item()
    coef = kl_ctl.value
    kl_ctl.update(kl_seq, n)
    return {
        "reward": scores.mean().item(),
        "reward_std": scores.std().item() if n > 1 else 0.0,
        "kl": kl_seq,
        "entropy": statistics.fmean(losses["entropy"]),
        "length": mask.sum(-1).mean().item(),
        "pg_loss": statistics.fmean(losses["pg_loss"]),
        "vf_loss": statistics.fmean(losses["vf_loss"]),
        "clipfrac": statistics.fmean(losses["clipfrac"]),
        "kl_coef": coef,
        "objective": scores.mean().item() - coef * kl_seq,
    }


def _rollout(policy: Policy, tok, prompts: list[str], gen_kwargs, stop_ids: set, add_special: bool):
    """A sampled response per prompt: (prompt + response ids, their attention mask, the response mask,
    the decoded responses)."""
    import torch

    from odyssey.align.common import response_mask

    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=add_special).to(policy.device)
    n_prompt = enc["input_ids"].shape[1]
    policy.model.eval()
    with torch.no_grad():
        out = policy.model.generate(**enc, **gen_kwargs)
    response = out[:, n_prompt:]
    if response.shape[1] == 0:
        raise OdysseyError("the policy generated no tokens", hint="raise align.ppo.max_new_tokens")
    mask = response_mask(response, stop_ids)
    texts = []
    for row, m in zip(response, mask):
        ids = row[m.bool()].tolist()
        texts.append(tok.decode([i for i in ids if i not in stop_ids], skip_special_tokens=True).strip())
    attention = torch.cat([enc["attention_mask"], mask.long()], dim=1)
    return out, attention, mask, texts


@dataclass
class _Rollout:
    """A sampled batch with what its updates compare against: the sampling policy's log-probs and
    values, the whitened GAE advantages, the returns, and the per-token log-ratio to the reference."""

    input_ids: Any
    attention: Any
    mask: Any
    old_logp: Any
    old_values: Any
    advantages: Any
    returns: Any
    kl_tokens: Any


def _advantages(policy: Policy, input_ids, attention, mask, scores, kl_coef: float, cfg) -> _Rollout:
    """Per-token rewards (-kl_coef * log-ratio to the reference at each token, plus the score at the
    last one) and their GAE advantages."""
    import torch

    T = mask.shape[1]
    with torch.no_grad():
        old_logp, _, old_values = policy.forward(input_ids, attention, T, cfg.temperature)
        ref_logp, _, _ = policy.forward(input_ids, attention, T, cfg.temperature, values=False, reference=True)
    kl_tokens = (old_logp - ref_logp) * mask
    rewards = -kl_coef * kl_tokens
    last = (mask.sum(-1) - 1).clamp(min=0).long()
    rewards[torch.arange(input_ids.shape[0]), last] += scores
    advantages, returns = gae(rewards, old_values * mask, mask, cfg.gamma, cfg.lam)
    advantages = whiten(advantages, mask)
    return _Rollout(input_ids, attention, mask, old_logp, old_values, advantages, returns, kl_tokens)


def _update(policy: Policy, optimizer, batch: _Rollout, n: int, cfg) -> dict[str, list[float]]:
    """``ppo_epochs`` passes over the batch in shuffled minibatches; each minibatch's losses, clip
    fraction and entropy."""
    import torch

    logged: dict[str, list[float]] = {"pg_loss": [], "vf_loss": [], "clipfrac": [], "entropy": []}
    for _ in range(cfg.ppo_epochs):
        perm = torch.randperm(n)
        for i in range(0, n, cfg.mini_batch_size):
            stats = _minibatch_update(policy, optimizer, batch, perm[i : i + cfg.mini_batch_size], cfg)
            for key, value in stats.items():
                logged[key].append(value)
    return logged


def _minibatch_update(policy: Policy, optimizer, batch: _Rollout, idx, cfg) -> dict[str, float]:
    """One optimizer step on the clipped policy loss plus ``vf_coef`` times the clipped value loss."""
    import torch

    m = batch.mask[idx]
    old_logp, old_values, returns = batch.old_logp[idx], batch.old_values[idx], batch.returns[idx]
    logp, entropy, values = policy.forward(batch.input_ids[idx], batch.attention[idx], m.shape[1], cfg.temperature)
    ratio = torch.exp(logp - old_logp)
    adv = batch.advantages[idx]
    clipped = ratio.clamp(1 - cfg.clip_range, 1 + cfg.clip_range)
    pg_loss = masked_mean(torch.max(-adv * ratio, -adv * clipped), m)
    v_clipped = old_values + (values - old_values).clamp(-cfg.clip_range_value, cfg.clip_range_value)
    vf_loss = 0.5 * masked_mean(torch.max((values - returns) ** 2, (v_clipped - returns) ** 2), m)
    loss = pg_loss + cfg.vf_coef * vf_loss
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
    optimizer.step()
    return {
        "pg_loss": pg_loss.item(),
        "vf_loss": vf_loss.item(),
        "clipfrac": masked_mean(((ratio - 1).abs() > cfg.clip_range).float(), m).item(),
        "entropy": masked_mean(entropy.detach(), m).item(),
    }
