"""
.. _gradient_accumulation:

Accumulating gradients on purpose
=================================

``loss.backward()`` adds to ``.grad`` instead of overwriting it. The other
recipes treat that as a trap (:ref:`zeroing_out_gradients`), but it is also a
feature: it lets you train with a batch larger than fits in memory. Split the
batch you want into ``k`` *micro-batches*, run the forward and backward pass
of each one in turn, and let the gradients pile up in ``.grad``. Only after the
``k``-th micro-batch does the optimizer take its step and the gradients get
cleared. Memory holds the activations of one micro-batch at a time, while the
update uses the gradient of the whole batch.

The whole technique fits in one rule:

* every micro-batch: ``(loss / k).backward()``, or, when the micro-batches
  of an update differ in size, the loss weighted by the micro-batch's share of
  the update's points;
* every ``k``-th micro-batch, and the last one of an epoch:
  ``optimizer.step()`` then ``optimizer.zero_grad()``.

This recipe checks that the rule gives exactly the gradient of the whole
batch, then shows where it goes wrong: a loop that forgets to divide by ``k``
(and what that does to SGD, Adam and gradient clipping), a summed loss divided
anyway, an epoch whose last micro-batches do not fill a whole update, and a
model with batch normalization. Finally it trains a small network both ways
to show that the two loss curves are the same curve.
"""

# %%
# Setup
# -----
#
# Only PyTorch and matplotlib. Everything runs in a few seconds, on a CUDA GPU
# when there is one and on the CPU otherwise.
#
# With the seed, the script prints the same numbers every time it runs on the
# same machine with the same PyTorch version and number of threads; another CPU
# may differ in the last digits. A GPU gives different numbers: CUDA has its
# own random number generator, so even the made-up data differ from the CPU's,
# and its kernels add up in a different order. Repeated runs on one GPU usually
# agree too, but only ``torch.use_deterministic_algorithms(True)`` makes
# PyTorch use deterministic implementations where it has them and raise an
# error where it has none. What the recipe shows, which gradients match and
# which do not, holds everywhere.

import copy

import matplotlib.pyplot as plt
import torch
import torch.nn as nn
import torch.optim as optim

device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
print(f"Using device: {device}")
torch.manual_seed(0)  # the same data on every run on one machine; a GPU draws other numbers than a CPU

# %%
# A small regression task
# -----------------------
#
# The data are made up on the spot: 2,200 points with 8 features, and a
# target that is a smooth non-linear function of them plus a little noise. The
# model is a small multilayer perceptron with one hidden layer.
#
# We pretend that a batch of 256 points is too big for our device, and that
# the largest batch that fits is 64. So the *effective batch size* is 256,
# the *micro-batch* size is 64, and ``k = 4`` micro-batches make one update.
# (2,200 is not a multiple of 256 on purpose: an epoch ends with a shorter
# batch, which the section on the last window deals with.)

inputs = torch.randn(2200, 8, device=device)
true_direction = torch.randn(8, 1, device=device)
targets = torch.sin(inputs @ true_direction) + 0.1 * torch.randn(2200, 1, device=device)

BATCH_SIZE = 256  # the batch we want each update to see
K = 4  # micro-batches per update
MICRO_BATCH_SIZE = BATCH_SIZE // K


def make_model(batch_norm=False):
    """A one-hidden-layer MLP, optionally with batch normalization."""
    layers = [nn.Linear(8, 64)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(64))
    layers += [nn.Tanh(), nn.Linear(64, 1)]
    return nn.Sequential(*layers).to(device)


model = make_model()
initial_weights = copy.deepcopy(model.state_dict())  # every training run below starts from these
criterion = nn.MSELoss()  # reduction="mean": the loss is the mean over the batch
batch_inputs, batch_targets = inputs[:BATCH_SIZE], targets[:BATCH_SIZE]

# %%
# Two ways to get one gradient
# ----------------------------
#
# ``full_batch_gradient`` does one forward and backward pass over all 256
# points. ``accumulate`` cuts the same points into micro-batches of 64 and
# calls ``backward()`` once per micro-batch, leaving the gradients to add up in
# ``.grad``. Each micro-batch loss is weighted by the micro-batch's share of
# the points, here 64 / 256 = 1 / ``k``; the other weightings are the mistakes
# shown further down. ("Full batch" here means the whole batch of 256 in one
# pass, not the whole data set.) ``accumulated_gradient`` and
# ``full_batch_gradient`` return every parameter's gradient as one flat vector.
# ``compare`` then checks them with ``torch.allclose``, allowing for rounding
# errors in proportion to the size of the gradient, and prints the largest
# absolute difference between the two.


