"""
.. _gradients_accumulate:

How gradients accumulate
========================

``loss.backward()`` does not *set* the ``.grad`` attribute of a tensor, it
*adds* to it. Whatever was there before, from an earlier backward pass, is
still part of the sum. An optimizer's ``step()`` then uses ``.grad`` as it
finds it, so unless something clears ``.grad`` in between, each update is
computed from every gradient of the past, not from the current one.

This recipe shows that mechanism on the smallest example there is: a tensor
of two numbers and a loss whose gradient is known in advance. Every printed
line can be checked by hand.

.. note::
   The related recipes show what accumulation does to a real fit
   (:ref:`linear_regression_without_zero_grad`) and to a trained classifier
   (:ref:`zeroing_out_gradients`), how to accumulate on purpose
   (:ref:`gradient_accumulation`) and where ``zero_grad()`` belongs in a loop
   (:ref:`zero_grad_pitfalls`).
"""

# %%
# Setup
# -----
#
# Only PyTorch and matplotlib are needed. Nothing here is random and the
# arithmetic is simple, so the numbers are the same on a CPU and on a GPU.

import matplotlib.pyplot as plt
import torch

device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
print(f"Using device: {device}")
torch.manual_seed(0)  # nothing below is random; seeded like every recipe of the site

# %%
# A leaf tensor and its first gradient
# ------------------------------------
#
# ``x`` is created by us with ``requires_grad=True``, not computed from other
# tensors, so it is a *leaf tensor*: the kind of tensor whose ``.grad`` autograd
# fills in, just like the parameters of a model. Until the first backward pass
# its ``.grad`` is ``None``.
#
# The loss is *L* = 100 *x*\ :sub:`1` + 100 *x*\ :sub:`2`, so its gradient with respect to
# ``x`` is 100 for both elements, wherever ``x`` is.

x = torch.tensor([1.0, 2.0], requires_grad=True, device=device)
print(f"x: {x}")
print(f"x.is_leaf: {x.is_leaf}")
print(f"x.grad before backward: {x.grad}")

y = 100 * x
loss = y.sum()
loss.backward()
print(f"x.grad after first backward: {x.grad}")

# %%
# One optimizer step
# ------------------
#
# Plain SGD moves each element against its gradient:
# ``x = x - lr * x.grad``. With a learning rate of 0.001 and a gradient of
# 100, both elements move down by 0.1.

lr = 0.001
optimizer = torch.optim.SGD([x], lr=lr)
optimizer.step()
print(f"x after optimizer.step() (lr={lr}): {x}")

# %%
# A second backward pass, without zeroing
# ---------------------------------------
#
# Now compute the loss again at the new ``x`` and call ``backward()``. The
# gradient of this loss is 100 again, but ``.grad`` still holds the 100 of the
# first pass, and the new gradient is added to it:

loss = (100 * x).sum()
loss.backward()
print(f"x.grad after second backward, not zeroed: {x.grad}")

# %%
# ``.grad`` says 200, twice the true gradient. A call to ``optimizer.step()``
# now would move ``x`` twice as far as it should; after ten such passes, ten
# times as far. That is what happens in a training loop that never clears the
# gradients.
#
# The same pass after ``optimizer.zero_grad()``
# ---------------------------------------------
#
# ``optimizer.zero_grad()`` clears ``.grad`` of every tensor the optimizer was
# given. Since PyTorch 2.0 it does so by default by setting ``.grad`` to
# ``None``, so the next ``backward()`` starts a fresh sum and ``.grad`` holds
# exactly the gradient of the current loss:

optimizer.zero_grad()
print(f"x.grad after optimizer.zero_grad(): {x.grad}")

loss = (100 * x).sum()
loss.backward()
print(f"x.grad after zero_grad() and backward: {x.grad}")

# %%
# ``None`` or zeros?
# ------------------
#
# ``optimizer.zero_grad(set_to_none=False)`` is what ``zero_grad()`` did by
# default before PyTorch 2.0: it keeps the ``.grad`` tensor and fills it with
# zeros.

optimizer.zero_grad(set_to_none=False)
print(f"x.grad after zero_grad(set_to_none=False): {x.grad}")

# %%
# Either way the next ``backward()`` leaves the same gradient in ``.grad``.
# The differences are elsewhere:
#
# * ``None`` frees the memory of the gradients until the next backward pass,
#   and that pass writes its result instead of adding it to a tensor of zeros.
# * An optimizer skips a parameter whose ``.grad`` is ``None``, but updates
#   one whose ``.grad`` is zero. With plain SGD a zero gradient moves nothing;
#   with weight decay, or with momentum or Adam's running averages left over
#   from earlier steps, it still moves the parameter (:ref:`zero_grad_pitfalls` shows it).
# * Code that reads ``.grad`` after ``zero_grad()``, for example to log gradient
#   norms, must be ready to find ``None``.
#
# Two backward passes through one graph
# -------------------------------------
#
# The forward pass records a *computational graph*: which operations made
# ``loss`` out of ``x``, and the intermediate values their gradients need.
# ``backward()`` frees those values as it goes, to save memory, so calling it
# a second time on the same ``loss`` fails as soon as it needs one of them, as
# it does here:

optimizer.zero_grad()
loss = (100 * x).sum()
loss.backward()
try:
    loss.backward()
except RuntimeError as error:
    # the message is long; its first sentence says what went wrong
    print(f"second backward on the same graph: RuntimeError: {str(error).split('. ')[0]}")

# %%
# The rest of the message suggests ``retain_graph=True``, which keeps the graph
# after a backward pass. The usual reason to backpropagate twice is two losses
# computed from one forward pass. Below, ``first`` and ``second`` both use
# ``y = 100 * x``: the gradient of ``first = y.sum()`` with respect to each
# element of ``x`` is 100, that of ``second = (y / 2).sum()`` is 50.
# ``backward_both`` backpropagates them one after the other, keeping the graph
# for the second call, or as one sum, and counts with a hook on ``y`` how many
# times a gradient comes back through the shared part.


def backward_both(one_after_the_other):
    """Backpropagate two losses that share ``y``; return how many times a gradient reached ``y``."""
    optimizer.zero_grad()
    y = 100 * x  # the part of the graph both losses use
    gradients_reaching_y = []
    y.register_hook(gradients_reaching_y.append)  # called each time a backward pass reaches y
    first, second = y.sum(), (y / 2).sum()
    if one_after_the_other:
        first.backward(retain_graph=True)  # without it, second.backward() would fail as above
        second.backward()
    else:
        (first + second).backward()
    return len(gradients_reaching_y)


passes = backward_both(one_after_the_other=True)
print(f"x.grad after first.backward(retain_graph=True), second.backward(): {x.grad}")
print(f"backward passes through y, one after the other: {passes}")
passes = backward_both(one_after_the_other=False)
print(f"x.grad after (first + second).backward(): {x.grad}")
print(f"backward passes through y, summed: {passes}")

# %%
# Both ways leave 100 + 50 = 150 in ``.grad``: one after the other, the second
# backward pass adds to what the first one left, like any backward pass;
# summed, the gradient of the sum is the sum of the gradients. The sum is usually the
# better choice: one backward pass, which goes through the shared part once
# instead of twice, and frees the graph as it goes instead of keeping it alive
# for a second call. ``retain_graph=True`` is needed only when the graph must
# outlive a backward pass: when each loss's gradient is wanted on its own
# before they are added (to log, compare or clip them separately), or when
# ``torch.autograd.grad`` is called several times on one graph, for example
# one row of a Jacobian at a time. ``create_graph=True``, which builds a graph
# of the backward pass itself for gradients of gradients, keeps the graph too:
# ``retain_graph`` defaults to its value.
#
# ``.grad`` over many iterations
# ------------------------------
#
# Finally, a short training loop: five iterations of forward pass, backward
# pass and optimizer step, once without ``zero_grad()`` and once with it at the
# start of each iteration. The true gradient is 100 in every iteration, so
# ``.grad`` should always be 100.


def grad_after_each_backward(zero_grad, iterations=5):
    """Train a fresh ``x`` for a few iterations; return ``x.grad[0]`` after each backward."""
    x = torch.tensor([1.0, 2.0], requires_grad=True, device=device)
    optimizer = torch.optim.SGD([x], lr=0.001)
    grads = []
    for _ in range(iterations):
        if zero_grad:
            optimizer.zero_grad()
        loss = (100 * x).sum()
        loss.backward()
        grads.append(x.grad[0].item())
        optimizer.step()
    return grads


grads_without = grad_after_each_backward(zero_grad=False)
grads_with = grad_after_each_backward(zero_grad=True)
print("x.grad[0] after each backward, without zero_grad():", ", ".join(f"{g:g}" for g in grads_without))
print("x.grad[0] after each backward, with zero_grad():   ", ", ".join(f"{g:g}" for g in grads_with))

iterations = torch.arange(1, len(grads_with) + 1)
fig, ax = plt.subplots(figsize=(7, 4))
ax.bar(iterations - 0.2, grads_with, width=0.4, label="with optimizer.zero_grad()")
ax.bar(iterations + 0.2, grads_without, width=0.4, label="without zero_grad()")
ax.set_xlabel("iteration (one backward pass each)")
ax.set_ylabel("x.grad[0]")
ax.set_title("The true gradient is always 100")
ax.set_xticks(iterations.tolist())
ax.legend()
fig.tight_layout()
plt.show()

# %%
# Without ``zero_grad()`` the bars grow by 100 per iteration: after *n*
# backward passes ``.grad`` is *n* times the true gradient, and so is the step
# the optimizer takes. With ``zero_grad()`` every bar is 100.
#
# Summary
# -------
#
# * ``backward()`` adds the gradient it computes to ``.grad``; it never
#   replaces what is there.
# * ``optimizer.step()`` uses ``.grad`` as it finds it, sum and all.
# * ``optimizer.zero_grad()`` sets ``.grad`` to ``None`` (or to zeros with
#   ``set_to_none=False``), so the next backward pass starts from nothing.
# * Two losses that share a graph: backpropagate their sum.
#   ``retain_graph=True`` is for when each loss's gradient is needed on its
#   own; either way the gradients add up in ``.grad``.
#
# :ref:`linear_regression_without_zero_grad` shows what the growing sum does
# to a model that is being trained.

# sphinx_gallery_thumbnail_number = 1
