"""Weighted k-nearest-neighbour classification on L2-normalised features (docs/method.md, "Evaluation protocols")."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import SnsError

# The kNN k that fits the memory bank: with k near or above a class's size, every vote pulls in other classes.
# The k used is capped by the bank's smallest class:
#     k_used = min(knn_k, max(1, floor(KNN_CAP_FRACTION x smallest class count)), bank size)
# KNN_CAP_FRACTION = 0.4 is the share of a class that the standard k=200 takes on CIFAR-100 (200 of 500), so
# CIFAR-10 (5000 per class) and CIFAR-100 keep k=200 and a smaller bank gets no larger share of a class.
# Measured on the embedded digits (1437 train images, 138-147 per class -> k=55), fp32 features, top-1 %:
#     k                      1      10     20     34     55     69     100    138    200
#     raw pixels             97.50  98.33  97.50  97.50  97.50  97.50  97.50  97.22  96.94
#     sns (digits preset)    96.11  95.00  95.28  93.61  91.94  90.00  89.17  86.94  85.56
# (sns: 200 steps, the committed digits teacher.) k=200 cost the learned features 10 points and raw pixels
# 0.6; k=55 keeps the CIFAR-100 protocol's share of a class (knn_cap=0.1 gives k=13, the small-k plateau).
KNN_CAP_FRACTION = 0.4


def check_labelled(features: torch.Tensor, labels: torch.Tensor, what: str) -> None:
    """Raise SnsError unless ``features`` is (N, D) with N >= 1 and ``labels`` are N class ids >= 0."""
    if features.ndim != 2:
        raise SnsError(f"{what} features must be (N, D), got shape {tuple(features.shape)}")
    if labels.ndim != 1 or labels.shape[0] != features.shape[0]:
        raise SnsError(f"{what}: {features.shape[0]} feature rows but labels of shape {tuple(labels.shape)}")
    if features.shape[0] == 0:
        raise SnsError(f"{what} set is empty; evaluation needs labelled images")
    if int(labels.min()) < 0:
        raise SnsError(
            f"{what} set holds unlabelled images (label -1); drop them first (evaluate() does) or use a labelled split"
        )


def infer_num_classes(*labels: torch.Tensor, num_classes: int | None = None) -> int:
    """``num_classes`` if given (checked against the labels), else 1 + the largest label seen."""
    seen = max(int(y.max()) for y in labels) + 1
    if num_classes is None:
        return seen
    if num_classes < seen:
        raise SnsError(f"num_classes={num_classes} but a label {seen - 1} occurs; pass a larger num_classes")
    return int(num_classes)


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> dict[str, float]:
    """Percent of rows whose label is among the ``k`` highest scores, for each k (clipped to the class count)."""
    kmax = min(max(ks), scores.shape[1])
    ranked = scores.topk(kmax, dim=1).indices
    hit = ranked == labels.view(-1, 1).to(ranked.device)
    return {f"top{k}": 100.0 * hit[:, : min(k, kmax)].any(dim=1).float().mean().item() for k in ks}


def capped_k(k: int, bank_labels: torch.Tensor, fraction: float = KNN_CAP_FRACTION) -> int:
    """The k a kNN vote over this bank uses: ``min(k, max(1, floor(fraction * smallest class)), bank size)``.

    Classes are the labels >= 0 that occur in the bank; ``fraction=0`` turns the cap off (k clipped to the
    bank size only). Example: 3 classes of 5 images, k=200, fraction 1 -> 5.
    """
    if k < 1 or fraction < 0:
        raise SnsError(f"kNN needs k >= 1 and a cap fraction >= 0; got k={k}, fraction={fraction}")
    labels = bank_labels[bank_labels >= 0].long()
    if labels.numel() == 0:
        raise SnsError("kNN memory bank holds no labelled images")
    k = min(int(k), labels.numel())
    if fraction:
        counts = torch.bincount(labels)
        smallest = int(counts[counts > 0].min())
        k = min(k, max(1, math.floor(fraction * smallest + 1e-9)))
    return k


def cap_rule(cap: float) -> str:
    """The rule :func:`capped_k` applies with ``cap``, in words (for JSON results and reports)."""
    if not cap:
        return "k = min(knn_k, bank size)"
    return f"k = min(knn_k, floor({cap:g} x smallest class of the bank), bank size)"


def knn_settings(k: int, t: float, bank_labels: torch.Tensor, cap: float = 0.0) -> dict:
    """What a kNN result was made with, for its JSON: the k used and t, the k asked for, the cap and the bank."""
    labels = bank_labels[bank_labels >= 0].long()
    counts = torch.bincount(labels) if labels.numel() else torch.zeros(1, dtype=torch.long)
    smallest = int(counts[counts > 0].min()) if labels.numel() else 0
    return {
        "k": capped_k(k, bank_labels, cap),
        "t": t,
        "knn_k": k,
        "cap": cap,
        "rule": cap_rule(cap),
        "bank": int(labels.numel()),
        "smallest_class": smallest,
    }


def knn_predict(
    train_f: torch.Tensor,
    train_y: torch.Tensor,
    query_f: torch.Tensor,
    k: int = 200,
    t: float = 0.1,
    num_classes: int | None = None,
    chunk: int = 1024,
) -> torch.Tensor:
    """Class scores (Nq, C): each query's k most cosine-similar bank rows vote exp(sim / t) for their label.

    The bank is the training set; ``k`` is clipped to its size. Queries go ``chunk`` at a time so that the
    similarity matrix held at once is at most chunk x N_bank.
    """
    if k < 1 or t <= 0 or chunk < 1:
        raise SnsError(f"kNN needs k >= 1, t > 0 and chunk >= 1; got k={k}, t={t}, chunk={chunk}")
    num_classes = infer_num_classes(train_y, num_classes=num_classes)
    bank = F.normalize(train_f.float(), dim=1)
    bank_y = train_y.to(bank.device).long()
    k = min(k, bank.shape[0])
    out = []
    for start in range(0, query_f.shape[0], chunk):
        q = F.normalize(query_f[start : start + chunk].float().to(bank.device), dim=1)
        sim, idx = (q @ bank.T).topk(k, dim=1)
        votes = (sim / t).exp()
        scores = torch.zeros(q.shape[0], num_classes, device=bank.device)
        scores.scatter_add_(1, bank_y[idx], votes)
        out.append(scores)
    return torch.cat(out) if out else torch.zeros(0, num_classes)


def knn_eval(
    train_f: torch.Tensor,
    train_y: torch.Tensor,
    test_f: torch.Tensor,
    test_y: torch.Tensor,
    k: int = 200,
    t: float = 0.1,
    num_classes: int | None = None,
    chunk: int = 1024,
    cap: float = 0.0,
) -> dict[str, float]:
    """Weighted kNN accuracy of the test set against the train-set memory bank: {"top1": %, "top5": %}.

    ``cap`` > 0 caps k by that fraction of the bank's smallest class (:func:`capped_k`; `sns eval` and the
    pretraining monitor use KNN_CAP_FRACTION); 0 (the default here) uses ``k`` as given, clipped to the bank.
    """
    check_labelled(train_f, train_y, "kNN train (memory bank)")
    check_labelled(test_f, test_y, "kNN test")
    if train_f.shape[1] != test_f.shape[1]:
        raise SnsError(f"kNN: train features have {train_f.shape[1]} dims, test features {test_f.shape[1]}")
    num_classes = infer_num_classes(train_y, test_y, num_classes=num_classes)
    k = capped_k(k, train_y, cap)
    scores = knn_predict(train_f, train_y, test_f, k=k, t=t, num_classes=num_classes, chunk=chunk)
    return topk_accuracy(scores, test_y)
