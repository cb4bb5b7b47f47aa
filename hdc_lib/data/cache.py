"""A disk cache of whole decoded videos, so later epochs gather clips without decoding.

Each entry is one video after the dataset's decode settings (e.g. the short-side resize), stored
as a uint8 (N, H, W, C) .npy file and opened with mmap_mode="r": only the gathered frames are
read from disk. The entry's name is a hash of the source file's absolute path, size and
modification time (ns) and of the decode settings, so editing or touching the video, or changing
the settings, makes a new entry rather than serving stale frames (old entries stay on disk until
the directory is removed). Entries are written to a temporary file and renamed into place
(os.replace is atomic), so a run killed mid-write never leaves a half-written entry; an entry
that still fails to load is decoded and written again.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

# Bump when the stored format or the decoder's output changes, to retire every old entry.
CACHE_VERSION = 1


def file_version(path: str | os.PathLike) -> tuple[int, int]:
    """(size, mtime in ns): what changes when a video file is replaced or edited."""
    status = os.stat(path)
    return status.st_size, status.st_mtime_ns


class DecodedVideoCache:
    """Decoded videos as memory-mapped uint8 .npy files under `cache_dir`."""

    def __init__(self, cache_dir: str | os.PathLike):
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)

    def key(self, path: str | os.PathLike, settings: Mapping[str, Any]) -> str:
        """Hash of the source file's identity (path, size, mtime in ns) and the decode settings."""
        size, mtime_ns = file_version(path)
        identity = {"path": os.path.abspath(path), "size": size, "mtime_ns": mtime_ns,
                    "settings": dict(settings), "version": CACHE_VERSION}
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
        self._write(entry, np.ascontiguousarray(decode(), dtype=np.uint8))
        return np.load(entry, mmap_mode="r"), False

    def _write(self, entry: Path, frames: np.ndarray) -> None:
        """Write atomically: a temporary file in the same directory, then os.replace."""
        handle, temporary = tempfile.mkstemp(dir=self.cache_dir, suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as file:
                np.save(file, frames)
            os.replace(temporary, entry)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
