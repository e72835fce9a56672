"""Time the site build and the flagship's training against the classic CIFAR-10 recipe.

Run with ``make benchmark`` (or ``.venv/bin/python benchmarks/build_and_train.py``
with ``CIFAR10_ROOT`` pointing at the extracted image folder). Everything is
measured in this one run, on this machine, and printed; compare figures only
within one run. Sections can be skipped, e.g. ``--skip build,tests``.

Sections:

classic    the classic pipeline trains the flagship network once: ImageFolder with
           per-item ToTensor + Normalize, DataLoader with 2 workers, 2 epochs,
           batch 4, SGD lr 0.001 momentum 0.9.
flagship   the flagship recipe as a reader runs it (both training runs), in a
           fresh interpreter.
floor      seconds per training step: the flagship's whole loop (data loader,
           loss.item(), bookkeeping) against forward + backward + step alone,
           and a profile of where the loop's time goes.
build      a clean build of both languages into _build/bench (wall time and each
           recipe's execution time), a rebuild with nothing changed, and a
           rebuild after editing only the prose of one recipe.
tests      wall time of the smoke test suite (`make test-smoke`: every recipe in
           smoke mode in both languages, translation checks) and of the whole
           suite (`make test`: also the smoke site, browser, downloads, failures).
"""

import argparse
import cProfile
import io
import json
import os
import pstats
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
import torchvision
import torchvision.transforms as transforms
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parents[1]
FLAGSHIP = REPO / "recipes" / "en" / "zeroing_out_gradients.py"
BENCH_BUILD = REPO / "_build" / "bench"
PYTHON = sys.executable
RESULTS = {}
CLASSIC_RUN = "classic: one training run (2 epochs)"


class Net(nn.Module):
    """The flagship's network, as in the classic recipe."""

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


def report(key, seconds, note=""):
    RESULTS[key] = seconds
    print(f"  {key:<46}{seconds:>9.1f} s  {note}", flush=True)


