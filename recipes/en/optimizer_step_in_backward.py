"""
.. _optimizer_step_in_backward:

The optimizer step inside backward: what gradients cost in memory
=================================================================

A training step holds four kinds of tensors in memory: the parameters, their
gradients, the optimizer's state and the activations that autograd saves for
the backward pass. Gradient accumulation and activation checkpointing shrink
the activations. PyTorch has a third answer, aimed at the gradients: step the
optimizer *inside* the backward pass, one parameter at a time, as soon as its
gradient is ready, and free that gradient at once
(``Tensor.register_post_accumulate_grad_hook``). Then no step ever holds every
gradient, and ``zero_grad()`` disappears from the loop.

What you will learn:

* how to measure the memory of one training step on a CPU, by category, and
  where its peak comes from;
* the same step four ways, measured next to each other: full batch, ``k``
  micro-batches with accumulation, activation checkpointing, and the optimizer
  step in backward; their peaks, their times, and whether their updates equal
  the plain loop's, for SGD with momentum and for AdamW;
* where ``zero_grad()`` went, and what a reader's leftover ``zero_grad()``,
  ``optimizer.step()`` or gradient clipping does in that loop;
* where the optimizer step in backward breaks: accumulation, global-norm
  clipping and learning-rate schedules, each measured, with the fix where one
  exists;
* which option to choose, in one table.
"""

# %%
# Setup
# -----
#
# The model is a wide multilayer perceptron: blocks of ``Linear``,
# ``LayerNorm`` and ``GELU``, then a linear layer over 10 classes, trained with
# cross-entropy on random data. Its parameters take 16 MiB (printed below), so
# that their gradients and the optimizer's state weigh as much next to the
# activations as they do in real models, and it still takes well under a
# second per step on a CPU.
#
# Every variant below starts from the same initial weights and sees the same
# batches. Runs on a GPU start from the same numbers too (they are made on the
# CPU), but their results differ in the last digits.

import copy
import os
import time
import warnings
import weakref

import matplotlib.pyplot as plt
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.checkpoint import checkpoint

SMOKE_TEST = os.environ.get("ZERO_GRAD_SMOKE") == "1"  # tests: a narrower model, one timed step

device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
print(f"Using device: {device}")
torch.manual_seed(0)  # same data and weights on every run

WIDTH = 128 if SMOKE_TEST else 512
BLOCKS = 16
CLASSES = 10
K = 4  # micro-batches per update
SMALL_BATCH, LARGE_BATCH = WIDTH * 3 // 32, WIDTH * 3 // 4  # the same ratio of activations to parameters in smoke mode
TIMED_STEPS = 1 if SMOKE_TEST else 3
MiB = 2**20


class WideMLP(nn.Module):
    def __init__(self, checkpointed=False):
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.LayerNorm(WIDTH), nn.GELU()) for _ in range(BLOCKS)
        )
        self.head = nn.Linear(WIDTH, CLASSES)
        self.checkpointed = checkpointed

    def forward(self, x):
        for block in self.blocks:
            # Checkpointing keeps only each block's input and recomputes the rest during backward.
            x = checkpoint(block, x, use_reentrant=False) if self.checkpointed else block(x)
        return self.head(x)


initial_model = WideMLP()  # every variant starts from a copy of these weights


def make_model(checkpointed=False):
    model = copy.deepcopy(initial_model).to(device)
    model.checkpointed = checkpointed
    return model


batches = [(torch.randn(LARGE_BATCH, WIDTH).to(device), torch.randint(CLASSES, (LARGE_BATCH,)).to(device))
           for _ in range(2 + TIMED_STEPS)]
parameter_bytes = sum(p.nbytes for p in initial_model.parameters())
print(f"{BLOCKS} blocks of width {WIDTH}: {len(list(initial_model.parameters()))} parameter tensors, "
      f"{parameter_bytes / MiB:.2f} MiB of parameters")

