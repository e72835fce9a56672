"""
.. _accumulation_in_practice:

Gradient accumulation in a real training loop
=============================================

:ref:`gradient_accumulation` reduced the technique to one rule: divide each
micro-batch's loss by ``k``, step and clear the gradients every ``k``-th
micro-batch. Real training loops add mixed precision, gradient clipping, a
learning-rate schedule and sequences of different lengths, and each of them
has to be told that one update is now made of ``k`` backward passes.

What you will learn: where accumulation goes wrong in a real training loop.

* ``GradScaler`` raises ``unscale_() has already been called on this
  optimizer`` when ``unscale_`` is called once per micro-batch;
* clipping inside the micro-batch loop clips a partial sum, not the gradient of
  the update;
* a scheduler stepped once per micro-batch runs its warm-up ``k`` times too
  fast, and a step that ``GradScaler`` skips still advances the schedule;
* dividing each micro-batch's mean loss over its tokens by ``k`` gives the
  wrong gradient when sequences have different lengths;
* the last window of an epoch often holds fewer than ``k`` micro-batches, and
  dividing its losses by ``k`` shrinks its update;
* ``total_loss += loss`` keeps every micro-batch's graph nodes alive;
* a checkpoint saved in the middle of a window does not hold the gradients
  accumulated so far.

This recipe builds one training loop for a small next-token model, one piece
at a time, and measures each wrong variant next to the right one. The last
section puts the pieces together and trains.
"""

# %%
# Setup
# -----
#
# Only PyTorch and matplotlib; everything runs in a few seconds. On a CUDA GPU
# the loop uses mixed precision in ``float16``, CUDA autocast's default and
# the dtype that needs ``GradScaler`` (on GPUs that support ``bfloat16``, that
# is the common choice, and it needs no scaler); on a CPU it uses
# ``bfloat16``, which is what CPU autocast uses by default (it also accepts
# ``float16``). The page prints which one it ran with.
#
# .. note::
#    With the seed, the script prints the same numbers every time it runs on the
#    same machine with the same PyTorch version and number of threads. The data
#    and the initial weights are made on the CPU, so a GPU starts from the same
#    ones, but its results differ in the digits: it computes in ``float16`` and
#    its kernels add up in a different order, and repeated runs on one GPU are
#    not guaranteed to agree bit for bit.

import copy
import functools
import warnings
import weakref

import matplotlib.pyplot as plt
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim

device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
print(f"Using device: {device}")
torch.manual_seed(0)  # same data and weights on every run
amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
print(f"Autocast dtype: {amp_dtype}")

# %%
# Sequences of different lengths
# ------------------------------
#
# The data are 240 made-up token sequences from a vocabulary of 32 tokens, each
# token drawn from a fixed random distribution that depends on the token before
# it. Their lengths vary from 3 to 64 tokens. The model predicts each next
# token from the current one: an embedding, one hidden layer and a linear layer
# over the vocabulary.
#
# ``collate`` pads the sequences of a batch to its longest one, as a
# ``DataLoader``'s collate function would. Padded positions get the target
# ``-100``, which ``F.cross_entropy`` ignores, so only *real tokens* count in
# the loss: a sequence of ``n`` tokens gives ``n - 1`` of them.
#
# A micro-batch is 8 sequences, ``k = 4`` micro-batches make one update, so
# the effective batch size is 32 sequences. The 240 sequences give 30
# micro-batches per epoch: seven full *windows* of 4 micro-batches and a last
# window of 2.

VOCAB_SIZE = 32
IGNORE_INDEX = -100  # F.cross_entropy's default ignore_index
MICRO_BATCH_SIZE = 8
K = 4  # micro-batches per update

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
window = windows[0]  # the window the gradient comparisons below use


def collate(batch):
    """Pad a list of sequences into (inputs, targets); padded targets are ignored by the loss."""
    inputs = nn.utils.rnn.pad_sequence([s[:-1] for s in batch], batch_first=True, padding_value=0)
    targets = nn.utils.rnn.pad_sequence([s[1:] for s in batch], batch_first=True, padding_value=IGNORE_INDEX)
    return inputs.to(device), targets.to(device)


def real_tokens(batch):
    return sum(len(s) - 1 for s in batch)


def sequences_of(window):
    """All the sequences of a window's micro-batches, as one batch."""
    return [s for micro_batch in window for s in micro_batch]


def make_model():
    return nn.Sequential(
        nn.Embedding(VOCAB_SIZE, 32), nn.Linear(32, 64), nn.Tanh(), nn.Linear(64, VOCAB_SIZE),
    ).to(device)


def token_loss(model, batch, reduction):
    """Cross-entropy of every real token of the batch: their "mean" or their "sum"."""
    inputs, targets = collate(batch)
    logits = model(inputs)
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction=reduction)


