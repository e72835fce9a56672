"""
.. _distributed_pitfalls:

Pitfalls of accumulating across workers
=======================================

:ref:`distributed_accumulation` accumulates under DDP with losses that are
means over equal-size micro-batches, and there ``no_sync()`` is all it takes.
Real training runs meet the next problems: sequences of different lengths,
DDP options that change how it tracks gradients, and a sharded model whose
parameters travel as well as its gradients. This recipe runs each of them for
real, in two processes (``gloo`` on the CPU, or ``nccl`` with one GPU per
worker), and measures what happens.

What you will learn:

* why each worker must divide its summed token loss by the number of tokens
  of *all* workers, and two ways to do it under DDP, against the per-worker
  mean that gives the shorter sequences too much weight;
* which DDP options break ``no_sync()`` in the PyTorch version this page was
  built with: a table that the code fills in (``find_unused_parameters``,
  ``static_graph``, activation checkpointing);
* how many all-gathers and reduce-scatters FSDP2 makes per optimizer step
  while it accumulates, and what ``set_reshard_after_backward(False)`` saves
  and costs;
* what the ``require_backward_grad_sync`` toggle that many training scripts
  copy does, and where it goes wrong.

Like :ref:`distributed_accumulation`, the script is a real distributed
program: ``torchrun --nproc_per_node=2 distributed_pitfalls.py`` runs it as one
of the workers; run on its own, with ``python`` or in a notebook, it starts two
local workers itself.
"""

# %%
# Setup
# -----
#
# Only PyTorch, matplotlib and Python's standard library.

import datetime
import os
import re
import sys
import tempfile
import time
import traceback
from contextlib import nullcontext
from pathlib import Path

import matplotlib.pyplot as plt
import torch

# DDP's constructor imports torch._dynamo, the front end of torch.compile,
# the first time it runs: a second or more. Imported here, before the workers
# are forked, it is imported once rather than once in every worker.
import torch._dynamo  # noqa: F401
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.checkpoint import checkpoint

# %%
# Who runs this script, and on what
# ---------------------------------
#
# As in :ref:`distributed_accumulation`: under ``torchrun`` this process is one
# worker, told who it is by environment variables; on its own, the script
# starts its workers itself. With one GPU per worker, each worker takes its
# own GPU and the ``nccl`` backend; otherwise the workers share the CPU and
# talk through ``gloo``. ``torch.cuda.device_count()`` answers without
# initialising CUDA in this process where it can ask NVML, which matters
# because the local workers are forked (see below).
#
# A forked worker cannot use CUDA if this process initialised it before: in a
# notebook where an earlier cell used CUDA (even only through
# ``torch.cuda.is_available()``), say, or in the build of this site, which
# runs the recipes before this one in the same process. Such a worker is "in
# bad fork", which only the private ``torch.cuda._is_in_bad_fork()`` tells;
# the workers then use ``gloo`` on the CPU, and the script says so, rather
# than fail at their first CUDA call. Under torchrun every worker is a fresh
# process and can use its GPU.

UNDER_TORCHRUN = "LOCAL_RANK" in os.environ
WORKERS_ON_THIS_MACHINE = int(os.environ.get("LOCAL_WORLD_SIZE", 2))
BACKEND = "nccl" if torch.cuda.device_count() >= WORKERS_ON_THIS_MACHINE else "gloo"

# %%
# Helpers shared by all four experiments
# --------------------------------------
#
# ``flat_gradient`` puts every gradient of a model into one vector (zeros for
# a parameter that got none). ``gradients_of_all_workers`` gathers that vector
# from every worker, so that we can check that all workers hold the same
# gradient, which is what DDP is for. ``counting_allreduce_hook`` is the
# communication hook of :ref:`distributed_accumulation`: it notes each
# all-reduce of DDP's gradient buckets, then runs the averaging all-reduce
# that DDP runs without a hook.
#
# ``sync_on_last(model, i)`` is the correct use of ``no_sync()``: the forward
# and backward passes of every micro-batch but the last run inside it.
# ``make_ddp`` wraps a model in DDP on this worker's device.

K = 3  # micro-batches per optimizer step, on every worker


def flat_gradient(model):
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten()
                      for p in model.parameters()])


def gradients_of_all_workers(model, world_size):
    gradient = flat_gradient(model)
    gathered = [torch.empty_like(gradient) for _ in range(world_size)]
    dist.all_gather(gathered, gradient)
    return torch.stack(gathered).cpu()


def counting_allreduce_hook(calls, bucket):
    calls.append("gradients")
    return default_hooks.allreduce_hook(None, bucket)  # None: all workers


def sync_on_last(model, i):
    return nullcontext() if i == K - 1 else model.no_sync()


def make_ddp(model, device, **options):
    return DDP(model.to(device), device_ids=[device.index] if device.type == "cuda" else None, **options)


