"""
.. _zeroing_out_gradients:

Zeroing out gradients while training a classifier
=================================================

Every call to ``loss.backward()`` **adds** the gradient it computes to the
``.grad`` attribute of each parameter (or sets it, where ``.grad`` is still
``None``). PyTorch never clears ``.grad`` on its own, so a training loop has to do it, once per mini-batch, with
``optimizer.zero_grad()``. If it does not, each update uses the sum of all the
gradients seen so far instead of the gradient of the current mini-batch.

This recipe trains the classic small CIFAR-10 image classifier twice, from the
same initial weights and with the same order of mini-batches:

1. the usual way, with ``optimizer.zero_grad()`` at the start of every step;
2. exactly the same, with that one line removed.

What you will learn:

* what the missing line does to a real training run: the size of ``.grad`` and
  of SGD's momentum buffer as it happens, the loss curves, the test accuracy;
* why the run without ``zero_grad()`` behaves like a ball that is never slowed
  down, and why the way it ends depends on the machine;
* when ``model.zero_grad()`` and ``optimizer.zero_grad()`` differ, and how to
  freeze layers without leaving stale gradients behind.

.. note::
   The related recipes show the mechanics on a two-element tensor
   (:ref:`gradients_accumulate`), the same failure on a straight line
   (:ref:`linear_regression_without_zero_grad`), how to accumulate on purpose
   (:ref:`gradient_accumulation`) and where ``zero_grad()`` belongs in a loop
   (:ref:`zero_grad_pitfalls`).
"""

# %%
# Setup
# -----
#
# Besides PyTorch we need torchvision for the data set and matplotlib for the
# plot. The recipe runs on a CUDA GPU when there is one and on the CPU
# otherwise; on a CPU it takes a minute or two. The seed makes the random
# numbers the same on every run: the initial weights and, below, the order of
# the mini-batches.
#
# .. note::
#    **Will your numbers match this page?** On the CPU the whole output apart
#    from the timings repeats exactly, run after run, on the same machine with
#    the same PyTorch version and the same number of threads. The record at
#    the bottom of the page says what this page ran on: the CPU's *capability*
#    (the vector instructions PyTorch's kernels use, such as AVX512 or AVX2)
#    and the number of threads. Another capability or thread count adds the
#    same numbers in a different order and rounds differently. The normal run
#    then changes a little; the run without ``zero_grad()`` magnifies small
#    differences and can take an entirely different course, which is why the
#    text below describes each way it can go. On a CUDA GPU only the starting
#    point and the order of the mini-batches repeat: cuDNN may choose a
#    non-deterministic algorithm for the convolutions' backward pass, and by
#    default it computes convolutions in TF32, with fewer mantissa bits than
#    the CPU's float32, on GPUs that have it.

import copy
import math
import os
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
import torchvision
from torchvision.transforms import v2 as transforms

# The test suite sets ZERO_GRAD_SMOKE=1 to train on random images for a few seconds.
SMOKE_TEST = os.environ.get("ZERO_GRAD_SMOKE") == "1"

device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
print(f"Using device: {device}")
torch.manual_seed(0)  # the same initial weights on every run (what else repeats: see above)

# %%
# Load and normalise CIFAR-10
# ---------------------------
#
# CIFAR-10 has 50,000 training and 10,000 test images of 32×32 pixels in ten
# classes. With internet access, torchvision downloads it into ``./data``.
# Without it, point the ``CIFAR10_ROOT`` environment variable at a local copy
# laid out as ``train/<class>/*.jpg`` and ``test/<class>/*.jpg``.
#
# The classic version of this recipe converts and normalises every image again
# in every epoch, in a ``DataLoader``. Here each image is decoded once into one
# ``uint8`` tensor per split, and the same normalisation (mean 0.5 and
# standard deviation 0.5 per channel, so pixels end up in [-1, 1]) is applied to the whole tensor at once.
# The numbers the network sees are the same, up to rounding in the last bit of
# some pixels; the training loop just no longer waits for image decoding.

CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck")
DATA_ROOT = Path(os.environ.get("CIFAR10_ROOT", "data"))