model = make_model()
print(f"{len(micro_batches)} micro-batches per epoch, {len(windows)} updates per epoch")

# %%
# Measuring gradients
# -------------------
#
# The comparisons use a few small helpers. ``accumulate`` runs the backward
# pass of every micro-batch of a window with the loss it is given, leaving the
# gradients to add up in ``.grad``; ``current_gradient`` reads them out as one
# vector, ``flat_gradient`` also clears them; ``compare`` checks two gradients with
# ``torch.allclose``, allowing for rounding in proportion to their size;
# ``relative_error`` is the norm of a difference as a fraction of the
# reference's norm. ``mean_loss_over_k`` is the loss of
# :ref:`gradient_accumulation`: each micro-batch's mean loss divided by ``k``.
# Every loss function takes the model and the micro-batch as arguments, and
# anything else it divides by through ``functools.partial``.
# The comparisons run in ``float32``, without autocast, so that "equal" can
# mean equal up to rounding.


def accumulate(model, window, micro_batch_loss, clip_every_micro_batch_to=None):
    """Backward of micro_batch_loss(model, micro_batch) for each micro-batch; the gradients add up in .grad."""
    for micro_batch in window:
        micro_batch_loss(model, micro_batch).backward()
        if clip_every_micro_batch_to is not None:
            nn.utils.clip_grad_norm_(model.parameters(), clip_every_micro_batch_to)  # clips the sum so far


def current_gradient(model):
    """Every parameter's ``.grad`` as one vector."""
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def flat_gradient(model):
    """The gradient as one vector; ``.grad`` is then cleared."""
    gradient = current_gradient(model)
    model.zero_grad()
    return gradient


def compare(description, gradient, reference):
    """Print whether two gradients match and their largest absolute difference."""
    same = torch.allclose(gradient, reference, atol=1e-5 * reference.abs().max().item())
    difference = (gradient - reference).abs().max().item()
    print(f"{description}: {same} (max abs difference {difference:.2e})")
    return same


def relative_error(gradient, reference):
    return ((gradient - reference).norm() / reference.norm()).item()


def mean_loss_over_k(model, micro_batch):
    """The rule of gradient_accumulation: each micro-batch's mean loss, divided by k."""
    return token_loss(model, micro_batch, "mean") / K


# %%
# Mixed precision: scale every micro-batch, unscale once
# ------------------------------------------------------
#
# ``torch.autocast`` runs the matrix products and similar operations of the
# forward pass in lower precision. ``torch.amp.GradScaler`` multiplies the loss by a large factor before
# ``backward()``, so that small ``float16`` gradients do not round to zero, and
# divides the gradients by the same factor before the optimizer uses them.
# ``bfloat16`` keeps the exponent range of ``float32`` and needs no scaling;
# on a CPU the scaler is still enabled here (``GradScaler("cpu")`` is a
# working scaler, not a no-op), so that both devices run the same code. The
# cell also computes the gradient once with a disabled scaler, to see what the
# scaling changed.
#
# With accumulation, the work splits in two:
#
# * every micro-batch: forward under autocast, then
#   ``scaler.scale(loss / k).backward()``;
# * once per update, after the last micro-batch: ``scaler.unscale_(optimizer)``,
#   clipping, ``scaler.step(optimizer)``, ``scaler.update()`` and
#   ``optimizer.zero_grad()``.
#
# The cell below runs the first window this way, after computing the ``float32``
# gradient of the same four micro-batches for comparison. Until ``unscale_``,
# ``.grad`` holds the gradient multiplied by the scale; after it, the real one.

PEAK_LR = 0.02
MAX_NORM = 0.1


def scaled_backward(model, scaler, micro_batch):
    with torch.autocast(device_type=device.type, dtype=amp_dtype):
        loss = token_loss(model, micro_batch, "mean") / K
    scaler.scale(loss).backward()  # adds the scaled gradient to .grad


accumulate(model, window, mean_loss_over_k)
float32_gradient = flat_gradient(model)
for micro_batch in window:
    scaled_backward(model, torch.amp.GradScaler(device.type, enabled=False), micro_batch)
unscaled_mixed_precision_gradient = flat_gradient(model)

optimizer = optim.AdamW(model.parameters(), lr=PEAK_LR)
scaler = torch.amp.GradScaler(device.type)
print(f"GradScaler enabled: {scaler.is_enabled()}")
for micro_batch in window:
    scaled_backward(model, scaler, micro_batch)
print(f"gradient norm before unscale_: {current_gradient(model).norm():.1f} (scale {scaler.get_scale():.0f})")
scaler.unscale_(optimizer)  # once, after the last micro-batch of the window
mixed_precision_gradient = current_gradient(model)
print(f"gradient norm after unscale_: {mixed_precision_gradient.norm():.4f}")
print(f"mixed precision vs float32 gradient: relative error "
      f"{relative_error(mixed_precision_gradient, float32_gradient):.1e}")