# %%
# 1. The token-weighted loss across workers
# -----------------------------------------
#
# A language model's loss is a mean over the real tokens of a batch; padding
# does not count (``ignore_index``). Here the two workers get deliberately
# uneven shares: worker 0 long sequences, worker 1 short ones (with more
# workers, even ranks get long ones, odd ranks short ones).
# ``token_batch(rank)`` makes the ``K`` micro-batches of one worker from a
# generator seeded with its rank, so that this process can make every
# worker's share again for the reference.

VOCABULARY = 64
SEQUENCES = 4  # per micro-batch
LENGTH = 16  # tokens per sequence, padding included
PAD = -100  # cross_entropy's default ignore_index
SHORTEST = {0: 12, 1: 1}  # real tokens per sequence, at least: worker 0 long, worker 1 short
LONGEST = {0: 16, 1: 4}


def make_language_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Embedding(VOCABULARY, 32), nn.Linear(32, 32), nn.Tanh(),
                         nn.Linear(32, VOCABULARY))


def token_batch(rank):
    """This worker's K micro-batches of (tokens, targets), targets padded with PAD."""
    generator = torch.Generator().manual_seed(1000 + rank)
    micro_batches = []
    for _ in range(K):
        tokens = torch.randint(VOCABULARY, (SEQUENCES, LENGTH), generator=generator)
        targets = torch.randint(VOCABULARY, (SEQUENCES, LENGTH), generator=generator)
        lengths = torch.randint(SHORTEST[rank % 2], LONGEST[rank % 2] + 1, (SEQUENCES, 1),
                                generator=generator)
        targets[torch.arange(LENGTH) >= lengths] = PAD
        micro_batches.append((tokens, targets))
    return micro_batches


def token_loss(model, tokens, targets, reduction):
    logits = model(tokens)
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=PAD,
                           reduction=reduction)


# %%
# Three accumulation loops, all with ``no_sync()`` in its right place:
#
# * ``per-worker mean / K``, what most loops do: each micro-batch's mean over
#   its own tokens, divided by ``K``; DDP then averages the workers.
# * ``global count, loss × world size``: the workers first all-reduce their
#   token counts, before the first ``backward()``; each micro-batch's *summed*
#   token loss is divided by that global count and multiplied by the world
#   size, which undoes DDP's averaging.
# * ``global count, summing hook``: the same global count, but DDP's averaging
#   is switched off instead: a communication hook that all-reduces with a sum
#   and does not divide.
#
# ``global_token_count`` is the one extra all-reduce of a step: a single
# number. It stays a tensor: ``loss_sum / count`` needs no Python number, so
# on a GPU nothing waits for the all-reduce to finish; ``count.item()`` would
# make the CPU wait for it in every step.


def summing_allreduce_hook(calls, bucket):
    calls.append("gradients")
    work = dist.all_reduce(bucket.buffer(), async_op=True)  # a sum; DDP's default also divides
    return work.get_future().then(lambda future: future.value()[0])


def real_tokens(micro_batches):
    return sum((targets != PAD).sum() for _, targets in micro_batches)


def global_token_count(micro_batches, device, calls):
    count = real_tokens(micro_batches)
    dist.all_reduce(count)
    calls.append("token count")
    return count


def per_worker_mean(model, micro_batches, world_size, device, calls):
    for i, (tokens, targets) in enumerate(micro_batches):
        with sync_on_last(model, i):
            (token_loss(model, tokens, targets, "mean") / K).backward()


def global_count_times_world_size(model, micro_batches, world_size, device, calls):
    count = global_token_count(micro_batches, device, calls)
    for i, (tokens, targets) in enumerate(micro_batches):
        with sync_on_last(model, i):
            (token_loss(model, tokens, targets, "sum") * world_size / count).backward()


def global_count_summing_hook(model, micro_batches, world_size, device, calls):
    count = global_token_count(micro_batches, device, calls)
    for i, (tokens, targets) in enumerate(micro_batches):
        with sync_on_last(model, i):
            (token_loss(model, tokens, targets, "sum") / count).backward()


TOKEN_LOOPS = {
    "per-worker mean / K": (per_worker_mean, counting_allreduce_hook),
    "global count, loss x world size": (global_count_times_world_size, counting_allreduce_hook),
    "global count, summing hook": (global_count_summing_hook, summing_allreduce_hook),
}

# %%
# The *logged* loss has the same problem. Most scripts print the average of
# the workers' mean losses; the loss of the whole step is the summed token
# loss of all workers over all their tokens. ``logged_losses`` computes both
# with one all-reduce of three numbers: the worker's summed loss, its token
# count and its mean loss.


def logged_losses(model, micro_batches, world_size):
    with torch.no_grad():
        loss_sum = sum(token_loss(model, tokens, targets, "sum") for tokens, targets in micro_batches)
        count = real_tokens(micro_batches)
        sums = torch.stack([loss_sum, count.float(), loss_sum / count])
        dist.all_reduce(sums)
    return {"average of worker means": (sums[2] / world_size).item(),
            "token-weighted": (sums[0] / sums[1]).item()}