def classic(data_root):
    """One training run of the classic pipeline: per-item transforms, 2 workers."""
    transform = transforms.Compose([transforms.ToTensor(),
                                    transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
    start = time.perf_counter()
    trainset = torchvision.datasets.ImageFolder(data_root / "train", transform=transform)
    trainloader = DataLoader(trainset, batch_size=4, shuffle=True, num_workers=2)
    torch.manual_seed(0)
    net = Net()
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(net.parameters(), lr=0.001, momentum=0.9)
    losses = []
    for _epoch in range(2):
        for inputs, labels in trainloader:
            optimizer.zero_grad()
            loss = criterion(net(inputs), labels)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    report(CLASSIC_RUN, time.perf_counter() - start,
           f"mean loss of the last 2,000 batches {sum(losses[-2000:]) / 2000:.3f}")


def flagship():
    """The flagship recipe in a fresh interpreter, as a reader runs it."""
    start = time.perf_counter()
    result = subprocess.run([PYTHON, str(FLAGSHIP)], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "MPLBACKEND": "Agg"}, check=True)
    total = time.perf_counter() - start
    runs = [float(s) for s in re.findall(r"^Finished in ([\d.]+) s", result.stdout, re.M)]
    loaded = re.search(r"^Loaded .* in ([\d.]+) s", result.stdout, re.M)
    report("flagship: loading and decoding the data", float(loaded[1]))
    report("flagship: training with zero_grad()", runs[0])
    report("flagship: training without zero_grad()", runs[1])
    report("flagship: both training runs", sum(runs))
    report("flagship: whole script", total)


def floor(steps=3000):
    """Seconds per step of the flagship's loop against forward + backward + step alone.

    The loop is the recipe's: a seeded permutation cut into batches of 4, with
    the batches indexed out of in-memory tensors.
    """
    torch.manual_seed(0)
    images = torch.randn(steps * 4, 3, 32, 32)
    labels = torch.randint(10, (steps * 4,))
    net = Net()
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(net.parameters(), lr=0.001, momentum=0.9)
    batch_order = torch.Generator().manual_seed(0)

    def whole_loop():
        losses = []
        for batch in torch.randperm(len(labels), generator=batch_order).split(4):
            inputs, targets = images[batch], labels[batch]
            optimizer.zero_grad()
            loss = criterion(net(inputs), targets)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        return losses

    batches = list(zip(images.split(4), labels.split(4)))

    def core_only():
        for inputs, targets in batches:
            optimizer.zero_grad()
            criterion(net(inputs), targets).backward()
            optimizer.step()

    def forward_only():
        with torch.no_grad():
            for inputs, _ in batches:
                net(inputs)

    timings = {}
    for name, fn in [("whole loop", whole_loop), ("zero_grad+forward+backward+step", core_only),
                     ("forward only (no_grad)", forward_only)]:
        fn()  # warm up
        start = time.perf_counter()
        fn()
        timings[name] = (time.perf_counter() - start) / steps
        print(f"  {'per step: ' + name:<46}{timings[name] * 1e3:>9.3f} ms", flush=True)
    RESULTS["per_step_ms"] = {k: v * 1e3 for k, v in timings.items()}
    print(f"  loop overhead over the core step: "
          f"{timings['whole loop'] / timings['zero_grad+forward+backward+step']:.2f}x")
    print(f"  at this rate, 2 epochs of 12,500 steps take "
          f"{timings['whole loop'] * 25_000:.1f} s per training run")

    profile = cProfile.Profile()
    profile.enable()
    whole_loop()
    profile.disable()
    text = io.StringIO()
    pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(12)
    print("  where the loop's time goes (cProfile, by own time):")
    lines = text.getvalue().splitlines()
    start_index = next(i for i, line in enumerate(lines) if "ncalls" in line)
    for line in lines[start_index:start_index + 13]:
        print("   ", line)


def print_ratio(label, key):
    """The time of ``key`` over the classic run's, when this run measured both."""
    if CLASSIC_RUN in RESULTS and key in RESULTS:
        ratio = RESULTS[key] / RESULTS[CLASSIC_RUN]
        print(f"  ratio, {label} / classic single run: {ratio:.2f} (target: at most 1.00)")


def make(*args):
    """Run make and return its wall time; fail loudly with its output."""
    start = time.perf_counter()
    result = subprocess.run(["make", "--no-print-directory", *args], cwd=REPO, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"make {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return elapsed


def cost_files(lang):
    """Sphinx-Gallery's per-recipe cost files (run time), rewritten whenever a recipe runs."""
    return sorted((BENCH_BUILD / "src" / lang).glob("*.cost.json"))


def recipe_costs(lang):
    """Each recipe's execution time in the last build."""
    return {p.name.removesuffix(".cost.json"): json.loads(p.read_text())["time"] for p in cost_files(lang)}


def executed_since(lang, moment):
    """The recipes that ran after ``moment``."""
    return [p.name.removesuffix(".cost.json") for p in cost_files(lang) if p.stat().st_mtime > moment]


def build():
    shutil.rmtree(BENCH_BUILD, ignore_errors=True)
    total = make("html", f"BUILDDIR={BENCH_BUILD}")
    report("clean build, both languages (make html)", total)
    # Each language builds in its own process, on its own core: whatever of the
    # wall time its recipes do not take is Sphinx starting, reading and writing.
    for lang in ("en", "zh"):
        costs = recipe_costs(lang)
        for name, seconds in costs.items():
            report(f"  {lang}: {name}", seconds)
        report(f"  {lang}: all recipes", sum(costs.values()),
               f"the rest of the build: {total - sum(costs.values()):.1f} s")

    moment = time.time()
    report("rebuild, nothing changed", make("html", f"BUILDDIR={BENCH_BUILD}"),
           f"re-executed: {executed_since('en', moment) + executed_since('zh', moment) or 'none'}")

    recipe = REPO / "recipes" / "en" / "gradients_accumulate.py"
    original = recipe.read_text(encoding="utf-8")
    edited = original.replace("\n# %%\n", "\n# %%\n# (An edited sentence of prose.)\n#\n", 1)
    assert edited != original, "no prose cell to edit"
    moment = time.time()
    try:
        recipe.write_text(edited, encoding="utf-8")
        seconds = make("html", f"BUILDDIR={BENCH_BUILD}")
    finally:
        recipe.write_text(original, encoding="utf-8")
    report("rebuild after a prose-only edit of one recipe", seconds,
           f"re-executed: en {executed_since('en', moment) or 'none'}, "
           f"zh {executed_since('zh', moment) or 'none'}")
    # Put the tree back in step with the unedited recipe.
    make("html", f"BUILDDIR={BENCH_BUILD}")


def tests():
    report("smoke test suite (make test-smoke)", make("test-smoke"))
    report("whole test suite with site, browser, downloads (make test)", make("test"))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip", default="", help="comma-separated sections to skip")
    skip = set(filter(None, parser.parse_args().skip.split(",")))
    data_root = Path(os.environ.get("CIFAR10_ROOT", REPO / "_build" / "data" / "cifar10"))
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s) per process, data: {data_root}")
    if "classic" not in skip:
        print("classic recipe")
        classic(data_root)
    if "flagship" not in skip:
        print("flagship recipe")
        flagship()
        print_ratio("flagship's two runs", "flagship: both training runs")
    if "floor" not in skip:
        print("training step floor")
        floor()
    if "build" not in skip:
        print("site build")
        build()
        print_ratio("clean bilingual build", "clean build, both languages (make html)")
    if "tests" not in skip:
        print("tests")
        tests()


if __name__ == "__main__":
    main()
