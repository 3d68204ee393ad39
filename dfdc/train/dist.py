"""Training on several processes through torchrun (DDP): the process group, each rank's device, the model
wrapper and the few collectives the loop needs.

Running under torchrun means ``LOCAL_RANK`` or ``WORLD_SIZE`` is in the environment.
Each rank then drives one device (``cuda:LOCAL_RANK`` on a GPU machine) and joins the process group:
NCCL on CUDA, gloo on the CPU. Every collective here is a no-op in a single process, so the loop has
one code path for any world size.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as tdist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from dfdc.device import pick_device

TORCHRUN_ENV = ("LOCAL_RANK", "WORLD_SIZE")


@dataclass(frozen=True)
class Ctx:
    """This process's place among the training processes."""

    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs and writes."""
        return self.rank == 0


def under_torchrun(env: Mapping[str, str] | None = None) -> bool:
    """Whether this process was started by torchrun (``LOCAL_RANK`` or ``WORLD_SIZE`` is set)."""
    env = os.environ if env is None else env
    return any(k in env for k in TORCHRUN_ENV)


def launch_command(nproc: int, argv: Sequence[str]) -> list[str]:
    """The command that runs ``argv`` (a script and its arguments) as ``nproc`` processes on this machine."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
            *argv]


def relaunch(nproc: int, argv: Sequence[str]) -> int:
    """Run ``argv`` under torchrun with ``nproc`` processes and return torchrun's exit code.

    A SIGTERM or an interrupt of this process reaches torchrun as a SIGTERM, which it passes on to its
    workers: stopping the stage stops the training.
    """
    proc = subprocess.Popen(launch_command(nproc, argv))
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: proc.terminate())
    try:
        return proc.wait()
    except BaseException:
        proc.terminate()
        proc.wait()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


def rank_device(device: str, local_rank: int) -> torch.device:
    """``device`` (``auto``, ``cpu``, ``cuda``...) for the rank at ``local_rank``: a bare ``cuda`` becomes
    ``cuda:LOCAL_RANK``, one GPU per process."""
    dev = pick_device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank)
    return dev


def _local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", tdist.get_rank() if tdist.is_initialized() else 0))


def setup(device: str = "auto") -> Ctx:
    """Join torchrun's process group (NCCL when this rank's device is CUDA, else gloo); outside torchrun,
    the single process."""
    if not under_torchrun():
        return Ctx(0, 1, 0, pick_device(device))
    local = _local_rank()
    dev = rank_device(device, local)
    if dev.type == "cuda":
        if dev.index >= torch.cuda.device_count():
            raise RuntimeError(f"local rank {local} would train on {dev}, but this machine has "
                               f"{torch.cuda.device_count()} GPU(s): start at most that many processes per machine")
        torch.cuda.set_device(dev)
    if not tdist.is_initialized():
        if dev.type == "cuda":
            tdist.init_process_group("nccl", device_id=dev)
        else:
            tdist.init_process_group("gloo")
    return current(device)


def current(device: str = "auto") -> Ctx:
    """This process's place: from the initialised process group, else the single process."""
    if not tdist.is_initialized():
        return Ctx(0, 1, 0, pick_device(device))
    local = _local_rank()
    return Ctx(tdist.get_rank(), tdist.get_world_size(), local, rank_device(device, local))


def teardown() -> None:
    """Leave the process group, if this process joined one."""
    if tdist.is_initialized():
        tdist.destroy_process_group()


def _distributed() -> bool:
    return tdist.is_initialized() and tdist.get_world_size() > 1


def barrier() -> None:
    """Wait for every rank."""
    if _distributed():
        tdist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` (picklable), on every rank."""
    if not _distributed():
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not _distributed():
        return [obj]
    out: list[Any] = [None] * tdist.get_world_size()
    tdist.all_gather_object(out, obj)
    return out


def broadcast_buffers(model: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (batch-norm statistics, WS-DAN's centres) to every rank.

    Each rank moves its own buffers in its last step (DDP broadcasts them only before a forward), and
    rank ``src``'s are the ones its checkpoint holds.
    """
    if not _distributed():
        return
    for buf in model.buffers():
        tdist.broadcast(buf, src)


def convert_sync_batchnorm(model: nn.Module) -> nn.Module:
    """Every batch norm of ``model`` as a synchronised one (statistics over every rank's batch).

    timm's converter: a plain BatchNorm becomes :class:`torch.nn.SyncBatchNorm` (what
    ``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` does), and timm's fused norm + activation
    layers (``BatchNormAct2d``, in EfficientNet and MobileNetV3) become ``SyncBatchNormAct``, a
    SyncBatchNorm subclass that keeps the activation torch's converter would drop. The weights,
    statistics and state-dict keys stay the same, so a checkpoint loads into the plain model.
    """
    from timm.layers import convert_sync_batchnorm as timm_convert

    return timm_convert(model)


def wrap(model: nn.Module, ctx: Ctx) -> nn.Module:
    """``model`` for training on ``ctx``'s ranks: DistributedDataParallel over several ranks, the model
    itself in a single process.

    Call it once the optimizer has set which parameters train (a frozen backbone's do not): DDP
    synchronises the gradients of those that require one. No registered family leaves a trainable
    parameter out of its training forward, so ``find_unused_parameters`` stays off (DDP says so when
    one does).
    """
    if ctx.world == 1:
        return model
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, output_device=ids[0] if ids else None)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DDP wrapper (its own methods, spec and plain state-dict keys)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def group_size(model: nn.Module) -> int:
    """The number of ranks ``model`` trains on: its DDP process group's size, 1 when not wrapped."""
    if isinstance(model, DistributedDataParallel):
        return tdist.get_world_size(model.process_group)
    return 1