def read_image_folder(folder):
    """Decode ``folder/<class>/*`` into an (N, 3, 32, 32) uint8 tensor and labels."""
    found = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    if tuple(found) != CLASSES:
        raise RuntimeError(f"{folder} must hold one folder per CIFAR-10 class, "
                           f"{', '.join(CLASSES)}; found: {', '.join(found) or 'nothing'}")
    dataset = torchvision.datasets.ImageFolder(folder)  # lists the files; labels follow CLASSES
    images = []
    for path, _ in dataset.samples:
        try:
            images.append(torchvision.io.decode_image(path, mode=torchvision.io.ImageReadMode.RGB))
        except RuntimeError as error:
            raise RuntimeError(f"Cannot read image {path}: {error}") from None
    return torch.stack(images), torch.tensor(dataset.targets)


def load_cifar10(root):
    """Return train images, train labels, test images, test labels as tensors."""
    if SMOKE_TEST:  # test suite only: random pixels and labels shaped like CIFAR-10
        return [torch.randint(256, (2000, 3, 32, 32), dtype=torch.uint8), torch.randint(10, (2000,))] * 2
    if (root / "train").exists() or (root / "test").exists():
        return [*read_image_folder(root / "train"), *read_image_folder(root / "test")]
    try:
        splits = [torchvision.datasets.CIFAR10(root, train=train, download=True) for train in (True, False)]
    except OSError as error:  # no network, or the download failed
        raise RuntimeError(
            f"CIFAR-10 is not in {root.resolve()} and could not be downloaded ({error}). "
            "Either run with internet access, so that torchvision downloads it there, "
            "or set CIFAR10_ROOT to a local copy in image-folder layout "
            "(train/<class>/*.jpg and test/<class>/*.jpg)."
        ) from None
    return [tensor for split in splits for tensor in
            (torch.from_numpy(split.data).permute(0, 3, 1, 2), torch.tensor(split.targets))]


start = time.perf_counter()
train_images, train_labels, test_images, test_labels = load_cifar10(DATA_ROOT)

normalize = transforms.Compose([
    transforms.ToDtype(torch.float32, scale=True),  # uint8 [0, 255] -> float [0, 1]
    transforms.Normalize(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5]),
])
train_images, train_labels = normalize(train_images).to(device), train_labels.to(device)
test_images, test_labels = normalize(test_images).to(device), test_labels.to(device)
print(f"Loaded {len(train_labels):,} training and {len(test_labels):,} test images "
      f"in {time.perf_counter() - start:.1f} s")

# %%
# Define the network
# ------------------
#
# The classic small convolutional network: two convolution and max-pooling
# stages, then three fully connected layers. Its initial weights are random
# (the seed set above makes them the same on every run of the script); we keep a
# copy so that the second training run starts from exactly the same point.


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


initial_weights = copy.deepcopy(Net().state_dict())

# %%
# Loss function, optimizer and training loop
# ------------------------------------------
#
# Cross-entropy loss and SGD with learning rate 0.001 and momentum 0.9, trained
# for 2 epochs on mini-batches of 4 images, exactly as in the classic recipe.
#
# ``train`` is the canonical loop with one switch, ``zero_grad``. Each epoch
# shuffles the training images with ``torch.randperm`` and cuts the order into
# mini-batches of 4. The random generator is seeded afresh for every run, so
# both runs see the same batches in the same order, and the
# ``optimizer.zero_grad()`` line is the only difference between them.
#
# Five times per epoch the loop prints a line: the mean loss of the
# mini-batches since the last line, the size of ``.grad``, the size of the
# momentum buffer, and how many times larger the buffer is. SGD keeps that
# buffer for every parameter in ``optimizer.state`` and subtracts it, times
# the learning rate, in every step. A size here is the Euclidean norm of all
# the numbers of all the parameters taken together. If
# the loss ever stops being a finite number, the loop says where, how large
# the outputs were and whether the weights are still finite, and stops, since
# nothing useful can be learned after that. ``train_from_initial_weights``
# gives each run a fresh network with the saved initial weights and times it.

BATCH_SIZE = 4
PRINT_EVERY = len(train_labels) // BATCH_SIZE // 5  # five lines per epoch: every 2,500 mini-batches


