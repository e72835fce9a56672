"""
.. _gradients_accumulate:

How gradients accumulate
========================

``loss.backward()`` does not overwrite the ``.grad`` attribute of a tensor:
it *adds* the new gradient to the value there, and sets ``.grad`` only while
it is still ``None``. Whatever was there before, from an earlier backward
pass, is still part of the sum. An optimizer's ``step()`` then uses ``.grad`` as it
finds it, so unless something clears ``.grad`` in between, each update is
computed from every gradient of the past, not from the current one.

This recipe shows that mechanism on the smallest example there is: a tensor
of two numbers and a loss whose gradient is known in advance. Every printed
line can be checked by hand.

What you will learn:

* that ``backward()`` adds to ``.grad``, and what an optimizer step does with the sum;
* what ``optimizer.zero_grad()`` does, and how ``None`` differs from zeros;
* when a second ``backward()`` through one graph fails, and when it silently adds again;
* how to get gradients without accumulating them in ``.grad``.

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
# * ``None`` drops the optimizer's reference to the gradients: their memory
#   goes back to the allocator until the next backward pass, unless something
#   else still refers to them, and that pass writes its result instead of
#   adding it to a tensor of zeros.
# * The optimizers that update each parameter on its own (SGD, Adam, AdamW,
#   RMSprop and the others) skip a parameter whose ``.grad`` is ``None``, but
#   update one whose ``.grad`` is zero. With plain SGD a zero gradient moves
#   nothing; with weight decay, or with momentum or Adam's running averages
#   left over from earlier steps, it still moves the parameter. ``LBFGS``, which
#   steps all its parameters along one direction, treats ``None`` as a zero
#   gradient and can still move the parameter (:ref:`zero_grad_pitfalls` shows
#   both).
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
# it does here (the gradient of ``100 * x`` needs the saved factor 100):

optimizer.zero_grad()
loss = (100 * x).sum()
loss.backward()
try:
    loss.backward()
except RuntimeError as error:
    # the message is long; its first sentence says what went wrong
    print(f"second backward on the same graph: RuntimeError: {str(error).split('. ')[0]}")

# %%
# The error is no safeguard to count on. A graph whose operations saved
# nothing, such as that of ``(x + 1).sum()``, can be backpropagated again
# without ``retain_graph`` and without any error, and the second call silently
# adds the same gradient once more:

optimizer.zero_grad()
loss = (x + 1).sum()
loss.backward()
loss.backward()  # no error: nothing was saved, so nothing was freed
print(f"x.grad after two backward() calls on (x + 1).sum(): {x.grad}")

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
# ``retain_graph`` defaults to its value. It also makes ``backward()`` replace
# the ``.grad`` tensor with a new one holding the sum, instead of adding in
# place (``GradScaler.unscale_`` may do the same to sparse gradients), so code
# that kept a reference to the old ``.grad`` tensor does not see the new
# gradient.
#
# Gradients without ``.grad``
# ---------------------------
#
# When the gradient is wanted but accumulating it is not, there is no need
# for ``.grad`` at all. ``torch.autograd.grad(loss, inputs)`` returns the
# gradients and leaves ``.grad`` alone; ``loss.backward(inputs=[...])``
# accumulates only into the ``.grad`` of the tensors listed, and leaves every
# other leaf untouched (a way to keep a loss out of the gradients of another
# network, for one). ``torch.func.grad`` is the functional form of the
# first. Below, ``x.grad`` holds 100 from one ``backward()``; two calls to
# ``torch.autograd.grad`` leave it at 100, and ``backward(inputs=[z])`` on a
# loss that depends on ``x`` and on a new leaf ``z`` fills in only ``z.grad``.

optimizer.zero_grad()
(100 * x).sum().backward()
for _ in range(2):
    (gradient,) = torch.autograd.grad((100 * x).sum(), x)
print(f"torch.autograd.grad, called twice, returns: {gradient}")
print(f"x.grad after the two torch.autograd.grad calls: {x.grad}")

z = torch.tensor([3.0], requires_grad=True, device=device)
optimizer.zero_grad()
loss = (100 * x).sum() + (10 * z).sum()
loss.backward(inputs=[z])
print(f"after loss.backward(inputs=[z]): z.grad = {z.grad}, x.grad = {x.grad}")

# %%

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
# * ``backward()`` adds the gradient it computes to the value of ``.grad``,
#   and sets ``.grad`` only where it is ``None``.
# * ``optimizer.step()`` uses ``.grad`` as it finds it, sum and all.
# * ``optimizer.zero_grad()`` sets ``.grad`` to ``None`` (or to zeros with
#   ``set_to_none=False``), so the next backward pass starts from nothing.
# * Two losses that share a graph: backpropagate their sum.
#   ``retain_graph=True`` is for when each loss's gradient is needed on its
#   own; either way the gradients add up in ``.grad``. A second
#   ``backward()`` through a graph that saved nothing raises no error and adds
#   the gradient again.
# * ``torch.autograd.grad`` and ``backward(inputs=...)`` give gradients
#   without accumulating them into every ``.grad``.
#
# :ref:`linear_regression_without_zero_grad` shows what the growing sum does
# to a model that is being trained.

# sphinx_gallery_thumbnail_number = 1
