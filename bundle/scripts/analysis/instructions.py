"""The RIN's instructions: a 2-D embedding for the eye, and how well the task can be told from the instruction.

The embedding is scikit-learn's t-SNE where scikit-learn is installed (it comes with nilearn, a bundle
requirement), else the first two principal components; t-SNE also falls back to PCA for fewer than 5 slices.
Separability is the cross-validated accuracy of a nearest-centroid classifier (Euclidean) of the task from the
instruction. Folds are contiguous blocks of each task's slices in data-list order, so neighbouring slices of one
volume (nearly the same image) are not split between training and test folds.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["pca_2d", "embed_2d", "Separability", "nearest_centroid_cv"]

logger = logging.getLogger(__name__)

_MIN_TSNE = 5


def pca_2d(x: np.ndarray) -> np.ndarray:
    """The first two principal components of ``(N, D)`` rows, ``(N, 2)`` (zeros where there is no variance)."""
    x = np.asarray(x, dtype=np.float64)
    centred = x - x.mean(axis=0, keepdims=True)
    out = np.zeros((x.shape[0], 2))
    if x.shape[0] < 2:
        return out
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    k = min(2, s.shape[0])
    out[:, :k] = u[:, :k] * s[:k]
    return out


def embed_2d(x: np.ndarray, method: str = "tsne", seed: int = 0) -> tuple[np.ndarray, str]:
    """A 2-D embedding of ``(N, D)`` instructions.

    Args:
        x: one row per slice.
        method: ``"tsne"`` (scikit-learn's, PCA where it is not installed or N < 5) or ``"pca"``.
        seed: t-SNE's random state.

    Returns:
        ``(N, 2)`` coordinates and the name of the method used (``"t-SNE"`` or ``"PCA"``).
    """
    if method not in ("tsne", "pca"):
        raise ValueError(f"embedding must be 'tsne' or 'pca', got {method!r}")
    x = np.asarray(x, dtype=np.float64)
    if method == "tsne" and x.shape[0] >= _MIN_TSNE:
        if importlib.util.find_spec("sklearn") is None:
            logger.warning("scikit-learn is not installed: the instruction embedding is a PCA instead of a t-SNE.")
        else:
            from sklearn.manifold import TSNE

            perplexity = float(min(30.0, (x.shape[0] - 1) / 3.0))
            tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed, learning_rate="auto")
            return tsne.fit_transform(x), "t-SNE"
    return pca_2d(x), "PCA"


@dataclass
class Separability:
    """Cross-validated nearest-centroid classification of the task from the instruction.

    Attributes:
        tasks: class order.
        accuracy: fraction of slices whose task is predicted right.
        chance: accuracy of always predicting the most frequent task.
        confusion: ``(T, T)`` counts, rows true task, columns predicted.
        folds: number of folds.
    """

    tasks: list[str]
    accuracy: float
    chance: float
    confusion: np.ndarray
    folds: int


def nearest_centroid_cv(x: np.ndarray, labels: Sequence[str], folds: int = 5) -> Separability | None:
    """Nearest-centroid accuracy of ``labels`` from ``x``, with k-fold cross-validation stratified by label.

    Each label's rows (in order) are cut into ``k`` contiguous blocks, ``k = min(folds, rows of the rarest label)``;
    fold f holds block f of every label. The centroids are computed without the fold, and the fold's rows are given
    the label of the nearest one.

    Args:
        x: ``(N, D)`` rows.
        labels: label of each row.
        folds: the most folds to use.

    Returns:
        The :class:`Separability`, or None with fewer than 2 labels or a label with a single row.
    """
    x = np.asarray(x, dtype=np.float64)
    labels = [str(v) for v in labels]
    tasks = list(dict.fromkeys(labels))
    counts = [labels.count(t) for t in tasks]
    if len(tasks) < 2 or min(counts) < 2:
        return None
    k = min(int(folds), min(counts))
    fold_of = np.zeros(len(labels), dtype=int)
    for t, n in zip(tasks, counts, strict=True):
        rows = [i for i, v in enumerate(labels) if v == t]
        fold_of[rows] = np.arange(n) * k // n
    y = np.array([tasks.index(v) for v in labels])
    confusion = np.zeros((len(tasks), len(tasks)), dtype=int)
    for f in range(k):
        train, test = fold_of != f, fold_of == f
        centroids = np.stack([x[train & (y == c)].mean(axis=0) for c in range(len(tasks))])
        distances = ((x[test][:, None, :] - centroids[None]) ** 2).sum(-1)
        for true, pred in zip(y[test], distances.argmin(1), strict=True):
            confusion[true, pred] += 1
    accuracy = float(np.trace(confusion) / confusion.sum())
    return Separability(tasks, accuracy, max(counts) / len(labels), confusion, k)