def flat_gradient(model):
    """Every parameter's ``.grad`` as one vector; the gradients are then cleared."""
    gradient = torch.cat([p.grad.flatten() for p in model.parameters()])
    model.zero_grad()
    return gradient


def full_batch_gradient(model, loss_fn, x, y):
    loss_fn(model(x), y).backward()
    return flat_gradient(model)


def accumulate(model, loss_fn, x, y, weighting="share of the points"):
    """Backpropagate the micro-batches of ``x`` one at a time, each loss weighted as asked."""
    for x_micro, y_micro in zip(x.split(MICRO_BATCH_SIZE), y.split(MICRO_BATCH_SIZE)):
        loss = loss_fn(model(x_micro), y_micro)
        weight = {"share of the points": len(x_micro) / len(x), "1/k": 1 / K, "none": 1.0}[weighting]
        (weight * loss).backward()  # adds to .grad


def accumulated_gradient(model, loss_fn, x, y, weighting="share of the points"):
    accumulate(model, loss_fn, x, y, weighting)
    return flat_gradient(model)


def compare(description, gradient, reference):
    """Print whether two gradients match, and by how much they differ at most."""
    # Rounding errors grow with the size of the numbers, so the tolerance does too.
    same = torch.allclose(gradient, reference, atol=1e-5 * reference.abs().max().item())
    difference = (gradient - reference).abs().max().item()
    print(f"{description}: {same} (max abs difference {difference:.2e})")
    return same


full = full_batch_gradient(model, criterion, batch_inputs, batch_targets)
accumulated = accumulated_gradient(model, criterion, batch_inputs, batch_targets)
compare("accumulated == full batch", accumulated, full)

# %%
# They match. The tiny difference left is rounding: floating-point additions
# done in a different order do not give bit-for-bit the same result.
#
# Why divide by ``k``? ``MSELoss`` averages over its batch, so each micro-batch
# loss is the mean over 64 points. The full-batch loss is the mean over 256
# points, which is the average of the four micro-batch means, that is their
# sum divided by 4. Because taking a gradient is linear, the same holds for the
# gradients: summing the four micro-batch gradients in ``.grad``, each divided
# by ``k``, gives the gradient of the full-batch mean.
#
# Where it does not match: forgetting to divide
# ---------------------------------------------
#
# Without the division, ``.grad`` ends up holding the *sum* of the four
# micro-batch gradients, which is ``k`` times the full-batch gradient: the
# right direction, ``k`` times too long.

no_division = accumulated_gradient(model, criterion, batch_inputs, batch_targets, weighting="none")
compare("no division by k == full batch", no_division, full)
compare("no division by k == k x full batch", no_division, K * full)
print(f"no division / full batch gradient norm: {(no_division.norm() / full.norm()).item():.4f} (k = {K})")

# %%
# What a gradient ``k`` times too large does to training depends on what the
# optimizer does with it. Below, each optimizer makes 8 accumulated updates
# from the same initial weights on the same 2,048 points three times: without
# the division, with it, and with it but with the learning rate multiplied by
# ``k``. The table gives how far the weight change without the division is
# from the other two, relative to the size of the change (0 means identical).
# The last line does the same with SGD and ``clip_grad_norm_(max_norm=1.0)``
# before every update, and counts the updates whose gradient was clipped.

OPTIMIZERS = {
    "SGD, momentum=0.9": lambda params, lr_scale: optim.SGD(params, lr=0.05 * lr_scale, momentum=0.9),
    "SGD, momentum=0.9, weight_decay=0.01":
        lambda params, lr_scale: optim.SGD(params, lr=0.05 * lr_scale, momentum=0.9, weight_decay=0.01),
    "Adam": lambda params, lr_scale: optim.Adam(params, lr=1e-3 * lr_scale),
    "AdamW, weight_decay=0.01": lambda params, lr_scale: optim.AdamW(params, lr=1e-3 * lr_scale, weight_decay=0.01),
}


