"""Pure GRPO math: tensors in; tensor + metrics out. No modules, configs, globals or logging.

Letters: B prompts, G completions per prompt, N = B*G rows, C completion length, V vocab.
Names: `logp` (current policy), `old_logp` (the policy that sampled the rollout), `ref_logp`
(the reference policy), `adv` (advantages), `mask` (1 on completion tokens).

References: GRPO, Shao et al. 2024 (DeepSeekMath, arXiv:2402.03300); PPO clipping, Schulman et
al. 2017; dual clip, Ye et al. 2020 (arXiv:1912.09729); clip-higher and token-mean loss, DAPO,
Yu et al. 2025 (arXiv:2503.14476); Dr.GRPO, Liu et al. 2025 (arXiv:2503.20783); KL estimators
k1/k2/k3, Schulman 2020 (http://joschu.net/blog/kl-approx.html).
"""

from __future__ import annotations

import torch

STD_SCOPES = ("group", "batch", "none")
STD_ESTIMATORS = ("population", "unbiased")
KL_ESTIMATORS = ("k1", "k2", "k3")
AGGREGATIONS = ("seq_mean_token_mean", "token_mean", "seq_mean_token_sum_norm")

Metrics = dict[str, float]


def _choice(name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"{name}={value!r} is not valid; choose one of {list(valid)}")


def _std(x: torch.Tensor, dim: int | None, estimator: str) -> torch.Tensor:
    """Standard deviation; the unbiased estimator of a single value is defined as 0 here."""
    count = x.numel() if dim is None else x.shape[dim]
    if estimator == "unbiased" and count < 2:
        return torch.zeros_like(x.mean() if dim is None else x.mean(dim=dim))
    correction = 1 if estimator == "unbiased" else 0
    return x.std(correction=correction) if dim is None else x.std(dim=dim, correction=correction)


def group_advantages(
    rewards: torch.Tensor,
    std_scope: str = "group",
    std_estimator: str = "population",
    eps: float = 1e-4,
) -> tuple[torch.Tensor, Metrics]:
    """Group-relative advantages (GRPO eq. 3, outcome supervision).

    A_bg = (r_bg - mean_g r_bg) / (s + eps), where s is the std of the group's rewards
    (std_scope="group"), of all B*G rewards ("batch"), or 1 with eps = 0 ("none": Dr.GRPO).
    A group of one, or with equal rewards, gets advantage 0.

    rewards [B, G] -> adv [B, G]; metrics: frac_zero_std (groups whose rewards are all equal),
    adv_mean, adv_std, adv_min, adv_max.
    """
    _choice("std_scope", std_scope, STD_SCOPES)
    _choice("std_estimator", std_estimator, STD_ESTIMATORS)
    rewards = rewards.float()
    centered = rewards - rewards.mean(dim=1, keepdim=True)  # [B, G]
    if std_scope == "group":
        adv = centered / (_std(rewards, 1, std_estimator).unsqueeze(1) + eps)  # [B, G]
    elif std_scope == "batch":
        adv = centered / (_std(rewards, None, std_estimator) + eps)  # [B, G]
    else:
        adv = centered
    zero_std = (rewards.max(dim=1).values == rewards.min(dim=1).values).float()  # [B]
    metrics = {
        "frac_zero_std": zero_std.mean().item(),
        "adv_mean": adv.mean().item(),
        "adv_std": adv.std(correction=0).item(),
        "adv_min": adv.min().item(),
        "adv_max": adv.max().item(),
    }
    return adv, metrics