print(f"same gradient as with a disabled scaler, bit for bit: "
      f"{torch.equal(mixed_precision_gradient, unscaled_mixed_precision_gradient)}")
nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)
scaler.step(optimizer)
scaler.update()
optimizer.zero_grad()

# %%
# Before ``unscale_`` the gradient norm is the scale times the real one. After
# it, the gradient is the ``float32`` one up to the rounding of the lower
# precision: a relative error well under one percent on the machine that built
# this page, but not rounding at the level of ``float32``. That is why the
# exact comparisons below run in ``float32``.
#
# In ``bfloat16`` the scaling changed nothing: multiplying by a power of two,
# and dividing by it again, is exact in floating point unless a number
# overflows or becomes too small to represent, and with the range of
# ``bfloat16`` neither happened here. On a CPU the last line above says
# ``True``. In ``float16``, on a GPU, the smallest gradients can round to zero
# without the scale, and the two gradients can differ. What a ``float16``
# gradient that overflows does to a window, and to the schedule, is measured
# in :ref:`low_precision_accumulation`.
#
# The wrong order: unscaling every micro-batch
# --------------------------------------------
#
# A loop that clips inside the micro-batch loop needs the unscaled gradient
# there, so it calls ``unscale_`` after every ``backward()``. ``GradScaler``
# records that the optimizer's gradients have been unscaled and refuses to do
# it again before ``update()``: the second micro-batch raises. We catch the
# error and print its message.


def unscale_every_micro_batch(model, optimizer, scaler, window):
    for number, micro_batch in enumerate(window, start=1):
        scaled_backward(model, scaler, micro_batch)
        try:
            scaler.unscale_(optimizer)  # wrong: this belongs after the last micro-batch
        except RuntimeError as error:
            print(f"unscale_ on every micro-batch: micro-batch {number} raised RuntimeError: {error}")
            return
        nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)


unscale_every_micro_batch(model, optimizer, torch.amp.GradScaler(device.type), window)
optimizer.zero_grad()

# %%
# The error is a guard: after the first ``unscale_``, ``.grad`` holds the first
# micro-batch's gradient unscaled plus the second one's still scaled, and no
# single division can turn that into the right sum. The fix is to move
# ``unscale_`` and clipping after the loop over micro-batches.
#
# Clipping: once, on the summed and unscaled gradient
# ---------------------------------------------------
#
# ``clip_grad_norm_`` rescales the gradient so that its norm is at most
# ``max_norm``. What should be clipped is the gradient of the update, the sum
# of all ``k`` micro-batches. Called inside the micro-batch loop, it clips the
# partial sum gathered so far, again after each micro-batch: the micro-batches
# that came first are shrunk several times, the last one at most once. The
# reference is the summed gradient rescaled to norm ``MAX_NORM`` by hand.

accumulate(model, window, mean_loss_over_k)
summed = flat_gradient(model)
print(f"summed gradient norm: {summed.norm():.4f} (max_norm {MAX_NORM})")
clipped_by_hand = summed * min(1.0, MAX_NORM / summed.norm().item())

accumulate(model, window, mean_loss_over_k)
nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)  # once, after the last micro-batch
clipped_once = flat_gradient(model)
accumulate(model, window, mean_loss_over_k, clip_every_micro_batch_to=MAX_NORM)
clipped_every_micro_batch = flat_gradient(model)

compare("clipped once == summed gradient clipped", clipped_once, clipped_by_hand)
compare("clipped every micro-batch == summed gradient clipped", clipped_every_micro_batch, clipped_by_hand)
print(f"clipped every micro-batch: relative error "
      f"{relative_error(clipped_every_micro_batch, clipped_by_hand):.1%}, norm {clipped_every_micro_batch.norm():.4f}")

# %%
# Both gradients have norm ``MAX_NORM``, so the length of the step looks right,
# but clipping inside the loop changed the direction: it weighted the
# micro-batches unequally, the last one most.
#
# With ``GradScaler`` there is a second way to clip the wrong gradient: before
# ``unscale_``. ``.grad`` then holds the gradient multiplied by the scale, and
# clipping shrinks it to norm ``MAX_NORM`` in *scaled* units; ``unscale_`` then
# divides by the scale, and the optimizer receives a gradient whose norm is
# ``MAX_NORM`` divided by the scale.

for micro_batch in window:
    scaled_backward(model, scaler, micro_batch)
nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)  # wrong: .grad is still scaled
scaler.unscale_(optimizer)
print(f"clipped before unscale_: gradient norm {current_gradient(model).norm():.2e} "
      f"instead of {MAX_NORM} (scale {scaler.get_scale():.0f})")
scaler.step(optimizer)
scaler.update()
optimizer.zero_grad()

