"""
.. _low_precision_accumulation:

Accumulating gradients in low precision
=======================================

:ref:`accumulation_in_practice` runs its loop in mixed precision, and nothing
in it overflows. Two things go wrong in real low-precision training that the
loop never meets:

* one micro-batch whose ``float16`` gradient overflows makes ``GradScaler``
  skip the whole window's update, while a learning-rate scheduler stepped
  regardless moves on; PyTorch warns about it only when the skipped update is
  the first of the run;
* gradients summed in ``bfloat16`` lose part of each micro-batch's
  contribution, more as ``k`` grows, which is why training libraries offer a
  ``float32`` accumulation buffer.

What you will learn:

* what a skipped update looks like inside an accumulation window, measured:
  the parameters, the scale, the optimizer's step count and the schedule;
* how to detect a skipped update with one comparison, and keep the schedule in
  line with the updates really taken;
* how many gradient elements ``float16`` rounds to zero without the scale;
* how large the error of summing ``k`` gradients in ``bfloat16`` is, next to a
  ``float32`` buffer, and what the buffer costs.
"""

# %%
# Setup
# -----
#
# The data, the model and the loop are those of
# :ref:`accumulation_in_practice`, repeated here so that the script runs on
# its own. The mixed precision parts use ``float16`` on every device: it is
# CUDA autocast's default and the dtype that needs ``GradScaler``, and CPU
# autocast accepts it too (its default there is ``bfloat16``). On a CPU the
# scaler is ``GradScaler("cpu")``, on a GPU ``GradScaler("cuda")``; the page
# prints the device and dtype it ran with.

import copy
import math
import os
import warnings

import matplotlib.pyplot as plt
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim

# Smoke mode (used by the test suite): shorter training runs.
SMOKE_TEST = os.environ.get("ZERO_GRAD_SMOKE") == "1"

device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
print(f"Using device: {device}")
torch.manual_seed(0)  # same data and weights on every run
amp_dtype = torch.float16
print(f"Autocast dtype: {amp_dtype}")
defaults = torch.amp.GradScaler(device.type)
print(f"GradScaler defaults: initial scale {defaults.get_scale():.0f}, backoff factor {defaults.get_backoff_factor()}, "
      f"growth factor {defaults.get_growth_factor()}, growth interval {defaults.get_growth_interval()}")

# %%
# Data, model and one update
# --------------------------
#
# 240 made-up token sequences of 3 to 64 tokens over a vocabulary of 32, a
# next-token model, micro-batches of 8 sequences and ``k = 4`` micro-batches
# per update. ``train_window`` is one update of the complete loop of
# :ref:`accumulation_in_practice`: each micro-batch's token-sum loss divided by
# the window's real tokens, ``scaler.scale(loss).backward()``, then once per
# window ``unscale_``, clipping, ``scaler.step``, ``scaler.update`` and
# ``zero_grad``. Its ``spike_micro_batch`` argument multiplies the loss of one
# micro-batch by a large factor, a loss spike big enough for its ``float16``
# backward pass to overflow on any device.

VOCAB_SIZE = 32
IGNORE_INDEX = -100  # F.cross_entropy's default ignore_index
MICRO_BATCH_SIZE = 8
K = 4  # micro-batches per update
PEAK_LR = 0.02
MAX_NORM = 0.1
LOSS_SPIKE = 2.0**20

next_token_probabilities = torch.softmax(3 * torch.randn(VOCAB_SIZE, VOCAB_SIZE), dim=1)


def make_sequences(lengths):
    """One sequence per length, each token drawn given the token before it."""
    tokens = [torch.randint(VOCAB_SIZE, (len(lengths),))]
    for _ in range(max(lengths) - 1):
        tokens.append(torch.multinomial(next_token_probabilities[tokens[-1]], 1).squeeze(1))
    tokens = torch.stack(tokens, dim=1)
    return [row[:length] for row, length in zip(tokens, lengths)]


sequences = make_sequences(torch.randint(3, 65, (240,)).tolist())
micro_batches = [sequences[i:i + MICRO_BATCH_SIZE] for i in range(0, len(sequences), MICRO_BATCH_SIZE)]
windows = [micro_batches[i:i + K] for i in range(0, len(micro_batches), K)]  # one window per update


