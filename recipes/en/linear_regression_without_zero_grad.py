"""
.. _linear_regression_without_zero_grad:

Linear regression without zeroing the gradients
===============================================

:ref:`gradients_accumulate` showed that ``backward()`` adds to ``.grad``
instead of replacing it. This recipe shows what that does to training, on
the simplest model there is: a straight line *ŷ* = *w* *x* + *b* fitted
to 20 noisy points by hand-written gradient descent.

The fit runs twice from the same starting point, once clearing the gradients
in every iteration and once never clearing them. We look at the gradients of
the first two iterations, then at the whole loss curve, then at the same fit
on mini-batches, and finally write it the usual way, with ``nn.Linear`` and
``optimizer.zero_grad()``.

.. note::
   :ref:`zeroing_out_gradients` shows the same failure on an image
   classifier, :ref:`gradient_accumulation` how to accumulate gradients on
   purpose, and :ref:`zero_grad_pitfalls` where ``zero_grad()`` belongs in a
   loop.
"""

# %%
# Setup
# -----
#
# Everything in this recipe stays on the CPU: 20 numbers are far too few for
# a GPU to help. The seed set below makes every run draw the same random
# numbers, so you can check the values quoted on this page against your own
# run. Where we found a value that also depends on how the CPU rounds its
# arithmetic, the text says so.

import matplotlib.pyplot as plt
import torch
import torch.nn as nn
import torch.optim as optim

device = torch.device("cpu")  # tiny tensors: a GPU would only add overhead
print(f"Using device: {device}")

# %%
# Data and parameters
# -------------------
#
# Twenty points scattered around the line *y* = 2\ *x* + 5, with noise of
# standard deviation 1. The slope ``w`` starts at a random value, the
# intercept ``b`` at zero; both are leaf tensors with ``requires_grad=True``,
# so ``backward()`` fills in their ``.grad``. The loss is half the mean
# squared error.
#
# The seed is 6 (the other recipes of this site use 0). Other seeds give other
# numbers, but the runs below behave the same way.

torch.manual_seed(6)
lr = 0.01

x = torch.rand(20, 1) * 10
y = 2 * x + (5 + torch.randn(20, 1))

w = torch.randn(1, requires_grad=True)
b = torch.zeros(1, requires_grad=True)

# Every run below starts from these same values.
w_init, b_init = w.detach().clone(), b.detach().clone()


def initial_parameters():
    """Fresh leaf tensors holding the initial ``w`` and ``b``."""
    return w_init.clone().requires_grad_(), b_init.clone().requires_grad_()


def compute_loss(w, b, rows=slice(None)):
    """Half the mean squared error of the line on ``rows`` of the data (all of them by default)."""
    y_pred = w * x[rows] + b
    return (0.5 * (y[rows] - y_pred) ** 2).mean()


# %%
# For a straight line the best fit can also be computed directly, by least
# squares. It is the target that gradient descent should approach, and its
# loss is the lowest any line can reach on these points.

design = torch.cat([x, torch.ones_like(x)], dim=1)  # columns: x, 1
w_best, b_best = torch.linalg.lstsq(design, y).solution.flatten()
print(f"initial line:       w = {w_init.item():.4f}, b = {b_init.item():.4f}, "
      f"loss = {compute_loss(w_init, b_init).item():.4f}")
print(f"least-squares line: w = {w_best:.4f}, b = {b_best:.4f}, "
      f"loss = {compute_loss(w_best, b_best).item():.4f}")

# %%
# The first two iterations
# ------------------------
#
# Each iteration computes the loss, calls ``backward()`` and moves ``w`` and
# ``b`` against their gradients. The update runs inside ``torch.no_grad()``,
# so that autograd does not record it as part of the next computation: it
# changes ``w`` and ``b`` in place, and they stay leaf tensors that collect
# gradients.
#
# We run two iterations twice: once as written, and once with
# ``w.grad.zero_()`` and ``b.grad.zero_()`` before the second ``backward()``.
# The first iteration, and therefore the point where the second gradient is
# computed, is the same in both.