# %%
# What that does to the update depends on the optimizer. With SGD the step is
# the learning rate times the gradient, so it shrinks by the same factor, or
# by more where changes that small are lost in the rounding of the weights.
# AdamW, the optimizer of this page, divides each element of the gradient by
# a running average of its size, so a gradient divided by the scale still
# gives a step of the same order: smaller only because the tiny gradient is
# now comparable to ``eps``, the constant added to that average. The mistake
# hardly shows, and goes unnoticed. ``step_length`` takes one step on the
# window from the current weights, with a new optimizer and scaler, clipped
# after or before ``unscale_``, and the ratio of the two step lengths is
# printed for AdamW and for SGD.


def step_length(model, make_optimizer, window, clip_before_unscale):
    """How far one mixed-precision step on ``window`` moves a copy of ``model``."""
    trial = copy.deepcopy(model)
    optimizer = make_optimizer(trial.parameters())
    scaler = torch.amp.GradScaler(device.type)
    before = nn.utils.parameters_to_vector(trial.parameters()).detach().clone()
    for micro_batch in window:
        scaled_backward(trial, scaler, micro_batch)
    if clip_before_unscale:
        nn.utils.clip_grad_norm_(trial.parameters(), MAX_NORM)  # wrong: in scaled units
    scaler.unscale_(optimizer)
    if not clip_before_unscale:
        nn.utils.clip_grad_norm_(trial.parameters(), MAX_NORM)
    scaler.step(optimizer)
    scaler.update()
    return (nn.utils.parameters_to_vector(trial.parameters()).detach() - before).norm().item()


for name, make_optimizer in [("AdamW", lambda params: optim.AdamW(params, lr=PEAK_LR)),
                             ("SGD", lambda params: optim.SGD(params, lr=PEAK_LR))]:
    right = step_length(model, make_optimizer, window, clip_before_unscale=False)
    wrong = step_length(model, make_optimizer, window, clip_before_unscale=True)
    print(f"{name}: step length clipped before unscale_ / clipped after: "
          f"{wrong / right if right else float('nan'):.2e}")

# %%
# Learning-rate schedule: count optimizer steps
# ---------------------------------------------
#
# A schedule with warm-up is written in optimizer steps: here the learning
# rate rises linearly over the first ``WARMUP_STEPS`` updates, then falls
# linearly, reaching zero just after the last update of training. ``LambdaLR`` counts calls to
# ``scheduler.step()``, so it must be called once per update, next to
# ``optimizer.step()``. Called once per micro-batch, it counts micro-batches,
# and the whole schedule runs ``k`` times too fast.
#
# Only the counting matters here, so the loop below does no forward or
# backward pass; it records the learning rate that each update would use, for
# 5 epochs of 8 updates. The last section trains with both schedules.

EPOCHS = 5
TOTAL_STEPS = EPOCHS * len(windows)  # optimizer steps in the whole training
WARMUP_STEPS = 8


def warmup_then_decay(optimizer_step):
    """LambdaLR factor: linear warm-up over WARMUP_STEPS updates, then linear decay to 0."""
    if optimizer_step < WARMUP_STEPS:
        return (optimizer_step + 1) / WARMUP_STEPS
    return max(0.0, (TOTAL_STEPS - optimizer_step) / (TOTAL_STEPS - WARMUP_STEPS))


def learning_rate_of_each_update(scheduler_step_every_micro_batch):
    optimizer = optim.AdamW(make_model().parameters(), lr=PEAK_LR)
    scheduler = optim.lr_scheduler.LambdaLR(optimizer, warmup_then_decay)
    rates = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(EPOCHS):
            for window in windows:
                for _micro_batch in window:
                    # the forward and backward passes would go here
                    if scheduler_step_every_micro_batch:
                        scheduler.step()  # wrong: counts micro-batches
                rates.append(optimizer.param_groups[0]["lr"])
                optimizer.step()
                optimizer.zero_grad()
                if not scheduler_step_every_micro_batch:
                    scheduler.step()  # once per update
    for warning in caught:
        print(f"  PyTorch warned: {str(warning.message).split('. ')[0]}.")
    return rates


def describe_schedule(name, rates):
    peak = rates.index(max(rates)) + 1
    zero = next((i + 1 for i, rate in enumerate(rates) if rate == 0), None)
    print(f"{name}: peak learning rate at update {peak}, learning rate 0 from update "
          f"{zero if zero else 'never'} of {len(rates)}")


schedules = {}
for name, every_micro_batch in [("scheduler.step() every update", False),
                                ("scheduler.step() every micro-batch", True)]:
    schedules[name] = learning_rate_of_each_update(every_micro_batch)
    describe_schedule(name, schedules[name])

