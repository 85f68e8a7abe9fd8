"""``python -m dask_polar demo adversarial``: a black-box attack on a digit classifier.

A small neural network (scikit-learn's ``MLPClassifier``, one hidden layer) is trained on
scikit-learn's 8 x 8 digits (they ship with the package: nothing is downloaded). The
attacker sees only the network's output probabilities: it minimises the margin
``log p_true(x) - max_other log p_other(x)`` by projected gradient descent inside the pixel
box, with gradients estimated from evaluations of the network, until the prediction flips.
Each gradient estimate is one job of evaluation tasks with injected stragglers, estimated
three ways on the same straggler draws: coded (polar code, decoded from the first decodable
subset), uncoded finite differences (waits for every task) and random search (Gaussian
smoothing, from the first half of its tasks to finish).

Needs scikit-learn (and matplotlib for the PNG), imported only when the demo runs.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np

from ._estimators import CodedGradient, FiniteDifferenceGradient, RandomSearchGradient
from ._optimize import ZerothOrderResult, projected_gradient_descent

__all__ = ["DigitNetwork", "MarginLoss", "adversarial_demo", "attack", "train_digit_network"]

#: Pixel range of scikit-learn's digits.
PIXEL_MAX = 16.0


class DigitNetwork:
    """The trained network as a black box: ``log_proba(X)`` for images in pixel units.

    A plain numpy forward pass through the weights of a fitted ``MLPClassifier`` (tanh hidden
    layer, softmax output): picklable and quick, so the evaluation tasks, not scikit-learn's
    input checks, are the work.

    Parameters
    ----------
    weights, biases : list of ndarray
        ``coefs_`` and ``intercepts_`` of the fitted classifier.
    scale : float
        Inputs are divided by ``scale`` before the first layer (the network was trained
        on pixels / 16).
    """

    def __init__(self, weights: list[np.ndarray], biases: list[np.ndarray], scale: float) -> None:
        self.weights = [np.asarray(w, dtype=np.float64) for w in weights]
        self.biases = [np.asarray(b, dtype=np.float64) for b in biases]
        self.scale = float(scale)

    def log_proba(self, X: np.ndarray) -> np.ndarray:
        """Log-probabilities of the 10 classes, shape ``(r, 10)`` for ``X`` of shape ``(r, 64)``."""
        hidden = np.atleast_2d(X) / self.scale
        for w, b in zip(self.weights[:-1], self.biases[:-1]):
            hidden = np.tanh(hidden @ w + b)
        logits = hidden @ self.weights[-1] + self.biases[-1]
        return logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The predicted digit of each row."""
        return np.argmax(self.log_proba(X), axis=1)


class MarginLoss:
    """``f(x) = log p_label(x) - max_{j != label} log p_j(x)``: negative once misclassified.

    Batched: ``f(X)`` for ``X`` of shape ``(r, 64)`` returns ``(r,)``; a single image gives a
    float.
    """

    def __init__(self, network: DigitNetwork, label: int) -> None:
        self.network = network
        self.label = int(label)

    def __call__(self, X: np.ndarray) -> Any:
        logp = self.network.log_proba(X)
        others = np.delete(logp, self.label, axis=1).max(axis=1)
        margin = logp[:, self.label] - others
        return float(margin[0]) if np.ndim(X) == 1 else margin