def collate(batch):
    """Pad a list of sequences into (inputs, targets); padded targets are ignored by the loss."""
    inputs = nn.utils.rnn.pad_sequence([s[:-1] for s in batch], batch_first=True, padding_value=0)
    targets = nn.utils.rnn.pad_sequence([s[1:] for s in batch], batch_first=True, padding_value=IGNORE_INDEX)
    return inputs.to(device), targets.to(device)


def real_tokens(batch):
    return sum(len(s) - 1 for s in batch)


def make_model():
    return nn.Sequential(
        nn.Embedding(VOCAB_SIZE, 32), nn.Linear(32, 64), nn.Tanh(), nn.Linear(64, VOCAB_SIZE),
    ).to(device)


def token_loss(model, batch, reduction):
    """Cross-entropy of every real token of the batch: their "mean" or their "sum"."""
    inputs, targets = collate(batch)
    logits = model(inputs)
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction=reduction)


def train_window(model, optimizer, scaler, window, spike_micro_batch=None):
    """One update of the complete loop; the loss of micro-batch ``spike_micro_batch`` spikes."""
    window_tokens = real_tokens([s for micro_batch in window for s in micro_batch])
    window_loss = torch.zeros((), device=device)
    for number, micro_batch in enumerate(window):
        with torch.autocast(device_type=device.type, dtype=amp_dtype):
            loss = token_loss(model, micro_batch, "sum") / window_tokens
        if number == spike_micro_batch:
            loss = loss * LOSS_SPIKE
        scaler.scale(loss).backward()
        window_loss += loss.detach()
    scaler.unscale_(optimizer)
    nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)
    scaler.step(optimizer)  # skips optimizer.step() if a gradient is inf or nan
    scaler.update()
    optimizer.zero_grad()
    return window_loss


initial_weights = copy.deepcopy(make_model().state_dict())
print(f"{len(micro_batches)} micro-batches per epoch, {len(windows)} updates per epoch")

# %%
# A window that overflows
# -----------------------
#
# ``train`` runs a few updates with AdamW, a warm-up schedule stepped after
# every update, and the scaler at its default initial scale; the loss of the
# second micro-batch of the updates in ``spiking_updates`` spikes. Around each
# of those updates it records the parameters, the scale, and AdamW's step
# count (the ``"step"`` in its state, which its bias correction uses). It also
# records the learning rate of every update the optimizer really took, and
# whether PyTorch warned. The warning is caught and counted, not shown.
#
# The first run spikes on its first update, the second on its fourth.

WARMUP_STEPS = 8
TOTAL_STEPS = 40


def warmup_then_decay(optimizer_step):
    """LambdaLR factor: linear warm-up over WARMUP_STEPS updates, then linear decay to 0."""
    if optimizer_step < WARMUP_STEPS:
        return (optimizer_step + 1) / WARMUP_STEPS
    return max(0.0, (TOTAL_STEPS - optimizer_step) / (TOTAL_STEPS - WARMUP_STEPS))


def adamw_steps(optimizer):
    """AdamW's own step count, read from the state of its first parameter (0 before any step)."""
    state = optimizer.state[optimizer.param_groups[0]["params"][0]]
    return int(state["step"]) if "step" in state else 0