# %%
# Stepped every micro-batch, the scheduler advances 30 times per epoch instead
# of 8, 3.75 times too fast (not quite ``k``, because the last window of each
# epoch holds 2 micro-batches). The warm-up is over at update 2 instead of 8,
# and from update 11 of 40 on the learning rate is zero: every update after
# that leaves the weights as they are.
#
# PyTorch's only hint is the warning above, given once: at the first
# micro-batch, ``scheduler.step()`` came before any ``optimizer.step()``. It
# says nothing about the schedule running too fast.
#
# The same warning can come from the right loop, and there it means something
# else. When ``GradScaler`` finds an ``inf`` or ``nan`` in the gradients,
# ``scaler.step()`` skips ``optimizer.step()`` and ``scaler.update()`` lowers
# the scale, but ``scheduler.step()`` still advances the schedule. In
# ``float16`` that is common in the first updates, while the scale comes down
# from its initial value to one at which the gradients fit. A skip at the first
# update gives the warning; later skips pass silently. The schedule is then
# one update ahead of the weights for each skipped step, which is usually
# harmless. Below, one gradient element is set to ``inf``, as an overflow in
# ``float16`` would leave it, in the first update of a new run.


def first_update_with_overflow(model, window):
    """One right update whose gradient overflowed; print what changed and what PyTorch said."""
    optimizer = optim.AdamW(model.parameters(), lr=PEAK_LR)
    scheduler = optim.lr_scheduler.LambdaLR(optimizer, warmup_then_decay)
    scaler = torch.amp.GradScaler(device.type)
    weights = nn.utils.parameters_to_vector(model.parameters()).detach().clone()
    scale, learning_rate = scaler.get_scale(), optimizer.param_groups[0]["lr"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for micro_batch in window:
            scaled_backward(model, scaler, micro_batch)
        model[0].weight.grad[0, 0] = float("inf")  # what a float16 overflow leaves in .grad
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)
        scaler.step(optimizer)  # finds the inf: skips optimizer.step()
        scaler.update()
        scheduler.step()  # advances the schedule all the same
        optimizer.zero_grad()
    moved = not torch.equal(weights, nn.utils.parameters_to_vector(model.parameters()))
    print(f"update with an overflow: weights changed: {moved}, scale {scale:.0f} -> {scaler.get_scale():.0f}, "
          f"learning rate {learning_rate:.4f} -> {optimizer.param_groups[0]['lr']:.4f}")
    for warning in caught:
        print(f"  PyTorch warned: {str(warning.message).split('. ')[0]}.")


first_update_with_overflow(copy.deepcopy(model), window)

fig, ax = plt.subplots(figsize=(8, 4))
updates = range(1, TOTAL_STEPS + 1)
ax.plot(updates, schedules["scheduler.step() every update"], linewidth=2,
        label="scheduler.step() once per update (right)")
ax.plot(updates, schedules["scheduler.step() every micro-batch"], "--", linewidth=2,
        label="scheduler.step() every micro-batch (wrong)")
ax.axvline(WARMUP_STEPS, color="gray", linewidth=0.8)
ax.text(WARMUP_STEPS + 0.5, PEAK_LR * 0.45, "end of warm-up", color="gray")
ax.set_xlabel("update (optimizer step)")
ax.set_ylabel("learning rate")
ax.set_title(f"Warm-up and decay with k = {K} micro-batches per update")
ax.legend()
fig.tight_layout()
plt.show()

# %%
# Sequences of different lengths: weight by tokens
# ------------------------------------------------
#
# What should one update minimise? For a language model, usually the mean
# loss over every real token of the effective batch. ``F.cross_entropy`` with
# ``reduction="mean"`` gives the mean over the real tokens of *one
# micro-batch*, and those micro-batches hold different numbers of tokens.
# Dividing each micro-batch mean by ``k`` gives every micro-batch the same
# weight, so a token in a short micro-batch counts more than a token in a long
# one. The result is not the gradient of the effective batch, whatever ``k``.
#
# The fix is to sum the token losses of each micro-batch
# (``reduction="sum"``) and divide by the number of real tokens in the whole
# window, counted before its first backward pass. The micro-batch losses then
# add up to exactly the token mean of the effective batch.
#
# .. note::
#    In October 2024, Hugging Face described this mistake in the ``Trainer`` of
#    their ``transformers`` library, a widely used one: the losses of runs with
#    gradient accumulation did not match those of the same runs without it.
#    Their fix passes the number of real tokens of the whole effective batch to
#    the loss (`their write-up <https://huggingface.co/blog/gradient_accumulation>`_).
#
# The reference is the full batch: the 32 sequences of the window padded into
# one batch, one forward and backward pass of the token mean.

print(f"real tokens per micro-batch: {[real_tokens(micro_batch) for micro_batch in window]}")
token_loss(model, sequences_of(window), "mean").backward()
full_batch = flat_gradient(model)

accumulate(model, window, mean_loss_over_k)
mean_over_k = flat_gradient(model)



