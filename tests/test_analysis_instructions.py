"""scripts.analysis.instructions: embedding of the instructions and nearest-centroid task separability."""

import numpy as np
import pytest
from scripts.analysis import embed_2d, nearest_centroid_cv, pca_2d


def clusters(seed: int = 0, per_task: int = 6) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    centres = {"mri": 0.0, "ct": 5.0, "pet": -5.0}
    x = np.concatenate([c + 0.1 * rng.standard_normal((per_task, 8)) for c in centres.values()])
    return x, [t for t in centres for _ in range(per_task)]


def test_pca_of_points_on_a_line():
    t = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    direction = np.array([3.0, 4.0, 0.0]) / 5.0
    out = pca_2d(t[:, None] * direction[None] + 7.0)
    np.testing.assert_allclose(np.abs(out[:, 0]), np.abs(t), atol=1e-12)
    np.testing.assert_allclose(out[:, 1], 0.0, atol=1e-12)
    np.testing.assert_array_equal(pca_2d(np.ones((1, 4))), np.zeros((1, 2)))


@pytest.mark.parametrize("method", ["tsne", "pca"])
def test_embedding_has_one_finite_row_per_instruction(method):
    x, _ = clusters()
    coords, name = embed_2d(x, method)
    assert coords.shape == (18, 2) and np.all(np.isfinite(coords))
    assert name == ("t-SNE" if method == "tsne" else "PCA")
    small, name = embed_2d(x[:3], "tsne")  # too few rows for t-SNE
    assert small.shape == (3, 2) and name == "PCA"
    with pytest.raises(ValueError, match="embedding"):
        embed_2d(x, "umap")


def test_separated_clusters_are_classified_perfectly():
    x, labels = clusters()
    sep = nearest_centroid_cv(x, labels, folds=3)
    assert sep.tasks == ["mri", "ct", "pet"] and sep.folds == 3
    assert sep.accuracy == 1.0 and sep.chance == pytest.approx(1 / 3)
    np.testing.assert_array_equal(sep.confusion, 6 * np.eye(3))


def test_identical_instructions_are_not_separable_and_small_sets_give_none():
    x = np.ones((12, 4))
    labels = ["mri"] * 6 + ["ct"] * 6
    sep = nearest_centroid_cv(x, labels)
    assert sep.confusion.sum() == 12 and sep.accuracy == 0.5  # ties go to the first centroid: all "mri"
    assert sep.folds == 5
    assert nearest_centroid_cv(x[:7], labels[:7]) is None  # one "ct" slice only
    assert nearest_centroid_cv(x[:6], labels[:6]) is None  # one task


def test_folds_are_contiguous_blocks():
    """A task whose slices drift (first half near A, second half near B) is misclassified under contiguous folds."""
    a, b = np.zeros(2), np.full(2, 10.0)
    x = np.stack([a, a, b, b, a + 0.1, a + 0.1, a - 0.1, a - 0.1])
    labels = ["mri", "mri", "mri", "mri", "ct", "ct", "ct", "ct"]
    sep = nearest_centroid_cv(x, labels, folds=2)
    # fold 0 tests mri's a-like slices against an mri centroid at b: "ct"; fold 1 tests its b-like slices against an
    # mri centroid at a, beside the ct centroid at a + 0.1: "ct" again; ct's a - 0.1 slices are then nearer to mri
    np.testing.assert_array_equal(sep.confusion, [[0, 4], [2, 2]])
    assert sep.accuracy == 0.25