def flat_parameters(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def train(model, windows, spiking_updates=(), detect_skips=False, init_scale=2.0**16):
    """Train one pass over ``windows``; return what happened around each update."""
    optimizer = optim.AdamW(model.parameters(), lr=PEAK_LR)
    scheduler = optim.lr_scheduler.LambdaLR(optimizer, warmup_then_decay)
    scaler = torch.amp.GradScaler(device.type, init_scale=init_scale)
    record = {"spikes": [], "learning rates of the steps taken": [], "skipped updates": [], "losses": []}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for update, window in enumerate(windows, start=1):
            spike = 1 if update in spiking_updates else None
            before = flat_parameters(model)
            scale_before, steps_before = scaler.get_scale(), adamw_steps(optimizer)
            learning_rate = optimizer.param_groups[0]["lr"]
            record["losses"].append(train_window(model, optimizer, scaler, window, spike))
            skipped = scaler.get_scale() < scale_before  # update() lowers the scale only after a skip
            if skipped:
                record["skipped updates"].append(update)
            else:
                record["learning rates of the steps taken"].append(learning_rate)
            if not (detect_skips and skipped):
                scheduler.step()
            if spike is not None:
                record["spikes"].append({
                    "update": update, "parameters unchanged": torch.equal(before, flat_parameters(model)),
                    "scale": (scale_before, scaler.get_scale()), "steps": (steps_before, adamw_steps(optimizer)),
                    "scheduler position": scheduler.last_epoch})
    record["scheduler warned"] = any("lr_scheduler.step()` before `optimizer.step()" in str(w.message)
                                     for w in caught)
    record["losses"] = torch.stack(record["losses"]).tolist()  # one copy to the CPU, at the end
    return record


def fresh_model():
    model = make_model()
    model.load_state_dict(initial_weights)
    return model


def describe_spikes(name, record):
    for spike in record["spikes"]:
        print(f"{name}, spiked update {spike['update']}: parameters bit-identical to before: "
              f"{spike['parameters unchanged']}")
        print(f"  scale {spike['scale'][0]:.0f} -> {spike['scale'][1]:.0f}; "
              f"AdamW step count {spike['steps'][0]} -> {spike['steps'][1]}; "
              f"scheduler position {spike['scheduler position']}")
    print(f"  scheduler warning raised: {record['scheduler warned']}")


first_update_run = train(fresh_model(), windows[:6], spiking_updates=(1,))
describe_spikes("skip on the first update", first_update_run)
later_update_run = train(fresh_model(), windows[:6], spiking_updates=(4,))
describe_spikes("skip on a later update", later_update_run)

# %%
# In both runs the spiked window changed no parameter, not one bit: the
# overflow of one micro-batch (inf, or nan where infs meet) is in the summed
# gradient, so ``scaler.step`` did not call
# ``optimizer.step()`` at all, and the other three micro-batches' gradients
# went with it. ``update()`` halved the scale, and AdamW's step count stayed
# where it was. The scheduler, stepped after every update, counted one more
# update than the optimizer took: it is now one position ahead, for the rest
# of the run.
#
# Only the first run got a warning. ``LRScheduler.step`` checks the order of
# the calls only on its first call, when ``optimizer.step()`` has never run;
# a skip later in a run moves the schedule without a word. Readers who meet
# the warning in a loop that calls ``scaler.step`` before ``scheduler.step``
# ask in `PyTorch's issue tracker
# <https://github.com/pytorch/pytorch/issues/44511>`_ why it appears, and the
# scaler has no flag that says whether it stepped (`one was requested
# <https://github.com/pytorch/pytorch/issues/67590>`_); the scale itself tells.
#
# Detecting a skipped update
# --------------------------
#
# ``update()`` multiplies the scale by its backoff factor, 0.5, after a skip,
# and otherwise leaves it or raises it, so a scale lower after ``update()`` than
# before means the update was skipped (with one optimizer per scaler, as
# here). ``train(..., detect_skips=True)`` then leaves the scheduler where it
# is:
#
# .. code-block:: python
#
#     scale_before = scaler.get_scale()
#     scaler.step(optimizer)
#     scaler.update()
#     if scaler.get_scale() >= scale_before:  # the optimizer really stepped
#         scheduler.step()
#
# The run below spikes on updates 1 and 4, with and without the check, and
# compares the learning rates of the updates the optimizer took with the
# schedule's first values.

for name, detect_skips in [("scheduler.step() every update", False),
                           ("scheduler.step() only after a real step", True)]:
    run = train(fresh_model(), windows[:6], spiking_updates=(1, 4), detect_skips=detect_skips)
    rates = run["learning rates of the steps taken"]
    intended = [PEAK_LR * warmup_then_decay(step) for step in range(len(rates))]
    print(f"{name}: skipped updates {run['skipped updates']}, {len(rates)} steps taken")
    print(f"  learning rates of the steps taken: {', '.join(f'{rate:.4f}' for rate in rates)}")
    print(f"  the schedule's first {len(rates)} values: {', '.join(f'{rate:.4f}' for rate in intended)}")
    print(f"  steps taken at the intended learning rates: {rates == intended}")

# %%
# With the scheduler stepped after every update, the first step taken used the
# schedule's second learning rate, and after the second skip every step uses
# the value meant for two steps later. With the check, every step taken uses
# the value the schedule gives for it. Whether a shift of one or two updates
# matters depends on the schedule; a loop that counts its progress in
# optimizer steps (for logging, checkpoints or the end of training) needs the
# same check.
#
# How many updates the default scale costs
# ----------------------------------------
#
# ``GradScaler`` starts at a scale of 65536 and halves it at every skipped
# update; it doubles it only after 2000 updates in a row without a skip (the
# defaults printed at the top). A run whose gradients cannot stand the initial
# scale therefore loses its first updates, one per halving, until the scale
# fits. ``largest_finite_scale`` finds, for the page's first window, the
# largest power of two at which its ``float16`` backward pass still gives
# finite gradients; the two runs below count the skipped updates in two
# epochs, from the default initial scale and from a larger one.


def largest_finite_scale(model, window):
    """The largest power of two from 2**10 to 2**40 at which the window's scaled gradients are all finite."""
    window_tokens = real_tokens([s for micro_batch in window for s in micro_batch])
    for exponent in range(10, 41):
        model.zero_grad()
        for micro_batch in window:
            with torch.autocast(device_type=device.type, dtype=amp_dtype):
                loss = token_loss(model, micro_batch, "sum") / window_tokens
            (loss * 2.0**exponent).backward()
        if not all(torch.isfinite(p.grad).all() for p in model.parameters()):
            model.zero_grad()
            return 2.0**(exponent - 1)
    model.zero_grad()
    return 2.0**40


largest_scale = largest_finite_scale(fresh_model(), windows[0])
print(f"largest scale with finite gradients on the first window: 2**{math.log2(largest_scale):.0f}")
two_epochs = windows * 2
trained_model = fresh_model()
for init_scale in (2.0**16, 2.0**24):
    model = trained_model if init_scale == 2.0**16 else fresh_model()
    run = train(model, two_epochs, detect_skips=True, init_scale=init_scale)
    print(f"initial scale 2**{math.log2(init_scale):.0f}: skipped updates {run['skipped updates']} "
          f"of {len(two_epochs)}")

# %%
# Each skipped update is a window of data whose gradients were computed and
# thrown away. A run skips as many updates as it takes to halve its initial
# scale below the largest scale its gradients stand (compare the figures
# printed above; a later window can need a lower scale than the first). At the
# default scale that can be none for a small model like this one, whose
# gradients are small. After that, the scale doubles only after 2000 updates
# without a skip, so the skips it causes itself are rare; a loss spike, as
# above, can still cost a window at any time.
#
# Underflow: why ``float16`` needs the scale
# ------------------------------------------
#
# The spiked window overflowed the top of ``float16``'s range; the scale is
# there for the bottom of it, where small numbers underflow.
# The parameters and their ``.grad`` stay ``float32`` under autocast; what runs
# in ``float16`` in the backward pass are the gradients of the activations,
# such as the logits' gradient: each token's softmax probabilities minus its
# one-hot target, divided by the window's tokens. ``float16`` represents numbers down
# to about 6e-8, with full precision only from 2**-14 (about 6.1e-5) on (printed
# below); under 2**-14 a number keeps fewer significant bits, and one smaller
# than half of the smallest rounds to zero. ``logit_gradient_underflow``
# measures, over the real tokens of the first window, how many elements of the
# logits' gradient are zero and how many are below 2**-14, without the scale
# and with the scaler's 65536, for the initial weights and for those trained
# over two epochs above.


def logit_gradient_underflow(model, window, scale, autocast=True):
    """Fractions of the logits' gradient elements that are zero, and below 2**-14, over the window."""
    window_tokens = real_tokens([s for micro_batch in window for s in micro_batch])
    zero = small = total = 0
    for micro_batch in window:
        inputs, targets = collate(micro_batch)
        with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=autocast):
            logits = model(inputs)
            loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX,
                                   reduction="sum") / window_tokens
        logits.retain_grad()
        (loss * scale).backward()
        gradient = logits.grad[targets != IGNORE_INDEX]  # the padded positions have no gradient
        zero += (gradient == 0).sum().item()
        small += (gradient.abs() < 2.0**-14).sum().item()
        total += gradient.numel()
    model.zero_grad()
    return zero / total, small / total


