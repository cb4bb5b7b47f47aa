"""MoCo machinery: queue FIFO and wrap-around, EMA maths, batch shuffle, shuffle BN against a loop
over separately normalised groups, and a 2-process gloo run."""

import time
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from hdc_lib.moco import (KeyQueue, batch_shuffle, batch_unshuffle, ema_update_, gather_from_all_ranks,
                          shuffle_bn_forward)


def unit_rows(n, dim, offset=0):
    """Distinct unit vectors, easy to recognise: one-hot rows offset, offset+1, ... (mod dim)."""
    return F.one_hot((torch.arange(n) + offset) % dim, dim).float()


def test_queue_starts_with_unit_vectors_identical_for_a_seed():
    queue = KeyQueue(8, 4)
    assert queue.keys.shape == (8, 4)
    torch.testing.assert_close(queue.keys.norm(dim=1), torch.ones(8))
    torch.testing.assert_close(queue.keys, KeyQueue(8, 4).keys)
    assert set(queue.state_dict()) == {"queue_keys", "pointer", "filled"}


def test_queue_is_fifo_and_wraps_around():
    queue = KeyQueue(6, 8)
    batches = [unit_rows(2, 8, offset=2 * step) for step in range(4)]
    for batch in batches[:3]:
        queue.enqueue(batch)
    torch.testing.assert_close(queue.keys, torch.cat(batches[:3]))
    assert int(queue.pointer) == 0
    queue.enqueue(3 * batches[3])  # keys are stored normalised
    torch.testing.assert_close(queue.keys, torch.cat([batches[3], *batches[1:3]]))
    assert int(queue.pointer) == 2


def test_named_queues_share_one_pointer():
    queue = KeyQueue(4, {"vv": 3, "rs": 5})
    queue.enqueue(vv=unit_rows(2, 3), rs=unit_rows(2, 5, offset=1))
    torch.testing.assert_close(queue["vv"][:2], unit_rows(2, 3))
    torch.testing.assert_close(queue["rs"][:2], unit_rows(2, 5, offset=1))
    assert queue["rs"].shape == (4, 5) and int(queue.pointer) == 2


def test_queue_reads_are_snapshots():
    queue = KeyQueue(4, 3)
    snapshot = queue.keys
    queue.enqueue(unit_rows(2, 3))
    assert not torch.equal(snapshot[:2], queue.keys[:2])


def test_queue_rejects_bad_batches():
    with pytest.raises(ValueError, match="not a multiple of the global batch"):
        KeyQueue(5, 3).enqueue(unit_rows(2, 3))
    named = KeyQueue(4, {"a": 3, "b": 3})
    with pytest.raises(ValueError, match="exactly the queues"):
        named.enqueue(a=unit_rows(2, 3))
    with pytest.raises(ValueError, match="same number of keys"):
        named.enqueue(a=unit_rows(2, 3), b=unit_rows(1, 3))
    with pytest.raises(KeyError, match="no queue named"):
        named["c"]


def test_ema_update_moves_parameters_and_leaves_buffers():
    torch.manual_seed(0)
    source, target = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)), nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    source(torch.randn(8, 3))  # gives the source non-default BatchNorm running statistics
    before = {name: t.clone() for name, t in target.state_dict().items()}
    source_params = dict(source.named_parameters())
    ema_update_(target, source, momentum=0.9)
    for name, param in target.named_parameters():
        torch.testing.assert_close(param, 0.9 * before[name] + 0.1 * source_params[name])
    for name, buffer in target.named_buffers():
        torch.testing.assert_close(buffer, before[name])
    ema_update_(target, source, momentum=0.0)
    for name, param in target.named_parameters():
        torch.testing.assert_close(param, source_params[name])
    with pytest.raises(ValueError, match="momentum"):
        ema_update_(target, source, momentum=1.5)


def test_single_process_shuffle_round_trips():
    torch.manual_seed(0)
    x = torch.arange(10.0).unsqueeze(1).repeat(1, 3)
    shuffled, doubled, restore = batch_shuffle(x, 2 * x)
    assert not torch.equal(shuffled, x)
    torch.testing.assert_close(shuffled, x[torch.argsort(restore)])
    torch.testing.assert_close(doubled, 2 * shuffled)
    torch.testing.assert_close(batch_unshuffle(shuffled, restore), x)
    assert gather_from_all_ranks(x) is not x and torch.equal(gather_from_all_ranks(x), x)


def test_a_shuffle_draws_its_permutation_from_the_given_generator_only():
    """Training passes its per-step generator (saved in checkpoints): the permutation is that
    generator's randperm, and torch's global generator, which a resume restores at another point,
    is not read."""
    x = torch.arange(12.0).unsqueeze(1)
    generator = torch.Generator().manual_seed(7)
    expected = torch.randperm(12, generator=torch.Generator().manual_seed(7))
    global_state = torch.get_rng_state()
    shuffled, restore = batch_shuffle(x, generator=generator)
    assert torch.equal(torch.get_rng_state(), global_state)
    assert torch.equal(shuffled[:, 0], expected.float()) and torch.equal(restore, torch.argsort(expected))
    assert not torch.equal(generator.get_state(), torch.Generator().manual_seed(7).get_state())  # it drew

    def centred(t):  # like BatchNorm, the output of a row depends on the group it runs in
        return {"z": t - t.mean(0)}

    torch.manual_seed(0)
    first = shuffle_bn_forward(centred, [x], 2, torch.Generator().manual_seed(3))["z"]
    torch.manual_seed(1)  # another global state, the same generator: the same groups
    assert torch.equal(first, shuffle_bn_forward(centred, [x], 2, torch.Generator().manual_seed(3))["z"])
    assert not torch.equal(first, shuffle_bn_forward(centred, [x], 2, torch.Generator().manual_seed(4))["z"])


