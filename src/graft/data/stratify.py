"""Splitting multi-label data so that every label keeps its share in train and in val.

Iterative stratification (Sechidis, Tsoumakas and Vlahavas, "On the Stratification of Multi-Label
Data", ECML PKDD 2011, Algorithm 1), for two subsets. A plain random split of multi-label data lets a
rare label's share in val drift far from its share overall (tests/test_labels.py measures it), and
one stratified split per class, as for single-label data, cannot be made: an image is in several
classes at once.

Written here rather than taken from PyPI: iterative-stratification (0.1.9) builds on scikit-learn's
private modules (`sklearn.model_selection._split`), which a scikit-learn release may move, and
scikit-multilearn's last release is from 2018. graft changes two things in the paper's algorithm:

- An image goes to the subset that still wants *its labels* most: the sum, over the image's labels,
  of each label's remaining want in the subset as a fraction of its first want. The paper looks at
  the label being placed alone, so an image of four labels placed early (every image holding the
  rarest label is) takes no notice of the other three: where images hold several labels each, the
  later labels' shares in val drift, and images with many labels gather in train.
- As for single-label data, every label with two images or more gets at least one in val and one
  in train: its wanted val count is rounded, then kept between 1 and its images less one, and an
  image is moved over where the greedy pass left a label out of a subset.
"""

from __future__ import annotations

import numpy as np


def iterative_split(targets: np.ndarray, val_fraction: float, seed: int) -> np.ndarray:
    """Which rows of the N x C multi-hot `targets` go to val (a boolean array), seeded.

    The rarest label still to place goes first (ties broken at random); each of its images goes to
    the subset wanting the image's labels most (ties: the subset wanting the most images, then at
    random), and that subset's wants go down by the image's labels. Images with no label fill the
    subsets up to their sizes last. The same targets, fraction and seed give the same split.
    """
    rng = np.random.default_rng(seed)
    present = np.asarray(targets, dtype=bool)
    images = present.shape[0]
    per_label = present.sum(axis=0)
    val_wanted = np.clip(np.floor(val_fraction * per_label + 0.5), 1, np.maximum(per_label - 1, 1))
    first_wants = np.stack([per_label - val_wanted, val_wanted]).astype(float)  # [train, val] x labels
    wanted = first_wants.copy()
    val_images = min(max(int(np.floor(val_fraction * images + 0.5)), 1), images - 1)
    sizes = np.array([images - val_images, val_images], dtype=float)
    order = rng.permutation(images)  # visiting images in a random order breaks their ties
    label_ties = rng.random(per_label.size)
    subset = np.full(images, -1)
    left = per_label.copy()
    while left.any():
        open_labels = np.flatnonzero(left)
        label = open_labels[np.lexsort((label_ties[open_labels], left[open_labels]))[0]]
        for image in order[present[order, label] & (subset[order] < 0)]:
            labels = present[image]
            want = (wanted[:, labels] / np.maximum(first_wants[:, labels], 1)).sum(axis=1)
            chosen = _most_wanting(want, sizes, rng)
            subset[image] = chosen
            wanted[chosen, labels] -= 1
            sizes[chosen] -= 1
            left -= labels
    for image in order[subset[order] < 0]:  # no label at all
        chosen = _most_wanting(sizes, sizes, rng)
        subset[image] = chosen
        sizes[chosen] -= 1
    _every_label_in_both(present, subset)
    return subset == 1


def _most_wanting(wants: np.ndarray, sizes: np.ndarray, rng: np.random.Generator) -> int:
    """The subset with the largest want; ties go to the one wanting the most images, then at random."""
    best = np.flatnonzero(wants == wants.max())
    if best.size > 1:
        best = best[sizes[best] == sizes[best].max()]
    return int(best[0] if best.size == 1 else rng.choice(best))


def _every_label_in_both(present: np.ndarray, subset: np.ndarray) -> None:
    """Move one image (the one with the fewest labels) of a label absent from a subset into it."""
    for label in np.flatnonzero(present.sum(axis=0) >= 2):
        for target in (0, 1):
            holders = np.flatnonzero(present[:, label])
            if not (subset[holders] == target).any():
                fewest = holders[np.argsort(present[holders].sum(axis=1), kind="stable")]
                subset[fewest[0]] = target
