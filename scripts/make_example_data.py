"""Rebuild ``fastxent/data/digits_weak_logreg.npz``: the data of ``fastxent evaluate --example``.

Real data, real model: scikit-learn's bundled handwritten digits (UCI "Optical Recognition of
Handwritten Digits", 1797 8x8 images, 10 classes), a multinomial logistic regression (softmax)
classifier trained on a deliberately weak feature set, so that its categorical accuracy is
mediocre and the gap to what element-wise binary accuracy claims is easy to see.

Weak features: each image is reduced to the ink totals of its four 4 x 4 quadrants: 4 numbers
instead of 64 pixels. The model sees where the ink is, roughly, not the strokes (test accuracy
about 53 %).

Saved (uncompressed .npz, ~20 KB): ``logits`` float32 (n_test, 10), the decision function of
the model on the held-out 25 % split (stratified, seed 0), and ``labels`` int64 (n_test,).

Run:  python scripts/make_example_data.py      (needs scikit-learn; deterministic)
"""

from __future__ import annotations

import os

import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "fastxent", "data",
                   "digits_weak_logreg.npz")


def weak_features(images: np.ndarray) -> np.ndarray:
    """(n, 8, 8) -> (n, 4): ink in each 4 x 4 quadrant."""
    return images.reshape(-1, 2, 4, 2, 4).sum(axis=(2, 4)).reshape(-1, 4)


def main() -> None:
    digits = load_digits()
    X = weak_features(digits.images)
    y = digits.target.astype(np.int64)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.25, stratify=y, random_state=0)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    model.fit(X_tr, y_tr)
    logits = model.decision_function(X_te).astype(np.float32)
    acc = float((logits.argmax(axis=1) == y_te).mean())
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    np.savez(OUT, logits=logits, labels=y_te)
    print(f"wrote {os.path.normpath(OUT)}: {logits.shape[0]} test rows x {logits.shape[1]} "
          f"classes, categorical accuracy {acc:.3f}, {os.path.getsize(OUT)} bytes")


if __name__ == "__main__":
    main()