def size(tensors):
    """Euclidean norm of several tensors taken together as one long vector."""
    # float64: in float32 the norm of huge but finite gradients can overflow to inf
    norms = [torch.linalg.vector_norm(t, dtype=torch.float64) for t in tensors]
    return torch.linalg.vector_norm(torch.stack(norms)).item()


def train(model, zero_grad, epochs=2):
    """Train ``model``; return the loss of every step and the sizes on every printed line."""
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    batch_order = torch.Generator().manual_seed(0)
    losses, sizes = [], []
    model.train()
    for epoch in range(epochs):
        running_loss = 0.0
        # Shuffle on the CPU with the seeded generator, then move the order to
        # the device once per epoch rather than once per mini-batch.
        shuffled = torch.randperm(len(train_labels), generator=batch_order).to(device)
        for i, batch in enumerate(shuffled.split(BATCH_SIZE)):
            inputs, labels = train_images[batch], train_labels[batch]
            if zero_grad:
                optimizer.zero_grad()  # forget the previous mini-batch's gradients
            outputs = model(inputs)
            loss = criterion(outputs, labels)
            losses.append(loss.item())
            if not math.isfinite(losses[-1]):
                finite_weights = all(p.isfinite().all() for p in model.parameters())
                print(f"Non-finite loss ({losses[-1]}) at epoch {epoch + 1}, batch {i + 1} "
                      f"(step {len(losses):,}): largest output {outputs.abs().max().item():.3g}, "
                      f"weights all finite: {finite_weights}. Stopping this run.")
                return losses, sizes
            loss.backward()  # adds this mini-batch's gradients to .grad
            optimizer.step()
            running_loss += losses[-1]
            if i % PRINT_EVERY == PRINT_EVERY - 1:
                grad = size(p.grad for p in model.parameters())
                buffer = size(optimizer.state[p]["momentum_buffer"] for p in model.parameters())
                sizes.append((grad, buffer))
                print(f"[{epoch + 1}, {i + 1:5d}] loss: {running_loss / PRINT_EVERY:.3f}   "
                      f"size of .grad: {grad:9.3g}   momentum buffer: {buffer:9.3g} ({buffer / grad:.1f} x)")
                running_loss = 0.0
    return losses, sizes


def train_from_initial_weights(zero_grad):
    """Train a fresh copy of the network from ``initial_weights``; time it."""
    model = Net().to(device)
    model.load_state_dict(initial_weights)
    start = time.perf_counter()
    losses, sizes = train(model, zero_grad)
    seconds = time.perf_counter() - start
    print(f"Finished in {seconds:.1f} s")
    return model, losses, sizes, seconds


# %%
# Train with ``optimizer.zero_grad()``
# ------------------------------------
#
# This is the loop everyone should write. The loss starts near 2.3, the loss
# of guessing uniformly among ten classes (ln 10), and falls steadily.

net, losses_with, sizes_with, time_with = train_from_initial_weights(zero_grad=True)


def print_size_ranges(sizes):
    """The range of the ``.grad`` sizes and of the buffer's ratio to them, over the printed lines."""
    grads = [grad for grad, _ in sizes]
    ratios = [buffer / grad for grad, buffer in sizes]
    print(f"over the printed lines: size of .grad {min(grads):.3g} to {max(grads):.3g}, "
          f"momentum buffer {min(ratios):.1f} to {max(ratios):.1f} times as large")


print_size_ranges(sizes_with)

# %%
# The mean loss falls steadily, most in the first epoch. The sizes show what
# the optimizer works with. ``.grad`` is the gradient of the current
# mini-batch of 4 images, so its size changes from line to line, in the range
# printed last. The momentum buffer adds up past gradients with weights that
# shrink by a factor of 0.9 per step, which would make it ten times a
# gradient that never changed. Yet it is only a few times as large as
# ``.grad``: the gradients of different mini-batches point in different
# directions and partly cancel.
#
# Train again without it
# ----------------------
#
# Same initial weights, same batches, one line fewer. Now nothing ever clears
# ``.grad``: after step *t* it holds the sum of the gradients of all *t*
# mini-batches so far. Plain SGD would subtract the learning rate times that
# sum in every step. A sum to which every step adds the newest gradient is a
# velocity, so this alone turns SGD into heavy-ball momentum with no friction:
# a ball that rolls on the loss surface and is never slowed down. On the
# straight line of :ref:`linear_regression_without_zero_grad`, where the loss
# is a quadratic bowl, gradients on all the data make the parameters swing
# around the minimum for ever, but the swings stay bounded. With mini-batches,
# each mini-batch's gradient pulls a little off course, nothing damps those
# pulls, and the swings grow.
#
# This optimizer also has momentum 0.9 on top. Its buffer is 0.9 times the
# previous buffer plus ``.grad``. Fed with a sum that keeps growing, the buffer
# ends up at about 1 / (1 − 0.9) = 10 times that sum, and every step subtracts
# the learning rate times the buffer. The mini-batches' gradients are piled up
# twice: once in ``.grad``, and again, about ten times over, in the buffer.