float16 = torch.finfo(torch.float16)
print(f"float16: full precision from {float16.smallest_normal:.1e} = 2**{math.log2(float16.smallest_normal):.0f} on, "
      f"smallest number {float16.smallest_normal * float16.eps:.1e} = "
      f"2**{math.log2(float16.smallest_normal * float16.eps):.0f}")
for weights, model in [("initial weights", fresh_model()), ("trained weights", trained_model)]:
    zero, _ = logit_gradient_underflow(model, windows[0], 1.0, autocast=False)
    print(f"{weights}, float32: {zero:.2%} of the logits' gradient zero")
    for scale in (1.0, 2.0**16):
        zero, small = logit_gradient_underflow(model, windows[0], scale)
        print(f"{weights}, float16, scale {scale:.0f}: {zero:.2%} zero, {small:.2%} below 2**-14")

# %%
# In ``float32`` no element is zero. In ``float16`` without the scale, most
# elements of the logits' gradient lie below 2**-14, where they lose
# significant bits, and once the model has learned, its confident predictions
# make the gradient of the unlikely tokens so small that a share of it rounds
# to zero: those logits are no longer pushed down. Multiplied by 65536, the
# same gradient is in ``float16``'s full-precision range, none of it zero;
# ``unscale_`` divides by the scale only once the gradient is in ``float32``
# ``.grad``. (The second figure of each line counts the scaled values, which is
# what ``float16`` has to hold.)
#
# Summing gradients in ``bfloat16``
# ---------------------------------
#
# ``bfloat16`` has the exponent range of ``float32``, so it needs no scale, but
# far fewer significant bits: next to 1, two ``bfloat16`` numbers are 2**-7
# apart, two ``float32`` numbers 2**-23 (printed below). A model whose
# parameters are ``bfloat16`` has ``bfloat16`` ``.grad``, and accumulation adds
# every micro-batch's gradient to it, with one rounding each time. Training
# libraries offer to keep a ``float32`` buffer instead (DeepSpeed's
# ``data_types.grad_accum_dtype`` setting, for one).
#
# The measurement: a ``bfloat16`` copy of the model, micro-batches of one
# sequence, and for each ``k`` the first ``k`` of them, each loss divided by
# ``k``. The ``k`` gradients are summed three ways:
#
# * in ``.grad``, by ``backward()`` itself, in ``bfloat16``;
# * in a ``float32`` buffer: after each ``backward()``, ``.grad`` is added to
#   the buffer and set to ``None``;
# * in a ``float64`` buffer the same way, the reference.
#
# Autograd computes each micro-batch's gradient in ``bfloat16`` before adding
# it to ``.grad``, so the three add up the same gradients; only the additions
# differ.