def first_two_iterations(zero_grad):
    """Run two iterations and print the gradients each ``backward()`` leaves."""
    w, b = initial_parameters()
    for iteration in (1, 2):
        if zero_grad and iteration == 2:
            w.grad.zero_()
            b.grad.zero_()
        loss = compute_loss(w, b)
        loss.backward()
        print(f"{'zeroed' if zero_grad else 'not zeroed'}, iteration {iteration}: "
              f"w.grad = {w.grad.item():9.4f}, b.grad = {b.grad.item():8.4f}")
        with torch.no_grad():
            w -= lr * w.grad
            b -= lr * b.grad


first_two_iterations(zero_grad=False)
first_two_iterations(zero_grad=True)

# %%
# The first iteration is the same both ways. Its gradients are negative: the
# initial line is too flat and too low, so the loss falls as ``w`` and ``b``
# grow. After the zeroed second ``backward()``, ``.grad`` holds the gradient
# at the new point, -48.2813 for ``w``: smaller in magnitude than -74.6261,
# since the first step brought the line closer to the data. Without zeroing,
# ``.grad`` holds -122.9075, which is -74.6261 + -48.2813 up to rounding. The
# second update is computed from that sum, so it is about two and a half times
# as large as the gradient calls for, and the first gradient will be part of
# every update from now on.
#
# ``torch.no_grad()`` rather than ``.data``
# -----------------------------------------
#
# Older code often makes the same update through ``.data``, the raw values
# behind a tensor:
#
# .. code-block:: python
#
#    w.data.sub_(lr * w.grad)
#    b.data.sub_(lr * b.grad)
#
# It gives the same numbers here, but it hides the change from autograd
# entirely: if a tensor changed this way was needed by a backward pass that is
# still to come, autograd cannot tell and silently computes a wrong gradient.
# Inside ``torch.no_grad()`` nothing is recorded in the graph either, yet
# autograd still notices the in-place change and raises an error if it
# invalidates a pending backward pass. The optimizers in ``torch.optim`` also
# update parameters in place with gradient tracking turned off.
#
# Training both ways
# ------------------
#
# ``train`` runs up to 1,000 iterations and, when given ``stop_below``, stops
# as soon as the loss falls below it. With ``zero_grad=True`` it sets
# ``w.grad`` and ``b.grad`` to ``None`` before each ``backward()``, which is
# what ``optimizer.zero_grad()`` does. Given a ``batch_size``, it computes each
# gradient on one mini-batch instead of all 20 points; that comes later. The
# loss it records is always the loss on all 20 points.


def mini_batches(batch_size):
    """Row indices of mini-batches, for ever: each pass over the 20 points in a new order."""
    order = torch.Generator().manual_seed(0)
    while True:
        yield from torch.randperm(len(x), generator=order).split(batch_size)


def train(zero_grad, iterations=1000, stop_below=None, batch_size=None):
    """Fit the line by gradient descent; return the loss of every iteration and ``w``, ``b``."""
    w, b = initial_parameters()
    batches = mini_batches(batch_size) if batch_size else None
    losses = []
    for _ in range(iterations):
        loss = compute_loss(w, b)
        losses.append(loss.item())
        if stop_below is not None and losses[-1] < stop_below:
            break
        if batches is not None:
            loss = compute_loss(w, b, next(batches))
        if zero_grad:
            w.grad = None
            b.grad = None
        loss.backward()
        with torch.no_grad():
            w -= lr * w.grad
            b -= lr * b.grad
    return losses, w, b


def report(name, losses, w, b):
    print(f"{name:<16} iterations: {len(losses):4d}, final loss: {losses[-1]:8.4f}, "
          f"w = {w.item():7.4f}, b = {b.item():7.4f}")


# %%
# First with a stopping rule: stop once the loss is below 1.

