"""Small PNGs of a few images per encoding, so a user sees what the model sees (metadata only, not the hot path)."""

from __future__ import annotations

import io

import numpy as np


def sample_png(images: np.ndarray, labels: list[str], channel_names: list[str] | None = None) -> bytes:
    """A grid: one column per sample image, one row per channel; grey scale, each panel scaled to its range."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    images = np.asarray(images, dtype=np.float32)
    k, c = images.shape[:2]
    fig, axes = plt.subplots(c, k, figsize=(1.6 * k + 0.4, 1.6 * c + 0.3), squeeze=False)
    for j in range(k):
        for ch in range(c):
            ax = axes[ch, j]
            ax.imshow(images[j, ch], cmap="gray", interpolation="nearest", aspect="auto")
            ax.set_xticks([])
            ax.set_yticks([])
            if ch == 0:
                ax.set_title(labels[j], fontsize=6)
            if j == 0 and channel_names:
                ax.set_ylabel(channel_names[ch], fontsize=6)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=72)
    plt.close(fig)
    return buf.getvalue()