ONE_SEQUENCE_MICRO_BATCHES = [[s] for s in sequences]
K_VALUES = [1, 2, 4, 8, 16, 32, 64]


def make_bfloat16_model():
    model = make_model()
    model.load_state_dict(initial_weights)
    return model.to(torch.bfloat16)


def accumulate(model, window, buffer_dtypes=()):
    """Backward of every micro-batch's mean loss / len(window): the gradients summed in .grad, or in buffers.

    Returns {dtype: summed gradients}: one entry per buffer dtype, or the one of ``.grad`` without buffers.
    """
    model.zero_grad()
    buffers = {dtype: [torch.zeros_like(p, dtype=dtype) for p in model.parameters()] for dtype in buffer_dtypes}
    window_loss = torch.zeros((), device=device)
    for micro_batch in window:
        loss = token_loss(model, micro_batch, "mean") / len(window)
        loss.backward()
        window_loss += loss.detach().float()
        if buffers:
            for number, p in enumerate(model.parameters()):
                for buffer in buffers.values():
                    buffer[number] += p.grad
                p.grad = None
    if not buffers:
        return {torch.bfloat16: [p.grad for p in model.parameters()]}, window_loss
    return buffers, window_loss


def flat(tensors):
    return torch.cat([t.flatten().double() for t in tensors])


for dtype in (torch.bfloat16, torch.float32):
    print(f"{dtype}: eps (spacing next to 1) 2**{math.log2(torch.finfo(dtype).eps):.0f} = {torch.finfo(dtype).eps:.1e}")
