"""Pure GRPO math: tensors in; tensor + metrics out. No modules, configs, globals or logging.

Letters: B prompts, G completions per prompt, N = B*G rows, C completion length, V vocab.
Names: `logp` (current policy), `old_logp` (the policy that sampled the rollout), `ref_logp`
(the reference policy), `adv` (advantages), `mask` (1 on completion tokens).

References: GRPO, Shao et al. 2024 (DeepSeekMath, arXiv:2402.03300); PPO clipping, Schulman et
al. 2017; dual clip, Ye et al. 2020 (arXiv:1912.09729); clip-higher and token-mean loss, DAPO,
Yu et al. 2025 (arXiv:2503.14476); Dr.GRPO, Liu et al. 2025 (arXiv:2503.20783); KL estimators
k1/k2/k3, Schulman 2020 (http://joschu.net/blog/kl-approx.html); RLOO's leave-one-out baseline,
Ahmadian et al. 2024 (arXiv:2402.14740); GDPO's decoupled reward normalization, Liu et al. 2026
(arXiv:2601.05242); GSPO's sequence-level ratio, Zheng et al. 2025 (arXiv:2507.18071); CISPO's
clipped importance weight, MiniMax 2025 (MiniMax-M1, arXiv:2506.13585); policy gradient on
high-entropy tokens only, Wang et al. 2025 (arXiv:2506.01939).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

STD_SCOPES = ("group", "batch", "none")
STD_ESTIMATORS = ("population", "unbiased")
ADVANTAGE_ESTIMATORS = ("group_mean", "rloo")
REWARD_AGGREGATIONS = ("sum_then_normalize", "normalize_then_sum")
IMPORTANCE_SAMPLING_LEVELS = ("token", "sequence")
POLICY_LOSSES = ("clip", "cispo")
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


def check_eps(eps: float) -> None:
    """The advantage's eps is added to a std: a finite number >= 0 (0 = the paper's formula)."""
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps):
        raise ValueError(f"advantage eps must be a finite number >= 0, got {eps!r}")
    if eps < 0:
        raise ValueError(f"advantage eps must be >= 0 (it is added to a std), got {eps}")


def _check_finite_rewards(rewards: torch.Tensor) -> None:
    if not bool(torch.isfinite(rewards).all()):
        bad = (~torch.isfinite(rewards)).nonzero()[0].tolist()
        raise ValueError(
            f"rewards must be finite; got {rewards[tuple(bad)].item()} at [group, sample] = "
            f"{bad}: a reward function returned a non-finite value"
        )


def _baseline(rewards: torch.Tensor, estimator: str) -> torch.Tensor:
    """Each completion's baseline [B, G]: the group mean, or the mean of the other G - 1
    rewards (RLOO: b_i = (sum_j r_j - r_i) / (G - 1); a group of one is its own baseline)."""
    size = rewards.shape[1]
    if estimator == "group_mean" or size < 2:
        return rewards.mean(dim=1, keepdim=True).expand_as(rewards)
    return (rewards.sum(dim=1, keepdim=True) - rewards) / (size - 1)


def _safe_divide(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """numerator / denominator, and 0 where the denominator is 0 (so never nan or inf)."""
    zero = denominator == 0
    return torch.where(
        zero, torch.zeros_like(numerator), numerator / denominator.masked_fill(zero, 1)
    )


def _advantage_metrics(adv: torch.Tensor, zero_spread: torch.Tensor) -> Metrics:
    return {
        "frac_zero_std": zero_spread.float().mean().item(),
        "adv_mean": adv.mean().item(),
        "adv_std": adv.std(correction=0).item(),
        "adv_min": adv.min().item(),
        "adv_max": adv.max().item(),
    }


def group_advantages(
    rewards: torch.Tensor,
    std_scope: str = "group",
    std_estimator: str = "population",
    eps: float = 1e-4,
    estimator: str = "group_mean",
) -> tuple[torch.Tensor, Metrics]:
    """Group-relative advantages (GRPO eq. 3, outcome supervision; RLOO's baseline).

    A_bg = (r_bg - baseline_bg) / (s + eps), where the baseline is the group mean
    (estimator="group_mean", GRPO) or the mean of the group's other G - 1 rewards ("rloo",
    Ahmadian et al. 2024: r_i - (sum_j r_j - r_i) / (G - 1) = G / (G - 1) (r_i - mean)), and
    s is the std of the group's rewards (std_scope="group"), of all B*G rewards ("batch"), or
    1 with eps = 0 ("none": Dr.GRPO).

    A group whose rewards are all equal (tested on the rewards themselves, before any
    division) and a group of one get exactly 0, whatever the reward values and eps >= 0: in
    float arithmetic their centred rewards are a rounding step off 0, which a zero std would
    otherwise divide by eps alone. A zero denominator (eps = 0 and a zero batch std) gives 0,
    never nan or inf. Computed in float64, returned in float32. Non-finite rewards raise.

    rewards [B, G] -> adv [B, G]; metrics: frac_zero_std (groups whose rewards are all equal),
    adv_mean, adv_std, adv_min, adv_max.
    """
    _choice("std_scope", std_scope, STD_SCOPES)
    _choice("std_estimator", std_estimator, STD_ESTIMATORS)
    _choice("advantage estimator", estimator, ADVANTAGE_ESTIMATORS)
    check_eps(eps)
    _check_finite_rewards(rewards)
    rewards = rewards.double()
    zero_spread = rewards.max(dim=1).values == rewards.min(dim=1).values  # [B]
    centered = rewards - _baseline(rewards, estimator)  # [B, G]
    centered = centered.masked_fill(zero_spread.unsqueeze(1), 0.0)  # [B, G]
    if std_scope == "group":
        denominator = _std(rewards, 1, std_estimator).unsqueeze(1) + eps  # [B, 1]
    elif std_scope == "batch":
        denominator = _std(rewards, None, std_estimator) + eps  # []
    else:
        denominator = torch.ones((), dtype=rewards.dtype)
    adv = _safe_divide(centered, denominator.expand_as(centered)).float()  # [B, G]
    return adv, _advantage_metrics(adv, zero_spread)


def decoupled_advantages(
    components: torch.Tensor,
    weights: Sequence[float],
    std_scope: str = "group",
    std_estimator: str = "population",
    eps: float = 1e-4,
    estimator: str = "group_mean",
) -> tuple[torch.Tensor, dict[int, Metrics]]:
    """GDPO's advantages (Liu et al. 2026, arXiv:2601.05242): normalize each reward component
    within its group, then weight and sum.

    A_bg = sum_k w_k A^k_bg, with A^k = group_advantages(r^k) (same baseline, std scope,
    estimator and eps as a single reward). A component that is equal within a group
    contributes exactly 0 there, so the weight w_k is the component's pull in units of its
    own spread: it is not confounded with the reward's scale, unlike normalizing the weighted
    sum (sum_then_normalize), where each component's pull is w_k times its spread.

    components [B, G, K], weights [K] -> adv [B, G] (float32, summed in float64);
    metrics: one dict per component index k (group_advantages' metrics of A^k).
    """
    if components.dim() != 3 or components.shape[2] != len(weights):
        raise ValueError(
            f"components must be [B, G, K] with K = {len(weights)} weights, got "
            f"{list(components.shape)}"
        )
    total = torch.zeros(components.shape[:2], dtype=torch.float64)  # [B, G]
    metrics = {}
    for k, weight in enumerate(weights):
        adv_k, metrics[k] = group_advantages(
            components[:, :, k], std_scope, std_estimator, eps, estimator
        )  # [B, G]
        total += float(weight) * adv_k.double()
    return total.float(), metrics


def batch_renormalize(
    adv: torch.Tensor, std_estimator: str = "population", eps: float = 1e-4
) -> torch.Tensor:
    """GDPO's last step: the summed advantages divided by their std over the whole batch.

    A'_bg = A_bg / (std_batch(A) + eps). The paper also subtracts the batch mean; with a
    group-mean or leave-one-out baseline every group's advantages sum to 0, so that mean is
    0 up to rounding, and subtracting it would only move zero-signal groups off 0: skipped.
    A zero denominator gives 0. adv [B, G] -> [B, G] float32.
    """
    _choice("std_estimator", std_estimator, STD_ESTIMATORS)
    check_eps(eps)
    adv = adv.double()
    denominator = (_std(adv, None, std_estimator) + eps).expand_as(adv)
    return _safe_divide(adv, denominator).float()


def importance_ratio(
    logp: torch.Tensor, old_logp: torch.Tensor, mask: torch.Tensor, level: str = "token"
) -> torch.Tensor:
    """Importance ratio of the current policy to the one that sampled the rollout; 1 where masked.

    token    (PPO, GRPO): r_it = exp(logp_it - old_logp_it).
    sequence (GSPO eq. 7, Zheng et al. 2025): s_i = exp(1/|y_i| sum_t (logp_it - old_logp_it)),
             the same value at every token of sequence i; its gradient reaches every token's
             logp with weight s_i / |y_i| (the paper's eq. 10).
    logp, old_logp, mask [N, C] -> ratio [N, C]. With old_logp = logp.detach() (mu = 1) the
    ratio is exactly 1 in value at either level while its gradient is that of logp (token) or
    of the mean of the sequence's logp (sequence).
    """
    _choice("importance_sampling", level, IMPORTANCE_SAMPLING_LEVELS)
    m = mask.bool()
    log_ratio = torch.where(m, logp - old_logp, torch.zeros_like(logp))  # [N, C]
    if level == "sequence":
        lengths = m.sum(dim=1, keepdim=True).clamp(min=1)  # [N, 1]
        log_ratio = (log_ratio.sum(dim=1, keepdim=True) / lengths).expand_as(logp)  # [N, C]
    return torch.where(m, torch.exp(log_ratio), torch.ones_like(logp))


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


def cispo_surrogate(
    ratio: torch.Tensor,
    adv: torch.Tensor,
    logp: torch.Tensor,
    mask: torch.Tensor,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
) -> tuple[torch.Tensor, Metrics]:
    """Per-token CISPO loss (MiniMax-M1, arXiv:2506.13585, eq. 4 as a loss).

    l_t = -sg(clip(r_t, 1 - eps_low, 1 + eps_high)) A logp_t, sg = stop-gradient. Its gradient
    is -sg(w_t) A grad logp_t for every token: the clip bounds the importance weight instead
    of zeroing the gradient of tokens outside the trust region, as PPO's clip does. (The value
    is -w A logp, not a ratio: its scale differs from the clipped surrogate's.) adv is per
    sequence [N] or per token [N, C].

    ratio, logp, mask [N, C] -> loss [N, C] (0 where masked); metrics: clip_frac_low
    (r < 1 - eps_low), clip_frac_high (r > 1 + eps_high), whatever the advantage's sign, and
    dual_clip_frac (always 0: no dual clip), over unmasked tokens.
    """
    adv = adv.unsqueeze(1) if adv.dim() == 1 else adv  # [N, 1] or [N, C]
    weight = ratio.detach().clamp(1.0 - eps_low, 1.0 + eps_high)  # [N, C]
    loss = -weight * adv * logp  # [N, C]
    m = mask.bool()
    count = max(int(m.sum()), 1)
    metrics = {
        "clip_frac_low": (((ratio < 1.0 - eps_low) & m).sum() / count).item(),
        "clip_frac_high": (((ratio > 1.0 + eps_high) & m).sum() / count).item(),
        "dual_clip_frac": 0.0,
    }
    return loss * mask, metrics


def policy_gradient_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    adv: torch.Tensor,
    mask: torch.Tensor,
    *,
    policy_loss: str = "clip",
    importance_sampling: str = "token",
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    dual_clip: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, Metrics]:
    """The policy-gradient term per token: the ratio at `importance_sampling`'s level
    (importance_ratio), then the clipped surrogate (policy_loss="clip", PPO / GRPO / GSPO) or
    CISPO's clipped, detached weight ("cispo"), with the clip range [1 - eps_low, 1 + eps_high]
    of that level. dual_clip applies to the clipped surrogate only.

    logp, old_logp, mask [N, C], adv [N] or [N, C] -> (loss [N, C], ratio [N, C], metrics).
    """
    _choice("policy_loss", policy_loss, POLICY_LOSSES)
    ratio = importance_ratio(logp, old_logp, mask, importance_sampling)  # [N, C]
    if policy_loss == "clip":
        loss, metrics = clipped_surrogate(ratio, adv, mask, eps_low, eps_high, dual_clip)
    else:
        if dual_clip is not None:
            raise ValueError("dual_clip applies to policy_loss='clip' only; set it to null")
        loss, metrics = cispo_surrogate(ratio, adv, logp, mask, eps_low, eps_high)
    return loss, ratio, metrics


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


def high_entropy_threshold(entropies: torch.Tensor, top_quantile: float) -> float:
    """The entropy above which a token is among the top `top_quantile` of the rollout's tokens.

    tau = Q_{1 - rho}(H), the (1 - rho) quantile (linear interpolation, torch.quantile) of the
    entropies H of every completion token of the rollout, rho = top_quantile in (0, 1]
    (Wang et al. 2025 keep rho = 0.2: policy gradient on the 20% highest-entropy "forking"
    tokens; TRL's top_entropy_quantile). entropies [T] (completion tokens only) -> tau;
    -inf when there are none (every token then qualifies).
    """
    if not 0 < top_quantile <= 1:
        raise ValueError(f"entropy top_quantile must be in (0, 1] (or null), got {top_quantile}")
    if entropies.numel() == 0:
        return -math.inf
    return torch.quantile(entropies.double(), 1.0 - top_quantile).item()


def high_entropy_mask(entropy: torch.Tensor, mask: torch.Tensor, threshold: float) -> torch.Tensor:
    """1 on completion tokens whose entropy is >= threshold (high_entropy_threshold), else 0.

    entropy, mask [N, C] -> [N, C] in mask's dtype."""
    return ((entropy >= threshold) & mask.bool()).to(mask.dtype)


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
    policy_loss: str = "clip",
    importance_sampling: str = "token",
    entropy: torch.Tensor | None = None,
    entropy_coef: float = 0.0,
    pg_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, Metrics]:
    """The GRPO objective as a loss: aggregate(pg_mask * policy gradient + beta * KL
    - entropy_coef * entropy).

    The policy-gradient term is policy_gradient_loss's (policy_loss, importance_sampling and
    the clip range of that level); the KL term sits in the loss (GRPO eq. 3), not in the reward,
    and beta = 0 needs no ref_logp. entropy_coef > 0 adds an entropy bonus (verl's
    entropy_coeff; `entropy` [N, C] must then carry gradients). pg_mask [N, C] (high_entropy_mask)
    keeps the policy gradient of some tokens only (Wang et al. 2025); the KL and entropy terms
    and every normalizer still count all completion tokens, as TRL's top_entropy_quantile does.
    (With importance_sampling="sequence" a kept token's term depends on every token of its
    sequence through s_i, so masked tokens still receive gradient through it, as in TRL.)
    Shapes as in the functions above; returns (loss, metrics: pg_loss, kl, ratio_mean, the
    clip fractions, and pg_token_frac / entropy_loss when those options are on).
    """
    if beta > 0 and ref_logp is None:
        raise ValueError("beta > 0 needs ref_logp (the reference policy's log-probs)")
    if entropy_coef < 0:
        raise ValueError(f"entropy_coef must be >= 0 (a bonus), got {entropy_coef}")
    if entropy_coef > 0 and (entropy is None or not entropy.requires_grad):
        raise ValueError("entropy_coef > 0 needs the entropy [N, C] with gradients")
    agg = dict(
        mode=aggregation,
        max_completion_length=max_completion_length,
        total_sequences=total_sequences,
        total_tokens=total_tokens,
    )
    pg, ratio, metrics = policy_gradient_loss(
        logp,
        old_logp,
        adv,
        mask,
        policy_loss=policy_loss,
        importance_sampling=importance_sampling,
        eps_low=eps_low,
        eps_high=eps_high,
        dual_clip=dual_clip,
    )  # [N, C]
    m = mask.bool()
    count = max(int(m.sum()), 1)
    if pg_mask is not None:
        pg = pg * pg_mask  # [N, C]
        metrics["pg_token_frac"] = ((pg_mask.bool() & m).sum() / count).item()
    per_token = pg
    if ref_logp is not None:
        kl = kl_penalty(logp, ref_logp, mask, kl_estimator)  # [N, C]
        metrics["kl"] = (kl.sum() / count).item()
        if beta > 0:
            per_token = per_token + beta * kl
    if entropy_coef > 0:
        entropy_loss = aggregate_loss(entropy, mask, **agg)
        metrics["entropy_loss"] = entropy_loss.item()
        per_token = per_token - entropy_coef * entropy * mask
    metrics["pg_loss"] = aggregate_loss(pg, mask, **agg).item()
    metrics["ratio_mean"] = (ratio[m].mean().item()) if m.any() else 1.0
    return aggregate_loss(per_token, mask, **agg), metrics
