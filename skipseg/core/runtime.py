"""Where and how tensors run: device, precision (autocast), memory format, torch.distributed."""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from skipseg.core.fc_matmul import fully_connected_as_matmul
from skipseg.errors import SkipsegError


@dataclass(frozen=True)
class Runtime:
    """The resolved execution settings of one process."""

    device: torch.device
    amp_dtype: torch.dtype | None  # None = full fp32
    channels_last: bool
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def to_input(self, images: torch.Tensor) -> torch.Tensor:
        """Move a batch to the device in the memory format the model was put in."""
        images = images.to(self.device, non_blocking=True)
        if self.channels_last and images.dim() == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model on the device, in the memory format, its fully connected layers as matmuls."""
        model = fully_connected_as_matmul(model).to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            local_rank = int(os.environ.get("LOCAL_RANK", 0))
            return torch.device("cuda", local_rank)
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SkipsegError(f"train.device: unknown device '{name}' (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SkipsegError(f"train.device: '{name}' asked for but CUDA is not available on this machine")
    return device


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (x86 AVX512-BF16 / AMX, Arm BF16).

    Without it oneDNN emulates bf16, and autocast is several times slower than fp32 (`make bench`,
    part `peak`, measures both peaks).
    """
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """auto = bf16 autocast where the hardware computes bf16 natively (CUDA with bf16 support,
    CPUs with AVX512-BF16/AMX/Arm BF16), fp16 on older CUDA GPUs, fp32 on other CPUs."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_has_native_bf16() else None
    raise SkipsegError(f"train.precision: '{precision}' is not one of auto, fp32, bf16, fp16")


def make_runtime(device: str = "auto", precision: str = "auto", channels_last: bool | None = None) -> Runtime:
    """Resolve settings, joining the torchrun process group when launched under torchrun.

    `channels_last=None` (auto) turns it on together with mixed precision, where oneDNN/cuDNN's
    NHWC kernels pay off, and leaves fp32 on CPU in NCHW, where oneDNN's NCHW fp32 kernels are the
    faster ones (`make bench`, part `steps`, times both layouts).
    """
    rank, world = init_distributed(device)
    dev = resolve_device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    amp_dtype = resolve_precision(precision, dev)
    if channels_last is None:
        channels_last = amp_dtype is not None
    return Runtime(dev, amp_dtype, channels_last, rank, world)


def init_distributed(device: str = "auto") -> tuple[int, int]:
    """Join the process group torchrun describes (gloo on CPU, nccl on CUDA); (0, 1) when alone."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and device != "cpu"
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return dist.get_rank(), dist.get_world_size()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks in place (no-op outside torch.distributed)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def seed_step(seed: int, device: torch.device) -> None:
    """Seed the generators a training step draws from (dropout): the CPU one, and the device's.

    Not `torch.manual_seed`, which on CUDA builds also queues a lazy seeding of every CUDA device
    with a captured Python stack, even on a machine without a GPU: costly once per step or sample.
    """
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed(seed)


def sync_batchnorm(model: torch.nn.Module, runtime: Runtime, enabled: bool = True) -> torch.nn.Module:
    """Under DDP, every BatchNorm of `model` as a SyncBatchNorm, so that training normalises with the
    statistics of the global batch (DeconvNet's BN after fc6/fc7 sees 1×1 maps: per-rank statistics
    of a few crops would be noisy). PyTorch's SyncBatchNorm runs on GPUs only, so on CPU (gloo) the
    model is returned as it is; also when alone or `enabled` is False. Parameters, buffers and
    state_dict keys are unchanged, so checkpoints load into the plain model."""
    if not (enabled and runtime.distributed and runtime.device.type == "cuda"):
        return model
    if not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return model
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)


def barrier() -> None:
    """Wait for every rank (no-op outside torch.distributed)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
