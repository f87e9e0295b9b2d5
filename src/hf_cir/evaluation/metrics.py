"""Ranking metrics of composed image retrieval: Recall@K and mAP@K, with ties broken pessimistically.

Every function takes similarity scores (higher is better). When a ground truth and another image get exactly the
same score, the other image ranks first: a retrieval that cannot tell them apart gets no credit for it. The
references sort with `torch.argsort`, whose order among equal scores is unspecified; on scores without ties
both give the same numbers.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

__all__ = ["average_precision_at_k", "ranked_top_k", "recall_at_k", "target_ranks"]


def target_ranks(scores: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """0-based rank of each row's target among the row's valid gallery items.

    Args:
        scores: `[Q, G]` similarities.
        targets: `[Q]` gallery index of each query's target.
        valid: optional `[Q, G]` boolean mask of the items each query ranks (e.g. CIRR removes the reference).
            The target must be valid.

    Returns:
        `[Q]` long tensor: the number of valid items other than the target scored at least as high as the target.

    Example:

    ```python
    >>> import torch
    >>> from hf_cir.evaluation.metrics import target_ranks
    >>> target_ranks(torch.tensor([[0.1, 0.9, 0.9]]), torch.tensor([1])).tolist()  # a tie ranks first
    [1]
    ```
    """
    if scores.ndim != 2 or targets.shape != (scores.shape[0],):
        raise ValueError(
            f"Expected scores [Q, G] and targets [Q], got {tuple(scores.shape)} and {tuple(targets.shape)}."
        )
    targets = targets.to(scores.device, torch.long)
    rows = torch.arange(scores.shape[0], device=scores.device)
    target_scores = scores[rows, targets].unsqueeze(1)
    ahead = scores >= target_scores
    ahead[rows, targets] = False
    if valid is not None:
        if not bool(valid[rows, targets].all()):
            raise ValueError("A query's target is excluded from its own gallery.")
        ahead &= valid
    return ahead.sum(dim=1)


def recall_at_k(ranks: torch.Tensor, ks: Iterable[int]) -> dict[int, float]:
    """Recall@K in percent: the share of queries whose target rank (0-based) is below K.

    Example:

    ```python
    >>> import torch
    >>> from hf_cir.evaluation.metrics import recall_at_k
    >>> recall_at_k(torch.tensor([0, 3]), [1, 5])
    {1: 50.0, 5: 100.0}
    ```
    """
    ranks = torch.as_tensor(ranks)
    if ranks.numel() == 0:
        raise ValueError("No queries to compute Recall@K over.")
    return {k: float((ranks < k).double().mean().item() * 100.0) for k in ks}


def ranked_top_k(
    scores: torch.Tensor, k: int, relevant: torch.Tensor | None = None, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Indices of the `k` best valid items of one query, best first.

    Among equal scores, non-relevant items come before relevant ones (pessimistic), then lower indices first.

    Args:
        scores: `[G]` similarities of one query.
        k: How many to return (fewer if fewer items are valid).
        relevant: optional `[G]` boolean mask of ground truths.
        valid: optional `[G]` boolean mask of rankable items.

    Example:

    ```python
    >>> import torch
    >>> from hf_cir.evaluation.metrics import ranked_top_k
    >>> ranked_top_k(torch.tensor([0.5, 0.9, 0.5]), 3, relevant=torch.tensor([True, False, False])).tolist()
    [1, 2, 0]
    ```
    """
    scores = scores.detach().float().cpu()
    count = scores.shape[0]
    valid = torch.ones(count, dtype=torch.bool) if valid is None else valid.cpu().bool()
    relevant = torch.zeros(count, dtype=torch.bool) if relevant is None else relevant.cpu().bool()
    k = min(k, int(valid.sum()))
    if k <= 0:
        return torch.empty(0, dtype=torch.long)
    masked = scores.masked_fill(~valid, float("-inf"))
    threshold = torch.topk(masked, k).values[-1]
    candidates = torch.nonzero(valid & (masked >= threshold)).squeeze(1).numpy()
    order = np.lexsort((candidates, relevant.numpy()[candidates], -scores.numpy()[candidates]))
    return torch.from_numpy(candidates[order][:k].copy())


def average_precision_at_k(is_relevant: torch.Tensor, num_relevant: int, k: int) -> float:
    """AP@K as CIRCO defines it: sum of precision@i at each relevant rank i <= K, over min(num_relevant, K).

    Args:
        is_relevant: boolean relevance of the ranked list (best first), at least `k` long or the whole gallery.
        num_relevant: number of ground truths of the query.
        k: cut-off.

    Example:

    ```python
    >>> import torch
    >>> from hf_cir.evaluation.metrics import average_precision_at_k
    >>> average_precision_at_k(torch.tensor([True, False, True]), num_relevant=2, k=3)  # (1/1 + 2/3) / 2
    0.8333333333333333
    ```
    """
    if num_relevant <= 0:
        raise ValueError("A query needs at least one ground truth for AP@K.")
    hits = torch.as_tensor(is_relevant[:k], dtype=torch.float64)
    precision = torch.cumsum(hits, 0) / torch.arange(1, hits.shape[0] + 1, dtype=torch.float64)
    return float((precision * hits).sum().item() / min(num_relevant, k))
