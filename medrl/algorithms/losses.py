"""Pure loss functions shared by the algorithms (tensors in; tensor + counts out)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_token_nll(
    logits: torch.Tensor, input_ids: torch.Tensor, loss_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean next-token negative log-likelihood over the positions `loss_mask` marks.

    loss = sum_t m_t * -log p(x_t | x_<t) / sum_t m_t, with position t predicted from logits at
    t - 1 (so loss_mask[:, 0] is never used). Positions with m_t = 0 (prompt, padding) do not
    touch the loss, whatever their ids. Returns (loss, number of loss tokens); loss is 0 when
    no position is marked.

    logits [B, L, V], input_ids [B, L], loss_mask [B, L] -> (scalar, scalar)
    """
    targets = input_ids[:, 1:]  # [B, L-1]
    mask = loss_mask[:, 1:].to(logits.dtype)  # [B, L-1]
    nll = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.size(-1)).float(),  # [B*(L-1), V]
        targets.reshape(-1),
        reduction="none",
    ).view_as(targets)  # [B, L-1]
    count = mask.sum()
    loss = (nll * mask).sum() / count.clamp(min=1.0)
    return loss, count
