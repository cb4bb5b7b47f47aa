"""Row 3, data stall: the cached toy-world loader against what the toy training step consumes."""
from __future__ import annotations

from pathlib import Path

import torch

from hdc_lib.bench.steps import METHODS, make_step, toy_method
from hdc_lib.bench.timing import interleaved_medians
from hdc_lib.data.samplers import RandomClipSampler
from hdc_lib.experiment import build_dataset


def bench_stall(batches: int = 6, repeats: int = 3, methods: tuple[str, ...] = METHODS + ("supervised",),
                world: str | Path = "data/toyworld", overrides: tuple[str, ...] = ()) -> list[dict]:
    """Videos/s of the cached toy-world loader (DataLoader, workers as configured) vs videos/s of the
    toy training step (views + forward + backward + update), per method. `overrides` are config
    overrides (e.g. a smaller world's `data.toyworld`)."""
    from torch.utils.data import DataLoader

    rows = []
    for name in methods:
        cfg, method = toy_method(name, overrides, world=world)
        dataset = build_dataset(cfg, train=True, clip_sampler=RandomClipSampler(**method.clip_request()))
        batch = cfg.train.batch_size
        order = [list(range(i * batch, (i + 1) * batch)) for i in range(min(batches, len(dataset) // batch))]

        def load():
            return [item for item in DataLoader(dataset, batch_sampler=order, num_workers=cfg.data.workers)]

        first = load()[0]  # also fills the decoded-video cache
        optimizer = torch.optim.AdamW(method.trainable_parameters(), lr=1e-4)
        generator = torch.Generator().manual_seed(0)

        def consume():
            for _ in order:
                views = method.make_views(first["video"], generator=generator)
                views["label"] = first["label"]
                make_step(method, optimizer, views)()
        seconds = interleaved_medians({"loader": load, "step": consume}, repeats)
        videos = len(order) * batch
        rows.append({"method": name, "workers": cfg.data.workers, "loader_videos_per_s": videos / seconds["loader"],
                     "step_videos_per_s": videos / seconds["step"], "ratio": seconds["step"] / seconds["loader"]})
    return rows