# %%
# Measuring the memory of a step
# ------------------------------
#
# On a GPU, ``torch.cuda.max_memory_allocated()`` reports the peak of the
# memory that PyTorch's allocator handed out, and the page prints it when it
# runs on one. On a CPU, PyTorch keeps no such counter. ``torch.profiler``
# with ``profile_memory=True`` records the CPU allocator's events, but not
# which of them are gradients and which are activations, and it prints
# warnings of its own.
#
# ``LiveTensorMeter`` counts tensors instead. It is a ``TorchDispatchMode``
# (from ``torch.utils._python_dispatch``; PyTorch's notes on extending PyTorch
# describe these modes): every ATen operation (in the forward pass, in the backward pass and in the
# optimizer) goes through it, and it records the storage of every tensor the
# operation returns, until the last tensor using that storage is freed. The
# sum of those storages, taken after every operation, is the memory in use,
# and its maximum is the peak, a counterpart of ``max_memory_allocated()``.
# What it cannot see is scratch memory that a kernel allocates and frees
# inside one operation. Tensors that exist before the step (the parameters,
# the optimizer's state, the batch) are registered by hand.
#
# At each new peak, the meter sorts the live storages into categories: the
# parameters, their ``.grad``, the optimizer's state, the *activations saved
# for backward* (recognised through ``torch.autograd.graph.saved_tensors_hooks``,
# which sees every tensor autograd saves), and the rest: the batch, the
# gradients flowing from layer to layer during backward, and temporaries.


class LiveTensorMeter(TorchDispatchMode):
    """Peak bytes of live tensor storage during a step, by category at the peak."""

    def __init__(self, categorize):
        super().__init__()
        self.categorize = categorize  # storage pointers -> {category: bytes}
        self.references = {}  # storage pointer -> number of live tensors using it
        self.sizes = {}  # storage pointer -> bytes
        self.saved_for_backward = set()
        self.current = self.peak = 0
        self.at_peak = {}

    def track(self, tensor):
        storage = tensor.untyped_storage()
        pointer = storage.data_ptr()
        if storage.nbytes() == 0:
            return
        if pointer not in self.references:
            self.references[pointer] = 0
            self.sizes[pointer] = storage.nbytes()
            self.current += storage.nbytes()
        self.references[pointer] += 1
        weakref.finalize(tensor, self.release, pointer)  # runs when the tensor is freed

    def release(self, pointer):
        self.references[pointer] -= 1
        if self.references[pointer] == 0:
            del self.references[pointer]
            self.current -= self.sizes.pop(pointer)
            self.saved_for_backward.discard(pointer)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        for value in result if isinstance(result, (tuple, list)) else [result]:
            if isinstance(value, torch.Tensor):
                self.track(value)
        if self.current > self.peak:
            self.peak = self.current
            self.at_peak = self.categorize(self.sizes, self.saved_for_backward)
        return result

    def pack(self, tensor):  # a saved_tensors_hooks pack hook: note the tensor, keep it as it is
        self.saved_for_backward.add(tensor.untyped_storage().data_ptr())
        return tensor


CATEGORIES = ["parameters", "gradients", "optimizer state", "saved for backward", "other"]


def pointers(tensors):
    return {t.untyped_storage().data_ptr() for t in tensors}


def state_tensors(optimizers):
    return [value for optimizer in optimizers for state in optimizer.state.values()
            for value in state.values() if isinstance(value, torch.Tensor)]


def categorizer(model, optimizers):
    """A function that sorts live storages into CATEGORIES, looking at the model's gradients at the time."""
    parameters = pointers(model.parameters())
    state = pointers(state_tensors(optimizers))  # updated in place during a step: the same storages

    def categorize(sizes, saved_for_backward):
        gradients = pointers(p.grad for p in model.parameters() if p.grad is not None)
        totals = dict.fromkeys(CATEGORIES, 0)
        for pointer, size in sizes.items():
            if pointer in parameters:
                totals["parameters"] += size
            elif pointer in gradients:
                totals["gradients"] += size
            elif pointer in state:
                totals["optimizer state"] += size
            elif pointer in saved_for_backward:
                totals["saved for backward"] += size
            else:
                totals["other"] += size
        return totals

    return categorize


def measure_step(train_step, model, optimizers, inputs, labels):
    """Run one training step under the meter; return its peak by category, and the CUDA allocator's peak."""
    meter = LiveTensorMeter(categorizer(model, optimizers))
    for tensor in [*model.parameters(), *(p.grad for p in model.parameters() if p.grad is not None),
                   *state_tensors(optimizers), inputs, labels]:
        meter.track(tensor)  # no list may keep them alive: the step frees the old gradients
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    with meter, torch.autograd.graph.saved_tensors_hooks(meter.pack, lambda tensor: tensor):
        train_step(model, optimizers, inputs, labels)
    cuda_peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else None
    return meter.at_peak, cuda_peak


