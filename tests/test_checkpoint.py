"""Checkpoints: atomic, refused when cut short or when they would run code, newest readable wins."""
import os
import pickle

import pytest
import torch

from hdc_lib.checkpoint import (CheckpointError, checkpoint_name, list_checkpoints, load_checkpoint,
                                load_latest, prune_checkpoints, save_checkpoint)


def test_round_trip_and_ordering(tmp_path):
    for epoch, step in [(1, 0), (2, 0), (1, 5)]:
        save_checkpoint(tmp_path / checkpoint_name(epoch, step), {"w": torch.full((2,), float(epoch))})
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        checkpoint_name(2, 0), checkpoint_name(1, 5), checkpoint_name(1, 0)]
    state, path = load_latest(tmp_path)
    assert path.name == checkpoint_name(2, 0) and torch.equal(state["w"], torch.full((2,), 2.0))
    prune_checkpoints(tmp_path, keep=1)
    assert [p.name for p in list_checkpoints(tmp_path)] == [checkpoint_name(2, 0)]
    assert not list(tmp_path.glob("*.tmp"))


def test_a_truncated_checkpoint_is_refused_and_the_previous_one_used(tmp_path):
    save_checkpoint(tmp_path / checkpoint_name(1, 0), {"w": torch.ones(1000)})
    newest = save_checkpoint(tmp_path / checkpoint_name(2, 0), {"w": torch.zeros(1000)})
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=newest.name):
        load_checkpoint(newest)
    state, path = load_latest(tmp_path)
    assert path.name == checkpoint_name(1, 0) and torch.equal(state["w"], torch.ones(1000))


class _RunsCode:
    """Unpickling this calls os.mkdir(marker): code a checkpoint must never run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_a_pickled_payload_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / checkpoint_name(1, 0)
    torch.save({"model": {}, "payload": _RunsCode(marker)}, path)
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        load_checkpoint(path)
    plain = tmp_path / "plain_pickle.pt"
    plain.write_bytes(pickle.dumps(_RunsCode(marker)))
    with pytest.raises(CheckpointError):
        load_checkpoint(plain)
    assert load_latest(tmp_path) is None  # the only training checkpoint is refused too
    assert not marker.exists()
    pickle.loads(plain.read_bytes())  # what an unsafe load would have done
    assert marker.exists()


def test_a_save_killed_mid_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    """Checkpoints, cache entries and feature caches share one atomic write (data.cache)."""
    path = save_checkpoint(tmp_path / checkpoint_name(1, 0), {"w": torch.ones(3)})

    def killed_mid_write(state, file):
        file.write(b"PK partial zip")
        raise KeyboardInterrupt  # the run is killed while writing

    monkeypatch.setattr(torch, "save", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"w": torch.zeros(3)})
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == [path]
    assert torch.equal(load_checkpoint(path)["w"], torch.ones(3))
