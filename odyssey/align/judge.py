"""AI feedback: a judge model ranks two responses against the spec's written rubric.

The judge is any OpenAI-compatible endpoint (through the official ``openai`` client) or a local
model/candidate, which answers by comparing its next-token probability of 'A' and 'B'. The order
of the two responses is drawn per pair (seeded) so a judge's position bias does not become a
preference; the prompt sent and the verdict are stored with every pair.
"""

from __future__ import annotations

import os
import random
import re

from odyssey.errors import OdysseyError, Unavailable

TEMPLATE = """You compare two responses to the same request and pick the better one.

Rubric:
{rubric}

Request:
{prompt}

Response A:
{a}

Response B:
{b}

Which response is better under the rubric? Answer with one letter: A or B."""


def judge_prompt(rubric: str, prompt: str, a: str, b: str) -> str:
    return TEMPLATE.format(rubric=rubric.strip(), prompt=prompt.strip(), a=a.strip(), b=b.strip())


def parse_verdict(text: str) -> str | None:
    """'A' or 'B' from a judge's answer ('A', 'Response B', '**B**', 'B is better'), None when unclear."""
    match = re.search(r"\b(?:response\s+)?([AB])\b", text.strip(), re.I)
    return match.group(1).upper() if match else None


class EndpointJudge:
    def __init__(self, endpoint: str, model: str, api_key_env: str = "OPENAI_API_KEY", max_tokens: int = 8):
        from odyssey.engines.openai_compat import client

        self.client = client(
            endpoint, "align.judge.endpoint", os.environ.get(api_key_env) or "not-needed", max_retries=1
        )
        self.model, self.max_tokens, self.name = model, max_tokens, f"judge:{model}@{endpoint}"

    def __call__(self, text: str) -> str:
        try:
            reply = self.client.chat.completions.create(
                model=self.model,
                max_tokens=self.max_tokens,
                temperature=0,
                messages=[{"role": "user", "content": text}],
            )
        except Exception as exc:
            raise Unavailable(
                f"the judge endpoint failed: {type(exc).__name__}: {str(exc)[:200]}",
                hint="check align.judge.endpoint, align.judge.model and the API key variable",
            ) from None
        return reply.choices[0].message.content or ""


class LocalJudge:
    """A local model as judge: the more probable of the next tokens 'A' and 'B' after the question."""

    def __init__(self, loaded, name: str):
        self.loaded, self.name = loaded, f"judge:{name}"
        tok = loaded.tokenizer
        self.ids = {k: tok(k, add_special_tokens=False)["input_ids"][-1] for k in ("A", "B")}

    def __call__(self, text: str) -> str:
        import torch

        from odyssey.align.common import chat_prompt

        tok, model = self.loaded.tokenizer, self.loaded.model
        enc = tok(chat_prompt(tok, text), return_tensors="pt", add_special_tokens=False).to(model.device)
        with torch.inference_mode():
            logits = model(**enc).logits[0, -1]
        return "A" if logits[self.ids["A"]] >= logits[self.ids["B"]] else "B"


def make_judge(project):
    spec = project.spec.align.judge
    if spec.endpoint:
        if not spec.model:
            raise OdysseyError(
                "align.judge.endpoint is set but align.judge.model is not",
                hint="name the model the endpoint serves, e.g. model: gpt-4o-mini",
            )
        return EndpointJudge(spec.endpoint, spec.model, spec.api_key_env, spec.max_tokens)
    from odyssey.models import load

    ref = spec.model or project.default_model()
    row = project.store.candidate(ref)
    loaded = load(row["model_ref"] if row else ref, root=project.root)
    return LocalJudge(loaded, ref)


def judge_pairs(
    project, prompts: list[str], samples: list[list[str]], examples=None, judge=None, seed: int = 0
) -> list[dict]:
    """Rank each prompt's two samples with the judge; returns pairs with the judge prompt and verdict."""
    from odyssey import ui

    judge = judge or make_judge(project)
    rubric = project.spec.align.judge.rubric
    rng = random.Random(seed)
    pairs, unclear = [], 0
    with ui.progress("judging pairs", total=len(prompts)) as bar:
        for i, (prompt, outs) in enumerate(zip(prompts, samples)):
            bar.advance()
            x, y = outs[0], outs[1]
            if not x.strip() or not y.strip() or x.strip() == y.strip():
                continue
            swap = rng.random() < 0.5
            a, b = (y, x) if swap else (x, y)
            request = examples[i].input if examples is not None else prompt
            text = judge_prompt(rubric, request, a, b)
            answer = judge(text)
            verdict = parse_verdict(answer)
            if verdict is None:
                unclear += 1
                continue
            chosen, rejected = (a, b) if verdict == "A" else (b, a)
            meta = {"judge": judge.name, "judge_prompt": text, "verdict": answer, "order_swapped": swap}
            if examples is not None:
                meta["example_id"] = examples[i].id
            pairs.append(
                {
                    "prompt": prompt,
                    "chosen": chosen,
                    "rejected": rejected,
                    "source": "judge",
                    "annotator": judge.name,
                    "meta": meta,
                }
            )
    if unclear:
        ui.say(f"the judge's answer named neither A nor B for {unclear} pair(s); they were dropped")
    return pairs