# %%
# The same step four ways
# -----------------------
#
# Each variant is a function that runs one update on a batch:
#
# * **full batch**: the canonical loop, ``zero_grad()``, forward, backward,
#   ``step()``;
# * **accumulation**: the batch split into ``k = 4`` micro-batches, each
#   loss divided by ``k`` (:ref:`gradient_accumulation`), one ``step()``;
# * **checkpointing**: the full batch through a model whose blocks run under
#   ``torch.utils.checkpoint.checkpoint(..., use_reentrant=False)``;
# * **step in backward**: one optimizer per parameter, stepped from that
#   parameter's post-accumulate-grad hook, which then clears the gradient. The
#   loop itself is only the forward and ``backward()``.
#
# ``attach_step_in_backward`` sets up the last one. The hook runs during
# ``backward()``, right after the parameter's gradient has been added to its
# ``.grad``; calling the parameter's own optimizer's ``zero_grad()`` there
# sets ``.grad`` back to ``None``, which frees it.


def full_batch_step(model, optimizers, inputs, labels):
    (optimizer,) = optimizers
    optimizer.zero_grad()
    F.cross_entropy(model(inputs), labels).backward()
    optimizer.step()


def accumulation_step(model, optimizers, inputs, labels):
    (optimizer,) = optimizers
    optimizer.zero_grad()
    for micro_inputs, micro_labels in zip(inputs.chunk(K), labels.chunk(K)):
        (F.cross_entropy(model(micro_inputs), micro_labels) / K).backward()
    optimizer.step()


def step_in_backward_step(model, optimizers, inputs, labels):
    F.cross_entropy(model(inputs), labels).backward()  # every parameter is stepped during this call


def attach_step_in_backward(model, make_optimizer):
    """One optimizer per parameter, stepped and cleared by that parameter's post-accumulate-grad hook."""
    optimizers = {parameter: make_optimizer([parameter]) for parameter in model.parameters()}

    def step_and_clear(parameter):
        optimizers[parameter].step()
        optimizers[parameter].zero_grad()  # the hook owns the clearing: .grad is None again

    for parameter in model.parameters():
        parameter.register_post_accumulate_grad_hook(step_and_clear)
    return list(optimizers.values())


VARIANTS = {  # name: (train step, checkpointed model, optimizer step in backward)
    "full batch": (full_batch_step, False, False),
    "accumulation": (accumulation_step, False, False),
    "checkpointing": (full_batch_step, True, False),
    "step in backward": (step_in_backward_step, False, True),
}


def set_up(variant, make_optimizer):
    train_step, checkpointed, in_backward = VARIANTS[variant]
    model = make_model(checkpointed)
    optimizers = attach_step_in_backward(model, make_optimizer) if in_backward else [make_optimizer(model.parameters())]
    return train_step, model, optimizers


def snapshot(model):
    """A copy of every parameter, in order."""
    return [p.detach().clone() for p in model.parameters()]


def synchronize():
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_variant(variant, make_optimizer, measured=True):
    """Two steps, the second one measured, then the timed ones, all on the small batch. Return what was seen."""
    train_step, model, optimizers = set_up(variant, make_optimizer)
    inputs, labels = batches[0]
    train_step(model, optimizers, inputs[:SMALL_BATCH], labels[:SMALL_BATCH])  # creates the optimizer's state
    inputs, labels = batches[1]
    if measured:
        memory, cuda_peak = measure_step(train_step, model, optimizers, inputs[:SMALL_BATCH], labels[:SMALL_BATCH])
    else:
        train_step(model, optimizers, inputs[:SMALL_BATCH], labels[:SMALL_BATCH])
        memory = cuda_peak = None
    run = {"memory": memory, "cuda peak": cuda_peak, "after two steps": snapshot(model)}
    if measured:
        run["trained"] = (train_step, model, optimizers)  # measured once more on the large batch
        seconds = []
        for inputs, labels in batches[2:]:
            synchronize()
            start = time.perf_counter()
            train_step(model, optimizers, inputs[:SMALL_BATCH], labels[:SMALL_BATCH])
            synchronize()
            seconds.append(time.perf_counter() - start)
        run["seconds"] = min(seconds)  # the least disturbed by whatever else the machine runs
    return run


def measure_large_batch(run):
    """One more step of a variant, measured, on the large batch."""
    train_step, model, optimizers = run.pop("trained")
    inputs, labels = batches[1]
    memory, cuda_peak = measure_step(train_step, model, optimizers, inputs, labels)
    return {"memory": memory, "cuda peak": cuda_peak}


