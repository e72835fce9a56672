"""
.. _distributed_accumulation:

Gradient accumulation with DistributedDataParallel
==================================================

Data-parallel training runs one copy of the model in each of several
processes, the *workers*. Each worker takes its own share of the batch, and
``torch.nn.parallel.DistributedDataParallel`` (DDP) averages the
gradients of all workers during ``backward()`` with an *all-reduce*, so that
every copy takes the same optimizer step. Add gradient accumulation
(:ref:`gradient_accumulation`) and a cost appears: DDP all-reduces in every
``backward()``, once per micro-batch, although the optimizer only needs the
average once per step, after the last micro-batch.

``model.no_sync()`` turns that all-reduce off for the micro-batches before the
last one. This recipe runs DDP for real, in two processes: on the CPU with the
``gloo`` backend, or on two GPUs with ``nccl`` where the machine has them. It
shows:

* that with ``no_sync()`` the accumulated gradient is the gradient of the whole
  batch computed in a single process;
* how many all-reduce calls an optimizer step makes, counted with a DDP
  communication hook, and how long a step takes;
* the documented trap: ``no_sync()`` around ``backward()`` alone still
  all-reduces every micro-batch;
* the same technique for a sharded model (FSDP2).

The script is a real distributed program. Launched with
``torchrun --nproc_per_node=2 distributed_accumulation.py`` it runs as one of
the workers, on one machine or on several (with torchrun's ``--nnodes`` and
rendezvous options, as on a cluster). Run on its own, with ``python`` or in a
notebook, it starts two local workers itself.
"""

# %%
# Setup
# -----
#
# Only PyTorch, matplotlib and Python's standard library.

import datetime
import os
import sys
import tempfile
import time
import traceback
from contextlib import nullcontext
from pathlib import Path

import matplotlib.pyplot as plt
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
import torch.optim as optim
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.nn.parallel import DistributedDataParallel as DDP

# %%
# Who runs this script, and on what
# ---------------------------------
#
# ``torchrun`` starts one process per worker and tells each one who it is
# through environment variables: ``RANK`` (its number among all workers),
# ``LOCAL_RANK`` (its number on this machine), ``WORLD_SIZE``,
# ``LOCAL_WORLD_SIZE`` and where to meet the others (``MASTER_ADDR``,
# ``MASTER_PORT``). Without them, the script was started on its own.
#
# With one GPU per worker, each worker uses its own GPU and the ``nccl``
# backend; otherwise the workers share the CPU and talk through ``gloo``.
# The check is ``torch.cuda.device_count()``, not the usual
# ``torch.cuda.is_available()``: the first asks NVML when it can, which leaves
# CUDA uninitialised in this process; the second initialises the CUDA driver
# and so, in the words of PyTorch's documentation, "poisons fork": processes
# forked after that cannot use CUDA, and this script forks its workers (see
# below). In a notebook where an earlier cell has used CUDA (even only through
# ``torch.cuda.is_available()``), or in the build of this site, which runs the
# recipes before this one in the same process, that has happened already. A
# worker forked from such a process is "in bad fork", which only the private
# ``torch.cuda._is_in_bad_fork()`` tells; the workers then use ``gloo`` on the
# CPU, and the script says so, rather than fail at their first CUDA call.
# Under torchrun every worker is a fresh process and can use its GPU.

UNDER_TORCHRUN = "LOCAL_RANK" in os.environ
WORKERS_ON_THIS_MACHINE = int(os.environ.get("LOCAL_WORLD_SIZE", 2))
BACKEND = "nccl" if torch.cuda.device_count() >= WORKERS_ON_THIS_MACHINE else "gloo"

# %%
# The model and the data
# ----------------------
#
# Every worker takes its share of each optimizer step's batch and cuts it into
# ``K = 4`` micro-batches of 16 points. With two workers the *effective batch
# size* is 2 × 4 × 16 = 128 points.
#
# ``global_batch(step, world_size)`` makes up the whole batch of a step from a
# generator seeded with the step number, so that every process can make the
# same batch and nothing needs to be sent around; ``my_micro_batches`` keeps
# this worker's share. (A real program gives each worker its share of a data
# set with a ``DistributedSampler``.)
# ``make_model`` seeds the generator, so that every process starts from the
# same weights.

K = 4  # micro-batches per optimizer step, on every worker
MICRO_BATCH_SIZE = 16
FEATURES = 32
TIMED_STEPS = 10  # optimizer steps timed per accumulation loop
criterion = nn.MSELoss()  # the mean over the points of a micro-batch


