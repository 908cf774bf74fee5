"""Output folders: fabformer writes only into folders it created itself.

A folder fabformer creates gets a marker file; writing into an existing,
non-empty folder without the marker is refused.
"""
from __future__ import annotations

from pathlib import Path

from .errors import FabformerError

MARKER = ".fabformer"
LOG = "fabformer.log"  # the running command's log (fabformer.apps.console): kept by ``clean``


def prepare_dir(path, clean: bool = False) -> Path:
    """Create ``path`` (with a marker) or reuse one fabformer made; ``clean`` empties it first."""
    import shutil
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise FabformerError(f"output path {str(path)!r} exists and is not a folder")
        if any(path.iterdir()) and not (path / MARKER).is_file():
            raise FabformerError(
                f"refusing to write into {str(path)!r}: the folder exists, is not empty and was not "
                f"created by fabformer (no {MARKER} marker); choose a new or empty folder")
        if clean:
            for child in path.iterdir():
                if child.name in (MARKER, LOG):
                    continue
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    path.mkdir(parents=True, exist_ok=True)
    (path / MARKER).write_text("created by fabformer; fabformer may overwrite this folder\n")
    return path