def weight_change(make_optimizer, weighting, lr_scale=1, max_norm=None, updates=8):
    """How ``updates`` accumulated updates move the initial weights; also how many were clipped."""
    model = make_model()
    model.load_state_dict(initial_weights)
    start = nn.utils.parameters_to_vector(model.parameters()).detach()
    optimizer = make_optimizer(model.parameters(), lr_scale)
    clipped = 0
    for x, y in zip(inputs.split(BATCH_SIZE)[:updates], targets.split(BATCH_SIZE)[:updates]):
        accumulate(model, criterion, x, y, weighting)
        if max_norm is not None:
            clipped += int(nn.utils.clip_grad_norm_(model.parameters(), max_norm) > max_norm)
        optimizer.step()
        optimizer.zero_grad()
    return nn.utils.parameters_to_vector(model.parameters()).detach() - start, clipped


def relative_difference(change, reference):
    return ((change - reference).abs().max() / reference.abs().max()).item()


print(f"{'optimizer':<40}{'vs with division':>18}{'vs with division, lr x k':>26}")
for name, make_optimizer in OPTIMIZERS.items():
    no_division_change, _ = weight_change(make_optimizer, "none")
    divided_change, _ = weight_change(make_optimizer, "share of the points")
    faster_change, _ = weight_change(make_optimizer, "share of the points", lr_scale=K)
    print(f"{name:<40}{relative_difference(no_division_change, divided_change):>18.2e}"
          f"{relative_difference(no_division_change, faster_change):>26.2e}")

clipped = {weighting: weight_change(OPTIMIZERS["SGD, momentum=0.9"], weighting, max_norm=1.0)[1]
           for weighting in ("none", "share of the points")}
print(f"SGD with clip_grad_norm_(max_norm=1.0): clipped {clipped['none']} of 8 updates without division, "
      f"{clipped['share of the points']} of 8 with it")

# %%
# "As if the learning rate had been multiplied by ``k``" is exactly true only
# for SGD without weight decay, with or without momentum: its update is
# linear in the gradients (with momentum, in all the gradients so far), so forgetting the division gives the same
# weights as running with ``k`` times the learning rate (exactly the same here,
# because scaling by 4 loses nothing in binary floating point), and weights
# far from the intended ones.
#
# * Weight decay in ``optim.SGD`` (and in ``optim.Adam``) is *coupled*: it adds
#   ``weight_decay * param`` to the gradient, and that term is not multiplied
#   by ``k``. Without the division the run matches neither of the others: it
#   is ``k`` times the learning rate with ``weight_decay / k``.
# * Adam and AdamW divide their running average of the gradient by the square
#   root of their running average of its square. Gradients ``k`` times larger
#   scale both alike, so they give almost the same update: the weights differ by a few parts in 100,000 of their change,
#   and only because of ``eps``, the small constant added to that square root.
#   Here forgetting the division changes almost nothing, and multiplying the
#   learning rate by ``k`` to "compensate" would be the real mistake. AdamW's
#   weight decay acts on the weights directly, not through the gradient, so it
#   keeps its meaning too.
# * Gradient clipping compares the norm of ``.grad`` with ``max_norm``. Without
#   the division that norm is ``k`` times too large, so a threshold chosen for
#   the true gradient clips all 8 updates here, against 1 with the division.
#
# Where it does not match: a summed loss
# --------------------------------------
#
# With ``reduction="sum"`` the loss of the full batch *is* the sum of the
# micro-batch losses, so the plain accumulated sum is already right and
# dividing by ``k`` is the mistake: the gradient is then only ``1 / k`` of what
# it should be. The rule is really "make the micro-batch losses add up to the
# full-batch loss"; with the usual ``reduction="mean"`` that means dividing by
# ``k``.

sum_criterion = nn.MSELoss(reduction="sum")
full_sum = full_batch_gradient(model, sum_criterion, batch_inputs, batch_targets)
compare("sum reduction, divided by k == full batch",
        accumulated_gradient(model, sum_criterion, batch_inputs, batch_targets, weighting="1/k"), full_sum)
compare("sum reduction, not divided == full batch",
        accumulated_gradient(model, sum_criterion, batch_inputs, batch_targets, weighting="none"), full_sum)