def adamw(parameters):
    return optim.AdamW(parameters, lr=1e-3, weight_decay=0.01)


def sgd_with_momentum(parameters):
    return optim.SGD(parameters, lr=0.01, momentum=0.9)


# %%
# Where the memory of one step goes
# ---------------------------------
#
# The four variants train with AdamW, which keeps two tensors of state per
# parameter. First with a small batch, where the activations saved for
# backward take less memory than the gradients, then with a larger batch,
# where they take more. The table gives each variant's peak, split
# into the categories above at the moment of the peak, and the time per step
# of the small batch (the fastest of the timed steps). The large batch is one more
# step of the same runs.


def print_table(title, runs, timed):
    """One row per variant: MiB of each category at the peak, the peak, and the time per step if timed."""
    print(f"{title} MiB at the peak")
    headings = [category.rsplit(" ", 1) if " " in category else ["", category] for category in CATEGORIES]
    for line in range(2):
        print((f"{'':17}" + "".join(f"{heading[line]:>11}" for heading in headings)
               + f"{['', 'peak'][line]:>9}" + (f"{['step', 'time (ms)'][line]:>11}" if timed else "")).rstrip())
    for variant, run in runs.items():
        peak = sum(run["memory"].values())
        print(f"{variant:17}" + "".join(f"{run['memory'][category] / MiB:11.2f}" for category in CATEGORIES)
              + f"{peak / MiB:9.2f}" + (f"{run['seconds'] * 1e3:11.0f}" if timed else ""))
        if run["cuda peak"] is not None:
            print(f"{'':17}torch.cuda.max_memory_allocated(): {run['cuda peak'] / MiB:.2f} MiB")


small_batch_runs = {variant: run_variant(variant, adamw) for variant in VARIANTS}
print_table(f"AdamW, batch {SMALL_BATCH} (micro-batches of {SMALL_BATCH // K}),", small_batch_runs, timed=True)
large_batch_runs = {variant: measure_large_batch(run) for variant, run in small_batch_runs.items()}
print_table(f"AdamW, batch {LARGE_BATCH} (micro-batches of {LARGE_BATCH // K}),", large_batch_runs, timed=False)

# %%
# The chart draws the same peaks.

fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
colors = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8c8c8c"]
for ax, batch_size, runs in [(axes[0], SMALL_BATCH, small_batch_runs), (axes[1], LARGE_BATCH, large_batch_runs)]:
    bottoms = [0.0] * len(runs)
    for category, color in zip(CATEGORIES, colors):
        heights = [run["memory"][category] / MiB for run in runs.values()]
        ax.bar(range(len(runs)), heights, bottom=bottoms, color=color)
        bottoms = [b + h for b, h in zip(bottoms, heights)]
    ax.set_xticks(range(len(runs)), ["full batch", "accumulation", "checkpointing", "step in\nbackward"], fontsize=9)
    ax.set_title(f"batch {batch_size}")
axes[0].set_ylabel("memory at the peak of one step (MiB)")
axes[1].legend(["parameters", "gradients", "optimizer state", "saved for backward", "other"],
               loc="upper left", bbox_to_anchor=(1.02, 1))
fig.suptitle("Where the memory of one AdamW step goes, at its peak")
fig.tight_layout()
plt.show()

