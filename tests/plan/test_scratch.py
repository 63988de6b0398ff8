"""What an op allocates beyond its outputs, traced on fake tensors (`bench.plan.scratch`): bitsandbytes' CPU 8-bit
update of a fp32 parameter of n elements holds five fp32 copies at once (both states dequantized, the scaled
gradient, the square root and the denominator: 20 n bytes, read off its source), a C kernel is named and left
alone, and only a CPU plan adds any of it."""

from __future__ import annotations

import bitsandbytes  # noqa: F401 - registers its ops with torch
import torch
from omegaconf import OmegaConf
from torch._subclasses.fake_tensor import FakeTensorMode

from bench.cli import compose
from bench.config import RunConfig
from bench.models.precision import PlannedDevice
from bench.plan.engine import plan_memory
from bench.plan.scratch import OpScratch

N = 1_000_000  # elements of the parameter


def _update_args() -> tuple:
    """The arguments of one 8-bit AdamW update of a fp32 parameter of N elements, as fake tensors."""
    blocks = -(-N // 256)
    with FakeTensorMode(allow_non_fake_inputs=True):
        param, grad = torch.empty(N), torch.empty(N)
        states = [torch.empty(N, dtype=torch.uint8) for _ in range(2)]
        absmax = [torch.empty(blocks) for _ in range(2)]
        code = [torch.empty(256) for _ in range(2)]
    return ("adam", grad, param, states[0], states[1], 0.9, 0.999, 0.0, 0.0, 1e-8, 1, 1e-3, code[0], code[1],
            absmax[0], absmax[1], 0.0, 1.0, False)


def test_the_8bit_updates_five_fp32_copies_on_top_of_what_is_live() -> None:
    scratch = OpScratch(lambda: (12_345, "optimizer"))
    with scratch:
        torch.ops.bitsandbytes.optimizer_update_8bit_blockwise(*_update_args())
    assert scratch.peaks == {"optimizer": 12_345 + 5 * 4 * N} and scratch.untraced == set()


def test_a_c_kernel_is_named_not_run() -> None:
    with FakeTensorMode(allow_non_fake_inputs=True):
        packed, absmax = torch.empty(N // 2, dtype=torch.uint8), torch.empty(N // 64)
    scratch = OpScratch(lambda: (0, "forward"))
    with scratch:  # on a fake tensor its C kernel would dereference a pointer to nothing
        torch.ops.bitsandbytes.dequantize_4bit(packed, absmax, 64, "nf4", [1000, 1000], torch.bfloat16)
    assert scratch.peaks == {} and scratch.untraced == {"bitsandbytes::dequantize_4bit"}


def _cfg(*overrides: str) -> RunConfig:
    return RunConfig.from_dict(OmegaConf.to_container(compose([*overrides, "output_dir=."]), resolve=True))


def test_only_a_cpu_plan_adds_the_optimizers_scratch() -> None:
    cfg = _cfg("model=tiny-bert", "data.max_length=32", "trainer.batch_size=8", "method=full",
               "trainer.optimizer=adamw_8bit")
    on_cpu = plan_memory(cfg, device=torch.device("cpu"))
    assert set(on_cpu.op_scratch) == {"optimizer"}
    optimizer_phase = sum(on_cpu.phases["optimizer"].values())
    assert on_cpu.traced_allocator_bytes == optimizer_phase + on_cpu.op_scratch["optimizer"] > on_cpu.peak_bytes
    on_gpu = plan_memory(cfg, device=PlannedDevice("cuda"))  # a CUDA kernel keeps no fp32 copies
    assert on_gpu.op_scratch == {} and on_gpu.traced_allocator_bytes == on_gpu.peak_bytes