def token_counts_of_all_workers(micro_batches, world_size):
    count = real_tokens(micro_batches)
    gathered = [torch.zeros_like(count) for _ in range(world_size)]
    dist.all_gather(gathered, count)
    return [int(count) for count in gathered]


def token_experiment(rank, world_size, device):
    micro_batches = [(tokens.to(device), targets.to(device))
                     for tokens, targets in token_batch(rank)]
    results = {"tokens per worker": token_counts_of_all_workers(micro_batches, world_size)}
    for name, (accumulate, hook) in TOKEN_LOOPS.items():
        model = make_ddp(make_language_model(), device)
        calls = []
        model.register_comm_hook(calls, hook)
        accumulate(model, micro_batches, world_size, device, calls)
        results[name] = {"gradient": flat_gradient(model).cpu(), "calls": calls}
    results["logged loss"] = logged_losses(make_language_model().to(device), micro_batches, world_size)
    return results


# %%
# 2. Which DDP options break ``no_sync()``?
# -----------------------------------------
#
# Each row of the table wraps the same small network in DDP with one option
# and accumulates the gradients of three steps (without updating the weights,
# so that one reference per step checks them), once synchronizing every
# micro-batch and once with ``no_sync()`` around all micro-batches but the
# last:
#
# * ``find_unused_parameters=True`` on a network that sends the first
#   ``K − 1`` micro-batches through one branch and the last through another,
#   as a mixture of experts might: the first branch has no part in the last
#   micro-batch, the only one DDP synchronizes, and
#   `a PyTorch issue <https://github.com/pytorch/pytorch/issues/69031>`_
#   reported such parameters left unsynchronized;
# * ``static_graph=True``, with ``no_sync()`` from the very first step, and
#   again after one step synchronized throughout;
# * activation checkpointing of the middle block, with
#   ``torch.utils.checkpoint.checkpoint`` non-reentrant and reentrant, alone
#   and with each of the two options above (the network with the branches for
#   ``find_unused_parameters``).


class BranchyNet(nn.Module):
    def __init__(self, with_branches, checkpointing):
        super().__init__()
        torch.manual_seed(0)
        self.first = nn.Linear(8, 32)
        self.block = nn.Sequential(nn.Linear(32, 32), nn.Tanh())
        self.branches = nn.ModuleList([nn.Linear(32, 32), nn.Linear(32, 32)]) if with_branches else None
        self.last = nn.Linear(32, 1)
        self.checkpointing = checkpointing  # None, "reentrant" or "non-reentrant"

    def forward(self, x, branch=None):
        h = torch.tanh(self.first(x))
        if self.checkpointing is None:
            h = self.block(h)
        else:  # recomputes the block in backward instead of keeping its activations
            h = checkpoint(self.block, h, use_reentrant=self.checkpointing == "reentrant")
        if branch is not None:
            h = h + self.branches[branch](h)
        return self.last(h)


TABLE_STEPS = 3
MICRO_BATCH_SIZE = 8


def regression_batch(step, world_size):
    """Inputs and targets of one optimizer step, all workers together."""
    generator = torch.Generator().manual_seed(step)
    inputs = torch.randn(world_size * K * MICRO_BATCH_SIZE, 8, generator=generator)
    return inputs, torch.sin(inputs[:, :2].sum(dim=1, keepdim=True))


def my_regression_micro_batches(step, rank, world_size, device):
    inputs, targets = regression_batch(step, world_size)
    inputs, targets = inputs.chunk(world_size)[rank].to(device), targets.chunk(world_size)[rank].to(device)
    return list(zip(inputs.chunk(K), targets.chunk(K)))


# %%
# A row is a dictionary: the DDP options, the checkpointing, whether the
# micro-batches take the branches, and which steps use ``no_sync()`` in the
# ``no_sync()`` column.

ALL_STEPS = range(TABLE_STEPS)
AFTER_FIRST = range(1, TABLE_STEPS)
TABLE_ROWS = {
    "plain DDP": dict(options={}),
    "find_unused_parameters, two branches": dict(options={"find_unused_parameters": True},
                                                       branches=True),
    "static_graph": dict(options={"static_graph": True}),
    "static_graph, first step synced": dict(options={"static_graph": True}, no_sync_steps=AFTER_FIRST),
    "checkpoint, non-reentrant": dict(options={}, checkpointing="non-reentrant"),
    "checkpoint, reentrant": dict(options={}, checkpointing="reentrant"),
    "checkpoint non-reentrant + find_unused": dict(options={"find_unused_parameters": True},
                                                   branches=True, checkpointing="non-reentrant"),
    "checkpoint reentrant + find_unused": dict(options={"find_unused_parameters": True},
                                               branches=True, checkpointing="reentrant"),
    "checkpoint reentrant + static_graph": dict(options={"static_graph": True}, checkpointing="reentrant"),
}


