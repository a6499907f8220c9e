"""Shared helpers of the examples: the digits data, retrieval evaluation, the embedding plot."""
from __future__ import annotations

import os

import numpy as np


def load_digits_split(seed: int = 0, test_size: float = 0.3):
    """scikit-learn's 8x8 digits, pixels scaled to [0, 1], a stratified train/test split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    return train_test_split(x, digits.target, test_size=test_size, random_state=seed, stratify=digits.target)


def _report_options(include_clustering: bool) -> dict:
    import jaxmetric

    include = ("precision_at_1", "r_precision", "mean_average_precision_at_r", "recall_at_k")
    if include_clustering:
        include = include + ("NMI",)
    return dict(include=include, recall_ks=(1, 4), distance=jaxmetric.CosineSimilarity())


def retrieval_report(emb, labels, *, include_clustering: bool = False) -> dict:
    """Held-out retrieval metrics (the test set searched against itself, cosine ranking)."""
    import jaxmetric

    return jaxmetric.evaluation.get_accuracy(np.asarray(emb, np.float32), np.asarray(labels), **_report_options(include_clustering))


def evaluation_hook(embed, x_test, y_test, *, every: int, include_clustering: bool = False):
    """The same report every ``every`` training steps: ``hook(step, params)`` returns the
    metrics after steps ``every, 2 * every, ...`` (``embed(params, x)`` embeds a batch)."""
    import jaxmetric

    return jaxmetric.evaluation.EvaluationHook(embed, x_test, y_test, every=every, **_report_options(include_clustering))


def format_metrics(metrics: dict) -> str:
    short = {
        "precision_at_1": "P@1",
        "r_precision": "R-prec",
        "mean_average_precision_at_r": "MAP@R",
        "recall_at_1": "R@1",
        "recall_at_4": "R@4",
        "NMI": "NMI",
    }
    order = [k for k in short if k in metrics] + [k for k in metrics if k not in short]
    return "  ".join(f"{short.get(k, k)} {metrics[k]:.3f}" for k in order)


def project_2d(emb: np.ndarray) -> np.ndarray:
    """PCA of the L2-normalised embeddings, two components."""
    emb = np.asarray(emb, np.float64)
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    centred = emb - emb.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:2].T


def save_embedding_plot(emb, labels, path: str, title: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xy = project_2d(np.asarray(emb))
    fig, ax = plt.subplots(figsize=(6, 6))
    sc = ax.scatter(xy[:, 0], xy[:, 1], c=np.asarray(labels), cmap="tab10", s=8)
    ax.legend(*sc.legend_elements(), title="digit", loc="best", fontsize=7)
    ax.set_title(title)
    fig.tight_layout()
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def save_embedding_panels(panels, path: str, title: str) -> str:
    """Several held-out embeddings side by side (one PCA each), to compare training variants.

    ``panels``: a list of ``(embeddings, labels, panel_title)``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.4), squeeze=False)
    for ax, (emb, labels, panel_title) in zip(axes[0], panels):
        xy = project_2d(np.asarray(emb))
        sc = ax.scatter(xy[:, 0], xy[:, 1], c=np.asarray(labels), cmap="tab10", s=6, vmin=0, vmax=9)
        ax.set_title(panel_title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, -1].legend(*sc.legend_elements(), title="digit", loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