# %%
# Parameters and optimizer state are the same in every variant: AdamW's two
# state tensors per parameter take twice the parameters' memory, whatever the
# loop does. What differs is what the peak holds besides them.
#
# * **Full batch.** ``zero_grad()`` sets every ``.grad`` to ``None`` before the
#   forward pass, so the gradients appear only during backward, one layer at a
#   time, while the activations saved by that layer are freed. With the small
#   batch, a layer's gradient is larger than what it saved, so memory keeps
#   rising through backward and peaks at its end, with every gradient alive.
#   With the large batch, it is the other way round: the peak is at the start
#   of backward, with every activation alive.
# * **Accumulation.** Each micro-batch saves a quarter of the activations, but
#   from the second micro-batch on, every gradient is alive during the whole
#   forward and backward pass. It lowers the peak only where activations
#   dominate; with the small batch it does not go below the full batch.
# * **Checkpointing.** Only each block's input is kept during the forward pass
#   (under "other": ``checkpoint`` holds those inputs itself, not through
#   ``saved_tensors_hooks``), and one block is recomputed at a time. It helps
#   with the large batch, and changes little when the peak is the gradients.
# * **Step in backward.** At most one gradient is alive at any moment, so the
#   gradient column nearly vanishes. Its peak is at the start of backward:
#   parameters, state and every saved activation. It is the lowest of the four
#   when gradients dominate, and brings nothing when activations do.
#
# The times say what each option costs: compare them in the table above, on
# your own hardware. Checkpointing runs every block's forward pass twice. On a
# CPU, ``torch.optim`` steps the parameters one by one in any case; on a GPU,
# one optimizer over all parameters uses the ``foreach`` implementation
# (several parameters per kernel launch), while one optimizer per parameter
# launches kernels parameter by parameter.
#
# Are the updates the same?
# -------------------------
#
# Memory only counts if the model learns the same thing. The parameters after
# two steps of each variant are compared with the full-batch loop's: bit for
# bit with ``torch.equal``, and by the *relative error of the update*, the
# norm of the difference between the two parameter vectors divided by the norm
# of the full-batch update (how far the parameters moved from the initial
# weights). The updates count as close below a relative error of ``1e-2``.
# SGD's differences are far below that, at the level of ``float32`` rounding;
# AdamW needs the room: it divides each element's step by the root of that
# element's average squared gradient, so where a gradient element is close to
# zero, a rounding difference can change its step by up to twice the learning
# rate.
# The wrong variants further down differ by much more. AdamW's results are the
# small-batch runs above; SGD with momentum runs the same two steps again
# (momentum comes into play on the second).


initial_parameters = snapshot(make_model())


def norm(tensors):
    return sum(t.square().sum() for t in tensors).sqrt().item()


def relative_error(parameters, reference):
    """Distance between two updates from the initial weights, as a fraction of the reference update."""
    difference = norm([p - r for p, r in zip(parameters, reference)])
    return difference / norm([r - i for r, i in zip(reference, initial_parameters)])


TOLERANCE = 1e-2


def compare(description, parameters, reference):
    """Print whether two lists of parameters are equal bit for bit, and how far apart their updates are."""
    equal = all(torch.equal(p, r) for p, r in zip(parameters, reference))
    error = relative_error(parameters, reference)
    print(f"{description}: bit for bit {equal}, relative error of the update {error:.1e}, close {error < TOLERANCE}")


sgd_runs = {variant: run_variant(variant, sgd_with_momentum, measured=False) for variant in VARIANTS}
for optimizer_name, runs in [("SGD with momentum", sgd_runs), ("AdamW", small_batch_runs)]:
    for variant in ["accumulation", "checkpointing", "step in backward"]:
        compare(f"{optimizer_name}, {variant} vs full batch",
                runs[variant]["after two steps"], runs["full batch"]["after two steps"])

# %%
# The optimizer step in backward gives the plain loop's parameters bit for
# bit on the CPU that built this page: each parameter's optimizer does the
# same arithmetic on the same gradient, only earlier. Checkpointing recomputes
# the same forward pass with the same kernels, and on that CPU it is exact too.
# Accumulation adds up the gradients of four micro-batches instead of computing
# the gradient in one product, so its rounding differs: the parameters are
# close, not equal. On a GPU, where kernels may choose their order of
# summation and one optimizer over all parameters uses other kernels than one
# per parameter, judge by the relative error rather than bit for bit.
#
# Where zero_grad went
# --------------------
#
# In the canonical loop, ``zero_grad()`` is there because ``.grad``
# accumulates across ``backward()`` calls (:ref:`zero_grad_pitfalls`). In the
# fused loop, the hook owns both the step and the clearing: after
# ``backward()`` returns, every ``.grad`` is already ``None``. Code written for
# the canonical loop then meets ``None`` where it expects a gradient. Below, a
# model-wide optimizer left over from the canonical loop calls ``zero_grad()``
# and ``step()``, and ``clip_grad_norm_`` measures the gradient norm, all after
# the fused ``backward()``.

train_step, model, optimizers = set_up("step in backward", adamw)
inputs, labels = batches[0]
train_step(model, optimizers, inputs[:SMALL_BATCH], labels[:SMALL_BATCH])
parameters = list(model.parameters())
print(f"parameters with a .grad after backward: {sum(p.grad is not None for p in parameters)} of {len(parameters)}")
leftover_optimizer = adamw(model.parameters())
leftover_optimizer.zero_grad()  # nothing to clear
before = snapshot(model)
leftover_optimizer.step()  # skips every parameter whose .grad is None
print(f"leftover optimizer.step() changed the parameters: {not all(map(torch.equal, before, snapshot(model)))}")
print(f"clip_grad_norm_ after backward returns: {nn.utils.clip_grad_norm_(model.parameters(), 1.0).item()}")