def branch_of(row, i):
    """The branch micro-batch ``i`` takes: 0 for all but the last, 1 for the last; or None."""
    return (0 if i < K - 1 else 1) if row.get("branches") else None


def short_error(error):
    """The first sentence of an error message, without the C++ source path some carry."""
    message = str(error).strip().splitlines()[0]
    message = re.sub(r' at "[^"]*":\d+', "", message)
    message = re.split(r"(?<=[.!?]) ", message)[0].rstrip(",")
    return f"{type(error).__name__}: {message}"


def table_cell(row, use_no_sync, rank, world_size, device):
    """Per step, the gradient on every worker; or the error, as one short line."""
    try:
        model = make_ddp(BranchyNet(row.get("branches", False), row.get("checkpointing")), device,
                         **row["options"])
        gradients = []
        for step in range(TABLE_STEPS):
            step_uses_no_sync = use_no_sync and step in row.get("no_sync_steps", ALL_STEPS)
            micro_batches = my_regression_micro_batches(step, rank, world_size, device)
            for i, (inputs, targets) in enumerate(micro_batches):
                with sync_on_last(model, i) if step_uses_no_sync else nullcontext():
                    loss = F.mse_loss(model(inputs, branch=branch_of(row, i)), targets)
                    (loss / K).backward()
            gradients.append(gradients_of_all_workers(model, world_size))
            model.zero_grad()
        return gradients
    except RuntimeError as error:
        return short_error(error)


def table_experiment(rank, world_size, device):
    return {(name, use_no_sync): table_cell(row, use_no_sync, rank, world_size, device)
            for name, row in TABLE_ROWS.items() for use_no_sync in (False, True)}


# %%
# 3. FSDP2's communication while it accumulates
# ---------------------------------------------
#
# ``fully_shard`` keeps only a shard of each parameter on each worker. Before
# a layer's forward pass it *all-gathers* the whole parameter; after it, it
# frees the gathered copy (except in the root module) and gathers it again
# for the backward pass; after the backward pass it *reduce-scatters* the
# gradient, so that each worker keeps the average over all workers for its
# own shard only. FSDP2 lets us
# replace both collectives with our own (``set_custom_all_gather``,
# ``set_custom_reduce_scatter``): ``CountingAllGather`` and
# ``CountingReduceScatter`` count the calls and then make them.


class CountingAllGather:
    def __init__(self, counts):
        self.counts = counts

    def allocate(self, size, *, dtype, device):
        return torch.empty(*size, dtype=dtype, device=device)

    def __call__(self, output_tensor, input_tensor, group, async_op=False):
        self.counts["all-gathers"] += 1
        return dist.all_gather_single(output_tensor, input_tensor, group=group, async_op=async_op)


class CountingReduceScatter:
    def __init__(self, counts):
        self.counts = counts

    def allocate(self, size, *, dtype, device):
        return torch.empty(*size, dtype=dtype, device=device)

    def __call__(self, output_tensor, input_tensor, group, op, async_op=False):
        self.counts["reduce-scatters"] += 1
        return dist.reduce_scatter_single(output_tensor, input_tensor, op=op, group=group, async_op=async_op)


# %%
# Four ways to accumulate ``K`` micro-batches with FSDP2:
#
# * ``sync every micro-batch``: no switch at all;
# * ``no gradient sync``: ``set_requires_gradient_sync(False)`` before every
#   backward pass but the last;
# * ``+ keep after backward``: also ``set_reshard_after_backward(False)``, so
#   that a layer keeps its gathered parameters after its backward pass;
# * ``+ keep after forward``: also ``fully_shard(reshard_after_forward=False)``,
#   so that a layer keeps them after its forward pass too.
#
# FSDP2 reads both switches during the backward pass, so unlike DDP's
# ``no_sync()`` they need not be set before the forward pass. On the last
# micro-batch both are set back to ``True``: its backward pass reduce-scatters
# what was accumulated and frees the gathered parameters.
#
# ``bytes_held`` measures what a worker keeps between two micro-batches: its
# shards, plus the gathered whole parameters and whole gradients where it
# keeps them. FSDP2 has no public API for this, so it reads FSDP2's internal
# state, without changing it. A gathered parameter that FSDP2 has freed keeps
# its shape but has no storage left.

FSDP_CONFIGS = {
    "sync every micro-batch": dict(gradient_sync=True, keep_after_backward=False, keep_after_forward=False),
    "no gradient sync": dict(gradient_sync=False, keep_after_backward=False, keep_after_forward=False),
    "+ keep after backward": dict(gradient_sync=False, keep_after_backward=True, keep_after_forward=False),
    "+ keep after forward": dict(gradient_sync=False, keep_after_backward=True, keep_after_forward=True),
}
FSDP_STEPS = 2  # optimizer steps: the first gives the gradient, the second the steady state


def make_mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 128), nn.Tanh(), nn.Linear(128, 128), nn.Tanh(), nn.Linear(128, 1))


