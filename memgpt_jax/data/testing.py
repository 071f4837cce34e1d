"""Tiny stand-ins for real data sources, for tests and offline demos.

:func:`write_aclimdb` writes a small archive (or directory) in the official
``aclImdb`` layout, so the IMDb builder can be exercised without the real data.
"""

from __future__ import annotations

import io
import os
import random
import tarfile
from typing import Iterable

POSITIVE = "wonderful great moving brilliant superb funny charming".split()
NEGATIVE = "awful boring dull terrible weak clumsy tedious".split()
NEUTRAL = "the film plot actor scene music ending story camera".split()


def review(rng: random.Random, label: str) -> str:
    mood = {"pos": POSITIVE, "neg": NEGATIVE}.get(label, POSITIVE + NEGATIVE)
    words = [rng.choice(mood if rng.random() < 0.3 else NEUTRAL) for _ in range(rng.randint(5, 60))]
    return " ".join(words).capitalize() + ".<br /><br />" + rng.choice(NEUTRAL) + "."


def aclimdb_files(n_train: int = 20, n_test: int = 6, n_unsup: int = 10, seed: int = 0,
                  skip: Iterable[str] = ()) -> dict[str, bytes]:
    """``{relative path: content}`` of a tiny aclImdb tree; ``skip`` drops groups like ``"test/pos"``."""
    rng = random.Random(seed)
    files: dict[str, bytes] = {}
    sizes = {"train/pos": n_train, "train/neg": n_train, "test/pos": n_test, "test/neg": n_test,
             "train/unsup": n_unsup}
    for group, count in sizes.items():
        if group in skip:
            continue
        label = group.split("/")[1]
        for i in range(count):
            rating = 0 if label == "unsup" else (rng.randint(7, 10) if label == "pos" else rng.randint(1, 4))
            files[f"{group}/{i}_{rating}.txt"] = review(rng, label).encode("utf-8")
    files["README"] = b"tiny aclImdb stand-in\n"
    return files


def write_aclimdb(path: str, files: dict[str, bytes] | None = None, *, as_dir: bool = False) -> str:
    """Write ``files`` (default :func:`aclimdb_files`) under ``aclImdb/`` as .tar.gz or a directory."""
    files = aclimdb_files() if files is None else files
    if as_dir:
        for rel, content in files.items():
            full = os.path.join(path, "aclImdb", rel)
            os.makedirs(os.path.dirname(full), exist_ok=True)
            with open(full, "wb") as f:
                f.write(content)
        return path
    with tarfile.open(path, "w:gz") as archive:
        for rel, content in sorted(files.items()):
            info = tarfile.TarInfo(f"aclImdb/{rel}")
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return path
