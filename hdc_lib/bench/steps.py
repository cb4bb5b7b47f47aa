"""What the benchmarks run: a toy preset's method, random windows of its clip shape, one optimiser
step on fixed views, and a recorder of the backbone passes a step makes (to replay them bare).

`make_step` wraps the training loop's own optimiser step (`train.optimiser_step`), so a benchmark
measures the step training takes, whatever that step becomes.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import torch

from hdc_lib.backbones import use_precision
from hdc_lib.experiment import build_method, load_config
from hdc_lib.precision import resolve_precision
from hdc_lib.train import optimiser_step

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "toy"
METHODS = ("coupled", "hdc", "dclr")


def toy_method(name: str, overrides: tuple[str, ...] = (), world: str | Path = "data/toyworld"):
    """The toy preset's config and method for `name` (coupled, hdc, dclr, supervised), in the
    memory format and the precision training uses on the CPU."""
    cfg = load_config(CONFIGS / f"{name}.yaml", [f"data.root={world}", *overrides])
    torch.manual_seed(0)
    method = use_precision(build_method(cfg, num_classes=8), resolve_precision(cfg.train.precision, "cpu"))
    if cfg.train.channels_last:
        method.to(memory_format=torch.channels_last_3d)
    return cfg, method


def random_windows(method, batch: int, size: int | tuple[int, int] = 64) -> torch.Tensor:
    """uint8 (B, clips, frames, H, W, 3) windows of the shape the method's sampler delivers; `size`
    is H = W or (H, W)."""
    request = method.clip_request()
    height, width = (size, size) if isinstance(size, int) else size
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (batch, request["num_clips"], request["num_frames"], height, width, 3),
                         dtype=torch.uint8, generator=generator)


def make_step(method, optimizer, views: dict, scaler: torch.amp.GradScaler | None = None):
    """A zero-argument call of the training loop's optimiser step on fixed views (the loop's step
    without data), in the precision the method's backbones were given; `scaler` for fp16."""
    return partial(optimiser_step, method, views, optimizer, scaler or torch.amp.GradScaler("cpu", enabled=False))


class BackbonePasses:
    """Inside `with BackbonePasses(method) as passes:`, records every `features` call of the method's
    backbones: input shape, deepest stage, whether it ran with gradient. `bare_step` replays the
    same passes on a bare backbone."""

    def __init__(self, method):
        self.calls: list[tuple[tuple[int, ...], str, bool]] = []
        self._backbones = [module for module in method.modules() if hasattr(module, "stage_names")]

    def __enter__(self):
        for backbone in self._backbones:
            original = backbone.features

            def recording(x, stages=None, _original=original, _names=backbone.stage_names):
                wanted = _names if stages is None else tuple(stages)
                self.calls.append((tuple(x.shape), max(wanted, key=_names.index), torch.is_grad_enabled()))
                return _original(x, stages)
            backbone.features = recording  # an instance attribute shadows the method
        return self

    def __exit__(self, *exc):
        for backbone in self._backbones:
            del backbone.features

    @property
    def clips(self) -> int:
        return sum(shape[0] for shape, _, _ in self.calls)

    def bare_step(self, backbone, optimizer, device: torch.device, memory_format=torch.contiguous_format):
        """The recorded passes on `backbone` (random inputs, in the backbone's precision): forward
        with gradient where the method had it, a sum of the outputs as the loss, backward, update."""
        inputs = [(torch.randn(shape, device=device).contiguous(memory_format=memory_format), deepest, grad)
                  for shape, deepest, grad in self.calls]

        def step():
            loss = 0.0
            for x, deepest, grad in inputs:
                with torch.set_grad_enabled(grad):
                    out = backbone.features(x, (deepest,))[deepest]
                if grad:
                    loss = loss + out.mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return step