# %%
# Where it does not match: the last window of an epoch
# ----------------------------------------------------
#
# 2,200 points make 34 micro-batches of 64 and one of 24: 35 micro-batches,
# that is 8 windows of ``k = 4`` (a window being the micro-batches of one
# update) and a last window of 3 micro-batches holding 64 + 64 + 24 = 152
# points. The full-batch run sees the same epoch as 8
# batches of 256 and one of 152.
#
# The last window needs its own weights. Its loss should be the mean over its
# 152 points, so each micro-batch counts for its share of those points:
# 64 / 152, 64 / 152 and 24 / 152. Dividing by ``k`` instead gives each the
# weight 1 / 4: the weights add up to 3 / 4 rather than 1, so the update is
# too small, and the 24 points count as much as 64.

LEFTOVER = len(inputs) % BATCH_SIZE
short_inputs, short_targets = inputs[-LEFTOVER:], targets[-LEFTOVER:]
full_short = full_batch_gradient(model, criterion, short_inputs, short_targets)
compare(f"last window of {LEFTOVER} points, weighted by share == full batch",
        accumulated_gradient(model, criterion, short_inputs, short_targets), full_short)
compare(f"last window of {LEFTOVER} points, divided by k == full batch",
        accumulated_gradient(model, criterion, short_inputs, short_targets, weighting="1/k"), full_short)

# %%
# The usual loop has a second problem with that window. It counts micro-batches
# with ``enumerate`` and steps when ``(i + 1) % k == 0``; the count starts
# again at every epoch, so after the 32nd micro-batch the last three are
# backpropagated but no step follows. Their gradients stay in ``.grad`` and are
# added to the first update of the next epoch (and after the last epoch they
# are never used). It goes unnoticed whenever the micro-batches of an epoch are
# a multiple of ``k``. Here is one epoch of that loop, and what it leaves
# behind:


def epoch_stepping_every_kth_micro_batch(model):
    """One epoch of the common loop; returns what is left in .grad afterwards."""
    optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    order = torch.randperm(len(inputs), generator=torch.Generator().manual_seed(0)).to(device)
    for i, indices in enumerate(order.split(MICRO_BATCH_SIZE)):
        loss = criterion(model(inputs[indices]), targets[indices])
        (loss / K).backward()
        if (i + 1) % K == 0:
            optimizer.step()
            optimizer.zero_grad()
    return [p.grad for p in model.parameters() if p.grad is not None]


left_over = epoch_stepping_every_kth_micro_batch(copy.deepcopy(model))
print(f"micro-batches per epoch: {len(inputs.split(MICRO_BATCH_SIZE))}, k = {K}; "
      f"gradient left in .grad after the epoch: norm {torch.cat([g.flatten() for g in left_over]).norm().item():.4f}")

# %%
# The fix is to step at the end of every window, the last short one included,
# weighting each micro-batch by its share of the window's points. The training
# loop below does both.
#
# Where it does not match: batch normalization
# --------------------------------------------
#
# Batch normalization, in training mode, normalises each feature with the mean
# and variance *of the batch it is given*. Fed 64 points at a time, it
# computes four different sets of statistics instead of one set over all 256
# points, so the network itself computes a different function and no choice of
# divisor can recover the full-batch gradient. Its running statistics are also
# updated four times instead of once.

bn_model = make_model(batch_norm=True)
compare("batch norm, accumulated == full batch",
        accumulated_gradient(bn_model, criterion, batch_inputs, batch_targets),
        full_batch_gradient(bn_model, criterion, batch_inputs, batch_targets))

# %%
# The difference is not rounding any more. Whether it matters in practice
# depends on the micro-batch size: statistics over 64 points are noisier than
# over 256, but usually still fine; over 2 or 4 points they are not. Layers
# that do not mix the points of a batch, such as ``nn.LayerNorm`` and
# ``nn.GroupNorm``, accumulate exactly, up to rounding. Dropout is another
# source of mismatch, simply because the random masks differ, but it does not
# change what is being estimated.
#
# Training both ways
# ------------------
#
# Now a real training loop. ``train`` cuts each epoch into micro-batches and
# the micro-batches into windows of ``accumulation_steps``; it steps and clears
# the gradients at the end of every window, the last and shorter one included,
# and weights each micro-batch by its share of its window's points. With
# ``accumulation_steps=1`` and micro-batches of 256 it is the ordinary
# full-batch loop; with ``4`` and micro-batches of 64 it accumulates. Both runs
# start from the same initial weights and draw the points in the same shuffled
# order (a generator seeded the same way), so each update sees the same points
# in both.
#
# The loss recorded for an update is the mean loss over its points: for the
# accumulating run, the sum of the weighted losses of its micro-batches. The
# loop adds up ``loss.detach()``, not ``loss.item()``: on a GPU, ``.item()``
# waits for the GPU to finish before the CPU can queue more work, and doing it
# for every micro-batch would stall the loop. The losses are copied to the CPU
# once, at the end.


