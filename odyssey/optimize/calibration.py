"""Calibration text, and what is measured on it, shared by the optimize methods: pruning scores
importance on it, int8 smoothing takes activation ranges from it, a distilled student picks its
layers by Block Influence on it. Kept here so no method's file is another's library."""

from __future__ import annotations

from odyssey.errors import OdysseyError


def calibration_batches(project, tokenizer, cfg, n: int, max_length: int, batch_size: int = 4) -> list[dict]:
    from odyssey.optimize.common import collate, sft_items

    train = project.examples("train")[:n]
    if not train:
        raise OdysseyError(
            "calibration (pruning, int8 smoothing, a block-influence student) needs examples "
            "from the train split, which is empty",
            hint="check scope.data splits in odyssey.yaml",
        )
    items = sft_items(tokenizer, cfg, train, max_length)
    fn = collate(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
    return [fn(items[i : i + batch_size]) for i in range(0, len(items), batch_size)]


def block_influence(model, batches) -> list[float]:
    """Per layer, Block Influence (ShortGPT): 1 - mean over real tokens of cos(h_i, h_{i+1})."""
    import torch

    total = None
    count = 0
    with torch.inference_mode():
        for batch in batches:
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
            hs = out.hidden_states  # embeddings, then the output of each layer
            mask = batch["attention_mask"].bool()
            bi = []
            for i in range(len(hs) - 1):
                cos = torch.nn.functional.cosine_similarity(hs[i].float(), hs[i + 1].float(), dim=-1)
                bi.append((1 - cos)[mask].sum())
            bi = torch.stack(bi)
            total = bi if total is None else total + bi
            count += int(mask.sum())
    return (total / max(count, 1)).tolist()