# %%
# ``zero_grad()`` and ``step()`` do nothing, silently, and the gradient norm a
# loop would log or clip by is ``0``: whatever reads ``.grad`` after
# ``backward()`` must move into the hook.
#
# The clearing in the hook is what keeps the loop right. A hook that steps but
# forgets ``zero_grad()`` brings back the mistake of a loop without it: the
# next ``backward()`` adds its gradient to the previous one, so from the second
# step on the update is wrong, and every gradient stays in memory, so the
# saving is gone as well. Two steps of it, compared with two steps of the
# full-batch loop:


def attach_step_in_backward_without_clearing(model, make_optimizer):
    optimizers = {parameter: make_optimizer([parameter]) for parameter in model.parameters()}

    def step_only(parameter):
        optimizers[parameter].step()  # wrong: .grad is never cleared

    for parameter in model.parameters():
        parameter.register_post_accumulate_grad_hook(step_only)
    return list(optimizers.values())


model = make_model()
optimizers = attach_step_in_backward_without_clearing(model, adamw)
for inputs, labels in batches[:2]:
    step_in_backward_step(model, optimizers, inputs[:SMALL_BATCH], labels[:SMALL_BATCH])
kept = sum(p.grad.nbytes for p in model.parameters() if p.grad is not None)
print(f"hook without zero_grad: {kept / MiB:.2f} MiB of gradients kept after backward")
compare("hook without zero_grad vs full batch", snapshot(model), small_batch_runs["full batch"]["after two steps"])

# %%
# Where it breaks: accumulation
# -----------------------------
#
# The post-accumulate-grad hook fires after *every* ``backward()``. A loop that
# accumulates ``k`` micro-batches, with the hook of the previous sections,
# therefore steps every parameter ``k`` times per update, each time on one
# micro-batch's gradient divided by ``k``, and never accumulates anything.
# Nothing raises: the only trace is the optimizer's step count.
#
# The fix: the hook steps only on the last micro-batch of a window, and
# otherwise leaves the gradient in ``.grad``, where it accumulates as in the
# canonical loop. ``StepOnLastMicroBatch`` holds the per-parameter optimizers
# and a flag the loop sets before the last ``backward()``. Both run two
# updates and are compared with two updates of the accumulation loop; the
# fix's second update is measured with the meter.


class StepOnLastMicroBatch:
    """Per-parameter optimizers whose hooks step and clear only on the last micro-batch of a window."""

    def __init__(self, model, make_optimizer):
        self.optimizers = {parameter: make_optimizer([parameter]) for parameter in model.parameters()}
        self.last_micro_batch = False
        for parameter in model.parameters():
            parameter.register_post_accumulate_grad_hook(self.hook)

    def hook(self, parameter):
        if self.last_micro_batch:  # otherwise .grad keeps accumulating
            self.optimizers[parameter].step()
            self.optimizers[parameter].zero_grad()


def accumulate_with_step_in_backward(model, window, inputs, labels):
    """k micro-batches; ``window`` is None for hooks that step every time, else a StepOnLastMicroBatch."""
    for number, (micro_inputs, micro_labels) in enumerate(zip(inputs.chunk(K), labels.chunk(K)), start=1):
        if window is not None:
            window.last_micro_batch = number == K
        (F.cross_entropy(model(micro_inputs), micro_labels) / K).backward()


def steps_taken(optimizer, parameter):
    return int(optimizer.state[parameter]["step"])


model = make_model()
optimizers = attach_step_in_backward(model, adamw)
for inputs, labels in batches[:2]:
    accumulate_with_step_in_backward(model, None, inputs[:SMALL_BATCH], labels[:SMALL_BATCH])
print(f"hook steps every micro-batch: {steps_taken(optimizers[0], next(model.parameters()))} optimizer steps "
      f"in 2 updates")
accumulation_reference = small_batch_runs["accumulation"]["after two steps"]
compare("hook steps every micro-batch vs accumulation", snapshot(model), accumulation_reference)

model = make_model()
window = StepOnLastMicroBatch(model, adamw)
optimizers = list(window.optimizers.values())


