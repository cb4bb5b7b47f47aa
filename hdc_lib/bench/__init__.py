"""`hdc bench [--quick]`: the training pipeline measured against its limits, as ratios.

Absolute times drift on shared machines, so every row compares two things measured in the same
process, warm, as the median of interleaved repeats (both sides see the same load):

  1. decode        dataset loader vs a bare PyAV loop over the same windows      goal >= 0.8
  2. augmentation  batched SpatialAugment vs torchvision.transforms.v2 clip by clip goal >= 5x
  3. data stall    cached toy-world loader vs what the toy training step consumes goal >= 1.5x
  4. overhead      a method's training step vs the bare backbone passes it makes  goal <= 1.3x;
                   with the peak memory of each method's step
  5. precision     each method's step in fp32 vs in train.precision=auto's choice  goal >= 1.5x
  6. scaling       step time against batch size, clip length, tapped levels (figure)
  7. CUDA          row 4 in bf16/fp16 and channels_last_3d, achieved TFLOP/s (skipped on CPU)

Results go to results/bench.md (and .json); a hand-written section below the HISTORY_MARKER line
of an existing results/bench.md (what was changed, with the before/after numbers) is kept.
`hdc bench data ROOT` runs row 1 alone on a real dataset. `hdc bench --device cuda [--steps N]`
trains every paper preset on that device instead (results/bench_cuda.md): do they fit, how fast.
`hdc bench precision-probes` trains a toy preset for 3 seeds in fp32 and in the chosen precision
and compares their toy-world probes (results/precision_probes.json, shown in results/bench.md).

One module per job, in the order they build on each other:

  timing.py            the instruments: interleaved median times, peak memory, FLOPs
  steps.py             a toy method, random windows, one optimiser step (the training loop's
                       own, train.optimiser_step), the recorder of a step's backbone passes
  decode.py · augmentation.py · stall.py · methods.py · precision.py · scaling.py
                       rows 1, 2, 3, 4 (and 7), 5 and 6
  presets.py           `--device`: the paper presets trained on a device
  precision_probes.py  `precision-probes`: fp32 vs the chosen precision, probed over seeds
  notebooks.py         `notebooks`: every notebook timed in its default mode
  report.py            every row run, results/bench.md and bench.json written
  cli.py               the `hdc bench` command line

The names below are what the rest of the project imports from here.
"""
from hdc_lib.bench.cli import add_bench_parser
from hdc_lib.bench.steps import BackbonePasses, random_windows, toy_method
from hdc_lib.bench.timing import step_flops

__all__ = ["BackbonePasses", "add_bench_parser", "random_windows", "step_flops", "toy_method"]