def token_sum_over_window_tokens(model, micro_batch, window_tokens):
    """The micro-batch's token losses, summed, divided by the real tokens of its whole window."""
    return token_loss(model, micro_batch, "sum") / window_tokens


window_tokens = real_tokens(sequences_of(window))  # counted before any backward
accumulate(model, window, functools.partial(token_sum_over_window_tokens, window_tokens=window_tokens))
token_weighted = flat_gradient(model)

compare("micro-batch mean / k == full batch", mean_over_k, full_batch)
compare("token sum / window tokens == full batch", token_weighted, full_batch)
print(f"micro-batch mean / k: relative error {relative_error(mean_over_k, full_batch):.1%}")
print(f"token sum / window tokens: relative error {relative_error(token_weighted, full_batch):.1e}")

# %%
# The token-weighted gradient is the full-batch gradient up to rounding. The
# per-micro-batch mean is off by a few percent in this window; the error grows
# with the differences between the micro-batches' token counts, and would
# vanish if they were all equal. It is a bias, not noise that averages out:
# at every update, the tokens of micro-batches with few tokens weigh more.
#
# .. note::
#    Under DDP (:ref:`distributed_accumulation`), the window is that of all
#    the workers together: divide by the real tokens of every worker's window,
#    summed with an ``all_reduce``, and multiply the loss by the number of
#    workers, since DDP averages the workers' gradients rather than adding
#    them. :ref:`distributed_pitfalls` shows it.
#
# The last window of an epoch
# ---------------------------
#
# 30 micro-batches do not split into windows of 4: the last window holds 2.
# :ref:`gradient_accumulation` shows what a loop that steps only when
# ``(i + 1) % k == 0`` does with such a window: it never steps on it, and its
# gradients are added to the first update of the next epoch. A loop that does
# step at the end of the epoch but still divides by ``k`` gets a gradient that
# is only 2/4 of what it should be: in general, the number of micro-batches
# really in the window divided by ``k``. With mean losses over micro-batches
# of equal size, the divisor must be ``len(window)`` (in general, weight each
# micro-batch by its share of the window's items, as
# :ref:`gradient_accumulation` does); with the token weighting above it is the
# number of tokens really in the window, and the short window needs nothing
# special.

last_window = windows[-1]
print(f"last window: {len(last_window)} micro-batches, k = {K}")


def mean_loss_over_window_length(model, micro_batch, window_length):
    return token_loss(model, micro_batch, "mean") / window_length


accumulate(model, last_window, mean_loss_over_k)
divided_by_k = flat_gradient(model)
accumulate(model, last_window, functools.partial(mean_loss_over_window_length, window_length=len(last_window)))
divided_by_window_length = flat_gradient(model)
print(f"last window, loss / k vs loss / len(window): gradient norm ratio "
      f"{(divided_by_k.norm() / divided_by_window_length.norm()).item():.4f}")

token_loss(model, sequences_of(last_window), "mean").backward()
last_full_batch = flat_gradient(model)
last_window_tokens = real_tokens(sequences_of(last_window))  # what it really holds
accumulate(model, last_window, functools.partial(token_sum_over_window_tokens, window_tokens=last_window_tokens))
compare("last window, token sum / window tokens == full batch", flat_gradient(model), last_full_batch)

# %%
# Logging the loss without its graph
# ----------------------------------
#
# A loop usually adds up the loss to print it. ``total_loss += loss`` adds the
# tensor, with its ``grad_fn``: ``total_loss`` then refers to the graph of
# every micro-batch added so far, and keeps its nodes alive for as long as it
# lives. ``total_loss += loss.item()`` adds a Python number, but on a GPU
# ``.item()`` waits for the GPU to finish at every micro-batch;
# ``loss.detach()`` keeps a tensor on the device without the graph, and the
# complete loop at the end of this page uses it. A fourth loop adds up the
# tensors too, but calls ``backward()`` once, on the sum, at the end of the
# window.
#
# ``log_losses`` runs one window with each of these loops and measures two
# things. ``SavedTensorMeter`` uses
# ``torch.autograd.graph.saved_tensors_hooks``: it sees every tensor autograd
# saves for the backward pass, and counts the bytes of those still alive (the
# parameters themselves aside), at their peak and after the window. It counts
# tensors, not what the memory allocator reports, so it works the same way on
# a CPU and on a GPU. ``graph_nodes`` counts the autograd graph nodes that
# ``total_loss`` refers to, after each micro-batch.


class SavedTensor:
    __slots__ = ("tensor", "__weakref__")

    def __init__(self, tensor):
        self.tensor = tensor


