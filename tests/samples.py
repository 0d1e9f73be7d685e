"""Where the tests find the venues' sample frames: ``tests/vectors/``, inside the repository.

The frames are a copy of the project's shared reference set (``../shared/vectors`` beside
the repository, where that exists); ``tests/test_vectors.py`` fails if the two ever differ,
so a clone of the repository alone runs the whole suite.
"""

from __future__ import annotations

from pathlib import Path

VECTORS = Path(__file__).resolve().parent / "vectors"
SHARED_VECTORS = Path(__file__).resolve().parents[2] / "shared" / "vectors"
