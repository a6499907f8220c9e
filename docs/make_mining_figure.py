"""Draws docs/img/mining_mask.png: what a jaxmetric miner returns, as static-shape masks.

Run from the repository root:  python docs/make_mining_figure.py
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

import jaxmetric as jm  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "img", "mining_mask.png")


def main():
    rng = np.random.default_rng(0)
    b = 12
    labels = jnp.asarray(np.repeat([0, 1, 2], 4))
    centres = rng.normal(size=(3, 8))
    emb = jnp.asarray(centres[np.asarray(labels)] + 0.9 * rng.normal(size=(b, 8)), jnp.float32)

    pairs = jm.pair_mask(labels)
    hard = jm.batch_hard_miner(emb, labels)
    semi = jm.triplet_margin_miner(emb, labels, type_of_triplets="semihard", margin=0.3)
    dist = np.asarray(jm.LpDistance()(emb, emb))

    # 0 = neither, 1 = negative, 2 = positive
    cmap = ListedColormap(["#eeeeee", "#f4a582", "#92c5de"])
    cmap_sel = ListedColormap(["#ffffff", "#d6604d", "#2166ac"])  # selected pairs

    fig, axes = plt.subplots(1, 3, figsize=(12.5, 4.9), dpi=80)
    ax = axes[0]
    grid = 2 * np.asarray(pairs.pos) + np.asarray(pairs.neg)
    ax.imshow(grid, cmap=cmap, vmin=0, vmax=2)
    for i in range(b):
        for j in range(b):
            if i != j:
                ax.text(j, i, f"{dist[i, j]:.1f}", ha="center", va="center", fontsize=6, color="#333333")
    ax.set_title("labels -> PairMask [B, B]\n(blue: positive, orange: negative; text: distance)", fontsize=9)

    ax = axes[1]
    ax.imshow(2 * np.asarray(pairs.pos) + np.asarray(pairs.neg), cmap=cmap, vmin=0, vmax=2, alpha=0.35)
    grid = 2 * np.asarray(hard.pos) + np.asarray(hard.neg)
    ax.imshow(np.ma.masked_equal(grid, 0), cmap=cmap_sel, vmin=0, vmax=2)
    ax.set_title("batch_hard_miner -> PairMask [B, B]\nper anchor: farthest positive, closest negative", fontsize=9)

    ax = axes[2]
    a = 0
    cube = np.asarray(semi.to_dense())[a]  # [R(p), R(n)] slice of the triplet selection for anchor a
    shown = np.where(cube > 0, 2, 0) + np.where(
        (cube == 0) & (np.asarray(semi.pos)[a][:, None] > 0) & (np.asarray(semi.neg)[a][None, :] > 0), 1, 0
    )
    ax.imshow(shown, cmap=ListedColormap(["#ffffff", "#dddddd", "#1b7837"]), vmin=0, vmax=2)
    ax.set_xlabel("negative n")
    ax.set_ylabel("positive p")
    ax.set_title(
        f"triplet_margin_miner(semihard) -> TripletMask, anchor {a}\n"
        "green: selected (p, n) with 0 < d_an - d_ap <= margin\n"
        "stored as pos, neg, d [B, B] + (lo, hi], never B x B x B",
        fontsize=9,
    )
    for ax in axes[:2]:
        ax.set_xlabel("reference j")
        ax.set_ylabel("anchor i")
    for ax in axes:
        ax.set_xticks(range(b))
        ax.set_yticks(range(b))
        ax.tick_params(labelsize=6)
    fig.tight_layout()
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    fig.savefig(OUT)
    print("wrote", OUT, os.path.getsize(OUT), "bytes")


if __name__ == "__main__":
    jax.config.update("jax_platforms", "cpu")
    main()