net_without, losses_without, sizes_without, time_without = train_from_initial_weights(zero_grad=False)
grad_with, grad_without = sizes_with[0][0], sizes_without[0][0]
print(f"at the first printed line, .grad is {grad_without / grad_with:.3g} times as large as in the normal run")

# %%
# The first printed line shows both piles. ``.grad`` is far larger than in
# the normal run at the same step (the last line above says how many times),
# and the momentum buffer is about ten times as large again, as the arithmetic
# above predicts. The mean loss of those steps is well above the 2.3 of random
# guessing: steps that large throw the weights to places where the network's
# outputs, and so its loss, are huge.
#
# How the run ends depends on the exact numbers, and the lines above show how
# it ended on the machine that built this page. Either the loss at some step
# is no longer a finite number, because the outputs or the weights have
# overflowed ``float32``: the loop then reports the step, how large the
# outputs were and whether the weights are still finite, and stops. Or the
# run reaches the end of both epochs, with a loss far above that of random
# guessing. Started from initial weights
# changed by amounts as small as rounding errors, run with a different number
# of threads, on another kind of CPU or on a GPU, the same run can end either
# way, and at another step.
#
# Compare the two runs
# --------------------
#
# Single mini-batch losses are noisy, so the plot shows mean losses over
# windows of consecutive steps. On the left, the whole of both runs on an
# ordinary scale, in windows of 1 % of the training steps: the normal run
# learning. On the right, on a logarithmic scale, the steps the run without
# ``zero_grad()`` lasted, in windows ten times shorter. The dashed line is the
# loss of random guessing. The circle marks the first window in which the run
# without ``zero_grad()`` has twice the loss of the normal run. If that run
# stopped at a non-finite loss, a red vertical line marks the step.


