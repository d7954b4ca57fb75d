"""What the online recipes share: PPO (``ppo.py``) and TRL's RLOO/GRPO (``dpo.py``'s ``trl_online``)
sample from the policy on the same training prompts, score with the same reward, and are compared
with their parent the same way. Kept here so neither recipe's file is the other's library."""

from __future__ import annotations

from odyssey.align.common import AlignResult
from odyssey.errors import OdysseyError


def reward_function(project, reward: str, reward_model=None):
    """(callable(prompts, responses) -> list[float], description dict)."""
    if reward == "toxicity":
        from odyssey.align.toxicity import scorer

        tox = project.spec.align.toxicity
        score = scorer(tox.classifier, tox.label, project.root)
        return (lambda prompts, responses: [1.0 - s for s in score(responses)]), {
            "reward": "toxicity",
            "classifier": score.name,
        }
    if reward == "model":
        from odyssey.align.reward import RewardModel

        rm, row = reward_model if isinstance(reward_model, tuple) else RewardModel.from_store(project, reward_model)
        return rm.score, {
            "reward": "model",
            "reward_model": row["name"],
            "reward_model_id": row["id"],
            "preference_set": row.get("preference_set_id"),
            "preference_sha256": rm.meta.get("preference_sha256"),
        }
    raise OdysseyError(f"unknown reward {reward!r}", hint="use --reward model (the trained reward model) or toxicity")


def training_prompts(project, start, loaded, reward: str, limit: int | None = None) -> list[str]:
    from odyssey.align.common import chat_prompt, render_prompts

    if reward == "toxicity":
        from odyssey.align.toxicity import provocations

        rows = provocations("train")
        return [chat_prompt(loaded.tokenizer, r["prompt"], start.prompt.system) for r in rows][: limit or None]
    data = project.dataset()
    examples = data.split("train")[: limit or None]
    return render_prompts(
        loaded, start.prompt, examples, data.splits.get("train"), project.spec.align.ppo.max_new_tokens
    )


def compare_with_parent(project, result: AlignResult, reward: str, reward_model, temperature: float) -> None:
    """An online-trained candidate against its parent (the detox report for a toxicity reward), into
    ``result.evaluation``, its warnings added to the result's."""
    from odyssey.align.evaluation import detox_report, evaluate_aligned

    if reward == "toxicity":
        result.evaluation = detox_report(project, result.candidate, result.parent, temperature=temperature)
    else:
        result.evaluation = evaluate_aligned(project, result.candidate, result.parent, reward_model=reward_model)
    result.warnings += result.evaluation.get("warnings", [])
