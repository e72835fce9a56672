"""
.. _zero_grad_pitfalls:

Where to call zero_grad(), and what it does not do
==================================================

``optimizer.zero_grad()`` is one line, but where it goes and what it clears
still matter. This recipe runs each case and prints the evidence:

* the start of the loop and right after ``optimizer.step()`` are equivalent
  places for it, while between ``loss.backward()`` and ``optimizer.step()`` it
  silently disables training;
* ``model.zero_grad()`` and ``optimizer.zero_grad()`` clear different sets of
  gradients when the optimizer does not own every parameter, as with the two
  optimizers of a generator and a discriminator;
* with ``set_to_none=True`` (the default) an optimizer skips a parameter that
  got no gradient, while a zero gradient still moves it under weight decay, or
  under momentum or Adam after earlier steps;
* ``zero_grad()`` does nothing for inference: ``torch.no_grad()`` and
  ``torch.inference_mode()`` are what stop autograd from keeping tensors for a
  backward pass that never comes;
* ``set_to_none=True``, the default, is cheaper than writing zeros, timed on a
  ResNet-18.
"""

# %%
# Setup
# -----
#
# PyTorch, torchvision (only for the ResNet-18 architecture; no weights are
# downloaded) and matplotlib. Everything runs on a CUDA GPU when there is one
# and on the CPU otherwise, in a few seconds.
#
# With the seed, every number except the timings comes out the same on every
# run on the same machine with the same PyTorch version and number of threads.
# A GPU gives other numbers: CUDA has its own random number generator, so even
# the made-up data differ from the CPU's, and its kernels round differently.
# Repeated runs on one GPU usually agree too, but only
# ``torch.use_deterministic_algorithms(True)`` makes PyTorch use deterministic
# implementations where it has them and raise an error where it has none (by
# default, cuDNN may pick a non-deterministic algorithm for the backward pass
# of the convolutions of the ResNet-18 at the end, for one). What each section shows holds on either
# device.

import contextlib
import copy
import logging
import os

import matplotlib.pyplot as plt
import torch
import torch.nn as nn
import torch.optim as optim
import torchvision

# torch.utils.benchmark loads torch.utils.cpp_extension, which logs a warning on
# machines that have the CUDA compiler but no GPU; nothing here compiles CUDA code.
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
from torch.utils import benchmark

# The test suite sets ZERO_GRAD_SMOKE=1 to shorten the timings to a fraction of a second.
SMOKE_TEST = os.environ.get("ZERO_GRAD_SMOKE") == "1"

device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
print(f"Using device: {device}")
torch.manual_seed(0)  # the same numbers on every run on one machine; a GPU draws other numbers than a CPU

# %%
# Start of the loop, or right after ``step()``
# --------------------------------------------
#
# The first cases use a linear regression on 256 made-up points with four
# features, trained by SGD with momentum. ``train`` is the canonical loop with
# one switch, ``zero_grad_at``, that moves the ``optimizer.zero_grad()`` call
# to one of three places.

x = torch.randn(256, 4, device=device)
y = x @ torch.tensor([[2.0], [-1.0], [0.5], [3.0]], device=device) + 0.1 * torch.randn(256, 1, device=device)
criterion = nn.MSELoss()
initial_weights = nn.Linear(4, 1).state_dict()


def make_regression_model():
    model = nn.Linear(4, 1).to(device)
    model.load_state_dict(initial_weights)  # every run starts from the same weights
    return model


def train(model, zero_grad_at, steps=50):
    """Train ``model`` for ``steps`` full-batch steps; return the final loss."""
    optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(steps):
        if zero_grad_at == "start of the loop":
            optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        if zero_grad_at == "between backward() and step()":
            optimizer.zero_grad()  # the bug: wipes the gradient the step needs
        optimizer.step()
        if zero_grad_at == "after step()":
            optimizer.zero_grad()
    return criterion(model(x), y).item()


def max_difference(model_a, model_b):
    """The largest absolute difference between the parameters of two models."""
    return max((a - b).abs().max().item() for a, b in zip(model_a.parameters(), model_b.parameters()))


untrained = make_regression_model()
models, final_losses = {}, {}
for place in ["start of the loop", "after step()", "between backward() and step()"]:
    models[place] = make_regression_model()
    final_losses[place] = train(models[place], place)