class SavedTensorMeter:
    """Keeps track of the tensors autograd saves for backward while they are alive."""

    def __init__(self, model):
        self.parameter_storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self.saved = weakref.WeakSet()  # an entry disappears when autograd frees it
        self.peak_bytes = 0

    def pack(self, tensor):
        saved = SavedTensor(tensor)
        self.saved.add(saved)
        return saved

    def unpack(self, saved):
        return saved.tensor

    def bytes_alive(self):
        sizes = {}
        for saved in self.saved:
            storage = saved.tensor.untyped_storage()
            sizes[storage.data_ptr()] = storage.nbytes()  # a tensor saved twice counts once
        return sum(size for pointer, size in sizes.items() if pointer not in self.parameter_storages)

    def record_peak(self):
        self.peak_bytes = max(self.peak_bytes, self.bytes_alive())


def graph_nodes(total):
    """How many autograd graph nodes ``total`` refers to, through its ``grad_fn``."""
    seen, stack = set(), [total.grad_fn] if isinstance(total, torch.Tensor) else []
    while stack:
        node = stack.pop()
        if node is not None and node not in seen:
            seen.add(node)
            stack += [next_node for next_node, _ in node.next_functions]
    return len(seen)


def log_losses(model, window, description, kept, backward_once=False):
    """Run one window in float32, adding kept(loss) to total_loss; report what stays alive."""
    meter = SavedTensorMeter(model)
    total_loss, nodes_held = 0.0, []
    with torch.autograd.graph.saved_tensors_hooks(meter.pack, meter.unpack):
        for micro_batch in window:
            loss = token_loss(model, micro_batch, "mean") / K
            meter.record_peak()  # after the forward pass: the most this micro-batch saves
            if not backward_once:
                loss.backward()
            total_loss += kept(loss)
            nodes_held.append(graph_nodes(total_loss))
        if backward_once:
            total_loss.backward()
    model.zero_grad()
    print(f"{description}: saved tensors {meter.peak_bytes / 1024:.0f} KiB at the peak, "
          f"{meter.bytes_alive() / 1024:.0f} KiB after the window; "
          f"graph nodes held by total_loss: {', '.join(map(str, nodes_held))}")


log_losses(model, window, "total_loss += loss.item()", lambda loss: loss.item())
log_losses(model, window, "total_loss += loss.detach()", lambda loss: loss.detach())
log_losses(model, window, "total_loss += loss", lambda loss: loss)
log_losses(model, window, "total_loss += loss, one backward() on the sum", lambda loss: loss, backward_once=True)

# %%
# With ``.item()`` or ``.detach()``, ``total_loss`` holds no graph. With the
# tensor and a ``backward()`` per micro-batch, it holds more graph nodes after
# every micro-batch, and would go on over a whole epoch if the running total
# lived that long; the saved tensors of those nodes are gone (0 KiB after the
# window), because each ``backward()`` freed them. What the nodes themselves
# take up is not measured here. Calling ``backward()`` once on the sum holds
# the saved tensors of all four micro-batches at the same time, about ``k``
# times the peak of the other loops: the memory that accumulation was meant to
# save. Where the rest of a step's memory goes, gradients and optimizer state
# included, is measured in :ref:`optimizer_step_in_backward`.
#
# Checkpoints: at the end of a window
# -----------------------------------
#
# A checkpoint holds ``model.state_dict()`` and ``optimizer.state_dict()``:
# the weights, and for AdamW the running averages of each parameter and its
# step count. Neither holds ``.grad``. A run saved in the middle of a window,
# after 2 of its micro-batches, and resumed from that checkpoint starts the
# window's remaining micro-batches with no gradient, so its update leaves out
# the first 2. Below, the resumed run's gradient is compared with the whole
# window's.

accumulate(model, window, mean_loss_over_k)
whole_window = flat_gradient(model)

accumulate(model, window[:2], mean_loss_over_k)  # interrupted after 2 micro-batches
checkpoint = {"model": copy.deepcopy(model.state_dict()), "optimizer": copy.deepcopy(optimizer.state_dict())}
print(f"in the checkpoint, per parameter: the weights, and {sorted(checkpoint['optimizer']['state'][0])}")
model.zero_grad()  # the run stops here; the parameters of a new process have no .grad
model.load_state_dict(checkpoint["model"])
optimizer.load_state_dict(checkpoint["optimizer"])
accumulate(model, window[2:], mean_loss_over_k)
compare("resumed in the middle of the window == whole window", flat_gradient(model), whole_window)

# %%
# Save checkpoints after ``optimizer.step()`` and ``zero_grad()``, at the end
# of a window; or, if a run must stop anywhere, save the ``.grad`` of every
# parameter and the position in the window with it.
#
# Everything together
# -------------------
#
# The complete loop, with every piece in its place:
#
# * before the window's first micro-batch, count its real tokens;
# * every micro-batch: forward under autocast, token-sum loss divided by the
#   window's tokens, ``scaler.scale(loss).backward()``, and ``loss.detach()``
#   added up to log;
# * once per window, whatever its length: ``unscale_``, clip, ``scaler.step``,
#   ``scaler.update``, ``scheduler.step`` and ``zero_grad``.
#
# It trains the same initial weights twice, the second time stepping the
# scheduler every micro-batch. Both runs record the loss of every update: the
# mean over the real tokens of its window. Only the second run filters out the
# scheduler's warning, already shown above: in the right loop it would be the
# sign of a skipped first update.