def make_model():
    """A small MLP, with the same initial weights in every process."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(FEATURES, 128), nn.Tanh(),
        nn.Linear(128, 128), nn.Tanh(),
        nn.Linear(128, 128), nn.Tanh(),
        nn.Linear(128, 1),
    )


def global_batch(step, world_size):
    """Inputs and targets of one optimizer step, for all workers together."""
    generator = torch.Generator().manual_seed(step)
    inputs = torch.randn(world_size * K * MICRO_BATCH_SIZE, FEATURES, generator=generator)
    targets = torch.sin(inputs[:, :4].sum(dim=1, keepdim=True))
    return inputs, targets


def my_micro_batches(step, rank, world_size, device):
    """This worker's share of the step's batch, as K (inputs, targets) pairs."""
    inputs, targets = global_batch(step, world_size)
    inputs, targets = inputs.chunk(world_size)[rank].to(device), targets.chunk(world_size)[rank].to(device)
    return list(zip(inputs.chunk(K), targets.chunk(K)))


# %%
# Three ways to accumulate under DDP
# ----------------------------------
#
# All three make ``K`` forward and backward passes and divide each loss by
# ``K``, as in :ref:`gradient_accumulation`. They differ only in where
# ``no_sync()`` goes:
#
# * ``sync every micro-batch`` leaves DDP alone: every ``backward()``
#   all-reduces;
# * ``no_sync: forward and backward`` runs the forward *and* the backward pass
#   of the first ``K − 1`` micro-batches inside ``model.no_sync()``, as its
#   documentation asks; the last micro-batch runs outside it;
# * ``no_sync: backward only`` computes each loss outside ``no_sync()`` and
#   puts only ``backward()`` inside it, the trap that the documentation of
#   ``no_sync()`` warns about.
#
# ``nullcontext()`` is a context manager that does nothing: the last
# micro-batch runs with synchronization on.


def sync_every_micro_batch(model, micro_batches):
    for inputs, targets in micro_batches:
        loss = criterion(model(inputs), targets)
        (loss / K).backward()  # DDP all-reduces here, every time


def no_sync_forward_and_backward(model, micro_batches):
    for i, (inputs, targets) in enumerate(micro_batches):
        last = i == K - 1
        with nullcontext() if last else model.no_sync():
            loss = criterion(model(inputs), targets)
            (loss / K).backward()  # adds to this worker's .grad; only the last one all-reduces


def no_sync_backward_only(model, micro_batches):
    for i, (inputs, targets) in enumerate(micro_batches):
        last = i == K - 1
        loss = criterion(model(inputs), targets)  # outside no_sync(): DDP prepares to all-reduce
        with nullcontext() if last else model.no_sync():
            (loss / K).backward()


ACCUMULATION_LOOPS = {
    "sync every micro-batch": sync_every_micro_batch,
    "no_sync: forward and backward": no_sync_forward_and_backward,
    "no_sync: backward only": no_sync_backward_only,
}

# %%
# Counting the all-reduce calls
# -----------------------------
#
# DDP does not all-reduce gradient by gradient: it groups the gradients into
# *buckets* and all-reduces a bucket as soon as all of its gradients are ready,
# while the backward pass goes on with the earlier layers. A communication hook
# replaces the all-reduce of a bucket with a function of our own.
# ``counting_allreduce_hook`` notes the bucket's index in a list and then calls
# ``default_hooks.allreduce_hook``, the averaging all-reduce that PyTorch
# documents as giving the same results as DDP without a hook.
#
# Buckets hold up to 25 MiB by default (the first one up to 1 MiB), and the
# gradients of our whole model (about 150 KB) would fit in one.
# ``bucket_cap_mb=0.05`` gives it several buckets, as a model with hundreds of
# millions of parameters has with the default.

BUCKET_CAP_MB = 0.05


def counting_allreduce_hook(bucket_indices, bucket):
    bucket_indices.append(bucket.index())
    return default_hooks.allreduce_hook(None, bucket)  # None: all workers


def make_ddp_model(device):
    """A DDP model whose all-reduce calls are recorded in the list it returns."""
    model = DDP(make_model().to(device), device_ids=[device.index] if device.type == "cuda" else None,
                bucket_cap_mb=BUCKET_CAP_MB)
    bucket_indices = []
    model.register_comm_hook(bucket_indices, counting_allreduce_hook)
    return model, bucket_indices


# %%
# What each worker measures
# -------------------------
#
# ``measure`` trains a fresh DDP model with one accumulation loop. Step 0 gives
# the gradient to check against a single process (before any update, so that
# every loop starts from the same weights); it is also the warm-up, and it is
# the step after which DDP rebuilds its buckets in the order the gradients
# became ready. The steps after it are timed, and their all-reduce calls
# counted; ``dist.barrier()`` makes all workers start each step together.


def flat_gradient(model):
    return torch.cat([p.grad.flatten() for p in model.parameters()]).cpu()


def measure(accumulate, rank, world_size, device):
    model, bucket_indices = make_ddp_model(device)
    optimizer = optim.SGD(model.parameters(), lr=0.01)
    accumulate(model, my_micro_batches(0, rank, world_size, device))
    gradient = flat_gradient(model)
    optimizer.step()
    optimizer.zero_grad()

    calls, seconds = [], []
    for step in range(1, TIMED_STEPS + 1):
        micro_batches = my_micro_batches(step, rank, world_size, device)
        bucket_indices.clear()
        dist.barrier()
        start = time.perf_counter()
        accumulate(model, micro_batches)
        optimizer.step()
        optimizer.zero_grad()
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # the GPU works asynchronously: wait before reading the clock
        seconds.append(time.perf_counter() - start)
        calls.append(len(bucket_indices))
    return {"gradient": gradient, "all-reduce calls": calls, "buckets": len(set(bucket_indices)),
            "seconds": seconds}


# %%
# For a sharded model, FSDP2's ``fully_shard`` splits every parameter, and its
# gradient, across the workers; instead of all-reducing the gradients, its
# backward pass *reduce-scatters* them: each worker receives the average over
# all workers for its own shard only. Its switch for accumulation is
# ``model.set_requires_gradient_sync(False)``, set before the forward pass of
# each micro-batch that should not communicate. ``full_tensor()`` gathers a
# sharded gradient whole again, for the comparison.


def fsdp2_gradient(rank, world_size, device):
    model = make_model().to(device)
    mesh = init_device_mesh(device.type, (world_size,))
    for layer in model:
        if isinstance(layer, nn.Linear):
            fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    for i, (inputs, targets) in enumerate(my_micro_batches(0, rank, world_size, device)):
        model.set_requires_gradient_sync(i == K - 1)  # communicate in the last backward only
        loss = criterion(model(inputs), targets)
        (loss / K).backward()
    return torch.cat([p.grad.full_tensor().flatten() for p in model.parameters()]).cpu()


# %%
# ``run_worker`` is everything one worker does: join the others (the *process
# group*), choose its device, run the measurements and leave the group. The
# timeout makes a collective call that waits for a dead worker fail after 60
# seconds instead of waiting forever.


def run_worker(rank, local_rank, world_size, init_method):
    # A forked worker cannot use CUDA if this process had initialised it (see above).
    backend = "gloo" if BACKEND == "nccl" and torch.cuda._is_in_bad_fork() else BACKEND
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=60))
    device = torch.device("cuda", local_rank) if backend == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    results = {"device": str(device), "backend": dist.get_backend(), "world size": world_size}
    for name, accumulate in ACCUMULATION_LOOPS.items():
        results[name] = measure(accumulate, rank, world_size, device)
    results["FSDP2"] = fsdp2_gradient(rank, world_size, device)
    dist.destroy_process_group()
    return results


# %%
# Starting the workers
# --------------------
#
# Under ``torchrun``, this process is a worker: it meets the others at the
# address torchrun gives it (``init_method="env://"``).
#
# On its own, the script starts two workers with
# ``torch.multiprocessing.start_processes``. They are *forked*: each is a copy
# of this process, functions included. The usual ``spawn`` would start a fresh
# interpreter that imports the worker function by name, and that cannot work
# in a notebook or in the build of this page, where the script is not an
# importable module. The workers meet through a file in a temporary folder
# (``file://``) rather than at a fixed port number, so no port can clash; the
# connections between them then use ports that the system picks.
#
# Rank 0 saves its results to a file in that folder, which this process reads
# once the workers are done. If a worker raises, ``join`` stops the others and
# raises an error here. But one failed worker soon makes the others fail too,
# at their next collective call ("Connection closed by peer"), and ``join``
# reports whichever failure it notices first. So a worker that fails also
# writes its traceback to a file named after the time, and the error raised
# here is the earliest one. A deadline guards against a worker that never
# finishes, and the ``finally`` clause kills and reaps whatever is left.
#
# Each worker uses one thread, as torchrun sets up: a forked worker can hang
# in its first multi-threaded operation if this process had already run one.


def local_worker(rank, world_size, folder):
    torch.set_num_threads(1)
    try:
        results = run_worker(rank, rank, world_size, f"file://{folder}/rendezvous")
        if rank == 0:
            torch.save(results, Path(folder) / "results.pt")
    except Exception:
        # The same clock in every process, zero-padded: the earliest failure sorts first.
        failure = Path(folder) / f"failure {time.monotonic_ns():020d}.txt"
        failure.write_text(f"worker {rank}: {traceback.format_exc()}")
        raise


def start_local_workers(world_size, deadline_seconds=300):
    """Fork ``world_size`` workers, wait for them, return rank 0's results."""
    if "fork" not in mp.get_all_start_methods():
        raise RuntimeError("This system cannot fork a process (Windows?), so the script cannot start "
                           "its workers itself: run it with torchrun --nproc_per_node=2 instead.")
    with tempfile.TemporaryDirectory() as folder:
        workers = mp.start_processes(local_worker, args=(world_size, folder), nprocs=world_size,
                                     start_method="fork", join=False)
        deadline = time.monotonic() + deadline_seconds
        try:
            while not workers.join(timeout=1):  # True once all have finished
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the workers did not finish within {deadline_seconds} seconds")
        except mp.ProcessRaisedException as error:
            first_failure = min(Path(folder).glob("failure *.txt"))
            raise RuntimeError(f"the first worker to fail was {first_failure.read_text()}") from error
        finally:
            for worker in workers.processes:
                if worker.is_alive():
                    worker.kill()
                worker.join()
        return torch.load(Path(folder) / "results.pt")


