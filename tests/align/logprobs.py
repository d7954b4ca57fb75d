"""A test instrument: how likely a model finds a given text answer."""

import torch

from odyssey.prompts import has_chat_template


def sequence_logprobs(loaded, prompts: list[str], responses: list[str], batch_size: int = 4) -> list[float]:
    """log p(response | prompt) summed over the response tokens."""
    tok, model = loaded.tokenizer, loaded.model
    add_special = not has_chat_template(tok)
    out = []
    for i in range(0, len(prompts), batch_size):
        for p, r in zip(prompts[i : i + batch_size], responses[i : i + batch_size]):
            p_ids = tok(p, add_special_tokens=add_special)["input_ids"]
            r_ids = tok(r, add_special_tokens=False)["input_ids"]
            if not r_ids:
                out.append(0.0)
                continue
            ids = torch.tensor([p_ids + r_ids], device=model.device)
            with torch.inference_mode():
                logits = model(input_ids=ids).logits[0, len(p_ids) - 1 : -1].float()
            logp = torch.log_softmax(logits, -1).gather(-1, ids[0, len(p_ids) :].unsqueeze(-1)).sum()
            out.append(float(logp))
    return out