def fsdp_batch(world_size):
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(world_size * K * 16, 32, generator=generator)
    return inputs, torch.sin(inputs[:, :4].sum(dim=1, keepdim=True))


def my_micro_batches_for_fsdp(rank, world_size, device):
    inputs, targets = fsdp_batch(world_size)
    inputs, targets = inputs.chunk(world_size)[rank].to(device), targets.chunk(world_size)[rank].to(device)
    return list(zip(inputs.chunk(K), targets.chunk(K)))


def nbytes(tensor):
    return tensor.numel() * tensor.element_size()


def bytes_held(model):
    parameters = gradients = 0
    for module in model.modules():
        group = module._get_fsdp_state()._fsdp_param_group if isinstance(module, FSDPModule) else None
        for fsdp_param in group.fsdp_params if group is not None else []:
            shard = fsdp_param.sharded_param
            parameters += nbytes(shard.to_local())
            gradients += nbytes(shard.grad.to_local()) if shard.grad is not None else 0
            whole = getattr(fsdp_param, "_unsharded_param", None)
            if whole is not None and whole.untyped_storage().nbytes() > 0:
                parameters += nbytes(whole)
            if whole is not None and whole.grad is not None:
                gradients += nbytes(whole.grad)
    return {"parameters": parameters, "gradients": gradients}


def fsdp_run(config, rank, world_size, device):
    model = make_mlp().to(device)
    mesh = init_device_mesh(device.type, (world_size,))
    counts = {"all-gathers": 0, "reduce-scatters": 0}
    layers = [layer for layer in model if isinstance(layer, nn.Linear)]
    for module in layers + [model]:  # the layers first, then the root
        # None is FSDP2's default: free after forward, except in the root module.
        fully_shard(module, mesh=mesh, reshard_after_forward=False if config["keep_after_forward"] else None)
        module.set_custom_all_gather(CountingAllGather(counts))
        module.set_custom_reduce_scatter(CountingReduceScatter(counts))
    optimizer = optim.SGD(model.parameters(), lr=0.01)
    micro_batches = my_micro_batches_for_fsdp(rank, world_size, device)
    for step in range(FSDP_STEPS):
        counts.update({"all-gathers": 0, "reduce-scatters": 0})
        for i, (inputs, targets) in enumerate(micro_batches):
            last = i == K - 1
            loss = F.mse_loss(model(inputs), targets)
            model.set_requires_gradient_sync(last or config["gradient_sync"])
            model.set_reshard_after_backward(last or not config["keep_after_backward"])
            (loss / K).backward()
            if i == 0:
                held = bytes_held(model)
        if step == 0:  # before any update: the gradient to check against a single process
            gradient = torch.cat([p.grad.full_tensor().flatten() for p in model.parameters()]).cpu()
        optimizer.step()
        optimizer.zero_grad()
    whole_model = sum(nbytes(p.full_tensor()) for p in model.parameters())
    return {**counts, "held": held, "gradient": gradient, "whole model": whole_model}


def fsdp_experiment(rank, world_size, device):
    results = {}
    for name, config in FSDP_CONFIGS.items():
        try:
            results[name] = fsdp_run(config, rank, world_size, device)
        except RuntimeError as error:
            results[name] = short_error(error)
    return results


# %%
# 4. The ``require_backward_grad_sync`` toggle
# --------------------------------------------
#
# Many training scripts, nanoGPT's among them, do not use ``no_sync()``: they
# set the attribute that ``no_sync()`` sets,
# ``model.require_backward_grad_sync``, to ``True`` for the last micro-batch
# and ``False`` for the others. Two versions, counted with the hook, next to
# ``no_sync()``: the attribute set before the forward pass, as those scripts
# do, and set between the forward and the backward pass.


def toggle_before_forward(model, micro_batches):
    for i, (inputs, targets) in enumerate(micro_batches):
        model.require_backward_grad_sync = i == K - 1
        (F.mse_loss(model(inputs), targets) / K).backward()


def toggle_before_backward(model, micro_batches):
    for i, (inputs, targets) in enumerate(micro_batches):
        loss = F.mse_loss(model(inputs), targets)
        model.require_backward_grad_sync = i == K - 1
        (loss / K).backward()


def with_no_sync(model, micro_batches):
    for i, (inputs, targets) in enumerate(micro_batches):
        with sync_on_last(model, i):
            (F.mse_loss(model(inputs), targets) / K).backward()


TOGGLE_LOOPS = {"no_sync()": with_no_sync, "toggle before forward": toggle_before_forward,
                "toggle before backward": toggle_before_backward}


def toggle_experiment(rank, world_size, device):
    results = {}
    for name, accumulate in TOGGLE_LOOPS.items():
        model = make_ddp(BranchyNet(False, None), device)
        calls = []
        model.register_comm_hook(calls, counting_allreduce_hook)
        gradients, calls_per_step = [], []
        for step in range(TABLE_STEPS):
            calls.clear()
            accumulate(model, my_regression_micro_batches(step, rank, world_size, device))
            calls_per_step.append(len(calls))
            gradients.append(gradients_of_all_workers(model, world_size))
            model.zero_grad()
        results[name] = {"gradients": gradients, "all-reduce calls": calls_per_step}
    return results


