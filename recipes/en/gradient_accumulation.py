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

* every micro-batch: ``(loss / k).backward()``;
* every ``k``-th micro-batch: ``optimizer.step()`` then ``optimizer.zero_grad()``.

This recipe checks that the rule gives exactly the gradient of the whole
batch, shows three cases where it does not (a model with batch normalization,
a loop that forgets to divide by ``k``, and a summed loss divided anyway) and
trains a small network both ways to show that the two loss curves are the
same curve.
"""

# %%
# Setup
# -----
#
# Only PyTorch and matplotlib. Everything runs in a few seconds, on a CUDA GPU
# when there is one and on the CPU otherwise.

import copy

import matplotlib.pyplot as plt
import torch
import torch.nn as nn
import torch.optim as optim

device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
print(f"Using device: {device}")
torch.manual_seed(0)  # same random numbers, and so the same results, on every run

# %%
# A small regression task
# -----------------------
#
# The data are made up on the spot: 2,048 points with 8 features, and a
# target that is a smooth non-linear function of them plus a little noise. The
# model is a small multilayer perceptron with one hidden layer.
#
# We pretend that a batch of 256 points is too big for our device, and that
# the largest batch that fits is 64. So the *effective batch size* is 256,
# the *micro-batch* size is 64, and ``k = 4`` micro-batches make one update.

inputs = torch.randn(2048, 8, device=device)
true_direction = torch.randn(8, 1, device=device)
targets = torch.sin(inputs @ true_direction) + 0.1 * torch.randn(2048, 1, device=device)

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
criterion = nn.MSELoss()  # reduction="mean": the loss is the mean over the batch
batch_inputs, batch_targets = inputs[:BATCH_SIZE], targets[:BATCH_SIZE]

# %%
# Two ways to get one gradient
# ----------------------------
#
# ``full_batch_gradient`` does one forward and backward pass over all 256
# points. ``accumulated_gradient`` cuts the same points into ``k`` micro-batches
# and calls ``backward()`` once per micro-batch, leaving the gradients to add up
# in ``.grad``. ("Full batch" here means the whole batch of 256 in one pass,
# not the whole data set.) Both return every parameter's gradient as one flat
# vector.
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


def accumulated_gradient(model, loss_fn, x, y, k, divide_by_k=True):
    for x_micro, y_micro in zip(x.chunk(k), y.chunk(k)):
        loss = loss_fn(model(x_micro), y_micro)
        (loss / k if divide_by_k else loss).backward()  # adds to .grad
    return flat_gradient(model)


def compare(description, gradient, reference):
    """Print whether two gradients match, and by how much they differ at most."""
    # Rounding errors grow with the size of the numbers, so the tolerance does too.
    same = torch.allclose(gradient, reference, atol=1e-5 * reference.abs().max().item())
    difference = (gradient - reference).abs().max().item()
    print(f"{description}: {same} (max abs difference {difference:.2e})")
    return same


full = full_batch_gradient(model, criterion, batch_inputs, batch_targets)
accumulated = accumulated_gradient(model, criterion, batch_inputs, batch_targets, K)
compare("accumulated == full batch", accumulated, full)

# %%
# They match. The tiny difference left is rounding: floating-point additions
# done in a different order do not give bit-for-bit the same result.
#
# Why divide by ``k``? ``MSELoss`` averages over its batch, so each micro-batch
# loss is the mean over 64 points. The full-batch loss is the mean over 256
# points, which is the average of the four micro-batch means, that is their
# sum divided by 4. Because the gradient is linear, the same holds for the
# gradients: summing the four micro-batch gradients in ``.grad`` and dividing
# each by ``k`` gives the gradient of the full-batch mean.
#
# Where it does not match: forgetting to divide
# ---------------------------------------------
#
# Without the division, ``.grad`` ends up holding the *sum* of the four
# micro-batch gradients, which is ``k`` times the full-batch gradient. The
# direction is right but the step is ``k`` times longer, as if the learning rate
# had been multiplied by ``k``.

no_division = accumulated_gradient(model, criterion, batch_inputs, batch_targets, K, divide_by_k=False)
compare("no division by k == full batch", no_division, full)
compare("no division by k == k x full batch", no_division, K * full)
print(f"no division / full batch gradient norm: {(no_division.norm() / full.norm()).item():.4f} (k = {K})")

# %%
# Where it does not match: a summed loss
# --------------------------------------
#
# With ``reduction="sum"`` the loss of the full batch *is* the sum of the
# micro-batch losses, so the plain accumulated sum is already right and
# dividing by ``k`` is the mistake: it makes the gradient ``k`` times too small.
# The rule is really "make the micro-batch losses add up to the full-batch
# loss"; with the usual ``reduction="mean"`` that means dividing by ``k``.

sum_criterion = nn.MSELoss(reduction="sum")
full_sum = full_batch_gradient(model, sum_criterion, batch_inputs, batch_targets)
compare("sum reduction, divided by k == full batch",
        accumulated_gradient(model, sum_criterion, batch_inputs, batch_targets, K), full_sum)
compare("sum reduction, not divided == full batch",
        accumulated_gradient(model, sum_criterion, batch_inputs, batch_targets, K, divide_by_k=False), full_sum)

# %%
# The same reasoning covers a last micro-batch that is smaller than the others:
# with a mean loss, weight each micro-batch by its share of the points (its
# size divided by the batch size) instead of by ``1 / k``.
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
        accumulated_gradient(bn_model, criterion, batch_inputs, batch_targets, K),
        full_batch_gradient(bn_model, criterion, batch_inputs, batch_targets))

# %%
# The difference is not rounding any more. Whether it matters in practice
# depends on the micro-batch size: statistics over 64 points are noisier than
# over 256, but usually still fine; over 2 or 4 points they are not. Layers
# that do not mix the points of a batch, such as ``nn.LayerNorm`` and
# ``nn.GroupNorm``, accumulate exactly. Dropout is another source of mismatch,
# simply because the random masks differ, but it does not change what is being
# estimated.
#
# Training both ways
# ------------------
#
# Now a real training loop. ``train`` is the canonical loop with gradient
# accumulation built in: it steps and clears the gradients every
# ``accumulation_steps`` micro-batches. With ``accumulation_steps=1`` and
# micro-batches of 256 it is the ordinary full-batch loop; with ``4`` and
# micro-batches of 64 it accumulates. Both runs start from the same initial
# weights and draw the points in the same shuffled order (a generator seeded
# the same way), so each update sees the same 256 points in both.
#
# The loss recorded for an update is the loss over its 256 points: for the
# accumulating run, the sum of the ``loss / k`` of its micro-batches.


def train(model, micro_batch_size, accumulation_steps, epochs=30):
    """SGD with momentum over the data set; return the loss of every update."""
    optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    shuffle = torch.Generator().manual_seed(0)
    losses = []
    for epoch in range(epochs):
        order = torch.randperm(len(inputs), generator=shuffle).to(device)
        update_loss = 0.0
        for i, indices in enumerate(order.split(micro_batch_size)):
            loss = criterion(model(inputs[indices]), targets[indices])
            (loss / accumulation_steps).backward()  # adds to .grad
            update_loss += loss.item() / accumulation_steps
            if (i + 1) % accumulation_steps == 0:  # the k-th micro-batch: update, then start afresh
                optimizer.step()
                optimizer.zero_grad()
                losses.append(update_loss)
                update_loss = 0.0
    return losses


initial_weights = copy.deepcopy(make_model().state_dict())
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
# The two runs make the same number of updates and end at the same loss; their
# loss histories differ by rounding only. What differs is the cost: the
# accumulating run makes four smaller forward and backward passes per update
# instead of one, which is slower whenever the full batch would have fit.
# Gradient accumulation trades time for memory.
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
# Accumulation does not make training faster: it lets a small device reproduce
# the updates of a large batch, one micro-batch at a time.
#
# Summary
# -------
#
# * ``(loss / k).backward()`` every micro-batch; ``optimizer.step()`` and
#   ``optimizer.zero_grad()`` every ``k``-th one.
# * The division makes the micro-batch losses add up to the full-batch mean
#   loss. Without it the gradient is ``k`` times too large; with
#   ``reduction="sum"`` leave it out.
# * Layers that look across the batch, batch normalization above all, see only
#   one micro-batch at a time, so the result is no longer the full-batch one.
# * :ref:`zero_grad_pitfalls` shows where ``zero_grad()`` belongs in a loop
#   and what it does not do.

# sphinx_gallery_thumbnail_number = 1