if UNDER_TORCHRUN:
    rank = int(os.environ["RANK"])
    results = run_worker(rank, int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"]), "env://")
    if rank != 0:
        sys.exit(0)  # done: rank 0 reports for all workers
else:
    results = start_local_workers(world_size=2)

if results["backend"] != BACKEND:
    print("CUDA was initialised in this process before the workers were forked, so they could not use "
          "the GPUs: they ran on the CPU with gloo (run the script in a fresh process, or with torchrun, "
          "to use the GPUs)")
print(f"Using device: {results['device']}")
print(f"Backend: {results['backend']}, world size: {results['world size']}")

# %%
# The lines above say which device and backend this page's two workers used.
#
# Is the accumulated gradient the full-batch gradient?
# ----------------------------------------------------
#
# The reference is computed here, in this one process, without DDP: one
# forward and one backward pass over the whole batch of step 0, all workers'
# shares together. ``compare`` is the check of :ref:`gradient_accumulation`:
# ``torch.allclose`` with a tolerance in proportion to the size of the
# gradient, and the largest absolute difference.


def full_batch_gradient(world_size):
    model = make_model()
    inputs, targets = global_batch(0, world_size)
    criterion(model(inputs), targets).backward()
    return flat_gradient(model)


def compare(description, gradient, reference):
    # Rounding errors grow with the size of the numbers, so the tolerance does too.
    same = torch.allclose(gradient, reference, atol=1e-5 * reference.abs().max().item())
    difference = (gradient - reference).abs().max().item()
    print(f"{description}: {same} (max abs difference {difference:.2e})")
    return same


reference = full_batch_gradient(results["world size"])
for name in ACCUMULATION_LOOPS:
    compare(f"{name} == full batch", results[name]["gradient"], reference)

# %%
# All three give the full-batch gradient, up to rounding. The loss of each
# micro-batch is a mean over 16 points; divided by ``K`` and averaged over the
# workers by DDP, it adds up to the mean over all 128 points. ``no_sync()``
# changes *when* the gradients are averaged, not the result: an all-reduce
# averages whatever ``.grad`` holds, and averaging once at the end gives the
# same result as averaging after each micro-batch.
#
# All-reduce calls and time per step
# ----------------------------------
#
# The table gives, for the timed steps on rank 0, the all-reduce calls of each
# optimizer step and the median time of a step.

def median_milliseconds(name):
    return 1000 * torch.tensor(results[name]["seconds"]).median().item()


buckets = results["sync every micro-batch"]["buckets"]
print(f"DDP buckets: {buckets}, micro-batches per step: K = {K}")
print(f"{'accumulation loop':<31}{'all-reduce calls per step':>27}{'time per step (ms)':>20}")
for name in ACCUMULATION_LOOPS:
    calls = results[name]["all-reduce calls"]
    calls_per_step = str(calls[0]) if len(set(calls)) == 1 else f"{min(calls)} to {max(calls)}"
    print(f"{name:<31}{calls_per_step:>27}{median_milliseconds(name):>20.2f}")

# %%
# Without ``no_sync()``, each of the ``K`` backward passes all-reduces every
# bucket: ``K`` × buckets calls per step. With the forward and backward passes
# inside ``no_sync()``, only the last backward pass communicates: one call per
# bucket. Each step sends ``K`` times less data between the workers, and the
# step is quicker.
#
# The trap all-reduces just as often as no ``no_sync()`` at all. DDP decides in
# the *forward* pass whether the next backward pass will all-reduce: a forward
# pass run outside ``no_sync()`` prepares DDP's reducer for it, and switching
# synchronization off afterwards, around ``backward()``, comes too late. The
# gradient is still right (above), so nothing warns you: without a counting
# hook like ours, only the time shows.
#
# The figure shows the same numbers. The times depend on the machine: on this
# page they come from the machine that built it, with the device and backend
# printed above, and both workers ran on that one machine, so no data crossed
# a network. Between machines, over a network, the all-reduces usually cost
# more than here.

allreduce_calls = [max(results[name]["all-reduce calls"]) for name in ACCUMULATION_LOOPS]
step_milliseconds = [median_milliseconds(name) for name in ACCUMULATION_LOOPS]
fig, (calls_ax, time_ax) = plt.subplots(1, 2, figsize=(10, 4.5))
for ax, values in ((calls_ax, allreduce_calls), (time_ax, step_milliseconds)):
    ax.bar(0, values[0], color="tab:gray", label="no no_sync()")
    ax.bar(1, values[1], color="tab:green", label="no_sync(): forward and backward")
    ax.bar(2, values[2], color="tab:red", label="no_sync(): backward only (the trap)")
    ax.set_xticks([])
calls_ax.set_title("All-reduce calls per optimizer step")
time_ax.set_title("Time per optimizer step (ms, median)")
fig.legend(*calls_ax.get_legend_handles_labels(), loc="lower center", ncol=3)
fig.suptitle(f"DDP with {results['world size']} workers, {K} micro-batches per step")
fig.tight_layout(rect=(0, 0.07, 1, 1))  # leave room for the legend below
plt.show()

# %%
# A sharded model: FSDP2
# ----------------------
#
# The same check for the FSDP2 model, which accumulated with
# ``set_requires_gradient_sync(False)`` in the same run.

compare("FSDP2, set_requires_gradient_sync == full batch", results["FSDP2"], reference)

# %%
# FSDP2 runs on the CPU with ``gloo`` too, and accumulates the same gradient.
# There is a memory cost: while synchronization is off, each worker keeps the
# gradient of the micro-batches so far for *whole* parameters, not just for its
# shards, until the last backward pass reduce-scatters it. That is memory that
# sharding was meant to save: when full gradients do not fit, leave
# synchronization on and reduce-scatter every micro-batch, at ``K`` times the
# communication.
#
# Summary
# -------
#
# * Under DDP, run the forward and the backward pass of the first ``K − 1``
#   micro-batches inside ``model.no_sync()``; the last one, outside, averages
#   the accumulated gradients over all workers.
# * ``no_sync()`` around ``backward()`` alone does not stop the all-reduce:
#   DDP decided to all-reduce during the forward pass. The gradients are
#   right, the communication is ``K`` times what it needs to be.
# * FSDP2's equivalent is ``model.set_requires_gradient_sync(False)``.
# * ``torchrun --nproc_per_node=N`` runs this very script as ``N`` workers.
# * :ref:`accumulation_in_practice` puts accumulation into a real training
#   loop, and :ref:`zero_grad_pitfalls` shows where ``zero_grad()`` belongs in
#   it.
# * :ref:`distributed_pitfalls` goes one step further: sequences of different
#   lengths across workers, DDP options that break ``no_sync()``, and what
#   FSDP2 communicates while it accumulates.

# sphinx_gallery_thumbnail_number = 1