def smooth(losses, window):
    """Mean loss over consecutive windows; return window end steps and means."""
    means = torch.tensor(losses[: len(losses) // window * window]).view(-1, window).mean(dim=1)
    return torch.arange(1, len(means) + 1) * window, means


random_guess = math.log(len(CLASSES))
stopped = not math.isfinite(losses_without[-1])
fig, (ax_all, ax_zoom) = plt.subplots(1, 2, figsize=(11, 4.5), layout="constrained")

window = max(1, len(losses_with) // 100)
steps_with, smooth_with = smooth(losses_with, window)
steps_without, smooth_without = smooth(losses_without, window)
ax_all.plot(steps_with, smooth_with, color="C0", label="with optimizer.zero_grad()")
ax_all.plot(steps_without, smooth_without, color="C1", label="without zero_grad()")
ax_all.set_ylim(0.8 * smooth_with.min().item(), 1.2 * random_guess)
ax_all.set_title("Both runs, ordinary scale")
ax_all.set_ylabel(f"cross-entropy loss, mean of {window:,} steps")

window = max(1, window // 10)
shown = len(losses_without)
steps_with, smooth_with = smooth(losses_with[:shown], window)
steps_without, smooth_without = smooth(losses_without, window)
ax_zoom.plot(steps_with, smooth_with, color="C0")
ax_zoom.plot(steps_without, smooth_without, color="C1")
ax_zoom.set_yscale("log")
ax_zoom.set_title(f"The first {shown:,} steps, logarithmic scale")
ax_zoom.set_ylabel(f"cross-entropy loss, mean of {window:,} steps")
compared = min(len(smooth_with), len(smooth_without))
diverged = (smooth_without[:compared] > 2 * smooth_with[:compared]).nonzero()
if len(diverged) > 0:
    point = (steps_without[diverged[0]].item(), smooth_without[diverged[0]].item())
    print(f"Twice the normal loss: step {point[0]:,}, where the mean loss of {window} steps without zero_grad() "
          f"is {point[1]:.2f} against {smooth_with[diverged[0]].item():.2f} with it")
    ax_zoom.plot(*point, "o", color="C1", markersize=9, fillstyle="none")
    ax_zoom.annotate(f"step {point[0]:,}:\ntwice the normal loss", point, xytext=(0.04, 0.8),
                     textcoords="axes fraction", arrowprops={"arrowstyle": "->"})
if stopped:
    ax_zoom.axvline(len(losses_without), color="C3", linewidth=1.5,
                    label=f"loss {losses_without[-1]} at step {len(losses_without):,}: run stopped")
for ax in (ax_all, ax_zoom):
    ax.axhline(random_guess, color="gray", linestyle="--", linewidth=1, label="random guessing (ln 10)")
    ax.set_xlabel("training step (mini-batch of 4 images)")
handles, labels = zip(*[entry for ax in (ax_all, ax_zoom) for entry in zip(*ax.get_legend_handles_labels())])
unique = dict(zip(labels, handles))
fig.legend(unique.values(), unique.keys(), loc="outside lower center", ncols=len(unique))
fig.suptitle("The same network trained with and without zero_grad()")
plt.show()

# %%
# On the left, the normal run learns: its loss falls well below the 2.3 of
# random guessing and keeps falling, while the run without ``zero_grad()`` soon
# leaves the top of the plot. On the right are the steps that the second run
# lasted, as many as the title says. Its loss first reaches twice that of the
# normal run at the step marked by the circle and printed above, then climbs
# by orders of magnitude, with single spikes higher still, and never comes
# back down to random guessing. A red line, where there is one, marks the step
# at which the loss stopped being a finite number.
#
# Test accuracy
# -------------
#
# Both networks now classify the 10,000 test images. ``model.eval()`` puts a
# network in evaluation mode (this one has no dropout or batch normalization,
# so nothing changes here, but in general it matters), and ``torch.no_grad()``
# turns off gradient tracking, since evaluation needs no backward pass. The
# table's final loss is the mean over the last 2,500 steps of a run: the
# window of its last printed line. A run that stopped at a non-finite loss
# shows that loss, because the mean of a window that contains ``nan`` is
# ``nan``.


def accuracy(model):
    """Fraction of the test images that ``model`` classifies correctly."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for images, labels in zip(test_images.split(1000), test_labels.split(1000)):
            correct += (model(images).argmax(dim=1) == labels).sum().item()
    return correct / len(test_labels)


def final_loss(losses, last=PRINT_EVERY):
    """Mean loss over the last ``last`` steps: the window of the last printed line."""
    return sum(losses[-last:]) / len(losses[-last:])


def predicted_classes(model):
    """How many different classes ``model`` predicts over the test images."""
    model.eval()
    with torch.no_grad():
        predictions = torch.cat([model(images).argmax(dim=1) for images in test_images.split(1000)])
    return len(predictions.unique())


accuracy_with = accuracy(net)
accuracy_without = accuracy(net_without)
print(f"{'run':<24}{'steps':>8}{'final loss':>14}{'test accuracy':>16}{'time (s)':>10}")
for name, losses, test_accuracy, seconds in [
    ("with zero_grad()", losses_with, accuracy_with, time_with),
    ("without zero_grad()", losses_without, accuracy_without, time_without),
]:
    print(f"{name:<24}{len(losses):>8,}{final_loss(losses):>14.3f}{test_accuracy:>16.1%}{seconds:>10.1f}")
print(f"classes predicted over the test images: {predicted_classes(net)} with zero_grad(), "
      f"{predicted_classes(net_without)} without")

# %%
# With ``zero_grad()`` the network gets roughly one test image in two right,
# as the classic recipe does after two epochs; ten classes means 10 % for a
# random guess. The last line says how many different answers each network
# gives. Where the network trained without ``zero_grad()`` gives a single
# answer to every image, as it does when its weights are ``nan`` or when one
# of its outputs dwarfs the others whatever the image, it is right for exactly
# one test image in ten, since the test set holds 1,000 images of each class.
#
# ``model.zero_grad()`` or ``optimizer.zero_grad()``?
# ---------------------------------------------------
#
# ``optimizer.zero_grad()`` clears the gradients of the parameters *the
# optimizer was given*; ``model.zero_grad()`` clears those of *every parameter
# of the model*. Above, the optimizer was given ``model.parameters()``, so the
# two calls do the same thing. They differ when parameters that the optimizer
# does not update still receive gradients. Here an optimizer is given only the
# last layer, ``fc3``, as when fine-tuning just that layer, while the other
# layers still require gradients:


def parameters_with_gradient(model):
    """Names of the parameters whose ``.grad`` is set."""
    return [name for name, p in model.named_parameters() if p.grad is not None]


inputs, labels = train_images[:4], train_labels[:4]
model = Net().to(device)
last_layer_optimizer = optim.SGD(model.fc3.parameters(), lr=0.001, momentum=0.9)
F.cross_entropy(model(inputs), labels).backward()
print("after backward():              ", len(parameters_with_gradient(model)), "parameters have a gradient")
last_layer_optimizer.zero_grad()
print("after optimizer.zero_grad():   ", len(parameters_with_gradient(model)),
      "still have one:", ", ".join(parameters_with_gradient(model)))
model.zero_grad()
print("after model.zero_grad():       ", len(parameters_with_gradient(model)), "parameters have a gradient")

# %%
# Under ``optimizer.zero_grad()`` the gradients of the other eight parameters
# would keep accumulating, step after step. That is harmless while nothing
# updates those layers, but it wastes memory and time, and it silently corrupts
# them the day another optimizer or a later stage starts training them.
#
# ``model.zero_grad()`` clears them, but the better fix when fine-tuning is not
# to compute them at all: freeze the layers you do not train with
# ``requires_grad_(False)``. ``backward()`` then leaves their ``.grad`` at
# ``None``, and both calls do the same again:

model.requires_grad_(False)
model.fc3.requires_grad_(True)
F.cross_entropy(model(inputs), labels).backward()
print("frozen all but fc3, after backward():", len(parameters_with_gradient(model)),
      "have a gradient:", ", ".join(parameters_with_gradient(model)))

# %%
# Freezing only stops *later* backward passes from writing to ``.grad``. It
# does not clear a gradient that a parameter already has, and an optimizer
# that was given the parameter still applies it: optimizers skip a parameter
# whose ``.grad`` is ``None``, not one that no longer requires gradients.
# Here every parameter gets a gradient from one backward pass, then ``conv1``
# is frozen, and an optimizer that holds every parameter steps twice:

model = Net().to(device)
optimizer = optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
F.cross_entropy(model(inputs), labels).backward()
model.conv1.requires_grad_(False)
conv1_before = model.conv1.weight.detach().clone()
for _ in range(2):
    optimizer.step()
print(f"conv1 frozen after backward(): .grad still set: {model.conv1.weight.grad is not None}, "
      f"moved by optimizer.step(): {not torch.equal(model.conv1.weight, conv1_before)}")

# %%
# So freeze layers before their first backward pass, or clear their gradients
# when you freeze them, and give the optimizer only the parameters it trains.

# %%
# Summary
# -------
#
# * ``loss.backward()`` adds to ``.grad`` (and sets it where it is ``None``);
#   it never overwrites what is there.
# * Call ``optimizer.zero_grad()`` once per step, before ``loss.backward()``
#   (the start of the loop is the usual place).
# * Forget it, and ``.grad`` becomes the running sum of all past gradients:
#   SGD then moves like a ball with momentum and no friction, momentum 0.9 on
#   top makes its steps about ten times larger still, and with mini-batches
#   the steps grow until the loss is out of control.
# * To fine-tune part of a model, freeze the rest with
#   ``requires_grad_(False)`` before any backward pass (or clear their
#   gradients as you freeze them), and give the optimizer only what it trains,
#   so that no gradients pile up, or linger, where no optimizer clears them.
#
# Accumulating gradients is sometimes exactly what you want, for example to
# train with a larger batch than fits in memory; :ref:`gradient_accumulation`
# shows how to do it deliberately.

# sphinx_gallery_thumbnail_number = 1
