"""Batches and the loss of LoRA training: tokenised (prompt, answer) pairs, left-padded so
every answer ends its row, and a next-token loss over the answer tokens only."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lmforge.finetune import TrainingExample

__all__ = ["collate", "encode", "evaluate_loss", "loss"]


def encode(
    tokenizer: Any, examples: Sequence[TrainingExample], max_length: int
) -> tuple[list[tuple[list[int], list[int]]], int]:
    """(input ids, labels) per example: the prompt as the runtime tokenizes it (with BOS),
    then the completion and EOS; prompt positions are masked out of the loss."""
    encoded: list[tuple[list[int], list[int]]] = []
    skipped = 0
    eos = tokenizer.eos_token_id
    for example in examples:
        prompt = list(tokenizer(example.prompt, add_special_tokens=True)["input_ids"])
        answer = list(tokenizer(example.completion, add_special_tokens=False)["input_ids"])
        if eos is not None:
            answer.append(int(eos))
        if len(prompt) + len(answer) > max_length:
            skipped += 1
            continue
        encoded.append((prompt + answer, [-100] * len(prompt) + answer))
    return encoded, skipped


def collate(
    torch: Any, batch: Sequence[tuple[list[int], list[int]]], pad: int, device: Any
) -> tuple[Any, Any, Any, Any]:
    """Left-padded ids, attention mask, position ids and labels: every answer ends its row,
    so logits are only needed for the last few positions (see :func:`loss`)."""
    width = max(len(ids) for ids, _ in batch)
    ids = [[pad] * (width - len(x)) + x for x, _ in batch]
    labels = [[-100] * (width - len(y)) + y for _, y in batch]
    mask = [[0] * (width - len(x)) + [1] * len(x) for x, _ in batch]
    positions = [[0] * (width - len(x)) + list(range(len(x))) for x, _ in batch]
    return (
        torch.tensor(ids, device=device),
        torch.tensor(mask, device=device),
        torch.tensor(positions, device=device),
        torch.tensor(labels, device=device),
    )


def loss(torch: Any, model: Any, batch: Any) -> Any:
    """Mean next-token loss over the answer tokens. Only the logits of the positions that
    predict answer tokens are computed (``logits_to_keep``): with a 262k-token vocabulary
    the output layer over every prompt position costs about as much as the rest of the step.
    The positions match inference, where the prompt starts at position 0."""
    ids, mask, positions, labels = batch
    answer = labels != -100
    first = int(answer.float().argmax(dim=1).min())  # earliest answer position in the batch
    keep = ids.shape[1] - first + 1
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep)
    logits = out.logits[:, :-1]
    targets = labels[:, ids.shape[1] - keep + 1 :]
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=-100
    )


def evaluate_loss(
    torch: Any,
    model: Any,
    data: Sequence[tuple[list[int], list[int]]],
    pad: int,
    device: Any,
    size: int,
) -> float:
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(data), size):
            batch = data[start : start + size]
            total += float(loss(torch, model, collate(torch, batch, pad, device))) * len(batch)
            count += len(batch)
    return round(total / max(count, 1), 6)