def train(model, micro_batch_size, accumulation_steps, epochs=25):
    """SGD with momentum over the data set; return the loss of every update."""
    optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    shuffle = torch.Generator().manual_seed(0)
    losses = []
    for epoch in range(epochs):
        order = torch.randperm(len(inputs), generator=shuffle).to(device)
        micro_batches = order.split(micro_batch_size)
        for start in range(0, len(micro_batches), accumulation_steps):
            window = micro_batches[start:start + accumulation_steps]  # the last one may be shorter
            window_points = sum(len(indices) for indices in window)
            update_loss = torch.zeros((), device=device)
            for indices in window:
                loss = criterion(model(inputs[indices]), targets[indices])
                weighted_loss = loss * (len(indices) / window_points)  # its share of the window's mean
                weighted_loss.backward()  # adds to .grad
                update_loss += weighted_loss.detach()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(update_loss)
    return torch.stack(losses).tolist()


runs = {}
for name, micro_batch_size, accumulation_steps in [
    ("full batch", BATCH_SIZE, 1),
    ("accumulated", MICRO_BATCH_SIZE, K),
]:
    model = make_model()
    model.load_state_dict(initial_weights)
    runs[name] = train(model, micro_batch_size, accumulation_steps)
    print(f"{name}: {len(runs[name])} updates, final loss {runs[name][-1]:.4f}")

loss_difference = max(abs(a - b) for a, b in zip(runs["full batch"], runs["accumulated"]))
print(f"max difference between the two loss histories: {loss_difference:.2e}")

# %%
# The two runs make the same number of updates, 9 per epoch, and end at the
# same loss; their loss histories differ by rounding only, short windows
# included. What differs is the cost: the accumulating run makes four smaller
# forward and backward passes per update instead of one, which is slower
# whenever the full batch would have fit. Gradient accumulation trades time
# for memory.
#
# The plot shows the two loss curves. The dashed one (accumulated) lies exactly
# on the solid one (full batch).

fig, ax = plt.subplots(figsize=(8, 4.5))
ax.plot(runs["full batch"], linewidth=3, alpha=0.5, label="full batch of 256")
ax.plot(runs["accumulated"], "--", color="black", linewidth=1,
        label="4 accumulated micro-batches of 64")
ax.set_yscale("log")
ax.set_xlabel("update (optimizer step)")
ax.set_ylabel("mean squared error of the batch")
ax.set_title("Full batch and gradient accumulation: the same training")
ax.legend()
fig.tight_layout()
plt.show()

# %%
# When to use it
# --------------
#
# Reach for gradient accumulation when the batch size you want does not fit in
# memory: large models, long sequences, high-resolution images, or a small GPU.
# The memory that grows with the batch is mostly the activations saved for the
# backward pass, and those are freed after each micro-batch's ``backward()``;
# ``.grad`` itself has the size of the parameters whatever the batch size.
# :ref:`optimizer_step_in_backward` measures what each of them weighs in one
# step, and a way to avoid holding every gradient at once.
# Accumulation does not make training faster: it lets a small device reproduce
# the updates of a large batch, one micro-batch at a time.
#
# Summary
# -------
#
# * ``(loss / k).backward()`` every micro-batch; ``optimizer.step()`` and
#   ``optimizer.zero_grad()`` at the end of every window of ``k``.
# * The division makes the micro-batch losses add up to the full-batch mean
#   loss. Without it the gradient is ``k`` times too large: for SGD that is
#   ``k`` times the learning rate, for Adam almost nothing, and it changes what
#   weight decay and a clipping threshold mean. With ``reduction="sum"`` leave
#   the division out.
# * Step at the end of the last window of an epoch too, and weight each
#   micro-batch by its share of the points of its window.
# * Layers that look across the batch, batch normalization above all, see only
#   one micro-batch at a time, so the result is no longer the full-batch one.
# * :ref:`accumulation_in_practice` goes further: mixed precision, clipping,
#   learning-rate schedulers and losses weighted by token counts.
# * :ref:`zero_grad_pitfalls` shows where ``zero_grad()`` belongs in a loop
#   and what it does not do.

# sphinx_gallery_thumbnail_number = 1