stopped_with = train(zero_grad=True, stop_below=1.0)
stopped_without = train(zero_grad=False, stop_below=1.0)
report("zeroed", *stopped_with)
report("not zeroed", *stopped_without)

# %%
# Surprisingly, the run that never zeroes its gradients stops first, after 50
# iterations instead of 675. Did forgetting ``zero_grad()`` speed things up?
# Compare both results with the least-squares line, w = 1.9059, b = 5.4334.
# The zeroed run stopped at w = 2.2148, b = 3.4815: the slope is nearly right
# and the intercept is still on its way up. It gets there slowly because the
# ``x`` values run up to 10, which makes the loss far more sensitive to ``w``
# than to ``b``; a learning rate small enough for ``w`` moves ``b`` only a
# little per iteration. The other run stopped at w = 1.6857, b = 6.9272,
# past the best intercept, at a point it was merely passing through.
#
# Now the same two runs without the stopping rule, all 1,000 iterations each,
# with their loss curves:

losses_with, w_with, b_with = train(zero_grad=True)
losses_without, w_without, b_without = train(zero_grad=False)
for name, losses, w_fit, b_fit in [("zeroed", losses_with, w_with, b_with),
                                   ("not zeroed", losses_without, w_without, b_without)]:
    report(name, losses, w_fit, b_fit)
    last = losses[-100:]
    print(f"{'':<16} iterations with loss < 1: {sum(v < 1 for v in losses)} of {len(losses)}, "
          f"loss over the last 100: {min(last):.4f} to {max(last):.4f}")

fig, (ax_all, ax_start) = plt.subplots(1, 2, figsize=(10, 5), width_ratios=[2, 1], layout="constrained")
for ax, shown in [(ax_all, len(losses_with)), (ax_start, 50)]:
    steps = range(1, shown + 1)
    ax.plot(steps, losses_with[:shown], color="C0", label="w.grad, b.grad zeroed")
    ax.plot(steps, losses_without[:shown], color="C1", linewidth=1, label="never zeroed")
    ax.axhline(1, color="gray", linestyle="--", linewidth=1, label="loss = 1")
    for (losses, _, _), color in [(stopped_with, "C0"), (stopped_without, "C1")]:
        if len(losses) <= shown:
            ax.plot(len(losses), losses[-1], "o", color=color, markersize=9, fillstyle="none")
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
ax_all.plot([], [], "o", color="gray", fillstyle="none", label="where the stopping rule stops")
ax_all.set_ylabel("loss (half mean squared error)")
ax_all.set_title("All 1,000 iterations")
ax_start.set_title("The first 50 iterations")
fig.legend(*ax_all.get_legend_handles_labels(), loc="outside lower center", ncols=4)
plt.show()

# %%
# With zeroing (blue), the loss falls steeply for the first ten or so
# iterations, while ``w`` finds the slope, and then slowly and steadily while
# ``b`` catches up. It crosses 1 at iteration 675, stays below it and ends at
# 0.8316, heading for the least-squares minimum of 0.7215.
#
# Without zeroing (orange), the loss never settles. From the very first
# iterations it swings up and down about every five iterations, between
# values near the minimum and values above the initial loss of 83.8424; over
# the last 100 iterations it still spans 0.9263 to 91.5686. It is below 1 in
# only 7 of the 1,000 iterations, each time at the bottom of a swing, and the
# first of them, iteration 50, is where the stopping rule fired. After 1,000
# iterations the line is back at w = 0.5015, b = -0.0090, almost exactly where
# it started (w = 0.5922, b = 0). A stopping rule on the loss can only tell
# that a run *passed* a good point, not that it will stay there.
#
# Where the oscillation comes from
# --------------------------------
#
# Without zeroing, ``.grad`` after iteration *t* is the sum of all *t*
# gradients so far, and each update subtracts ``lr`` times that sum. A sum
# that grows by the newest gradient in every iteration is a *velocity*: the
# parameters behave like a ball rolling in the bowl of the loss with no
# friction at all. It speeds up on the way down, overshoots the bottom, climbs
# the other side until it stops, and rolls back, for ever.
#
# That is exactly SGD with momentum 1 and no dampening, whose momentum buffer
# is the plain sum of all gradients. Training with
# ``optim.SGD(..., momentum=1.0)`` and ``zero_grad()`` in every iteration
# should therefore give the same loss curve as forgetting ``zero_grad()``:


def train_with_momentum(momentum, iterations=1000):
    """Fit the line with ``optim.SGD`` and ``zero_grad()``; return the loss of every iteration."""
    w, b = initial_parameters()
    optimizer = optim.SGD([w, b], lr=lr, momentum=momentum)
    losses = []
    for _ in range(iterations):
        optimizer.zero_grad()
        loss = compute_loss(w, b)
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
    return losses


losses_momentum = train_with_momentum(momentum=1.0)
difference = max(abs(p - q) for p, q in zip(losses_momentum, losses_without))
print(f"largest difference from the never-zeroed loss curve: {difference:.2e}, "
      f"on losses up to {max(losses_without):.1f}")
last = train_with_momentum(momentum=0.9)[-100:]
print(f"momentum 0.9, zeroed: loss over the last 100: {min(last):.4f} to {max(last):.4f}")

# %%
# The two curves agree to within the difference printed above, on losses
# that reach the size printed after it. Any difference is floating-point
# rounding: ``optimizer.step()`` and the hand-written update compute the same
# thing through different code, which may round differently, and the swings
# carry those differences along. Whether there is one depends on the CPU's
# vector instructions: restricted to plain ones (run with the environment
# variable ``ATEN_CPU_CAPABILITY=default``), PyTorch gives exactly 0 here. So a loop that forgets ``zero_grad()`` is running momentum
# SGD with no friction. Ordinary momentum, 0.9 for example, keeps only 90 % of
# the previous velocity in each step, and that loss of speed is what lets the
# swings die down: with ``zero_grad()`` and momentum 0.9, the loss of the same
# fit is 0.7215 throughout its last 100 iterations, the least-squares minimum.
#
# With mini-batches the swings grow
# ---------------------------------
#
# So far every gradient was computed on all 20 points. Training loops usually
# compute it on a mini-batch, here 4 points at a time in a shuffled order, 5
# mini-batches per pass over the data. Each mini-batch has its own best line,
# so its gradient pulls towards that line, not towards the best line for all
# the points. With zeroing, each pull acts once and is gone, and the pulls
# average out. Without zeroing, every pull stays in the sum and keeps acting
# in every later iteration: nothing takes it out again. The runs below are the
# same as before, from the same starting point with the same learning rate,
# except for the mini-batches. Each prints the largest loss (on all 20 points)
# in each quarter of its 1,000 iterations.

losses_batches_with, _, _ = train(zero_grad=True, batch_size=4)
losses_batches_without, _, _ = train(zero_grad=False, batch_size=4)
for name, losses in [("all 20 points, not zeroed", losses_without),
                     ("mini-batches, zeroed", losses_batches_with),
                     ("mini-batches, not zeroed", losses_batches_without)]:
    quarters = [max(losses[i:i + 250]) for i in range(0, len(losses), 250)]
    print(f"{name:<26} largest loss per 250 iterations: {', '.join(f'{v:.4g}' for v in quarters)}")
last = losses_batches_with[-100:]
print(f"{'mini-batches, zeroed':<26} loss over the last 100: {min(last):.4f} to {max(last):.4f}")

