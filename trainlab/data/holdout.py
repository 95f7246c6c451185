"""Seeded hold-out splits of example indices, stratified by class: scikit-learn's train_test_split, index for index.

Written out here, not imported, for start-up time alone: `sklearn.model_selection` imports scipy.stats
and takes 1.1-2 s to import on a 2-core machine, more than half of a `trainlab train --smoke` run's
budget, for a split that is 25 lines of numpy. The steps are those of scikit-learn 1.x's
ShuffleSplit and StratifiedShuffleSplit._iter_indices (with _approximate_mode), drawn from the same
numpy RandomState in the same order, so every split is the one train_test_split(index,
test_size=n_held, random_state=seed, shuffle=True, stratify=labels) gives: tests/test_data.py
compares the two on real label vectors.
"""

from __future__ import annotations

from typing import Optional

import numpy as np


def holdout_indices(n: int, n_held: int, seed: int, labels: Optional[np.ndarray] = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(rest, held) index arrays, len(held) == n_held; stratified by `labels` when given.

    The order inside each array is scikit-learn's (a random permutation); callers sort.
    """
    rng = np.random.RandomState(seed)
    if labels is None:
        permutation = rng.permutation(n)
        return permutation[n_held:], permutation[:n_held]
    classes, y_indices, class_counts = np.unique(labels, return_inverse=True, return_counts=True)
    # Each class's examples in index order (a stable sort keeps ties in order).
    class_indices = np.split(np.argsort(y_indices, kind="stable"), np.cumsum(class_counts)[:-1])
    n_rest = n - n_held
    rest_counts = _approximate_mode(class_counts, n_rest, rng)
    held_counts = _approximate_mode(class_counts - rest_counts, n_held, rng)
    rest, held = [], []
    for i in range(len(classes)):
        shuffled = class_indices[i].take(rng.permutation(class_counts[i]), mode="clip")
        rest.extend(shuffled[:rest_counts[i]])
        held.extend(shuffled[rest_counts[i]:rest_counts[i] + held_counts[i]])
    return rng.permutation(rest), rng.permutation(held)


def _approximate_mode(class_counts: np.ndarray, n_draws: int, rng: np.random.RandomState) -> np.ndarray:
    """Examples per class when drawing n_draws in proportion: floors, then the largest remainders
    get one more each (ties broken by `rng`). Sums to n_draws."""
    continuous = class_counts / class_counts.sum() * n_draws
    floored = np.floor(continuous)
    need_to_add = int(n_draws - floored.sum())
    if need_to_add > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (inds,) = np.where(remainder == value)
            add_now = min(len(inds), need_to_add)
            floored[rng.choice(inds, size=add_now, replace=False)] += 1
            need_to_add -= add_now
            if need_to_add == 0:
                break
    return floored.astype(int)