def train_digit_network(seed: int = 0) -> tuple[DigitNetwork, np.ndarray, np.ndarray, float]:
    """Train the classifier on 75 % of the digits; return it, the test set and its accuracy.

    Returns
    -------
    network : DigitNetwork
    images : ndarray of shape (r, 64)
        Test images in pixel units [0, 16].
    labels : ndarray of shape (r,)
    accuracy : float
        Test accuracy of the network.
    """
    try:
        from sklearn.datasets import load_digits
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.model_selection import train_test_split
        from sklearn.neural_network import MLPClassifier
    except ImportError as exc:  # an optional dependency of the demo only
        raise ImportError("the adversarial demo needs scikit-learn: pip install scikit-learn") from exc
    digits = load_digits()
    X_train, X_test, y_train, y_test = train_test_split(
        digits.data, digits.target, test_size=0.25, random_state=seed, stratify=digits.target
    )
    classifier = MLPClassifier(
        hidden_layer_sizes=(32,), activation="tanh", alpha=1e-3, max_iter=400, random_state=seed
    )
    with warnings.catch_warnings():
        # a few epochs short of sklearn's own tolerance changes nothing here
        warnings.simplefilter("ignore", ConvergenceWarning)
        classifier.fit(X_train / PIXEL_MAX, y_train)
    network = DigitNetwork(classifier.coefs_, classifier.intercepts_, PIXEL_MAX)
    accuracy = float(np.mean(network.predict(X_test) == y_test))
    return network, X_test, y_test, accuracy


def attack(
    gradient: Any,
    image: np.ndarray,
    network: DigitNetwork,
    label: int,
    *,
    step_size: float = 1.0,
    max_iter: int = 40,
) -> ZerothOrderResult:
    """Projected normalised gradient descent on the margin until the prediction flips.

    ``gradient`` is an estimator whose ``f`` is ``MarginLoss(network, label)``; the iterate
    stays in the pixel box ``[0, 16]``.
    """
    return projected_gradient_descent(
        gradient,
        image,
        step_size=step_size,
        max_iter=max_iter,
        bounds=(0.0, PIXEL_MAX),
        normalize=True,
        stop=lambda x, fun: fun < 0,
    )


def _methods(n: int, k: int) -> list[tuple[str, Any]]:
    return [
        (f"coded (polar n={n})", lambda f, **kw: CodedGradient(f, k, code="polar", n=n, **kw)),
        (f"finite diff. (n={k})", lambda f, **kw: FiniteDifferenceGradient(f, k, **kw)),
        (f"random search ({k}/{n})", lambda f, **kw: RandomSearchGradient(f, k, samples=n, use=k, **kw)),
    ]