print(f"loss before training: {criterion(untrained(x), y).item():.4f}")
for place, loss in final_losses.items():
    print(f"loss after 50 steps, zero_grad() {place}: {loss:.4f}")
print("start of the loop vs after step(), max abs weight difference:",
      max_difference(models["start of the loop"], models["after step()"]))

# %%
# The first two placements give bit-for-bit the same weights (a difference of
# exactly ``0.0``). What matters is that ``.grad`` is clear when
# ``loss.backward()`` runs; whether it was cleared at the end of the previous
# iteration or at the start of this one makes no difference. Both free the
# gradients (``set_to_none=True`` is the default) before the next forward pass.
# They differ only in what runs between ``step()`` and the start of the next
# iteration, such as loading the next batch, evaluating or saving a
# checkpoint: clearing right after ``step()`` runs that code without the
# gradients in memory. Clearing at the start protects the first step from
# gradients left behind by code before the loop.
#
# The bug: zeroing between ``backward()`` and ``step()``
# ------------------------------------------------------
#
# The third placement is different. ``zero_grad()`` sets every ``.grad`` to
# ``None`` just before the step, so the optimizer finds no gradient and skips
# every parameter. The model never changes, and nothing raises an error: the
# loss above simply stays at its initial value.

print("zero_grad() between backward() and step(), weights changed:",
      max_difference(models["between backward() and step()"], untrained) != 0,
      f"(max abs difference from the initial weights "
      f"{max_difference(models['between backward() and step()'], untrained)})")

# %%
# With ``set_to_none=False`` the result would be the same here: a zero
# gradient gives a zero update for plain SGD and for this momentum, since the
# momentum never received a real gradient. The section on ``set_to_none``
# below shows when a zero gradient does move a parameter.
#
# ``model.zero_grad()`` or ``optimizer.zero_grad()``?
# ---------------------------------------------------
#
# ``optimizer.zero_grad()`` clears the gradients of the parameters the
# optimizer was built with; ``model.zero_grad()`` clears those of all the
# model's parameters. They differ whenever the two sets differ.
#
# Parameters the optimizer does not know
# ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
#
# Here only the last layer of a small network is trained, but the first layer
# still requires gradients. ``optimizer.zero_grad()`` never touches it, so its
# ``.grad`` keeps growing, step after step. The cure is either
# ``model.zero_grad()`` or, better when the layer is frozen for good,
# ``requires_grad_(False)``, which also spares the backward pass the work.


small_network = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1)).to(device)


def first_layer_gradient_norms(zero_grad, steps=10):
    """Norm of the first layer's .grad after each step of training only the last layer."""
    model = copy.deepcopy(small_network)  # both runs start from the same weights
    optimizer = optim.SGD(model[2].parameters(), lr=0.05)
    norms = []
    for _ in range(steps):
        zero_grad(model, optimizer)
        criterion(model(x), y).backward()
        optimizer.step()
        norms.append(model[0].weight.grad.norm().item())
    return norms


for name, zero_grad in [("optimizer.zero_grad()", lambda model, optimizer: optimizer.zero_grad()),
                        ("model.zero_grad()", lambda model, optimizer: model.zero_grad())]:
    norms = first_layer_gradient_norms(zero_grad)
    print(f"{name}: first layer .grad norm after step 1: {norms[0]:.3f}, after step 10: {norms[-1]:.3f}")

# %%
# Two optimizers, one graph
# ~~~~~~~~~~~~~~~~~~~~~~~~~
#
# A generative adversarial network (GAN) trains two networks with two
# optimizers: a discriminator learns to tell real points from generated ones,
# and a generator learns to fool it. The discriminator's loss depends on the
# generated points, so unless they are detached, its ``backward()`` also runs
# through the generator and leaves gradients in the generator's ``.grad``.
#
# Below, a tiny generator and discriminator on 2-D points go through one
# training iteration, with the generated points *not* detached. We look at the
# generator's ``.grad`` after the discriminator's step, then compare the
# gradient the generator's step would use with and without clearing it first,
# and the step itself.

generator = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2)).to(device)
discriminator = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 1)).to(device)
generator_optimizer = optim.Adam(generator.parameters(), lr=1e-3)
discriminator_optimizer = optim.Adam(discriminator.parameters(), lr=1e-3)
bce = nn.BCEWithLogitsLoss()
real_points = torch.randn(64, 2, device=device) * 0.5 + torch.tensor([2.0, -1.0], device=device)
noise = torch.randn(64, 4, device=device)
real, fake = torch.ones(64, 1, device=device), torch.zeros(64, 1, device=device)


