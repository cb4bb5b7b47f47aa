"""A disk cache of whole decoded videos, so later epochs gather clips without decoding.

Each entry is one video after the dataset's decode settings (e.g. the short-side resize), stored
as a uint8 (N, H, W, C) .npy file and opened with mmap_mode="r": only the gathered frames are
read from disk. The entry's name is a hash of the source file's path relative to the cache
folder's parent (the data folder, for the default `<root>/.cache`), its size and modification time
(ns) and the decode settings, so editing or touching the video, or changing the settings, makes a
new entry rather than serving stale frames (old entries stay on disk until the directory is
removed), while a data folder moved or copied with its cache and its files' times (`mv`,
`cp -a`, `rsync -a`) keeps every entry. Entries are written with `atomic_write`, so a run killed mid-write
never leaves a half-written entry; an entry that still fails to load is decoded and written again.

`atomic_write` is also how checkpoints and cached features are written (checkpoint.py,
features.py): it lives here, the lowest layer that writes files.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Mapping

import numpy as np

# Bump when the stored format or the decoder's output changes, to retire every old entry.
CACHE_VERSION = 1


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None], sync: bool = True) -> Path:
    """Create or replace `path` with what `write(file)` writes, all or nothing.

    It writes to a temporary file in the same folder and renames it into place (os.replace is
    atomic within a file system), so a process killed mid-write leaves the previous file (or none)
    and no half-written one; the temporary file is removed on any error. `sync` flushes the data to
    disk before the rename, so that a power cut cannot leave a renamed but empty file; files that
    can be recomputed (cache entries) skip that cost.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            if sync:
                file.flush()
                os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def file_version(path: str | os.PathLike) -> tuple[int, int]:
    """(size, mtime in ns): what changes when a video file is replaced or edited."""
    status = os.stat(path)
    return status.st_size, status.st_mtime_ns


class DecodedVideoCache:
    """Decoded videos as memory-mapped uint8 .npy files under `cache_dir`."""

    def __init__(self, cache_dir: str | os.PathLike):
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.anchor = os.path.abspath(self.cache_dir.parent)  # what keys' paths are relative to

    def key(self, path: str | os.PathLike, settings: Mapping[str, Any]) -> str:
        """Hash of the source file's identity (path from the cache folder's parent, size, mtime
        in ns) and the decode settings."""
        size, mtime_ns = file_version(path)
        identity = {"path": os.path.relpath(os.path.abspath(path), self.anchor), "size": size,
                    "mtime_ns": mtime_ns, "settings": dict(settings), "version": CACHE_VERSION}
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()

    def entry_path(self, path: str | os.PathLike, settings: Mapping[str, Any]) -> Path:
        return self.cache_dir / f"{self.key(path, settings)}.npy"

    def load(self, path: str | os.PathLike, settings: Mapping[str, Any],
             decode: Callable[[], np.ndarray]) -> tuple[np.ndarray, bool]:
        """The cached frames of `path` (memory-mapped) and whether they were already cached.

        On a miss, `decode()` produces the uint8 (N, H, W, C) frames, which are stored first.
        """
        entry = self.entry_path(path, settings)
        if entry.exists():
            try:
                return np.load(entry, mmap_mode="r"), True
            except (OSError, ValueError):
                pass  # unreadable entry (e.g. disk trouble): decode and overwrite it
        frames = np.ascontiguousarray(decode(), dtype=np.uint8)
        atomic_write(entry, lambda file: np.save(file, frames), sync=False)  # lost: decoded again
        return np.load(entry, mmap_mode="r"), False