def accumulate_on_last_micro_batch(model, optimizers, inputs, labels):
    accumulate_with_step_in_backward(model, window, inputs, labels)


accumulate_on_last_micro_batch(model, optimizers, batches[0][0][:SMALL_BATCH], batches[0][1][:SMALL_BATCH])
fixed_memory, fixed_cuda_peak = measure_step(accumulate_on_last_micro_batch, model, optimizers,
                                             batches[1][0][:SMALL_BATCH], batches[1][1][:SMALL_BATCH])
print(f"step on the last micro-batch: {steps_taken(optimizers[0], next(model.parameters()))} optimizer steps "
      f"in 2 updates")
compare("step on the last micro-batch vs accumulation", snapshot(model), accumulation_reference)
print_table(f"AdamW, batch {SMALL_BATCH} in {K} micro-batches,", {
    "accumulation": small_batch_runs["accumulation"],
    "step on last": {"memory": fixed_memory, "cuda peak": fixed_cuda_peak},
}, timed=False)

# %%
# Stepping every micro-batch makes ``k`` times as many steps. AdamW's step does
# not depend on the scale of the gradient (apart from its ``eps``), so each
# of them is a full-sized step on the gradient of one micro-batch: the
# relative error printed above is of the order of the update itself. The fix
# gives the accumulation loop's parameters.
#
# It loses the memory saving, though: during the first ``k - 1`` micro-batches
# every gradient has to stay in ``.grad`` to accumulate, so its peak holds
# (nearly) every gradient and is no lower than the accumulation loop's, as the
# table shows. Only the last micro-batch of each window frees the gradients
# early. To accumulate, something has to hold the sum of the gradients between
# micro-batches, and that sum is the size of the parameters.
#
# Where it breaks: global-norm clipping
# -------------------------------------
#
# ``clip_grad_norm_(model.parameters(), max_norm)`` scales every gradient by
# the same factor, computed from the norm of *all* the gradients together. In
# the fused loop, no moment holds them all: when the first hook runs, one
# gradient exists, and each hook clears its own before the next one. The hook
# below counts the parameters that have a ``.grad`` each time it is called.

model = make_model()
optimizers = {parameter: adamw([parameter]) for parameter in model.parameters()}
gradients_present = []


def count_then_step(parameter):
    gradients_present.append(sum(p.grad is not None for p in model.parameters()))
    optimizers[parameter].step()
    optimizers[parameter].zero_grad()


for parameter in model.parameters():
    parameter.register_post_accumulate_grad_hook(count_then_step)
step_in_backward_step(model, list(optimizers.values()), batches[0][0][:SMALL_BATCH], batches[0][1][:SMALL_BATCH])
print(f"gradients alive when the first hook runs: {gradients_present[0]} of {len(parameters)}; "
      f"most at any hook: {max(gradients_present)}")

# %%
# What is left is clipping each parameter's gradient by its own norm, inside
# its hook. That is a different rule: each gradient is scaled by its own
# factor, so the direction of the update changes, and parameters with small
# gradients are not scaled at all. Below, one step with global-norm clipping
# in the canonical loop, next to one step with per-parameter clipping in the
# hooks, the same ``max_norm``, with SGD (whose update is proportional to the
# gradient, so the difference shows undiluted).

MAX_NORM = 1.0
inputs, labels = batches[0][0][:SMALL_BATCH], batches[0][1][:SMALL_BATCH]

model = make_model()
optimizer = optim.SGD(model.parameters(), lr=0.01)
optimizer.zero_grad()
F.cross_entropy(model(inputs), labels).backward()
global_norm = nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)
optimizer.step()
globally_clipped = snapshot(model)
print(f"gradient norm {global_norm.item():.2f}, max_norm {MAX_NORM}")

model = make_model()
optimizers = {parameter: optim.SGD([parameter], lr=0.01) for parameter in model.parameters()}


def clip_own_gradient_then_step(parameter):
    nn.utils.clip_grad_norm_([parameter], MAX_NORM)  # the only norm the hook can compute
    optimizers[parameter].step()
    optimizers[parameter].zero_grad()


for parameter in model.parameters():
    parameter.register_post_accumulate_grad_hook(clip_own_gradient_then_step)
step_in_backward_step(model, list(optimizers.values()), inputs, labels)
compare("per-parameter clipping vs global-norm clipping", snapshot(model), globally_clipped)