# %%
# Running the workers
# -------------------
#
# ``run_worker`` is everything one worker does: join the process group, choose
# its device, run the four experiments and leave the group. The timeout makes
# a collective call that waits for a dead worker fail after 60 seconds instead
# of waiting forever.


def run_worker(rank, local_rank, world_size, init_method):
    # A forked worker cannot use CUDA if this process had initialised it (see above).
    backend = "gloo" if BACKEND == "nccl" and torch.cuda._is_in_bad_fork() else BACKEND
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=60))
    device = torch.device("cuda", local_rank) if backend == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    results = {"device": str(device), "backend": dist.get_backend(), "world size": world_size,
               "tokens": token_experiment(rank, world_size, device),
               "table": table_experiment(rank, world_size, device),
               "fsdp": fsdp_experiment(rank, world_size, device),
               "toggle": toggle_experiment(rank, world_size, device)}
    dist.destroy_process_group()
    return results


# %%
# The launcher is the one of :ref:`distributed_accumulation`: under
# ``torchrun`` this process is a worker; on its own the script forks two
# workers, which meet through a file in a temporary folder, report the
# earliest failure if one fails, and are killed and reaped whatever happens.


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

print(f"torch {torch.__version__}")
print(f"Using device: {results['device']}")
print(f"Backend: {results['backend']}, world size: {results['world size']}")

# %%
# 1. The token-weighted loss: what came out
# -----------------------------------------
#
# The reference is the loss of a single process that sees every worker's
# micro-batches at once: the mean over all real tokens. ``relative_error`` is
# the size of the difference from its gradient, relative to the size of that
# gradient.


def reference_token_gradient(world_size):
    model = make_language_model()
    micro_batches = [mb for rank in range(world_size) for mb in token_batch(rank)]
    tokens = torch.cat([tokens for tokens, _ in micro_batches])
    targets = torch.cat([targets for _, targets in micro_batches])
    loss = token_loss(model, tokens, targets, "mean")
    loss.backward()
    return flat_gradient(model), loss.item()


def relative_error(gradient, reference):
    return ((gradient - reference).norm() / reference.norm()).item()


tokens = results["tokens"]
reference, reference_loss = reference_token_gradient(results["world size"])
print(f"real tokens per worker: {tokens['tokens per worker']}")
print(f"{'loop':<33}{'relative gradient error':>24}{'gradient all-reduces':>22}{'count all-reduces':>19}")
for name in TOKEN_LOOPS:
    calls = tokens[name]["calls"]
    error = relative_error(tokens[name]["gradient"], reference)
    print(f"{name:<33}{error:>24.2e}{calls.count('gradients'):>22}{calls.count('token count'):>19}")

# %%
# The per-worker mean is off by the relative error printed in its row, far
# above rounding: DDP averages the two workers' gradients as if they had the
# same number of tokens, so each of worker 1's few tokens weighs more than
# one of worker 0's, by about the ratio of their token counts printed above.
# Both loops with the global count give the reference up to rounding. They
# differ only in who divides by the world size: the loss, multiplied by it to
# cancel DDP's division, or nobody, with the summing hook. The first needs no
# hook, but the multiplication is easy to forget; the second keeps the world
# size out of the loss.
#
# Either costs one more all-reduce per optimizer step, of a single number,
# next to the one of the gradient bucket; it has to finish before the first
# ``backward()``, whose loss is divided by the count. On a GPU, keep the count
# a tensor: a ``.item()`` on it would stop the CPU from queueing work until
# the all-reduce is done.
#
# The logged loss
# ~~~~~~~~~~~~~~~

logged = tokens["logged loss"]
print(f"single-process loss over all tokens: {reference_loss:.4f}")
for name, value in logged.items():
    print(f"{name}: {value:.4f}")

# %%
# The token-weighted loss is the single-process loss (up to rounding); the
# average of the worker means is not, and a learning curve that plots it
# changes with how the tokens happen to fall on the workers.
#
# 2. The table: DDP options and ``no_sync()``
# -------------------------------------------
#
# A cell says ``correct`` when, in every step, all workers hold the same
# gradient and it is the full-batch gradient of a single process;
# ``wrong`` with the largest difference from that gradient; or ``raises``
# with a letter for the error printed under the table. The reference network
# has the same branches and sends the same micro-batches through them;
# checkpointing changes no gradient.


def reference_regression_gradients(row, world_size):
    model = BranchyNet(row.get("branches", False), None)
    gradients = []
    for step in range(TABLE_STEPS):
        inputs, targets = regression_batch(step, world_size)
        micro_batches = zip(inputs.chunk(world_size * K), targets.chunk(world_size * K))
        # Micro-batch j is micro-batch j % K of its worker: it takes the same branch.
        loss = sum(F.mse_loss(model(x, branch=branch_of(row, j % K)), y)
                   for j, (x, y) in enumerate(micro_batches)) / (world_size * K)
        loss.backward()
        gradients.append(flat_gradient(model))
        model.zero_grad()
    return gradients


