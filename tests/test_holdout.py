"""trainlab.data.holdout against scikit-learn's train_test_split: the same indices, on real label vectors."""

import numpy as np
import pytest
import sklearn.datasets
from sklearn.model_selection import train_test_split

from trainlab.data.holdout import holdout_indices
from trainlab.data.idx import read_idx


def _label_sets(fashion_dir):
    fashion = read_idx(fashion_dir / "train-labels-idx1-ubyte.gz").astype(np.int64)
    sets = {"fashion-mnist": fashion, "fashion-mnist[:512]": fashion[:512]}
    for name in ("digits", "iris", "wine", "breast_cancer"):
        sets[name] = getattr(sklearn.datasets, f"load_{name}")().target
    # Imbalanced: wine's classes cut to 2, 5 and 59 examples (ties and large remainders in the counts).
    wine = sets["wine"]
    sets["wine-imbalanced"] = np.concatenate([np.flatnonzero(wine == 0)[:2], np.flatnonzero(wine == 1)[:5],
                                              np.flatnonzero(wine == 2)])
    sets["wine-imbalanced"] = wine[sets["wine-imbalanced"]]
    return sets


def test_holdout_equals_train_test_split_on_real_labels(fashion_available):
    checked = 0
    for name, labels in _label_sets(fashion_available).items():
        n, n_classes = len(labels), len(np.unique(labels))
        for fraction in (0.1, 0.2, 0.5, 0.9, 1 - 512 / 60000):
            n_held = int(round(fraction * n))
            if min(n_held, n - n_held) < n_classes:
                continue  # train_test_split refuses to stratify; split_off shuffles plainly there
            for seed in (0, 1, 12345):
                for stratify in (labels, None):
                    want_rest, want_held = train_test_split(np.arange(n), test_size=n_held, random_state=seed,
                                                            shuffle=True, stratify=stratify)
                    rest, held = holdout_indices(n, n_held, seed, stratify)
                    assert np.array_equal(rest, want_rest) and np.array_equal(held, want_held), \
                        (name, fraction, seed, stratify is None)
                    checked += 1
    assert checked >= 100


@pytest.mark.parametrize("n_held", [1, 7, 99])
def test_holdout_partitions_the_indices(n_held):
    labels = np.repeat(np.arange(5), 20)
    rest, held = holdout_indices(100, n_held, 0, labels if n_held >= 5 else None)
    assert len(held) == n_held and len(rest) == 100 - n_held
    assert np.array_equal(np.sort(np.concatenate([rest, held])), np.arange(100))