def importance_ratio(
    logp: torch.Tensor, old_logp: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Per-token ratio pi_theta / pi_old = exp(logp - old_logp); 1 on masked positions.

    logp, old_logp, mask [N, C] -> ratio [N, C]. With old_logp = logp.detach() (mu = 1) the
    ratio is exactly 1 in value while its gradient is that of logp.
    """
    return torch.where(mask.bool(), torch.exp(logp - old_logp), torch.ones_like(logp))


def clipped_surrogate(
    ratio: torch.Tensor,
    adv: torch.Tensor,
    mask: torch.Tensor,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    dual_clip: float | None = None,
) -> tuple[torch.Tensor, Metrics]:
    """Per-token clipped policy-gradient loss (PPO eq. 7 as a loss, DAPO clip-higher).

    l_t = max(-A r_t, -A clip(r_t, 1 - eps_low, 1 + eps_high)); with dual_clip = c > 1, tokens
    with A < 0 are bounded by -A c (Ye et al. 2020). adv is per sequence [N] or per token [N, C].

    ratio, mask [N, C] -> loss [N, C] (0 where masked); metrics: clip_frac_low (A < 0 and
    r < 1 - eps_low: the clip is active), clip_frac_high (A > 0 and r > 1 + eps_high),
    dual_clip_frac, over unmasked tokens.
    """
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be > 1 (or null), got {dual_clip}")
    adv = adv.unsqueeze(1) if adv.dim() == 1 else adv  # [N, 1] or [N, C]
    unclipped = -adv * ratio  # [N, C]
    clipped = -adv * ratio.clamp(1.0 - eps_low, 1.0 + eps_high)  # [N, C]
    loss = torch.maximum(unclipped, clipped)  # [N, C]
    dual_active = torch.zeros_like(loss, dtype=torch.bool)
    if dual_clip is not None:
        bound = -adv * dual_clip  # [N, C]
        dual_active = (adv < 0) & (loss > bound)
        loss = torch.where(adv < 0, torch.minimum(loss, bound), loss)
    m = mask.bool()
    count = max(int(m.sum()), 1)
    metrics = {
        "clip_frac_low": (((ratio < 1.0 - eps_low) & (adv < 0) & m).sum() / count).item(),
        "clip_frac_high": (((ratio > 1.0 + eps_high) & (adv > 0) & m).sum() / count).item(),
        "dual_clip_frac": ((dual_active & m).sum() / count).item(),
    }
    return loss * mask, metrics


def kl_penalty(
    logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor, estimator: str = "k3"
) -> torch.Tensor:
    """Per-token estimate of KL(pi_theta || pi_ref) from samples of pi_theta (Schulman 2020).

    With x = ref_logp - logp: k1 = -x, k2 = x^2 / 2, k3 = exp(x) - 1 - x (unbiased and >= 0,
    the GRPO paper's eq. 4). logp, ref_logp, mask [N, C] -> kl [N, C] (0 where masked).
    """
    _choice("kl estimator", estimator, KL_ESTIMATORS)
    x = ref_logp - logp  # [N, C]
    if estimator == "k1":
        kl = -x
    elif estimator == "k2":
        kl = 0.5 * x.pow(2)
    else:
        kl = torch.exp(x) - 1.0 - x
    return kl * mask


def aggregate_loss(
    per_token: torch.Tensor,
    mask: torch.Tensor,
    mode: str = "seq_mean_token_mean",
    max_completion_length: int | None = None,
    total_sequences: int | None = None,
    total_tokens: int | None = None,
) -> torch.Tensor:
    """Reduce a per-token loss [N, C] to a scalar.

    seq_mean_token_mean      (GRPO paper): 1/S sum_i 1/|o_i| sum_t l_it
    token_mean               (DAPO):       1/T sum_i sum_t l_it, T = all completion tokens
    seq_mean_token_sum_norm  (Dr.GRPO):    1/(S L) sum_i sum_t l_it, L = max_completion_length
    S and T default to this batch's sequences and tokens; pass the full rollout's totals when
    the rollout is split into micro-batches, so that summing the micro-batch losses gives the
    loss of the whole rollout exactly. Sequences without tokens contribute 0.
    """
    _choice("loss_aggregation", mode, AGGREGATIONS)
    mask = mask.to(per_token.dtype)
    sequences = total_sequences if total_sequences is not None else per_token.shape[0]
    if mode == "token_mean":
        tokens = total_tokens if total_tokens is not None else mask.sum()
        return (per_token * mask).sum() / max(float(tokens), 1.0)
    if mode == "seq_mean_token_sum_norm":
        if not max_completion_length:
            raise ValueError("seq_mean_token_sum_norm needs max_completion_length (constant L)")
        return (per_token * mask).sum() / (max(sequences, 1) * max_completion_length)
    lengths = mask.sum(dim=1).clamp(min=1.0)  # [N]
    return ((per_token * mask).sum(dim=1) / lengths).sum() / max(sequences, 1)


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the next-token distribution, -sum_v p_v log p_v. logits [..., V] -> [...]."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


def grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    ref_logp: torch.Tensor | None,
    adv: torch.Tensor,
    mask: torch.Tensor,
    *,
    eps_low: float,
    eps_high: float,
    dual_clip: float | None,
    beta: float,
    kl_estimator: str,
    aggregation: str,
    max_completion_length: int | None = None,
    total_sequences: int | None = None,
    total_tokens: int | None = None,
) -> tuple[torch.Tensor, Metrics]:
    """The GRPO objective as a loss: aggregate(clipped surrogate + beta * KL).

    The KL term sits in the loss (GRPO eq. 3), not in the reward; beta = 0 needs no ref_logp.
    Shapes as in the functions above; returns (loss, metrics: pg_loss, kl, ratio_mean and the
    clip fractions).
    """
    if beta > 0 and ref_logp is None:
        raise ValueError("beta > 0 needs ref_logp (the reference policy's log-probs)")
    agg = dict(
        mode=aggregation,
        max_completion_length=max_completion_length,
        total_sequences=total_sequences,
        total_tokens=total_tokens,
    )
    ratio = importance_ratio(logp, old_logp, mask)  # [N, C]
    pg, metrics = clipped_surrogate(ratio, adv, mask, eps_low, eps_high, dual_clip)  # [N, C]
    per_token = pg
    m = mask.bool()
    if ref_logp is not None:
        kl = kl_penalty(logp, ref_logp, mask, kl_estimator)  # [N, C]
        metrics["kl"] = (kl.sum() / max(int(m.sum()), 1)).item()
        if beta > 0:
            per_token = pg + beta * kl
    metrics["pg_loss"] = aggregate_loss(pg, mask, **agg).item()
    metrics["ratio_mean"] = (ratio[m].mean().item()) if m.any() else 1.0
    return aggregate_loss(per_token, mask, **agg), metrics