def verdict(per_step_gradients, references):
    """'correct', or 'wrong (max difference ...)': every worker against the reference, every step."""
    difference = max((gradients - reference).abs().max().item()
                     for gradients, reference in zip(per_step_gradients, references))
    scale = max(reference.abs().max().item() for reference in references)
    return "correct" if difference <= 1e-5 * scale else f"wrong ({difference:.2e})"


errors = {}
print(f"DDP options with no_sync(), torch {torch.__version__}, backend {results['backend']}, K = {K}")
print(f"{'DDP option':<46}{'sync every micro-batch':<24}{'no_sync()':<12}")
for name, row in TABLE_ROWS.items():
    references = reference_regression_gradients(row, results["world size"])
    cells = []
    for use_no_sync in (False, True):
        outcome = results["table"][(name, use_no_sync)]
        if isinstance(outcome, str):
            letter = errors.setdefault(outcome, "abcdefgh"[len(errors)])
            cells.append(f"raises ({letter})")
        else:
            cells.append(verdict(outcome, references))
    print(f"{name:<46}{cells[0]:<24}{cells[1]:<12}")
for error, letter in errors.items():
    print(f"({letter}) {error}")

# %%
# Read the table for the PyTorch version printed in its title; other versions
# have behaved differently, which is why the table is made by the code. In
# this build:
#
# * ``find_unused_parameters=True`` with ``no_sync()`` synchronizes the
#   first branch's accumulated gradient although that branch had no part in
#   the last micro-batch: DDP counts the parameters used during the
#   ``no_sync()`` micro-batches as used.
# * ``static_graph=True`` with ``no_sync()`` from the first step raises an
#   internal assertion of DDP's reducer
#   (`reported to PyTorch <https://github.com/pytorch/pytorch/issues/143580>`_).
#   In the first iteration of a static graph, DDP's backward pass queues a
#   delayed all-reduce of every gradient for the end of the backward pass,
#   even under ``no_sync()``, whose forward pass did not prepare the reducer
#   for it (``_DDPSink`` in ``torch/nn/parallel/distributed.py``). Synchronizing the first step
#   fully, then using ``no_sync()``, gives correct gradients, as the next row
#   shows.
# * Activation checkpointing alone, reentrant or not, leaves ``no_sync()``
#   correct. Reentrant checkpointing with ``find_unused_parameters=True``
#   raises with or without ``no_sync()``: the checkpointed block's parameters
#   do not appear in the autograd graph that DDP searches for unused
#   parameters, so DDP marks them ready as unused, and then their gradients
#   arrive from the recomputation. DDP's documentation offers
#   ``static_graph=True`` for that case, which then meets the first-step
#   problem above. Non-reentrant checkpointing (``use_reentrant=False``),
#   which the documentation of ``checkpoint`` recommends, has none of these
#   problems.
#
# 3. FSDP2's collectives: what came out
# -------------------------------------
#
# The collectives of the second optimizer step on worker 0, once FSDP2 has
# set itself up, and what that worker held after the backward pass of the
# step's first micro-batch, in bytes; the gradient is the first step's.


def reference_fsdp_gradient(world_size):
    model = make_mlp()
    inputs, targets = fsdp_batch(world_size)
    F.mse_loss(model(inputs), targets).backward()
    return flat_gradient(model)


fsdp = results["fsdp"]
fsdp_reference = reference_fsdp_gradient(results["world size"])
fsdp_failures = {name: outcome for name, outcome in fsdp.items() if isinstance(outcome, str)}
fsdp_runs = {name: outcome for name, outcome in fsdp.items() if not isinstance(outcome, str)}
whole_model = next(iter(fsdp_runs.values()))["whole model"] if fsdp_runs else 0
print(f"FSDP2, K = {K}, whole model: {whole_model} bytes of parameters")
print(f"{'accumulation':<24}{'all-gathers':>12}{'reduce-scatters':>16}{'parameters held':>17}"
      f"{'gradients held':>16}  gradient")
for name, outcome in fsdp_runs.items():
    same = torch.allclose(outcome["gradient"], fsdp_reference, atol=1e-5 * fsdp_reference.abs().max().item())
    print(f"{name:<24}{outcome['all-gathers']:>12}{outcome['reduce-scatters']:>16}"
          f"{outcome['held']['parameters']:>17}{outcome['held']['gradients']:>16}  "
          f"{'== full batch' if same else '!= full batch'}")
for name, error in fsdp_failures.items():
    print(f"{name}: raises {error}")