def train(model, scheduler_step_every_micro_batch=False):
    """Mixed precision, clipping, warm-up, token weighting: return the loss of every update."""
    optimizer = optim.AdamW(model.parameters(), lr=PEAK_LR)
    scheduler = optim.lr_scheduler.LambdaLR(optimizer, warmup_then_decay)
    scaler = torch.amp.GradScaler(device.type)
    losses = []
    with warnings.catch_warnings():
        if scheduler_step_every_micro_batch:
            # This variant's warning, shown above. In the right loop it would mean that
            # GradScaler skipped the first update, so it stays visible there.
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")
        for _ in range(EPOCHS):
            for window in windows:
                window_tokens = real_tokens(sequences_of(window))
                window_loss = torch.zeros((), device=device)
                for micro_batch in window:
                    with torch.autocast(device_type=device.type, dtype=amp_dtype):
                        loss = token_loss(model, micro_batch, "sum") / window_tokens
                    scaler.scale(loss).backward()
                    window_loss += loss.detach()  # no graph kept, and no wait for the GPU
                    if scheduler_step_every_micro_batch:
                        scheduler.step()
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)
                scaler.step(optimizer)
                scaler.update()
                if not scheduler_step_every_micro_batch:
                    scheduler.step()
                optimizer.zero_grad()
                losses.append(window_loss)
    return torch.stack(losses).tolist()  # one copy to the CPU, at the end


initial_weights = copy.deepcopy(make_model().state_dict())
runs = {}
for name, every_micro_batch in [("scheduler.step() every update", False),
                                ("scheduler.step() every micro-batch", True)]:
    model = make_model()
    model.load_state_dict(initial_weights)
    runs[name] = train(model, every_micro_batch)
    print(f"{name}: {len(runs[name])} updates, loss {runs[name][0]:.3f} -> {runs[name][-1]:.3f}")
    last_epoch, epoch_before = runs[name][-len(windows):], runs[name][-2 * len(windows):-len(windows)]
    print(f"{name}: the last epoch's losses repeat the epoch before: {last_epoch == epoch_before}")

# %%
# The run whose scheduler counted micro-batches drops faster at first, since
# its warm-up is over after 2 updates, then stops learning when its learning
# rate reaches zero at update 11: from there on its weights do not change, and
# its last epochs repeat the same eight losses. The right schedule keeps
# improving to the end. (Each update's loss is measured on the sequences of its
# own window, which differ from window to window, hence the zigzag.)

fig, ax = plt.subplots(figsize=(8, 4))
ax.plot(range(1, TOTAL_STEPS + 1), runs["scheduler.step() every update"], linewidth=2,
        label="scheduler.step() once per update (right)")
ax.plot(range(1, TOTAL_STEPS + 1), runs["scheduler.step() every micro-batch"], "--", linewidth=2,
        label="scheduler.step() every micro-batch (wrong)")
ax.set_xlabel("update (optimizer step)")
ax.set_ylabel("mean cross-entropy per token")
ax.set_title("The complete loop, trained with each schedule")
ax.legend()
fig.tight_layout()
plt.show()

# %%
# Summary
# -------
#
# * ``scaler.scale(loss).backward()`` on every micro-batch;
#   ``scaler.unscale_``, clipping, ``scaler.step`` and ``scaler.update`` once
#   per update, after the last micro-batch. Unscaling twice raises.
# * Clip once, after ``unscale_``, the summed gradient: clipping inside the
#   micro-batch loop changes its direction, clipping before ``unscale_``
#   divides it by the scale once more (under Adam, without a visible sign).
# * Step the scheduler once per update and count warm-up in updates. A step
#   that ``GradScaler`` skips still advances the schedule.
# * For tokens or any items of varying number per micro-batch, sum the item
#   losses and divide by the number of items in the whole window.
# * Divide by what the window really holds, including the last, shorter one.
# * Log ``loss.item()`` or ``loss.detach()``, and call ``backward()`` once per
#   micro-batch.
# * Save checkpoints at the end of a window: ``.grad`` is in neither
#   ``state_dict()``.
# * :ref:`gradient_accumulation` explains the rule itself,
#   :ref:`distributed_accumulation` carries it over to several GPUs, and
#   :ref:`zero_grad_pitfalls` shows where ``zero_grad()`` belongs.

# sphinx_gallery_thumbnail_number = 1