def bn_encoder():
    """A key encoder whose outputs depend on its batch: Linear -> BatchNorm (train mode)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)).train()


def grouped_reference(encoder, clips, permutation, groups):
    """The naive shuffle BN: each group of the permutation through the encoder on its own."""
    out = torch.empty(clips[0].shape[0], 3)
    for group in permutation.view(groups, -1):
        out[group] = encoder(torch.cat([c[group] for c in clips])).view(len(clips), -1, 3).mean(0)
    return out


def test_shuffle_bn_forward_equals_separately_normalised_groups_of_a_permutation():
    encoder = bn_encoder()
    clips = [torch.randn(12, 4), torch.randn(12, 4)]  # two clips of each of 12 videos

    def encode(a, b):
        z = encoder(torch.cat([a, b]))
        return {"mean": z.view(2, -1, 3).mean(0), "a": z[: a.shape[0]]}

    for groups in (1, 3, 4):
        torch.manual_seed(groups)
        keys = shuffle_bn_forward(encode, clips, groups)
        torch.manual_seed(groups)
        permutation = torch.randperm(12)
        torch.testing.assert_close(keys["mean"], grouped_reference(encoder, clips, permutation, groups))
        assert keys["a"].shape == (12, 3)
    whole = encode(*clips)["mean"]
    assert not torch.allclose(keys["mean"], whole, atol=1e-3), "groups must change the statistics"
    with pytest.raises(ValueError, match="does not divide the global batch 12"):
        shuffle_bn_forward(encode, clips, 5)
    with pytest.raises(ValueError, match="positive multiple"):
        shuffle_bn_forward(encode, clips, 0)


def _ddp_worker(rank, world_size, init_file):
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size, timeout=timedelta(seconds=20)
    )
    try:
        torch.manual_seed(rank)
        # Row i of rank r holds 10 r + i, so the gathered batch reveals its order.
        x = (10 * rank + torch.arange(3.0)).unsqueeze(1).repeat(1, 4)
        everything = gather_from_all_ranks(x)
        assert torch.equal(everything[:, 0], torch.tensor([0.0, 1, 2, 10, 11, 12])), everything

        queue = KeyQueue(12, {"a": 4, "b": 4})
        queue.enqueue(a=x, b=-x)
        all_queues = gather_from_all_ranks(torch.stack([queue["a"], queue["b"]]).unsqueeze(0))
        assert torch.equal(all_queues[0], all_queues[1]), "ranks hold different queues"
        assert torch.equal(queue["a"][:6], F.normalize(everything, dim=1))
        assert int(queue.pointer) == 6

        shuffled, restore = batch_shuffle(x)
        restore_of_each_rank = gather_from_all_ranks(restore.unsqueeze(0))
        assert torch.equal(restore_of_each_rank[0], restore_of_each_rank[1]), "ranks disagree on the permutation"
        assert torch.equal(gather_from_all_ranks(shuffled), everything[torch.argsort(restore)])
        assert torch.equal(batch_unshuffle(shuffled, restore), x)

        # Shuffle BN across ranks: 4 groups over the global batch of 8, two on each rank. Each
        # rank's keys equal the one-process loop over the groups of rank 0's permutation, and a
        # rank's keys use statistics of the other rank's videos (its query's group is its rank).
        encoder = bn_encoder()
        torch.manual_seed(0)
        videos = torch.randn(8, 4)
        local = videos[4 * rank : 4 * rank + 4]
        torch.manual_seed(100 + rank)  # ranks draw different permutations: rank 0's must win
        keys = shuffle_bn_forward(lambda v: {"k": encoder(v)}, [local], groups=4)["k"]
        torch.manual_seed(100)
        permutation = torch.randperm(8)
        expected = grouped_reference(encoder, [videos], permutation, groups=4)
        torch.testing.assert_close(keys, expected[4 * rank : 4 * rank + 4])
        assert not torch.allclose(keys, encoder(local), atol=1e-3), "keys normalised with the query's rank"
        with pytest.raises(ValueError, match="multiple of the 2 ranks"):
            shuffle_bn_forward(lambda v: {"k": encoder(v)}, [local], groups=3)
    finally:
        dist.destroy_process_group()


def test_two_process_gloo(tmp_path):
    world_size, deadline = 2, time.monotonic() + 60
    context = mp.start_processes(
        _ddp_worker, args=(world_size, str(tmp_path / "rendezvous")), nprocs=world_size, join=False, start_method="spawn"
    )
    while not context.join(timeout=1):  # raises if a worker failed
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("the 2-process gloo test did not finish within 60 s")


def test_queue_is_full_once_every_slot_was_written():
    queue = KeyQueue(6, 4)
    assert not queue.is_full
    queue.enqueue(torch.randn(3, 4))
    assert not queue.is_full
    queue.enqueue(torch.randn(3, 4))
    assert queue.is_full
    queue.enqueue(torch.randn(3, 4))
    assert queue.is_full