bfloat16_model = make_bfloat16_model()
errors = {"bfloat16 .grad": [], "float32 buffer": []}
for k in K_VALUES:
    window = ONE_SEQUENCE_MICRO_BATCHES[:k]
    in_grad = accumulate(bfloat16_model, window)[0][torch.bfloat16]
    in_buffers = accumulate(bfloat16_model, window, (torch.float32, torch.float64))[0]
    reference = flat(in_buffers[torch.float64])
    for name, summed in [("bfloat16 .grad", in_grad), ("float32 buffer", in_buffers[torch.float32])]:
        errors[name].append(((flat(summed) - reference).norm() / reference.norm()).item())
    print(f"k = {k:3d}: relative error, bfloat16 .grad {errors['bfloat16 .grad'][-1]:.2e}, "
          f"float32 buffer {errors['float32 buffer'][-1]:.2e}")

# %%
# With ``k = 1`` nothing is added and all three agree. From ``k = 2`` on, the
# ``bfloat16`` sum is off, and its error grows with ``k``: each addition
# rounds, and the later micro-batches are added to a sum that is already large
# next to them, so more of their share is rounded away. The error of the
# ``float32`` buffer is not always exactly zero, but it stays below
# ``float32``'s eps at every ``k``, orders of magnitude under that of
# ``bfloat16``. (A point missing from the plot is an error of exactly zero.)

fig, ax = plt.subplots(figsize=(8, 4))
ax.plot(K_VALUES, errors["bfloat16 .grad"], "o-", label="summed in bfloat16 .grad")
ax.plot(K_VALUES, errors["float32 buffer"], "s--", label="summed in a float32 buffer")
ax.set_xscale("log", base=2)
ax.set_yscale("log", nonpositive="mask")
ax.set_xlabel("k (micro-batches summed)")
ax.set_ylabel("relative error vs float64 sum")
ax.set_title("Summing k bfloat16 micro-batch gradients")
ax.legend()
fig.tight_layout()
plt.show()

# %%
# Does it show in training? Three short runs from the same ``bfloat16``
# weights, with AdamW and ``k = 16`` micro-batches of one sequence per update,
# differ only in where the ``k`` gradients are summed; the ``float32`` and
# ``float64`` sums are rounded to ``bfloat16`` once, before the step, because
# the optimizer updates ``bfloat16`` parameters. Each run records the mean loss
# of every window; at the end, the loss over all 240 sequences is measured in
# ``float32``.

TRAINING_K = 16
TRAINING_UPDATES = 4 if SMOKE_TEST else 20


def train_bfloat16(sum_in):
    """Train the bfloat16 model, summing each window's gradients in .grad (torch.bfloat16) or a buffer."""
    buffer_dtypes = () if sum_in == torch.bfloat16 else (sum_in,)
    model = make_bfloat16_model()
    optimizer = optim.AdamW(model.parameters(), lr=PEAK_LR)
    losses = []
    for update in range(TRAINING_UPDATES):
        first = update * TRAINING_K % len(ONE_SEQUENCE_MICRO_BATCHES)
        window = ONE_SEQUENCE_MICRO_BATCHES[first:first + TRAINING_K]
        summed, window_loss = accumulate(model, window, buffer_dtypes)
        for p, gradient in zip(model.parameters(), summed[sum_in]):
            p.grad = gradient.to(p.dtype)  # one rounding, before the step, for the buffers
        optimizer.step()
        optimizer.zero_grad()
        losses.append(window_loss)
    return model, torch.stack(losses).tolist()


def loss_over_all_sequences(model):
    model = copy.deepcopy(model).float()
    with torch.no_grad():
        return (token_loss(model, sequences, "sum") / real_tokens(sequences)).item()


training = {}
for name, sum_in in [("bfloat16 .grad", torch.bfloat16), ("float32 buffer", torch.float32),
                     ("float64 buffer", torch.float64)]:
    model, losses = train_bfloat16(sum_in)
    training[name] = losses
    print(f"{name}: {TRAINING_UPDATES} updates of k = {TRAINING_K}, window loss {losses[0]:.4f} -> "
          f"{losses[-1]:.4f}, final loss over all sequences {loss_over_all_sequences(model):.4f}")
print(f"float32 buffer and float64 buffer, same loss at every update: "
      f"{training['float32 buffer'] == training['float64 buffer']}")