def generator_gradient():
    """The generator's current ``.grad`` as one vector (zeros where it is ``None``)."""
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten()
                      for p in generator.parameters()])


def generator_loss():
    """The generator wants the discriminator to call its points real."""
    return bce(discriminator(generator(noise)), real)


# Discriminator step, with generated points that are not detached.
discriminator_optimizer.zero_grad()
generated = generator(noise)  # the fix would be generator(noise).detach()
discriminator_loss = bce(discriminator(real_points), real) + bce(discriminator(generated), fake)
discriminator_loss.backward()
discriminator_optimizer.step()
stale = generator_gradient()

# Generator step, forgetting to clear its gradients first ...
generator_loss().backward()
without_zeroing = generator_gradient()
# ... and done right.
generator_optimizer.zero_grad()
generator_loss().backward()
own = generator_gradient()

print(f"generator .grad left by the discriminator's backward(): norm {stale.norm().item():.4f}")
print(f"generator's own gradient: norm {own.norm().item():.4f}, "
      f"cosine similarity with the stale one: {torch.cosine_similarity(stale, own, dim=0).item():.3f}")
print(f"gradient the generator's step uses without zeroing first: norm {without_zeroing.norm().item():.4f}, "
      f"max abs difference from its own: {(without_zeroing - own).abs().max().item():.4f}, "
      f"cosine similarity with its own: {torch.cosine_similarity(without_zeroing, own, dim=0).item():.3f}")

# %%
# The stale gradient is nearly as large as the generator's own and points the
# opposite way (a cosine similarity of -1.000): it is the gradient of making
# the generated points look *more* fake, the discriminator's goal. Their sum,
# which the step uses if nothing clears ``.grad``, still points nearly the
# right way (0.986), but is only about a sixth as long (0.0184 against 0.1190).
#
# What the generator's step does with that gradient depends on its optimizer.
# ``generator_update`` gives a gradient to a copy of the generator, takes one
# step with a new optimizer and returns how the weights moved: with Adam, as
# above (the generator has not stepped yet, so a new Adam is in the same state
# as ``generator_optimizer``), and, for comparison, with plain SGD.


def generator_update(gradient, make_optimizer):
    """How one step of a new optimizer moves a copy of the generator whose gradient is ``gradient``."""
    params = list(copy.deepcopy(generator).parameters())
    for param, grad in zip(params, gradient.split([p.numel() for p in params])):
        param.grad = grad.view_as(param).clone()
    before = nn.utils.parameters_to_vector(params).detach()
    make_optimizer(params).step()
    return nn.utils.parameters_to_vector(params).detach() - before


for name, make_optimizer in [("Adam(lr=1e-3)", lambda params: optim.Adam(params, lr=1e-3)),
                             ("SGD(lr=0.1)", lambda params: optim.SGD(params, lr=0.1))]:
    wrong, right = generator_update(without_zeroing, make_optimizer), generator_update(own, make_optimizer)
    print(f"generator's first step, {name}, without zeroing vs zeroed: "
          f"norm ratio {(wrong.norm() / right.norm()).item():.3f}, "
          f"cosine similarity {torch.cosine_similarity(wrong, right, dim=0).item():.3f}, "
          f"elements moved the wrong way: {(wrong * right < 0).sum().item()} of {right.numel()}")