fig, ax = plt.subplots(figsize=(8, 4.5), layout="constrained")
steps = range(1, len(losses_without) + 1)
ax.plot(steps, losses_batches_without, color="C3", linewidth=1, label="mini-batches of 4, never zeroed")
ax.plot(steps, losses_without, color="C1", linewidth=1, label="all 20 points, never zeroed")
ax.plot(steps, losses_batches_with, color="C0", label="mini-batches of 4, zeroed")
ax.set_yscale("log")
ax.set_xlabel("iteration")
ax.set_ylabel("loss on all 20 points (half mean squared error)")
ax.set_title("Never zeroed: the swings stay bounded on all the points, and grow on mini-batches")
ax.legend()
plt.show()

# %%
# On all 20 points the swings stay bounded: the largest loss of each quarter
# stays between 91.49 and 91.69, about 9 % above the initial loss of 83.8424,
# however long the run. On mini-batches nothing keeps them in check, and they
# grow: the largest loss per quarter goes from 980.1 in the first quarter to
# 2.854e+05 in the last, and the plot shows the swings building up. With zeroing, the same mini-batches bring
# the loss down to between 0.8237 and 0.9781 over the last 100 iterations:
# noisier than with all 20 points, since each gradient comes from only 4 of
# them, but settled near the minimum.
#
# Real training loops use mini-batches, so this is the case that matters in
# practice. :ref:`zeroing_out_gradients` shows what it does to an image
# classifier trained on mini-batches of 4, with momentum 0.9 on top.
#
# The same kind of fit, written the usual way
# -------------------------------------------
#
# In practice nobody writes the update by hand: ``nn.Linear(1, 1)`` holds
# ``w`` and ``b`` (as ``weight`` and ``bias``), ``nn.MSELoss()`` computes the
# loss and ``optim.SGD`` updates the parameters. ``optimizer.zero_grad()`` at
# the start of each iteration is the one line that keeps ``.grad`` equal to
# the gradient of the current loss.
#
# The data are four points exactly on the line *y* = 2\ *x*, so the
# answer to find is ``weight`` 2 and ``bias`` 0. For contrast, ``fit_line``
# also runs once without ``zero_grad()``.

x = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
y = torch.tensor([[2.0], [4.0], [6.0], [8.0]])


def fit_line(zero_grad, iterations):
    """Train ``nn.Linear(1, 1)`` on ``x``, ``y``; return the model and its final loss."""
    torch.manual_seed(0)  # the same initial weight and bias for both runs
    model = nn.Linear(1, 1).to(device)
    criterion = nn.MSELoss()
    optimizer = optim.SGD(model.parameters(), lr=0.01)
    for _ in range(iterations):
        if zero_grad:
            optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
    with torch.no_grad():  # the loss at the final weights, after the last step
        return model, criterion(model(x), y).item()


iterations = 2000
for name, zero_grad in [("with zero_grad()", True), ("without zero_grad()", False)]:
    model, loss = fit_line(zero_grad, iterations)
    print(f"nn.Linear, {iterations} iterations {name + ':':<21} weight = {model.weight.item():.4f}, "
          f"bias = {model.bias.item():.4f}, loss = {loss:.2e}")

# %%
# With ``zero_grad()``, 2,000 iterations bring the line to weight 1.9991 and
# bias 0.0027, a loss of 1.23e-06: within 0.003 of the exact answer on both
# counts. Without it, the same loop ends at weight 0.7037 and bias -1.5219,
# with a loss of 24.8: the parameters are swinging around the answer just as
# ``w`` and ``b`` did above, and the number of iterations only decides where
# in a swing they happen to be.
#
# Summary
# -------
#
# * Without zeroing, each update uses the sum of all past gradients.
# * On a convex loss such as this one, that sum acts like momentum with no
#   friction: with gradients on all the points, the parameters swing around
#   the minimum instead of settling in it; with mini-batches, the swings grow.
# * A stopping rule on the loss can be fooled by one lucky swing.
# * Clear the gradients once per iteration, before ``backward()``: with
#   ``optimizer.zero_grad()``, or by setting ``.grad`` to ``None`` in
#   hand-written code.

# sphinx_gallery_thumbnail_number = 1