reference = torch.tensor(training["float64 buffer"])
print(f"largest loss difference from the float64 buffer's run: "
      f"bfloat16 .grad {(torch.tensor(training['bfloat16 .grad']) - reference).abs().max():.4f}, "
      f"float32 buffer {(torch.tensor(training['float32 buffer']) - reference).abs().max():.4f}; "
      f"largest change of the loss from one update to the next: {reference.diff().abs().max():.4f}")

# %%
# In the figure below, on the left, the three curves are hard to tell apart.
# On the right, each run's loss minus that of the ``float64`` buffer's run:
# the ``bfloat16`` run moves away from it after a few updates, by far less
# than the loss itself changes from one window to the next (the last line
# printed above compares the two), and the final losses show how close the
# runs end. In a run this short, a gradient error of the size measured above
# at ``k = 16`` hardly changes AdamW's steps, which normalise the gradient
# anyway. What a short run on a small model cannot show is what the error
# costs over a long run, or at a larger ``k``, where it is larger. The
# ``float32`` buffer makes the sum as good as the ``float64`` reference: a
# line above says whether their runs matched at every update.

fig, (curves, differences) = plt.subplots(1, 2, figsize=(11, 4))
updates = range(1, TRAINING_UPDATES + 1)
curves.plot(updates, training["bfloat16 .grad"], "-", linewidth=2, label="summed in bfloat16 .grad")
curves.plot(updates, training["float32 buffer"], "--", linewidth=2, label="summed in a float32 buffer")
curves.plot(updates, training["float64 buffer"], ":", linewidth=2, label="summed in a float64 buffer")
curves.set_xlabel("update (optimizer step)")
curves.set_ylabel("mean cross-entropy per token")
curves.set_title(f"Loss of each update, bfloat16 parameters, k = {TRAINING_K}")
curves.legend()
differences.plot(updates, torch.tensor(training["bfloat16 .grad"]) - reference, "-", linewidth=2,
                 label="summed in bfloat16 .grad")
differences.plot(updates, torch.tensor(training["float32 buffer"]) - reference, "--", linewidth=2,
                 label="summed in a float32 buffer")
differences.axhline(0, color="gray", linewidth=0.8)
differences.set_xlabel("update (optimizer step)")
differences.set_ylabel("loss minus the float64 buffer's")
differences.set_title("Difference from the float64 buffer's run")
differences.legend()
for ax in (curves, differences):
    ax.xaxis.get_major_locator().set_params(integer=True)
fig.tight_layout()
plt.show()

# %%
# What the buffer costs is memory: the bytes of the buffers and of ``.grad``
# from the last sum above, measured. ``.grad`` still holds one micro-batch's
# gradient at a time next to the buffer, so the buffer comes on top of it.

parameter_count = sum(p.numel() for p in bfloat16_model.parameters())
grad_bytes = sum(g.nbytes for g in in_grad)
buffer_bytes = sum(b.nbytes for b in in_buffers[torch.float32])
print(f"{parameter_count} parameters: bfloat16 .grad {grad_bytes} bytes, float32 buffer {buffer_bytes} bytes "
      f"({buffer_bytes / parameter_count:.0f} bytes per parameter, {buffer_bytes / grad_bytes:.0f} x .grad)")

# %%
# What to do
# ----------
#
# * With ``float16`` and ``GradScaler``: compare ``scaler.get_scale()`` after
#   ``update()`` with its value before, and step the scheduler, or count the
#   step, only when it did not drop. It costs one comparison per update; on a
#   GPU, reading the scale waits for the GPU, which ``scaler.step`` already
#   does at every update to decide whether to step. Do not silence PyTorch's
#   warning that ``lr_scheduler.step()`` came before ``optimizer.step()`` in a
#   loop that calls them in the right order: there it means that the first
#   update was skipped.
# * Expect a run whose gradients cannot stand the initial scale to skip its
#   first updates, one per halving, and any run to throw a window away
#   whenever one of its micro-batches overflows.
# * With ``bfloat16`` parameters, sum the micro-batch gradients in a
#   ``float32`` buffer: its error stayed below ``float32``'s eps at every ``k``,
#   for 4 bytes per parameter, twice the ``bfloat16`` gradient. Or keep the
#   parameters in ``float32`` and use autocast, as
#   :ref:`accumulation_in_practice` does, where ``.grad`` is ``float32``
#   anyway.
# * :ref:`accumulation_in_practice` puts the rest of the loop together.

# sphinx_gallery_thumbnail_number = 1