# %%
# * With SGD the step is the learning rate times the gradient, so it shrinks
#   with it, to 0.154 of the right step, in nearly the right direction: the
#   stale gradient cancels most of the update.
# * With Adam, the optimizer used here, it does not. Adam's first step is
#   about the learning rate times the sign of each element of the gradient,
#   whatever its size, so the step without zeroing is as long as the right one
#   (a norm ratio of 1.000). It goes wrong where the stale gradient flipped a
#   sign: 5 of the 114 elements move the wrong way, and the cosine similarity
#   drops to 0.912. Adam's running averages also keep the wrong gradient and
#   carry it into later steps.
#
# Either way, the step is not the one the generator's loss asks for. There
# are two standard safeguards, and most GAN code uses both: detach the
# generated points in the discriminator's loss (``generator(noise).detach()``),
# which also saves the backward pass through the generator, and clear each
# network's gradients right before its own ``backward()``. The generator's
# ``backward()`` leaves gradients in the discriminator too;
# ``discriminator_optimizer.zero_grad()`` at the start of the next
# discriminator step clears them.
#
# ``set_to_none``: no gradient is not a zero gradient
# ---------------------------------------------------
#
# Since PyTorch 2.0, ``zero_grad()`` sets ``.grad`` to ``None`` by default
# instead of filling it with zeros. For most training loops the two are
# interchangeable, because ``backward()`` gives every parameter a gradient
# again. They differ for a parameter that takes no part in some steps, such as
# an unused branch of a model or an expert that a mixture-of-experts model did
# not route any input to. An optimizer skips a parameter whose ``.grad`` is
# ``None``. A zero gradient, on the other hand, is still a gradient: momentum
# carries on with the velocity of earlier steps, weight decay still shrinks the
# weight, and Adam still steps along its running averages of earlier
# gradients.
#
# ``idle_trajectory`` gives a single weight of value 1 one real step with
# gradient 1, then 20 steps in which it receives no gradient, and records its
# value throughout.

OPTIMIZERS = {
    "SGD, momentum=0.9": lambda params: optim.SGD(params, lr=0.1, momentum=0.9),
    "SGD, weight_decay=0.1": lambda params: optim.SGD(params, lr=0.1, weight_decay=0.1),
    "Adam": lambda params: optim.Adam(params, lr=0.1),
}


def idle_trajectory(make_optimizer, set_to_none, idle_steps=20):
    """Values of a weight after one real step and then ``idle_steps`` steps without a gradient."""
    weight = torch.ones(1, device=device, requires_grad=True)
    optimizer = make_optimizer([weight])
    weight.sum().backward()  # gradient 1
    optimizer.step()
    values = [1.0, weight.item()]
    for _ in range(idle_steps):
        optimizer.zero_grad(set_to_none=set_to_none)
        optimizer.step()  # no backward(): this weight did not take part
        values.append(weight.item())
    return values


trajectories = {(name, set_to_none): idle_trajectory(make_optimizer, set_to_none)
                for name, make_optimizer in OPTIMIZERS.items() for set_to_none in (False, True)}

print(f"{'optimizer':<24}{'.grad after zero_grad()':>26}{'moved in the 20 idle steps':>30}")
for (name, set_to_none), values in trajectories.items():
    grad = "None" if set_to_none else "zeros"
    print(f"{name:<24}{grad:>26}{abs(values[-1] - values[1]):>30.4f}")

# %%
# With zeros, all three optimizers keep moving the weight although it had no
# gradient at all; with ``None`` they leave it exactly where it was. The plot
# follows the weight over the 21 steps.

fig, axes = plt.subplots(1, 3, figsize=(11, 3.8), sharey=True)
for ax, name in zip(axes, OPTIMIZERS):
    ax.plot(trajectories[name, False], "o-", markersize=3, label="zero_grad(set_to_none=False)")
    ax.plot(trajectories[name, True], "s--", markersize=3, label="zero_grad(set_to_none=True)")
    ax.axvspan(1, 21, color="gray", alpha=0.1)
    ax.set_title(name)
    ax.set_xlabel("optimizer step")
axes[0].set_ylabel("weight value")
axes[0].legend(loc="lower left", fontsize="small")
fig.suptitle("After step 1 the weight gets no gradient (shaded): zeros move it, None does not")
fig.tight_layout()
plt.show()

# %%
# Inference needs ``no_grad()``, not ``zero_grad()``
# --------------------------------------------------
#
# ``zero_grad()`` only clears ``.grad``; it does not stop autograd. A forward
# pass of a model whose parameters require gradients still records the
# computational graph, and keeps alive every tensor the backward pass would
# need, whether or not anything calls ``backward()``:

mlp = nn.Sequential(*[layer for _ in range(4) for layer in (nn.Linear(1024, 1024), nn.ReLU())]).to(device)
batch = torch.randn(256, 1024, device=device)
mlp.zero_grad()
output = mlp(batch)
print(f"after mlp.zero_grad(): output.requires_grad={output.requires_grad}, "
      f"output.grad_fn={type(output.grad_fn).__name__}")
del output

