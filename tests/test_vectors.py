"""The sample frames in ``tests/vectors`` stay identical to the shared reference set.

The suite reads only the in-repository copy (so a clone runs on its own); where the
shared set exists beside the repository, any difference — a file added, removed or
changed on either side — fails here rather than letting the copy drift silently.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.samples import SHARED_VECTORS, VECTORS


def _files(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_repository_has_the_sample_frames() -> None:
    files = _files(VECTORS)
    venues = {name.split("/", 1)[0] for name in files}
    assert venues == {"bitopro", "deltadefi", "sfox", "solanatracker"}


def test_sample_frames_match_the_shared_reference_set() -> None:
    if not SHARED_VECTORS.is_dir():
        pytest.skip(f"no shared reference set at {SHARED_VECTORS} to compare with")
    ours, shared = _files(VECTORS), _files(SHARED_VECTORS)
    assert sorted(ours) == sorted(shared), "tests/vectors lists different files"
    changed = [name for name in ours if ours[name] != shared[name]]
    assert not changed, f"tests/vectors differs from {SHARED_VECTORS} in {changed}"
