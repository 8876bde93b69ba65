"""SHA-256 of a file, read in blocks: artifact checksums and the pre-trained weights' key use this one."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_of(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
