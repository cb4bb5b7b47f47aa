"""Run by tests/test_ddp.py under torchrun (2 CPU processes, gloo): trains on the tiny world, then
checks that the ranks' parameters agree, that the in-batch InfoNCE over gathered keys has the
gradient of the loss over the global batch, and that a method's shuffle-BN key pass spreads its
groups over the ranks. Rank 0 writes the findings as JSON."""
import json
import sys
from functools import partial

import torch
import torch.distributed as dist
import torch.nn.functional as F

from hdc_lib.config import from_dict
from hdc_lib.contrastive import gather_keys
from hdc_lib.coupled import Coupled, CoupledConfig
from hdc_lib.experiment import load_config
from hdc_lib.train import train

config, result_path, *overrides = sys.argv[1:]
summary = train(load_config(config, overrides), progress=False)
rank, world = dist.get_rank(), dist.get_world_size()

# 1. Parameters in sync: every rank's flattened parameters equal rank 0's.
flat = torch.cat([p.detach().flatten() for p in summary["method"].parameters()])
gathered = [torch.empty_like(flat) for _ in range(world)]
dist.all_gather(gathered, flat)
in_sync = all(torch.equal(gathered[0], g) for g in gathered)

# 2. Loss over the global batch: the DDP-averaged gradient of each rank's local loss equals the
#    gradient of one InfoNCE over all 2B rows computed in one process.
torch.manual_seed(0)
query, key = torch.randn(8, 16, requires_grad=True), torch.randn(8, 16, requires_grad=True)
local = slice(rank * 4, rank * 4 + 4)
method = Coupled()
loss = method.contrast("t", [(query[local], key[local])], {})
loss.backward()
for grad in (query.grad, key.grad):
    dist.all_reduce(grad)
    grad /= world
q_ref, k_ref = query.detach().clone().requires_grad_(), key.detach().clone().requires_grad_()
logits = F.normalize(q_ref, dim=1) @ F.normalize(k_ref, dim=1).t() / method.cfg.temperature
F.cross_entropy(logits, torch.arange(8)).backward()
grad_match = torch.allclose(query.grad, q_ref.grad, atol=1e-6) and torch.allclose(key.grad, k_ref.grad, atol=1e-6)
columns = gather_keys(key[local])[0].shape[0]

# 3. Shuffle BN across ranks: Coupled's momentum keys with 2 groups (one per rank) of the global
#    batch of 8 videos equal the one-process loop over the groups of rank 0's permutation.
torch.manual_seed(0)
model = Coupled(from_dict(CoupledConfig, {"queue_size": 8, "shuffle_bn_groups": 2, "clip_frames": 4,
                                          "augment": {"size": 16}}))
clips = [torch.randn(8, 3, 4, 16, 16, generator=torch.Generator().manual_seed(j)) for j in range(2)]
local = slice(rank * 4, rank * 4 + 4)
torch.manual_seed(10 + rank)  # each rank draws its own permutation; rank 0's is broadcast
keys = model.momentum_keys(partial(model._embed, momentum=True), *(c[local] for c in clips))["b"]
torch.manual_seed(10)
expected = torch.empty(8, keys.shape[1])
for group in torch.randperm(8).view(2, 4):
    expected[group] = model._embed(*(c[group] for c in clips), momentum=True)["b"]
shuffle_bn_match = torch.allclose(keys, expected[local], atol=1e-5)
plain = model._embed(*(c[local] for c in clips), momentum=True)["b"]
shuffle_bn_match = shuffle_bn_match and not torch.allclose(keys, plain, atol=1e-3)
matches = torch.tensor([float(shuffle_bn_match)])
dist.all_reduce(matches)

if rank == 0:
    with open(result_path, "w") as f:
        json.dump({"in_sync": in_sync, "grad_match": grad_match, "key_columns": columns,
                   "shuffle_bn_match": bool(matches.item() == world), "world": world}, f)
dist.destroy_process_group()