# %%
# For inference, turn autograd off: ``torch.no_grad()`` records no graph, and
# ``torch.inference_mode()`` goes further by also skipping the bookkeeping
# that would let its outputs be used in autograd later.
#
# Below, the same forward pass of this four-layer MLP (1024 units per layer, a
# batch of 256) runs in three ways. Two things are measured:
#
# * **saved for backward**: the bytes of the tensors autograd keeps for the
#   backward pass, found with ``torch.autograd.graph.saved_tensors_hooks``,
#   which sees every tensor as it is saved. The parameters are left out (they
#   exist anyway) and a tensor saved twice is counted once. This is the memory
#   the graph holds for as long as the output lives, on any device. On CUDA
#   the table also gives the peak memory the forward pass allocates
#   (``torch.cuda.max_memory_allocated``).
# * **time per forward**: the median of ``torch.utils.benchmark.Timer``, which
#   warms up, synchronises CUDA and repeats the call for a set time.

MIN_RUN_TIME = 0.05 if SMOKE_TEST else 0.4  # seconds of repetitions per timing
MODES = {
    "plain": contextlib.nullcontext,
    "torch.no_grad()": torch.no_grad,
    "torch.inference_mode()": torch.inference_mode,
}


def forward(model, inputs, mode):
    with mode():
        return model(inputs)


def bytes_saved_for_backward(model, inputs, mode):
    """Bytes of non-parameter tensors autograd saves during one forward pass."""
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        forward(model, inputs, mode)
    return sum(saved.values())


