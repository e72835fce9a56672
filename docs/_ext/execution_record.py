"""Sphinx extension: each recipe page says when and on what it ran.

Sphinx-Gallery calls ``prepare_recipe_run`` (listed in ``reset_modules`` in
conf.py) before and after it executes each recipe. Before: draw Chinese with
the pinned font and make a missing glyph an error (after Sphinx-Gallery's own
matplotlib reset, the entry before it), stamp the page with a record of what
decides its numbers (versions; on a CPU its torch CPU capability and number
of threads; on a GPU its name and CUDA version), and tell the terminal which
recipe is running. After: how long it took.

Finding the GPU must not initialise CUDA in the build's process: that
"poisons fork", and a recipe that forks worker processes could then not give
them the GPUs. ``torch.cuda.is_available()`` and ``get_device_name()`` do
initialise it, so the GPU is looked up through NVML (the NVIDIA driver's
management library), unless an earlier recipe has initialised CUDA already.
"""

import ctypes
import datetime
import os
import platform
import sys
import time
import warnings
from pathlib import Path

from sphinx_gallery import gen_rst

import chinese_font

LANG = "en"
RECIPE_STARTED = {}
RUNNING_TIME = {}  # the running-time paragraph of this language, before a record is appended

RECORD = {
    "en": "**Executed on** {date} with torch {torch} and torchvision {torchvision}, on {device}. "
          "The numbers and plots on this page come from that run; another CPU capability, "
          "number of threads or device rounds differently and can print other numbers.",
    "zh": "**运行于** {date}，使用 torch {torch} 和 torchvision {torchvision}，设备：{device}。"
          "本页的数字和图都来自这次运行；换一种 CPU 指令集级别、线程数或设备，舍入方式不同，打印的数字也可能不同。",
}
CPU_DEVICE = {
    "en": "{name} (CPU, torch CPU capability {capability}{isa}, {threads} thread{s})",
    "zh": "{name}（CPU，torch 的 CPU 指令集级别 {capability}{isa}，{threads} 个线程）",
}
ONEDNN_LIMIT = {"en": ", oneDNN limited to {}", "zh": "，oneDNN 限于 {}"}
GPU_DEVICE = {"en": "{name} (GPU, CUDA {cuda})", "zh": "{name}（GPU，CUDA {cuda}）"}


def cpu_model():
    """The processor's marketing name, as /proc/cpuinfo or the platform reports it."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def nvml_gpu_name(index):
    """The name of GPU ``index`` according to NVML, or None: never initialises CUDA."""
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return None
    handle, name = ctypes.c_void_p(), ctypes.create_string_buffer(96)
    if (nvml.nvmlInit_v2() != 0 or nvml.nvmlDeviceGetHandleByIndex_v2(index, ctypes.byref(handle)) != 0
            or nvml.nvmlDeviceGetName(handle, name, len(name)) != 0):
        return None
    return name.value.decode()


def gpu_name():
    """The name of the GPU the recipes will use, or None where there is none; fork stays usable."""
    import torch

    if torch.cuda.is_initialized():  # an earlier recipe did it: asking costs nothing more
        return torch.cuda.get_device_name()
    with warnings.catch_warnings():  # "Can't initialize NVML" on a machine without a driver
        warnings.simplefilter("ignore")
        count = torch.cuda._device_count_nvml()  # honours CUDA_VISIBLE_DEVICES; -1 without NVML
    if count <= 0:
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip()
    return nvml_gpu_name(int(visible) if visible.isdigit() else 0)


def device_description():
    import torch

    name = gpu_name()
    if name is not None:
        return GPU_DEVICE[LANG].format(name=name, cuda=torch.version.cuda)
    threads = torch.get_num_threads()
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA")
    return CPU_DEVICE[LANG].format(
        name=cpu_model(), capability=torch.backends.cpu.get_cpu_capability(),
        isa=ONEDNN_LIMIT[LANG].format(isa) if isa else "", threads=threads, s="" if threads == 1 else "s")


def execution_record():
    """A reST paragraph saying when, with which versions and on which device a recipe ran."""
    import torch
    import torchvision

    line = RECORD[LANG].format(date=datetime.date.today().isoformat(), torch=torch.__version__,
                               torchvision=torchvision.__version__, device=device_description())
    return f"\n.. rst-class:: sphx-glr-executed-on\n\n   {line}\n\n"


def prepare_recipe_run(gallery_conf, fname, when):
    if fname is None:
        return
    name = f"{LANG}/{Path(fname).name}"
    if when == "before":
        chinese_font.use_fonts_of(LANG)
        # The page's footer is written right after this run (and kept as long as
        # the recipe is unchanged), so the record describes this very run.
        running_time = RUNNING_TIME.setdefault(LANG, gen_rst.TIMING_CONTENT)
        gen_rst.TIMING_CONTENT = running_time + execution_record().replace("{", "{{").replace("}", "}}")
        RECIPE_STARTED[name] = time.perf_counter()
        print(f"[{name}] executing", file=sys.stderr, flush=True)
    else:
        seconds = time.perf_counter() - RECIPE_STARTED.pop(name)
        print(f"[{name}] done in {seconds:.1f} s", file=sys.stderr, flush=True)


def read_language(app, config):
    global LANG
    LANG = "zh" if config.language.startswith("zh") else "en"


def setup(app):
    app.connect("config-inited", read_language)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