# %%
# All four accumulate the full-batch gradient. What they communicate and keep
# differs:
#
# * Synchronizing every micro-batch reduce-scatters once per layer and
#   micro-batch, and keeps only shards: about half the model's parameters
#   and gradients on each of the two workers.
# * ``set_requires_gradient_sync(False)`` leaves one reduce-scatter per layer
#   and step. The all-gathers do not change: each micro-batch still gathers
#   every layer's parameters for its forward pass, and again for its backward
#   pass. Between micro-batches each worker now holds the *whole* gradient,
#   as many bytes as the whole model.
# * ``set_reshard_after_backward(False)`` saves the forward all-gathers of the
#   micro-batches after the first, and costs the whole parameters held
#   between micro-batches. The backward all-gathers remain: a layer still
#   frees its parameters after its forward pass.
# * Keeping them after the forward pass too gathers each layer once per step:
#   the fewest collectives, and the whole model held through the step, as in
#   plain DDP. Which line to pick is a trade between communication and the
#   memory that sharding was meant to save.

def pair_of_bars(ax, runs, left, right, label):
    """Two bars per accumulation, of the values ``left(run)`` and ``right(run)``, labelled ``label``."""
    positions = range(len(runs))
    for offset, value, bar_label in ((-0.2, left, label[0]), (0.2, right, label[1])):
        ax.bar([p + offset for p in positions], [value(run) for run in runs.values()], 0.4, label=bar_label)
    ax.set_xticks(list(positions))
    ax.legend()


fig, (collectives_ax, memory_ax) = plt.subplots(1, 2, figsize=(10, 4.5))
pair_of_bars(collectives_ax, fsdp_runs, lambda run: run["all-gathers"], lambda run: run["reduce-scatters"],
             label=("all-gathers", "reduce-scatters"))
pair_of_bars(memory_ax, fsdp_runs, lambda run: run["held"]["parameters"] / 1000,
             lambda run: run["held"]["gradients"] / 1000, label=("parameters", "gradients"))
for ax in (collectives_ax, memory_ax):
    ax.set_xticklabels([tick for name, tick in zip(FSDP_CONFIGS, [
        "sync every\nmicro-batch", "no gradient\nsync", "+ keep after\nbackward", "+ keep after\nforward",
    ]) if name in fsdp_runs])
collectives_ax.yaxis.get_major_locator().set_params(integer=True)  # counts
collectives_ax.set_title("Collectives per optimizer step")
memory_ax.set_title("Held between micro-batches (kB per worker)")
fig.suptitle(f"FSDP2 with {results['world size']} workers, {K} micro-batches per step")
fig.tight_layout()
plt.show()

# %%
# 4. The toggle: what came out
# ----------------------------

plain_references = reference_regression_gradients(TABLE_ROWS["plain DDP"], results["world size"])
print(f"{'loop':<26}{'all-reduce calls per step':>27}  gradients")
for name, outcome in results["toggle"].items():
    calls = outcome["all-reduce calls"]
    calls_per_step = str(calls[0]) if len(set(calls)) == 1 else f"{min(calls)} to {max(calls)}"
    print(f"{name:<26}{calls_per_step:>27}  {verdict(outcome['gradients'], plain_references)}")

# %%
# Set before the forward pass, the toggle does what ``no_sync()`` does: the
# same all-reduce calls, the same gradients. ``no_sync()`` is a context
# manager around that very attribute; what it adds is that it is documented,
# and that it puts back the attribute's previous value when the block ends,
# even when the block raises, so that the next step cannot run without
# synchronization by accident. The attribute is no documented API; a future
# version may rename it.
#
# Set between the forward and the backward pass, the toggle meets the trap of
# ``no_sync()`` around ``backward()`` alone (:ref:`distributed_accumulation`),
# with a worse outcome. DDP decides in the forward pass: the first
# micro-batch's forward ran with the flag still ``True`` from the step before
# (or from DDP's start), so its backward pass all-reduces; the last one's ran
# with ``False``, so the only backward pass meant to synchronize does not.
# The all-reduce count looks right, but each worker keeps its own gradient,
# and their weights would drift apart from the first optimizer step on,
# without an error.
#
# Summary
# -------
#
# * With variable-length sequences, all-reduce the number of real tokens
#   before the first ``backward()``, divide each summed token loss by it, and
#   undo DDP's averaging: multiply by the world size, or register a summing
#   hook. Log the token-weighted loss, not the average of the workers' means.
# * Check ``no_sync()`` against your DDP options in your PyTorch version:
#   this page's table does it for the version printed there. Prefer
#   non-reentrant checkpointing.
# * Under FSDP2, ``set_requires_gradient_sync(False)`` stops the
#   reduce-scatters, not the all-gathers; keeping the gathered parameters
#   saves those at the memory cost measured above.
# * Use ``no_sync()``, not the ``require_backward_grad_sync`` toggle; if you
#   keep the toggle, set it before the forward pass.
# * :ref:`accumulation_in_practice` weighs micro-batches by their tokens in a
#   single process.

# sphinx_gallery_thumbnail_number = 1