# %%
# Per-parameter clipping is a different training rule, not an approximation
# of the global one: the update differs by the relative error printed above.
# Here each parameter's gradient norm may reach ``max_norm``, so together they
# are allowed a much larger norm than the global clipping allows. If the
# global norm is needed, for clipping or only to log it, it takes the
# canonical loop.
#
# Where it breaks: learning-rate schedules
# ----------------------------------------
#
# A scheduler changes the learning rate of one optimizer. With one optimizer
# per parameter, every one of them needs its own scheduler, stepped after each
# update. A tempting shortcut keeps one model-wide optimizer for the scheduler
# (and for checkpoints); but the optimizers that step are the per-parameter
# ones, and their learning rate never changes. Both are run below for three
# updates with ``StepLR`` halving the learning rate after each; the schedule
# does not depend on the data, so these updates use a batch of 4.


def learning_rates_after_training(one_scheduler_per_optimizer):
    model = make_model()
    optimizers = attach_step_in_backward(model, adamw)
    if one_scheduler_per_optimizer:
        schedulers = [optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5) for optimizer in optimizers]
    else:
        model_wide_optimizer = adamw(model.parameters())  # wrong: it never steps
        schedulers = [optim.lr_scheduler.StepLR(model_wide_optimizer, step_size=1, gamma=0.5)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for inputs, labels in batches[:3]:
            step_in_backward_step(model, optimizers, inputs[:4], labels[:4])
            for scheduler in schedulers:
                scheduler.step()
    rates = sorted({optimizer.param_groups[0]["lr"] for optimizer in optimizers})
    return rates, schedulers[0].get_last_lr()[0], [str(warning.message).split(". ")[0] for warning in caught]


for description, per_optimizer in [("one scheduler per optimizer", True),
                                   ("one scheduler on a model-wide optimizer", False)]:
    rates, scheduled, warned = learning_rates_after_training(per_optimizer)
    print(f"{description}: scheduled lr {scheduled:g}, lr of the optimizers that step: {rates}")
    for message in warned:
        print(f"  PyTorch warned: {message}.")

# %%
# With a scheduler per optimizer, every parameter follows the schedule. With
# the model-wide optimizer, the schedule runs on an optimizer that never steps
# (PyTorch's warning, given once, says only that), and the parameters keep
# training at the initial learning rate.
#
# When to use which
# -----------------
#
# .. list-table::
#    :header-rows: 1
#
#    * - option
#      - memory at the peak
#      - time
#      - does not combine with
#    * - full batch
#      - every gradient or every activation, whichever dominates
#      - the reference
#      - batches that do not fit
#    * - accumulation
#      - activations of one micro-batch, plus every gradient throughout
#      - several smaller products; often slower
#      - batch-coupled layers such as BatchNorm (:ref:`gradient_accumulation`)
#    * - checkpointing
#      - block inputs and one block's activations, plus every gradient
#      - one extra forward pass
#      - nothing shown here; it combines with each of the others
#    * - step in backward
#      - one gradient at a time, plus every activation
#      - one optimizer call per parameter
#      - accumulation (the fix, a hook that waits for the last micro-batch,
#        holds every gradient again), global-norm clipping and anything else
#        that reads ``.grad`` after ``backward()``, a single scheduler
#
# Memory that depends on the batch (activations) is what accumulation and
# checkpointing reduce; memory that does not (gradients) is what the step in
# backward reduces, and only where gradients are part of the peak. Parameters
# and optimizer state stay as they are in all four; reducing those takes other
# tools, such as sharding them across GPUs with FSDP
# (:ref:`distributed_accumulation`).
#
# Summary
# -------
#
# * Measure before choosing: the peak of a step is either at the end of
#   backward (gradients) or at its start (activations), and each option lowers
#   only one of them.
# * With the optimizer step in backward, the hook steps *and* clears; the
#   loop has no ``zero_grad()`` and no ``step()``, and ``.grad`` is ``None``
#   after ``backward()``.
# * Accumulation needs a hook that steps only on the last micro-batch, and then
#   holds every gradient again; global-norm clipping needs the canonical loop;
#   a learning-rate schedule needs one scheduler per optimizer.
# * :ref:`gradient_accumulation` explains accumulation itself,
#   :ref:`accumulation_in_practice` puts it in a full training loop, and
#   :ref:`zero_grad_pitfalls` shows where ``zero_grad()`` belongs in the
#   canonical loop.

# sphinx_gallery_thumbnail_number = 1