def peak_forward_memory(model, inputs, mode):
    """On CUDA, the bytes allocated at the peak of a forward pass, beyond what was there before."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    output = forward(model, inputs, mode)  # keep the output, and so its graph, alive
    peak = torch.cuda.max_memory_allocated() - before
    del output
    return peak


def median_time(stmt, **names):
    return benchmark.Timer(stmt=stmt, globals=names).blocked_autorange(min_run_time=MIN_RUN_TIME).median


MiB = 2**20
print(f"{'mode':<24}{'saved for backward':>20}{'time per forward':>18}{'peak memory':>14}")
for name, mode in MODES.items():
    saved = bytes_saved_for_backward(mlp, batch, mode)
    seconds = median_time("forward(mlp, batch, mode)", forward=forward, mlp=mlp, batch=batch, mode=mode)
    peak = peak_forward_memory(mlp, batch, mode)
    peak = "n/a (CPU)" if peak is None else f"{peak / MiB:.1f} MiB"
    print(f"{name:<24}{saved / MiB:>16.1f} MiB{seconds * 1e3:>15.2f} ms{peak:>14}")

# %%
# The plain forward pass keeps the input batch and the output of every ReLU
# alive for a backward pass that never comes: each linear layer saves its input
# and each ReLU its output, and the output of one ReLU is the input of the next
# linear layer, so that is five tensors of 1 MiB. Under ``torch.no_grad()`` and
# ``torch.inference_mode()`` nothing is saved, and each layer's input can be
# freed as soon as the next layer has used it. The time is another matter, and
# depends on the hardware. On a CPU (timed here on one thread), where each of
# the four big matrix products takes milliseconds, autograd's bookkeeping for
# eight operations is tiny next to them, and the three times differ by no more
# than timing noise. On a GPU, where the products take microseconds, the
# bookkeeping can be a visible share. The time saved grows with the number of
# small operations.
#
# Why ``set_to_none=True`` is the default
# ---------------------------------------
#
# Filling gradients with zeros writes every element of every gradient: as
# many numbers as the model has parameters. Setting them to ``None`` writes
# nothing and hands the memory back to the allocator until the next
# ``backward()``, which then creates each gradient afresh instead of adding to
# a tensor of zeros. This is why ``set_to_none=True`` became the default in
# PyTorch 2.0.
#
# To measure it on a model of realistic size, we build a ResNet-18 with random
# weights (``weights=None``, so nothing is downloaded), run one forward and
# backward pass so that every parameter has a gradient, and time
# ``optimizer.zero_grad()`` both ways, with the recipe's SGD and, for writing
# zeros, also with an SGD built with ``foreach=True`` (explained below). Each
# timed call first puts the original gradient tensors back in ``.grad``, as a
# backward pass would, so that ``set_to_none=True`` always has gradients to
# drop; putting them back is also timed on its own.

resnet = torchvision.models.resnet18(weights=None).to(device)
resnet_optimizer = optim.SGD(resnet.parameters(), lr=0.1, momentum=0.9)
foreach_optimizer = optim.SGD(resnet.parameters(), lr=0.1, momentum=0.9, foreach=True)
resnet(torch.randn(2, 3, 64, 64, device=device)).sum().backward()
parameters = list(resnet.parameters())
gradients = [p.grad for p in parameters]


def put_gradients_back():
    for parameter, gradient in zip(parameters, gradients):
        parameter.grad = gradient


def zero_grad(set_to_none, optimizer=resnet_optimizer):
    put_gradients_back()
    optimizer.zero_grad(set_to_none=set_to_none)


gradient_bytes = sum(g.numel() * g.element_size() for g in gradients)
print(f"ResNet-18: {sum(p.numel() for p in parameters):,} parameters in {len(parameters)} tensors, "
      f"{gradient_bytes / MiB:.1f} MiB of gradients")
timings = {"putting gradients back only": median_time("put_gradients_back()", put_gradients_back=put_gradients_back)}
for name, set_to_none, optimizer in [("zero_grad(set_to_none=False)", False, resnet_optimizer),
                                     ("zero_grad(set_to_none=False), foreach=True", False, foreach_optimizer),
                                     ("zero_grad(set_to_none=True)", True, resnet_optimizer)]:
    timings[name] = median_time("zero_grad(set_to_none, optimizer)",
                                zero_grad=zero_grad, set_to_none=set_to_none, optimizer=optimizer)
for name, seconds in timings.items():
    print(f"{name:<44}{seconds * 1e6:>10.1f} us per call")
ratio = timings["zero_grad(set_to_none=False)"] / timings["zero_grad(set_to_none=True)"]
print(f"set_to_none=False takes {ratio:.1f}x as long as set_to_none=True")

# %%
# Setting ``None`` costs a loop over the 62 parameters in Python, a few times
# the cost of putting the gradients back. Writing zeros costs, on top of that,
# a pass over all 44.6 MiB of gradients; on a CPU that pass dominates, as the
# ratio shows.
#
# How the zeros are written depends on the optimizer's ``foreach`` argument.
# The recipe's SGD leaves it at its default, ``None``, and then
# ``zero_grad(set_to_none=False)`` calls ``zero_()`` on one gradient after the
# other: 62 separate operations, which on a CUDA GPU are 62 kernel launches.
# Writing 44.6 MiB takes a GPU very little time, so there the cost is mostly
# those launches and the Python loop around them, not memory bandwidth. An
# optimizer built with ``foreach=True`` (or ``fused=True``) instead groups the
# gradients by device and dtype in ``zero_grad()`` and zeroes each group with
# one call to ``torch._foreach_zero_``, which on CUDA zeroes many tensors per
# kernel launch. On a CPU it changes little, as the table shows: the CPU
# version of ``_foreach_zero_`` still zeroes one tensor after the other. Note
# that the default ``foreach=None`` is not enough: on CUDA, ``step()`` then
# picks the foreach implementation by itself, but ``zero_grad()`` only looks
# at what was passed to the constructor. On any device, ``set_to_none=True``
# also gives the gradients' memory back (to PyTorch's caching allocator, on a
# GPU) until the next ``backward()``. A loop can go further and free each
# gradient during ``backward()`` itself, right after stepping its parameter,
# with no ``zero_grad()`` at all: :ref:`optimizer_step_in_backward`.
#
# The price of the default is that code reading ``.grad`` after
# ``zero_grad()`` must expect ``None``, and, as shown above, that a parameter
# without a gradient is skipped by the optimizer rather than updated with
# zeros.
#
# Summary
# -------
#
# * Call ``optimizer.zero_grad()`` at the start of the loop or right after
#   ``optimizer.step()``; never between ``loss.backward()`` and
#   ``optimizer.step()``, where it turns every step into a no-op.
# * ``optimizer.zero_grad()`` clears only the optimizer's parameters. With
#   parameters outside it, or several optimizers over one graph, clear each set
#   right before its own ``backward()``, or detach what the other network
#   should not see.
# * ``set_to_none=True``, the default, is cheaper and tells the optimizer to
#   skip a parameter that got no gradient; zeros would still move it under
#   weight decay, or under momentum or Adam after earlier steps.
# * For inference use ``torch.no_grad()`` or ``torch.inference_mode()``;
#   ``zero_grad()`` does not turn autograd off.
# * Gradients are sometimes accumulated on purpose:
#   :ref:`gradient_accumulation`.

# sphinx_gallery_thumbnail_number = 1
