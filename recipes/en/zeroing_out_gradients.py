"""
.. _zeroing_out_gradients:

Zeroing out gradients while training a classifier
=================================================

Every call to ``loss.backward()`` **adds** the gradient it computes to the
``.grad`` attribute of each parameter. PyTorch never clears ``.grad`` on its
own, so a training loop has to do it, once per mini-batch, with
``optimizer.zero_grad()``. If it does not, each update uses the sum of all the
gradients seen so far instead of the gradient of the current mini-batch.

This recipe trains the classic small CIFAR-10 image classifier twice, from the
same initial weights and with the same order of mini-batches:

1. the usual way, with ``optimizer.zero_grad()`` at the start of every step;
2. exactly the same, with that one line removed.

Then it plots both loss curves, compares their test accuracy and shows when
``model.zero_grad()`` and ``optimizer.zero_grad()`` differ.

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
# otherwise; both take a few minutes.

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
torch.manual_seed(0)  # same random numbers, and so the same results, on every run

# %%
# Load and normalise CIFAR-10
# ---------------------------
#
# CIFAR-10 has 50,000 training and 10,000 test images of 32x32 pixels in ten
# classes. With internet access, torchvision downloads it into ``./data``.
# Without it, point the ``CIFAR10_ROOT`` environment variable at a local copy
# laid out as ``train/<class>/*.jpg`` and ``test/<class>/*.jpg``.
#
# The classic version of this recipe converts and normalises every image again
# in every epoch, in a ``DataLoader``. Here each image is decoded once into one
# ``uint8`` tensor per split, and the same normalisation (mean 0.5 and standard deviation 0.5 per
# channel, so pixels end up in [-1, 1]) is applied to the whole tensor at once.
# The numbers the network sees are the same; the training loop just no longer
# waits for image decoding.

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
# ``optimizer.zero_grad()`` line is the only difference between them. Every 2,000 mini-batches the loop prints their mean loss. If the loss
# ever stops being a finite number, the loop says where and stops, since
# nothing useful can be learned after that. ``train_from_initial_weights``
# gives each run a fresh network with the saved initial weights and times it.


def train(model, zero_grad, epochs=2, print_every=2000):
    """Train ``model`` on the training set; return the loss of every step."""
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    batch_order = torch.Generator().manual_seed(0)
    losses = []
    for epoch in range(epochs):
        running_loss = 0.0
        shuffled = torch.randperm(len(train_labels), generator=batch_order)
        for i, batch in enumerate(shuffled.split(4)):
            inputs, labels = train_images[batch], train_labels[batch]
            if zero_grad:
                optimizer.zero_grad()  # forget the previous mini-batch's gradients
            outputs = model(inputs)
            loss = criterion(outputs, labels)
            loss.backward()  # adds this mini-batch's gradients to .grad
            optimizer.step()

            losses.append(loss.item())
            if not math.isfinite(losses[-1]):
                print(f"Non-finite loss ({losses[-1]}) at epoch {epoch + 1}, batch {i + 1} "
                      f"(step {len(losses)}): stopping this run.")
                return losses
            running_loss += losses[-1]
            if i % print_every == print_every - 1:
                print(f"[{epoch + 1}, {i + 1:5d}] loss: {running_loss / print_every:.3f}")
                running_loss = 0.0
    return losses


def train_from_initial_weights(zero_grad):
    """Train a fresh copy of the network from ``initial_weights``; time it."""
    model = Net().to(device)
    model.load_state_dict(initial_weights)
    start = time.perf_counter()
    losses = train(model, zero_grad)
    seconds = time.perf_counter() - start
    print(f"Finished in {seconds:.1f} s")
    return model, losses, seconds


# %%
# Train with ``optimizer.zero_grad()``
# ------------------------------------
#
# This is the loop everyone should write. The printed loss starts near 2.3,
# the loss of guessing uniformly among ten classes (ln 10), and falls
# steadily.

net, losses_with, time_with = train_from_initial_weights(zero_grad=True)

# %%
# Train again without it
# ----------------------
#
# Same initial weights, same batches, one line fewer. Now ``.grad`` holds the
# sum of the gradients of every mini-batch so far, and momentum adds up those
# ever larger sums again. The updates grow step after step and the network is
# soon pushed far past any minimum. Within the first 2,000 mini-batches the
# printed loss is already well above the 2.3 of random guessing, and from then
# on it jumps by orders of magnitude from one line to the next: a single
# oversized update is enough to send the weights to a place where the network's
# outputs, and so its loss, are huge. Once the numbers outgrow what a float can
# hold, the loss becomes ``nan`` and the loop reports the step and stops. That
# is what happened when this page was built; on other hardware the run may
# instead limp on to the end with an enormous loss.

net_without, losses_without, time_without = train_from_initial_weights(zero_grad=False)

# %%
# Compare the two runs
# --------------------
#
# Single mini-batch losses are noisy, so the plot shows the mean loss of each
# window of 1 % of the training steps, on a logarithmic scale. The dashed line
# is the loss of random guessing. The circle marks the divergence point: the
# first window in which the run without ``zero_grad()`` has twice the loss of
# the normal run. A cross would mark a non-finite loss.


def smooth(losses, window):
    """Mean loss over consecutive windows; return window end steps and means."""
    means = torch.tensor(losses[: len(losses) // window * window]).view(-1, window).mean(dim=1)
    return torch.arange(1, len(means) + 1) * window, means


window = max(1, len(losses_with) // 100)
steps_with, smooth_with = smooth(losses_with, window)
steps_without, smooth_without = smooth(losses_without, window)
compared = min(len(smooth_with), len(smooth_without))
diverged = (smooth_without[:compared] > 2 * smooth_with[:compared]).nonzero()

fig, ax = plt.subplots(figsize=(8, 4.5))
ax.plot(steps_with, smooth_with, label="with optimizer.zero_grad()")
ax.plot(steps_without, smooth_without, label="without zero_grad()")
ax.axhline(math.log(len(CLASSES)), color="gray", linestyle="--", linewidth=1,
           label="random guessing (ln 10)")
if len(diverged) > 0:
    point = (steps_without[diverged[0]].item(), smooth_without[diverged[0]].item())
    print(f"Divergence point: step {point[0]:,}, where the loss without zero_grad() is "
          f"{point[1]:.2f} against {smooth_with[diverged[0]].item():.2f} with it")
    ax.plot(*point, "o", color="C1", markersize=9, fillstyle="none")
    ax.annotate(f"diverges at step {point[0]:,}", point, xytext=(30, 45),
                textcoords="offset points", arrowprops={"arrowstyle": "->"})
if not math.isfinite(losses_without[-1]):
    ax.plot(len(losses_without), max(x for x in losses_without if math.isfinite(x)), "x",
            color="C3", markersize=10, label="non-finite loss")
ax.set_yscale("log")
ax.set_xlabel("training step (mini-batch of 4 images)")
ax.set_ylabel("cross-entropy loss, window mean")
ax.set_title("The same network trained with and without zero_grad()")
ax.legend()
fig.tight_layout()
plt.show()

# %%
# Test accuracy
# -------------
#
# Both networks now classify the 10,000 test images. ``torch.no_grad()`` turns
# off gradient tracking, since evaluation needs no backward pass.


def accuracy(model):
    """Fraction of the test images that ``model`` classifies correctly."""
    correct = 0
    with torch.no_grad():
        for images, labels in zip(test_images.split(1000), test_labels.split(1000)):
            correct += (model(images).argmax(dim=1) == labels).sum().item()
    return correct / len(test_labels)


def final_loss(losses, last=2000):
    """Mean loss over the last ``last`` steps (the value in the last printed line)."""
    return sum(losses[-last:]) / len(losses[-last:])


accuracy_with = accuracy(net)
accuracy_without = accuracy(net_without)
print(f"{'run':<24}{'steps':>8}{'final loss':>14}{'test accuracy':>16}{'time (s)':>10}")
for name, losses, test_accuracy, seconds in [
    ("with zero_grad()", losses_with, accuracy_with, time_with),
    ("without zero_grad()", losses_without, accuracy_without, time_without),
]:
    print(f"{name:<24}{len(losses):>8,}{final_loss(losses):>14.3f}{test_accuracy:>16.1%}{seconds:>10.1f}")

# %%
# With ``zero_grad()`` the network gets roughly one test image in two right,
# as the classic recipe does after two epochs; ten classes means 10 % for a
# random guess. Without it, the network ends up no better than guessing.
#
# ``model.zero_grad()`` or ``optimizer.zero_grad()``?
# ---------------------------------------------------
#
# ``optimizer.zero_grad()`` clears the gradients of the parameters *the
# optimizer was given*; ``model.zero_grad()`` clears those of *every parameter
# of the model*. Above, the optimizer was given ``model.parameters()``, so the
# two calls do the same thing. They differ when the optimizer only updates some
# parameters, for example when fine-tuning just the last layer: the gradients of
# the other layers then keep accumulating under ``optimizer.zero_grad()``. That
# is harmless while nothing updates those layers, but it wastes memory and
# silently corrupts them the day another optimizer or a later stage starts
# training them.


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
# Summary
# -------
#
# * ``loss.backward()`` adds to ``.grad``; it never overwrites it.
# * Call ``optimizer.zero_grad()`` once per step, before ``loss.backward()``
#   (the start of the loop is the usual place).
# * Forget it, and every update uses the running sum of all past gradients:
#   the loss climbs instead of falling, as both curves above show.
# * Use ``model.zero_grad()`` when the optimizer does not own every parameter
#   that receives gradients.
#
# Accumulating gradients is sometimes exactly what you want, for example to
# train with a larger batch than fits in memory; :ref:`gradient_accumulation`
# shows how to do it deliberately.

# sphinx_gallery_thumbnail_number = 1