def adversarial_demo(
    trials: int = 8,
    seed: int = 0,
    max_iter: int = 40,
    step_size: float = 1.0,
    stragglers: Any = None,
    plot: str | None = "dask_polar_adversarial.png",
) -> list[dict[str, Any]]:
    """Attack ``trials`` correctly classified test digits with each gradient estimator.

    Every method attacks the same images, and gradient estimate number ``i`` of an attack
    meets the same injected straggler draws in every method (seed ``seed + i``). Prints, per
    method: success rate, median L2 norm of the successful perturbations (pixel units, an
    image has norm ~50), gradient steps, function evaluations and wall time, with the
    ratio of wall time to the coded method.

    Parameters
    ----------
    trials : int
        Images to attack.
    seed : int
        Seeds the training split, the network, the images chosen and the stragglers.
    max_iter, step_size : int, float
        Of `projected_gradient_descent` (normalised steps, pixel units).
    stragglers : RuntimeModel, optional
        Delay of each evaluation task. Default ``Bimodal(base=0.01, slow_prob=0.05,
        slowdown=10, jitter=0.5)``: 10-15 ms tasks, 1 in 20 ten times slower.
    plot : str or None
        Where to save the PNG (original, perturbation, adversarial image per attacked
        digit, for the coded method).

    Returns
    -------
    list of dict
        One row per method with the printed numbers and per-image results.
    """
    from ..stragglers import Bimodal

    if stragglers is None:
        stragglers = Bimodal(base=0.01, slow_prob=0.05, slowdown=10.0, jitter=0.5)
    started = time.perf_counter()
    network, images, labels, accuracy = train_digit_network(seed)
    dim = images.shape[1]
    n = 2 * dim
    correct = np.flatnonzero(network.predict(images) == labels)
    chosen = np.random.default_rng(seed).choice(correct, size=min(trials, correct.size), replace=False)
    print(
        f"MLP (64-32-10, tanh) trained on scikit-learn's digits in "
        f"{time.perf_counter() - started:.1f} s: test accuracy {accuracy:.3f}\n"
        f"black-box attack on {chosen.size} test digits: normalised projected gradient "
        f"descent on the margin, step {step_size:g}, at most {max_iter} steps\n"
        f"each gradient = one job of evaluation tasks; injected stragglers: {stragglers}\n"
    )
    rows = []
    for label_text, make in _methods(n, dim):
        results = []
        tick = time.perf_counter()
        for index in chosen:
            image, label = images[index], int(labels[index])
            f = MarginLoss(network, label)
            with make(f, batch=True, h=1e-3, stragglers=stragglers, seed=seed) as gradient:
                result = attack(gradient, image, network, label, step_size=step_size, max_iter=max_iter)
            adversarial = result.x
            results.append({
                "index": int(index),
                "label": label,
                "predicted": int(network.predict(adversarial)[0]),
                "success": bool(result.success),
                "norm": float(np.linalg.norm(adversarial - image)),
                "steps": result.n_iter,
                "evaluations": result.evaluations,
                "seconds": result.seconds,
                "adversarial": adversarial,
            })
        wall = time.perf_counter() - tick
        won = [r for r in results if r["success"]]
        rows.append({
            "method": label_text,
            "success_rate": len(won) / len(results),
            "median_norm": float(np.median([r["norm"] for r in won])) if won else float("nan"),
            "mean_steps": float(np.mean([r["steps"] for r in results])),
            "evaluations": int(np.sum([r["evaluations"] for r in results])),
            "seconds": wall,
            "seconds_per_step": wall / max(1, sum(r["steps"] for r in results)),
            "results": results,
        })
    base = rows[0]["seconds"]
    header = (
        f"{'method':<26}{'success':>8}{'L2 norm':>9}{'steps':>7}{'evals':>8}"
        f"{'wall s':>8}{'s/step':>8}{'vs coded':>10}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['method']:<26}{row['success_rate']:>8.0%}{row['median_norm']:>9.2f}"
            f"{row['mean_steps']:>7.1f}{row['evaluations']:>8d}{row['seconds']:>8.2f}"
            f"{row['seconds_per_step']:>8.3f}{row['seconds'] / base:>9.2f}x"
        )
    print(
        "\nL2 norm: median over the successful attacks (pixel units, images have norm ~50); "
        "steps: mean gradient steps per image;\nevals: network evaluations by finished tasks "
        "plus one per step in the driver. The coded estimate needs the first decodable\n"
        "subset of its n tasks; finite differences wait for the slowest; random search "
        "uses the first half of its tasks but is noisier."
    )
    if plot:
        _plot(images, labels, network, rows[0], plot)
        print(f"images written to {plot}")
    return rows


def _plot(
    images: np.ndarray, labels: np.ndarray, network: DigitNetwork, row: dict[str, Any], path: str
) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: pip install dask_polar[plot] for the images)")
        return
    shown = row["results"][:4]
    fig, axes = plt.subplots(len(shown), 3, figsize=(6, 2.1 * len(shown)), squeeze=False)
    for axis_row, result in zip(axes, shown):
        original = images[result["index"]]
        adversarial = result["adversarial"]
        delta = adversarial - original
        limit = max(float(np.abs(delta).max()), 1e-9)
        panels = [
            (original, "gray_r", 0.0, PIXEL_MAX, f"original: {result['label']}"),
            (delta, "RdBu_r", -limit, limit, f"perturbation |d|={result['norm']:.1f}"),
            (adversarial, "gray_r", 0.0, PIXEL_MAX, f"adversarial: {result['predicted']}"),
        ]
        for axis, (picture, cmap, low, high, title) in zip(axis_row, panels):
            axis.imshow(picture.reshape(8, 8), cmap=cmap, vmin=low, vmax=high)
            axis.set_title(title, fontsize=8)
            axis.set_xticks([])
            axis.set_yticks([])
    fig.suptitle(f"black-box attack, {row['method']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
