"""Standalone reproduction: oneDNN's bf16 conv3d weight gradient on avx512_core_bf16 (no AMX).

When the input depth is 2 and the kernel depth 3 (with temporal padding), the bf16 weight gradient
of torch.nn.functional.conv3d disagrees with the fp32 one on the same, exactly bf16-representable
inputs: cosine near 0, changing from call to call, NaN when the freed heap memory the kernel reuses
holds NaN. Output and input gradient are right; other depths and kernel depths are right.

    python onednn_bf16_conv3d_wgrad.py                                    # this CPU's best ISA
    ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 python onednn_bf16_conv3d_wgrad.py  # AVX512-BF16 without AMX

Only torch is needed. Reproduced with torch 2.14.1 (oneDNN 3.12.0) on an Intel Xeon with AMX with
the ISA capped as above (its own AMX kernels are right); the NaN weight gradients that first showed
the bug came from training on an AMD EPYC with AVX512-BF16 and no AMX, the same kernel family.
"""
import ctypes
import re

import torch
import torch.nn.functional as F

torch.set_num_threads(1)  # the result does not depend on it; one thread keeps the run short
# Keep freed blocks below 32 MB in the heap (glibc's M_MMAP_THRESHOLD, as the training process that
# first showed the NaNs did): what the kernel reads uninitialised is then what the last free left.
ctypes.CDLL("libc.so.6").mallopt(-3, 32 * 2 ** 20)


def weight_grads(x, w, dy, padding, dirty_heap: bool):
    """The weight gradient of conv3d(x, w) for output gradient dy, in fp32 and in bf16 autocast."""
    grads = []
    for low in (False, True):
        if dirty_heap:  # fill freed heap memory with NaN (blocks of 64 KB to 8 MB): a kernel reading it shows NaN
            spray = [torch.full((2 ** k,), float("nan")) for k in range(14, 22) for _ in range(8)]
            del spray
        weight = w.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=low):
            F.conv3d(x, weight, padding=padding).backward(dy)
        grads.append(weight.grad.double())
    return grads


def report(depth, kernel_depth, memory_format, dirty_heap, batch=8, c_in=64, c_out=96, size=4):
    generator = torch.Generator().manual_seed(0)
    # Inputs rounded to bf16, so the bf16 and fp32 convolutions see the same numbers.
    x = torch.randn(batch, c_in, depth, size, size, generator=generator).bfloat16().float()
    w = (torch.randn(c_out, c_in, kernel_depth, 3, 3, generator=generator) * 0.05).bfloat16().float()
    padding = (kernel_depth // 2, 1, 1)
    dy = torch.randn(batch, c_out, depth, size, size, generator=generator).bfloat16().float()
    x, w, dy = (t.contiguous(memory_format=memory_format) for t in (x, w, dy))
    fp32, bf16 = weight_grads(x, w, dy, padding, dirty_heap)
    nan = int(torch.isnan(bf16).sum())
    cosine = F.cosine_similarity(fp32.flatten(), bf16.nan_to_num().flatten(), dim=0).item()
    layout = "channels_last_3d" if memory_format is torch.channels_last_3d else "contiguous"
    print(f"depth {depth}  kernel {kernel_depth}x3x3  {layout:16s}  heap {'NaN ' if dirty_heap else 'as is'}  "
          f"cosine(bf16, fp32) {cosine:8.4f}  NaN {nan:6d} of {bf16.numel()}")


if __name__ == "__main__":
    onednn = re.search(r"MKL-DNN v[\d.]+", torch.__config__.show())
    print(f"torch {torch.__version__}, {onednn.group(0) if onednn else 'oneDNN ?'}, "
          f"AVX512-BF16 {torch.cpu._is_avx512_bf16_supported()}, AMX {torch.cpu._is_amx_tile_supported()}")
    for depth in (1, 2, 3, 4):
        report(depth, 3, torch.channels_last_3d, dirty_heap=False)
    report(2, 3, torch.contiguous_format, dirty_heap=False)
    report(2, 1, torch.channels_last_3d, dirty_heap=False)
    for _ in range(3):
        report(2, 3, torch.channels_last_3d, dirty_heap=True)
