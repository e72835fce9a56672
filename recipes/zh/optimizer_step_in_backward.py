"""
.. _optimizer_step_in_backward:

在反向传播中执行优化器更新步：梯度要占多少内存
==============================================

一个训练步在内存中存放四类张量：参数、参数的梯度、优化器状态，以及 autograd
为反向传播保存的激活值。梯度累积和激活检查点（activation checkpointing）缩减的
是激活值。PyTorch 还有第三种办法，针对的是梯度：在反向传播之中执行优化器的
更新步，逐个参数进行，某个参数的梯度一算好就更新它，并立刻释放这个梯度
（``Tensor.register_post_accumulate_grad_hook``）。这样，任何时刻都不会同时存有
全部梯度，``zero_grad()`` 也从训练循环中消失了。

你将学到：

* 如何在 CPU 上按类别测量一个训练步的内存，以及它的峰值从何而来；
* 同一个训练步的四种写法，放在一起实测：整批、``k`` 个微批量的梯度累积、激活
  检查点，以及在反向传播中执行优化器更新步；它们的峰值、耗时，以及它们的更新
  是否与普通训练循环的相同（分别用带动量的 SGD 和 AdamW）；
* ``zero_grad()`` 去了哪里，以及读者沿用的 ``zero_grad()``、``optimizer.step()``
  或梯度裁剪在这种循环里会做什么；
* 在反向传播中执行更新步会在哪些地方出问题：梯度累积、全局范数裁剪和学习率
  调度，每一处都实测，能修正的给出修正；
* 用一张表说明该选哪种办法。
"""

# %%
# 准备工作
# --------
#
# 模型是一个很宽的多层感知机：若干个由 ``Linear``、``LayerNorm`` 和 ``GELU``
# 组成的块，最后是一个输出 10 个类别的线性层，在随机数据上用交叉熵训练。它的
# 参数占 16 MiB（见下面的输出），这样，梯度和优化器状态相对于激活值的分量就和
# 真实模型里差不多；而在 CPU 上，每一步仍然远不到一秒。
#
# 下面每种写法都从同一组初始权重开始，看到的批量也相同。在 GPU 上运行时，起点
# 的数字也一样（它们是在 CPU 上生成的），但结果的最后几位会不同。

import copy
import os
import time
import warnings
import weakref

# 图中的标签是中文。如果显示成方框，说明 matplotlib 没找到中文字体：请安装一种（如 Noto Sans CJK SC），
# 再在画图前加上 plt.rcParams["font.family"] = ["DejaVu Sans", "Noto Sans CJK SC"]。
import matplotlib.pyplot as plt
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.checkpoint import checkpoint

SMOKE_TEST = os.environ.get("ZERO_GRAD_SMOKE") == "1"  # 测试用：更窄的模型，只计时一步

device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
print(f"Using device: {device}")
torch.manual_seed(0)  # 每次运行的数据和权重都相同

WIDTH = 128 if SMOKE_TEST else 512
BLOCKS = 16
CLASSES = 10
K = 4  # 每次更新的微批量个数
SMALL_BATCH, LARGE_BATCH = WIDTH * 3 // 32, WIDTH * 3 // 4  # 冒烟模式下激活值与参数之比不变
TIMED_STEPS = 1 if SMOKE_TEST else 3
MiB = 2**20


class WideMLP(nn.Module):
    def __init__(self, checkpointed=False):
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.LayerNorm(WIDTH), nn.GELU()) for _ in range(BLOCKS)
        )
        self.head = nn.Linear(WIDTH, CLASSES)
        self.checkpointed = checkpointed

    def forward(self, x):
        for block in self.blocks:
            # 检查点只保留每个块的输入，其余的在反向传播时重新计算。
            x = checkpoint(block, x, use_reentrant=False) if self.checkpointed else block(x)
        return self.head(x)


initial_model = WideMLP()  # 每种写法都从这组权重的副本开始


def make_model(checkpointed=False):
    model = copy.deepcopy(initial_model).to(device)
    model.checkpointed = checkpointed
    return model


batches = [(torch.randn(LARGE_BATCH, WIDTH).to(device), torch.randint(CLASSES, (LARGE_BATCH,)).to(device))
           for _ in range(2 + TIMED_STEPS)]
parameter_bytes = sum(p.nbytes for p in initial_model.parameters())
print(f"{BLOCKS} blocks of width {WIDTH}: {len(list(initial_model.parameters()))} parameter tensors, "
      f"{parameter_bytes / MiB:.2f} MiB of parameters")

# %%
# 测量一个训练步的内存
# --------------------
#
# 在 GPU 上，``torch.cuda.max_memory_allocated()`` 给出 PyTorch 的分配器分配出去
# 的内存的峰值；页面在 GPU 上运行时会把它打印出来。在 CPU 上，PyTorch 没有这样的
# 计数器。``torch.profiler`` 加上 ``profile_memory=True`` 能记录 CPU 分配器的
# 事件，但分不出哪些是梯度、哪些是激活值，而且它自己还会打印警告。
#
# 所以 ``LiveTensorMeter`` 改为清点张量。它是一个 ``TorchDispatchMode``
# （来自 ``torch.utils._python_dispatch``；PyTorch 文档中讲扩展 PyTorch 的说明
# 介绍了这类模式）：
# 每个 ATen 运算（无论在前向传播、反向传播还是优化器中）都要经过它；它记下每个
# 运算返回的张量的存储，直到使用这块存储的最后一个张量被释放为止。每个运算之后
# 把这些存储加起来，就是正在使用的内存；其最大值就是峰值，与
# ``max_memory_allocated()`` 相对应。它看不到的，是核函数在一个运算内部分配又
# 释放的临时内存。在这一步之前就已存在的张量（参数、优化器状态、批量数据）由
# 我们手动登记。
#
# 每出现一个新的峰值，计量器就把存活的存储分门别类：参数、参数的 ``.grad``、
# 优化器状态、为反向传播保存的激活值（通过
# ``torch.autograd.graph.saved_tensors_hooks`` 识别，autograd 保存的每个张量
# 它都能看到），以及其余部分：批量数据、反向传播时在层与层之间传递的梯度，以及
# 临时张量。


class LiveTensorMeter(TorchDispatchMode):
    """一个训练步中存活张量存储的峰值字节数，以及峰值时刻各类别的字节数。"""

    def __init__(self, categorize):
        super().__init__()
        self.categorize = categorize  # 存储指针 -> {类别: 字节数}
        self.references = {}  # 存储指针 -> 使用它的存活张量个数
        self.sizes = {}  # 存储指针 -> 字节数
        self.saved_for_backward = set()
        self.current = self.peak = 0
        self.at_peak = {}

    def track(self, tensor):
        storage = tensor.untyped_storage()
        pointer = storage.data_ptr()
        if storage.nbytes() == 0:
            return
        if pointer not in self.references:
            self.references[pointer] = 0
            self.sizes[pointer] = storage.nbytes()
            self.current += storage.nbytes()
        self.references[pointer] += 1
        weakref.finalize(tensor, self.release, pointer)  # 张量被释放时调用

    def release(self, pointer):
        self.references[pointer] -= 1
        if self.references[pointer] == 0:
            del self.references[pointer]
            self.current -= self.sizes.pop(pointer)
            self.saved_for_backward.discard(pointer)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        for value in result if isinstance(result, (tuple, list)) else [result]:
            if isinstance(value, torch.Tensor):
                self.track(value)
        if self.current > self.peak:
            self.peak = self.current
            self.at_peak = self.categorize(self.sizes, self.saved_for_backward)
        return result

    def pack(self, tensor):  # saved_tensors_hooks 的 pack 钩子：记下这个张量，原样保留
        self.saved_for_backward.add(tensor.untyped_storage().data_ptr())
        return tensor


CATEGORIES = ["parameters", "gradients", "optimizer state", "saved for backward", "other"]


def pointers(tensors):
    return {t.untyped_storage().data_ptr() for t in tensors}


def state_tensors(optimizers):
    return [value for optimizer in optimizers for state in optimizer.state.values()
            for value in state.values() if isinstance(value, torch.Tensor)]


def categorizer(model, optimizers):
    """返回一个函数：按模型当时的梯度，把存活的存储归入 CATEGORIES 中的类别。"""
    parameters = pointers(model.parameters())
    state = pointers(state_tensors(optimizers))  # 一步之中原地更新：存储不变

    def categorize(sizes, saved_for_backward):
        gradients = pointers(p.grad for p in model.parameters() if p.grad is not None)
        totals = dict.fromkeys(CATEGORIES, 0)
        for pointer, size in sizes.items():
            if pointer in parameters:
                totals["parameters"] += size
            elif pointer in gradients:
                totals["gradients"] += size
            elif pointer in state:
                totals["optimizer state"] += size
            elif pointer in saved_for_backward:
                totals["saved for backward"] += size
            else:
                totals["other"] += size
        return totals

    return categorize


def measure_step(train_step, model, optimizers, inputs, labels):
    """在计量器下运行一个训练步；返回峰值时刻各类别的字节数，以及 CUDA 分配器的峰值。"""
    meter = LiveTensorMeter(categorizer(model, optimizers))
    for tensor in [*model.parameters(), *(p.grad for p in model.parameters() if p.grad is not None),
                   *state_tensors(optimizers), inputs, labels]:
        meter.track(tensor)  # 不能用列表留住它们：这一步要释放旧的梯度
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    with meter, torch.autograd.graph.saved_tensors_hooks(meter.pack, lambda tensor: tensor):
        train_step(model, optimizers, inputs, labels)
    cuda_peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else None
    return meter.at_peak, cuda_peak


# %%
# 同一个训练步的四种写法
# ----------------------
#
# 每种写法都是一个函数，在一个批量上完成一次更新：
#
# * **整批**\ （full batch）：标准的训练循环，``zero_grad()``、前向传播、反向
#   传播、``step()``；
# * **梯度累积**\ （accumulation）：把批量切成 ``k = 4`` 个微批量，每个微批量
#   的损失除以 ``k``\ （《:ref:`gradient_accumulation`》），最后调用一次
#   ``step()``；
# * **激活检查点**\ （checkpointing）：整批数据通过一个模型，它的每个块都在
#   ``torch.utils.checkpoint.checkpoint(..., use_reentrant=False)`` 下运行；
# * **在反向传播中执行更新步**\ （step in backward）：每个参数一个优化器，由该
#   参数的梯度累积后钩子（post-accumulate-grad hook）调用它执行更新步，随后清零
#   梯度。训练循环
#   本身只剩前向传播和 ``backward()``。
#
# 最后一种由 ``attach_step_in_backward`` 设置。钩子在 ``backward()`` 期间运行，
# 就在这个参数的梯度加到它的 ``.grad`` 上之后；在钩子里调用该参数自己的优化器
# 的 ``zero_grad()``，会把 ``.grad`` 重新设为 ``None``，从而释放这个梯度。


def full_batch_step(model, optimizers, inputs, labels):
    (optimizer,) = optimizers
    optimizer.zero_grad()
    F.cross_entropy(model(inputs), labels).backward()
    optimizer.step()


def accumulation_step(model, optimizers, inputs, labels):
    (optimizer,) = optimizers
    optimizer.zero_grad()
    for micro_inputs, micro_labels in zip(inputs.chunk(K), labels.chunk(K)):
        (F.cross_entropy(model(micro_inputs), micro_labels) / K).backward()
    optimizer.step()


def step_in_backward_step(model, optimizers, inputs, labels):
    F.cross_entropy(model(inputs), labels).backward()  # 每个参数都在这次调用中完成更新


def attach_step_in_backward(model, make_optimizer):
    """每个参数一个优化器，由该参数的梯度累积后钩子执行更新步并清零梯度。"""
    optimizers = {parameter: make_optimizer([parameter]) for parameter in model.parameters()}

    def step_and_clear(parameter):
        optimizers[parameter].step()
        optimizers[parameter].zero_grad()  # 清零由钩子负责：.grad 重新变回 None

    for parameter in model.parameters():
        parameter.register_post_accumulate_grad_hook(step_and_clear)
    return list(optimizers.values())


VARIANTS = {  # 名称：（训练步函数，是否用检查点，是否在反向传播中执行更新步）
    "full batch": (full_batch_step, False, False),
    "accumulation": (accumulation_step, False, False),
    "checkpointing": (full_batch_step, True, False),
    "step in backward": (step_in_backward_step, False, True),
}


def set_up(variant, make_optimizer):
    train_step, checkpointed, in_backward = VARIANTS[variant]
    model = make_model(checkpointed)
    optimizers = attach_step_in_backward(model, make_optimizer) if in_backward else [make_optimizer(model.parameters())]
    return train_step, model, optimizers


def snapshot(model):
    """按顺序复制每个参数。"""
    return [p.detach().clone() for p in model.parameters()]


def synchronize():
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_variant(variant, make_optimizer, measured=True):
    """先训练两步（测量第二步的内存），再训练计时的几步，都用小批量。返回观察到的结果。"""
    train_step, model, optimizers = set_up(variant, make_optimizer)
    inputs, labels = batches[0]
    train_step(model, optimizers, inputs[:SMALL_BATCH], labels[:SMALL_BATCH])  # 创建优化器状态
    inputs, labels = batches[1]
    if measured:
        memory, cuda_peak = measure_step(train_step, model, optimizers, inputs[:SMALL_BATCH], labels[:SMALL_BATCH])
    else:
        train_step(model, optimizers, inputs[:SMALL_BATCH], labels[:SMALL_BATCH])
        memory = cuda_peak = None
    run = {"memory": memory, "cuda peak": cuda_peak, "after two steps": snapshot(model)}
    if measured:
        run["trained"] = (train_step, model, optimizers)  # 之后在大批量上再测量一次
        seconds = []
        for inputs, labels in batches[2:]:
            synchronize()
            start = time.perf_counter()
            train_step(model, optimizers, inputs[:SMALL_BATCH], labels[:SMALL_BATCH])
            synchronize()
            seconds.append(time.perf_counter() - start)
        run["seconds"] = min(seconds)  # 受机器上其他任务干扰最少的一次
    return run


def measure_large_batch(run):
    """让一种写法在大批量上再训练一步，并测量内存。"""
    train_step, model, optimizers = run.pop("trained")
    inputs, labels = batches[1]
    memory, cuda_peak = measure_step(train_step, model, optimizers, inputs, labels)
    return {"memory": memory, "cuda peak": cuda_peak}


def adamw(parameters):
    return optim.AdamW(parameters, lr=1e-3, weight_decay=0.01)


def sgd_with_momentum(parameters):
    return optim.SGD(parameters, lr=0.01, momentum=0.9)


# %%
# 一个训练步的内存花在哪里
# ------------------------
#
# 四种写法都用 AdamW 训练，它为每个参数保存两个状态张量。先用一个小批量，这时
# 为反向传播保存的激活值比梯度占的内存少；再用一个更大的批量，这时激活值占得
# 更多。表中给出每种写法的峰值，按上面的类别拆分（取峰值那一刻），以及小批量
# 下每一步的耗时（计时各步中最快的一次）。大批量是同一批运行再多训练一步。


def print_table(title, runs, timed):
    """每种写法一行：峰值时刻各类别的 MiB 数、峰值，计时时还有每一步的耗时。"""
    print(f"{title} MiB at the peak")
    headings = [category.rsplit(" ", 1) if " " in category else ["", category] for category in CATEGORIES]
    for line in range(2):
        print((f"{'':17}" + "".join(f"{heading[line]:>11}" for heading in headings)
               + f"{['', 'peak'][line]:>9}" + (f"{['step', 'time (ms)'][line]:>11}" if timed else "")).rstrip())
    for variant, run in runs.items():
        peak = sum(run["memory"].values())
        print(f"{variant:17}" + "".join(f"{run['memory'][category] / MiB:11.2f}" for category in CATEGORIES)
              + f"{peak / MiB:9.2f}" + (f"{run['seconds'] * 1e3:11.0f}" if timed else ""))
        if run["cuda peak"] is not None:
            print(f"{'':17}torch.cuda.max_memory_allocated(): {run['cuda peak'] / MiB:.2f} MiB")


small_batch_runs = {variant: run_variant(variant, adamw) for variant in VARIANTS}
print_table(f"AdamW, batch {SMALL_BATCH} (micro-batches of {SMALL_BATCH // K}),", small_batch_runs, timed=True)
large_batch_runs = {variant: measure_large_batch(run) for variant, run in small_batch_runs.items()}
print_table(f"AdamW, batch {LARGE_BATCH} (micro-batches of {LARGE_BATCH // K}),", large_batch_runs, timed=False)

# %%
# 下图画的是同样的峰值。

fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
colors = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8c8c8c"]
for ax, batch_size, runs in [(axes[0], SMALL_BATCH, small_batch_runs), (axes[1], LARGE_BATCH, large_batch_runs)]:
    bottoms = [0.0] * len(runs)
    for category, color in zip(CATEGORIES, colors):
        heights = [run["memory"][category] / MiB for run in runs.values()]
        ax.bar(range(len(runs)), heights, bottom=bottoms, color=color)
        bottoms = [b + h for b, h in zip(bottoms, heights)]
    ax.set_xticks(range(len(runs)), ["整批", "梯度累积", "激活检查点", "反向传播中\n执行更新步"], fontsize=9)
    ax.set_title(f"批量大小 {batch_size}")
axes[0].set_ylabel("一个训练步峰值时刻的内存（MiB）")
axes[1].legend(["参数", "梯度", "优化器状态", "为反向传播保存的激活值", "其他"],
               loc="upper left", bbox_to_anchor=(1.02, 1))
fig.suptitle("一个 AdamW 训练步的内存在峰值时刻花在哪里")
fig.tight_layout()
plt.show()

# %%
# 参数和优化器状态在每种写法中都一样：AdamW 为每个参数保存的两个状态张量，占
# 两倍于参数的内存，与训练循环怎么写无关。不同的是峰值时刻除此之外还存着什么。
#
# * **整批。**\ ``zero_grad()`` 在前向传播之前把每个 ``.grad`` 设为
#   ``None``，所以梯度只在反向传播期间逐层出现，与此同时，该层保存的激活值被
#   释放。在小批量下，一层的梯度比它保存的激活值大，所以内存在整个反向传播中
#   不断上升，到结束时达到峰值，此时所有梯度都在。在大批量下正好相反：峰值在
#   反向传播开始时，此时所有激活值都在。
# * **梯度累积。** 每个微批量只保存四分之一的激活值，但从第二个微批量起，所有
#   梯度在整个前向传播和反向传播期间都存在。只有在激活值占主导时它才能降低峰值；
#   在小批量下，它不会低于整批。
# * **激活检查点。** 前向传播时只保留每个块的输入（算在「其他」里：这些输入由
#   ``checkpoint`` 自己持有，不经过 ``saved_tensors_hooks``），反向传播时每次
#   重新计算一个块。它对大批量有帮助；峰值是梯度时，它改变不了多少。
# * **在反向传播中执行更新步。** 任何时刻最多只有一个梯度存在，所以梯度这一栏
#   几乎为零。它的峰值在反向传播开始时：参数、优化器状态和全部保存的激活值。
#   梯度占主导时，它是四种写法中最低的；激活值占主导时，它毫无帮助。
#
# 耗时说明了每种办法的代价：请在你自己的硬件上比较上表中的数字。激活检查点要把
# 每个块的前向传播算两遍。在 CPU 上，``torch.optim`` 无论如何都是逐个参数更新；
# 在 GPU 上，一个管理全部参数的优化器使用 ``foreach`` 实现（一次核函数启动处理
# 多个参数），而每个参数一个优化器时，核函数只能逐个参数地启动。
#
# 更新相同吗？
# ------------
#
# 只有模型学到的东西相同，省下的内存才有意义。每种写法训练两步后的参数都与整批
# 训练循环的参数比较：用 ``torch.equal`` 比较是否逐位相等，并计算「更新的相对
# 误差」，即两组参数之差的范数除以整批更新的范数（参数离初始权重走了多远）。
# 相对误差低于 ``1e-2`` 就算接近。SGD 的差别远小于这个值，只是 ``float32`` 的
# 舍入误差；AdamW 则需要这个余量：它把每个元素的步长除以该元素梯度平方的平均值
# 的平方根，所以在梯度元素接近零的地方，一点舍入差别就能让这个元素的步长改变
# 多达学习率的两倍。后面那些错误写法的差别要大得多。AdamW 的结果来自上面的小批量
# 运行；带动量的 SGD 把同样的两步再跑一遍（动量从第二步起才起作用）。


initial_parameters = snapshot(make_model())


def norm(tensors):
    return sum(t.square().sum() for t in tensors).sqrt().item()


def relative_error(parameters, reference):
    """两次更新（都从初始权重算起）之间的距离，占参考更新的比例。"""
    difference = norm([p - r for p, r in zip(parameters, reference)])
    return difference / norm([r - i for r, i in zip(reference, initial_parameters)])


TOLERANCE = 1e-2


def compare(description, parameters, reference):
    """打印两组参数是否逐位相等，以及两次更新相差多远。"""
    equal = all(torch.equal(p, r) for p, r in zip(parameters, reference))
    error = relative_error(parameters, reference)
    print(f"{description}: bit for bit {equal}, relative error of the update {error:.1e}, close {error < TOLERANCE}")


sgd_runs = {variant: run_variant(variant, sgd_with_momentum, measured=False) for variant in VARIANTS}
for optimizer_name, runs in [("SGD with momentum", sgd_runs), ("AdamW", small_batch_runs)]:
    for variant in ["accumulation", "checkpointing", "step in backward"]:
        compare(f"{optimizer_name}, {variant} vs full batch",
                runs[variant]["after two steps"], runs["full batch"]["after two steps"])

# %%
# 在构建本页的 CPU 上，在反向传播中执行更新步得到的参数与普通训练循环的逐位
# 相等：每个参数的优化器对同样的梯度做同样的运算，只是做得早一些。激活检查点
# 用同样的核函数重算同样的前向传播，在这台 CPU 上也完全相同。梯度累积把四个
# 微批量的梯度加起来，而不是在一次矩阵乘法中算出梯度，所以舍入不同：参数接近，
# 但不相等。在 GPU 上，核函数可能自行选择求和顺序，一个管理全部参数的优化器与
# 每个参数一个优化器用的核函数也不同，因此要看相对误差，而不是要求逐位相等。
#
# zero_grad 去了哪里
# ------------------
#
# 在标准的训练循环中，需要 ``zero_grad()`` 是因为 ``.grad`` 会在多次
# ``backward()`` 之间累积（《:ref:`zero_grad_pitfalls`》）。在融合的训练循环中，
# 更新步和清零都由钩子负责：``backward()`` 返回时，每个 ``.grad`` 已经是
# ``None``\ 。为标准循环写的代码在这里期望拿到梯度，得到的却是 ``None``\ 。
# 下面，一个从标准循环沿用下来、管理整个模型的优化器调用 ``zero_grad()`` 和
# ``step()``，再用 ``clip_grad_norm_`` 计算梯度范数，这些都发生在融合的
# ``backward()`` 之后。

train_step, model, optimizers = set_up("step in backward", adamw)
inputs, labels = batches[0]
train_step(model, optimizers, inputs[:SMALL_BATCH], labels[:SMALL_BATCH])
parameters = list(model.parameters())
print(f"parameters with a .grad after backward: {sum(p.grad is not None for p in parameters)} of {len(parameters)}")
leftover_optimizer = adamw(model.parameters())
leftover_optimizer.zero_grad()  # 没有可清零的
before = snapshot(model)
leftover_optimizer.step()  # 跳过所有 .grad 为 None 的参数
print(f"leftover optimizer.step() changed the parameters: {not all(map(torch.equal, before, snapshot(model)))}")
print(f"clip_grad_norm_ after backward returns: {nn.utils.clip_grad_norm_(model.parameters(), 1.0).item()}")

# %%
# ``zero_grad()`` 和 ``step()`` 悄无声息地什么也没做，而训练循环要记录或据以
# 裁剪的梯度范数是 ``0``\ ：凡是在 ``backward()`` 之后读取 ``.grad`` 的操作，
# 都必须移进钩子里。
#
# 保证这种循环正确的，正是钩子里的清零。一个执行了更新步却忘了 ``zero_grad()``
# 的钩子，会重犯不清零的训练循环的错误：下一次 ``backward()`` 把新梯度加到上一次
# 的梯度上，所以从第二步起更新就错了；而且所有梯度都留在内存里，省下的内存也
# 没了。下面把它训练两步，与整批训练循环的两步比较：


def attach_step_in_backward_without_clearing(model, make_optimizer):
    optimizers = {parameter: make_optimizer([parameter]) for parameter in model.parameters()}

    def step_only(parameter):
        optimizers[parameter].step()  # 错误：.grad 从不清零

    for parameter in model.parameters():
        parameter.register_post_accumulate_grad_hook(step_only)
    return list(optimizers.values())


model = make_model()
optimizers = attach_step_in_backward_without_clearing(model, adamw)
for inputs, labels in batches[:2]:
    step_in_backward_step(model, optimizers, inputs[:SMALL_BATCH], labels[:SMALL_BATCH])
kept = sum(p.grad.nbytes for p in model.parameters() if p.grad is not None)
print(f"hook without zero_grad: {kept / MiB:.2f} MiB of gradients kept after backward")
compare("hook without zero_grad vs full batch", snapshot(model), small_batch_runs["full batch"]["after two steps"])

# %%
# 出问题的地方：梯度累积
# ----------------------
#
# 梯度累积后钩子在每一次 ``backward()`` 之后都会触发。因此，用前面几节的钩子去
# 累积 ``k`` 个微批量的训练循环，每次更新都会让每个参数执行 ``k`` 个更新步，每次
# 用的是一个微批量的梯度除以 ``k``，根本没有累积。不会报任何错：
# 唯一的痕迹是优化器的步数。
#
# 修正方法：钩子只在窗口的最后一个微批量上执行更新步，其余时候把梯度留在
# ``.grad`` 中，让它像标准循环里那样累积。``StepOnLastMicroBatch`` 持有每个参数
# 的优化器，以及一个由训练循环在最后一次 ``backward()`` 之前设置的标志。两种
# 写法都做两次更新，与梯度累积循环的两次更新比较；修正后写法的第二次更新用
# 计量器测量内存。


class StepOnLastMicroBatch:
    """每个参数一个优化器；钩子只在窗口的最后一个微批量上执行更新步并清零梯度。"""

    def __init__(self, model, make_optimizer):
        self.optimizers = {parameter: make_optimizer([parameter]) for parameter in model.parameters()}
        self.last_micro_batch = False
        for parameter in model.parameters():
            parameter.register_post_accumulate_grad_hook(self.hook)

    def hook(self, parameter):
        if self.last_micro_batch:  # 否则 .grad 继续累积
            self.optimizers[parameter].step()
            self.optimizers[parameter].zero_grad()


def accumulate_with_step_in_backward(model, window, inputs, labels):
    """k 个微批量；钩子每次都执行更新步时 ``window`` 为 None，否则为一个 StepOnLastMicroBatch。"""
    for number, (micro_inputs, micro_labels) in enumerate(zip(inputs.chunk(K), labels.chunk(K)), start=1):
        if window is not None:
            window.last_micro_batch = number == K
        (F.cross_entropy(model(micro_inputs), micro_labels) / K).backward()


def steps_taken(optimizer, parameter):
    return int(optimizer.state[parameter]["step"])


model = make_model()
optimizers = attach_step_in_backward(model, adamw)
for inputs, labels in batches[:2]:
    accumulate_with_step_in_backward(model, None, inputs[:SMALL_BATCH], labels[:SMALL_BATCH])
print(f"hook steps every micro-batch: {steps_taken(optimizers[0], next(model.parameters()))} optimizer steps "
      f"in 2 updates")
accumulation_reference = small_batch_runs["accumulation"]["after two steps"]
compare("hook steps every micro-batch vs accumulation", snapshot(model), accumulation_reference)

model = make_model()
window = StepOnLastMicroBatch(model, adamw)
optimizers = list(window.optimizers.values())


def accumulate_on_last_micro_batch(model, optimizers, inputs, labels):
    accumulate_with_step_in_backward(model, window, inputs, labels)


accumulate_on_last_micro_batch(model, optimizers, batches[0][0][:SMALL_BATCH], batches[0][1][:SMALL_BATCH])
fixed_memory, fixed_cuda_peak = measure_step(accumulate_on_last_micro_batch, model, optimizers,
                                             batches[1][0][:SMALL_BATCH], batches[1][1][:SMALL_BATCH])
print(f"step on the last micro-batch: {steps_taken(optimizers[0], next(model.parameters()))} optimizer steps "
      f"in 2 updates")
compare("step on the last micro-batch vs accumulation", snapshot(model), accumulation_reference)
print_table(f"AdamW, batch {SMALL_BATCH} in {K} micro-batches,", {
    "accumulation": small_batch_runs["accumulation"],
    "step on last": {"memory": fixed_memory, "cuda peak": fixed_cuda_peak},
}, timed=False)

# %%
# 每个微批量都执行更新步，步数就成了 ``k`` 倍。AdamW 的更新步与梯度的尺度无关
# （``eps`` 的影响除外），所以每一步都是基于一个微批量梯度的完整一步：上面打印
# 的相对误差与更新本身是同一个量级。修正后的写法得到的参数与梯度累积循环的相同。
#
# 不过，省下的内存也就没了：在前 ``k - 1`` 个微批量期间，所有梯度都必须留在
# ``.grad`` 中累积，所以它的峰值包含（几乎）全部梯度，如表中所示，并不比梯度
# 累积循环的峰值低。只有每个窗口的最后一个微批量会提前释放梯度。要累积，就得有
# 东西在微批量之间存放梯度之和，而这个和与参数一样大。
#
# 出问题的地方：全局范数裁剪
# --------------------------
#
# ``clip_grad_norm_(model.parameters(), max_norm)`` 把每个梯度乘以同一个系数，
# 这个系数由全部梯度合在一起的范数算出。在融合的训练循环中，没有哪个时刻同时
# 存有全部梯度：第一个钩子运行时只有一个梯度，而每个钩子都在下一个钩子运行之前
# 清零自己的梯度。下面的钩子每次被调用时，都数一数有多少个参数带着 ``.grad``\ 。

model = make_model()
optimizers = {parameter: adamw([parameter]) for parameter in model.parameters()}
gradients_present = []


def count_then_step(parameter):
    gradients_present.append(sum(p.grad is not None for p in model.parameters()))
    optimizers[parameter].step()
    optimizers[parameter].zero_grad()


for parameter in model.parameters():
    parameter.register_post_accumulate_grad_hook(count_then_step)
step_in_backward_step(model, list(optimizers.values()), batches[0][0][:SMALL_BATCH], batches[0][1][:SMALL_BATCH])
print(f"gradients alive when the first hook runs: {gradients_present[0]} of {len(parameters)}; "
      f"most at any hook: {max(gradients_present)}")

# %%
# 剩下的办法是在每个参数的钩子里，按它自己的范数裁剪它的梯度。这是另一条规则：
# 每个梯度乘以各自的系数，所以更新的方向变了，梯度小的参数则根本不被缩放。下面
# 把标准循环中做全局范数裁剪的一步，与在钩子中逐参数裁剪的一步放在一起比较，
# ``max_norm`` 相同，优化器用 SGD（它的更新与梯度成正比，差别会原样显现）。

MAX_NORM = 1.0
inputs, labels = batches[0][0][:SMALL_BATCH], batches[0][1][:SMALL_BATCH]

model = make_model()
optimizer = optim.SGD(model.parameters(), lr=0.01)
optimizer.zero_grad()
F.cross_entropy(model(inputs), labels).backward()
global_norm = nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)
optimizer.step()
globally_clipped = snapshot(model)
print(f"gradient norm {global_norm.item():.2f}, max_norm {MAX_NORM}")

model = make_model()
optimizers = {parameter: optim.SGD([parameter], lr=0.01) for parameter in model.parameters()}


def clip_own_gradient_then_step(parameter):
    nn.utils.clip_grad_norm_([parameter], MAX_NORM)  # 钩子能算的只有这个范数
    optimizers[parameter].step()
    optimizers[parameter].zero_grad()


for parameter in model.parameters():
    parameter.register_post_accumulate_grad_hook(clip_own_gradient_then_step)
step_in_backward_step(model, list(optimizers.values()), inputs, labels)
compare("per-parameter clipping vs global-norm clipping", snapshot(model), globally_clipped)

# %%
# 逐参数裁剪是另一条训练规则，而不是全局裁剪的近似：两者的更新相差上面打印的
# 相对误差。这里每个参数的梯度范数都可以达到 ``max_norm``，合在一起允许的范数
# 比全局裁剪允许的大得多。如果需要全局范数，无论是用来裁剪还是只是记录下来，
# 都得用标准的训练循环。
#
# 出问题的地方：学习率调度
# ------------------------
#
# 一个调度器只改变一个优化器的学习率。每个参数一个优化器时，每个优化器都需要
# 自己的调度器，并在每次更新后调用它的 ``step()``。一种诱人的捷径是另外保留一个
# 管理整个模型的优化器，专门交给调度器（以及保存检查点时使用）；但真正执行
# 更新步的是各个参数自己的优化器，它们的学习率从不改变。下面两种写法各做三次
# 更新，``StepLR`` 在每次更新后把学习率减半；调度与数据无关，所以这些更新只用
# 大小为 4 的批量。


def learning_rates_after_training(one_scheduler_per_optimizer):
    model = make_model()
    optimizers = attach_step_in_backward(model, adamw)
    if one_scheduler_per_optimizer:
        schedulers = [optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5) for optimizer in optimizers]
    else:
        model_wide_optimizer = adamw(model.parameters())  # 错误：它从不执行更新步
        schedulers = [optim.lr_scheduler.StepLR(model_wide_optimizer, step_size=1, gamma=0.5)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for inputs, labels in batches[:3]:
            step_in_backward_step(model, optimizers, inputs[:4], labels[:4])
            for scheduler in schedulers:
                scheduler.step()
    rates = sorted({optimizer.param_groups[0]["lr"] for optimizer in optimizers})
    return rates, schedulers[0].get_last_lr()[0], [str(warning.message).split(". ")[0] for warning in caught]


for description, per_optimizer in [("one scheduler per optimizer", True),
                                   ("one scheduler on a model-wide optimizer", False)]:
    rates, scheduled, warned = learning_rates_after_training(per_optimizer)
    print(f"{description}: scheduled lr {scheduled:g}, lr of the optimizers that step: {rates}")
    for message in warned:
        print(f"  PyTorch warned: {message}.")

# %%
# 每个优化器一个调度器时，每个参数都按调度变化。用管理整个模型的优化器时，调度
# 作用在一个从不执行更新步的优化器上（PyTorch 的警告只出现一次，也只说了这一
# 点），参数则一直按初始学习率训练。
#
# 该用哪一种
# ----------
#
# .. list-table::
#    :header-rows: 1
#
#    * - 办法
#      - 峰值时刻的内存
#      - 耗时
#      - 不能与之配合的
#    * - 整批
#      - 全部梯度或全部激活值，取决于哪个占主导
#      - 作为基准
#      - 放不进内存的批量
#    * - 梯度累积
#      - 一个微批量的激活值，外加始终存在的全部梯度
#      - 多次更小的矩阵乘法，往往更慢
#      - 与批量耦合的层，如批量归一化（BatchNorm，见《:ref:`gradient_accumulation`》）
#    * - 激活检查点
#      - 各块的输入和一个块的激活值，外加全部梯度
#      - 多一遍前向传播
#      - 本页没有发现；它能与其余每一种配合
#    * - 在反向传播中执行更新步
#      - 同一时刻只有一个梯度，外加全部激活值
#      - 每个参数调用一次优化器
#      - 梯度累积（修正写法让钩子等到最后一个微批量，又要存下全部梯度）、
#        全局范数裁剪以及其他在 ``backward()`` 之后读取 ``.grad`` 的操作、
#        单个调度器
#
# 随批量变化的内存（激活值）由梯度累积和激活检查点来减少；不随批量变化的内存
# （梯度）由在反向传播中执行更新步来减少，而且只有梯度构成峰值的一部分时才有效。
# 参数和优化器状态在四种写法中都原封不动；要减少它们需要别的工具，例如用 FSDP
# 把它们分片到多块 GPU 上（《:ref:`distributed_accumulation`》）。
#
# 小结
# ----
#
# * 先测量，再选择：一个训练步的峰值要么在反向传播结束时（梯度），要么在它开始
#   时（激活值），每种办法只能降低其中之一。
# * 在反向传播中执行更新步时，钩子既执行更新步，也负责清零；训练循环里没有
#   ``zero_grad()``，也没有 ``step()``，``backward()`` 之后 ``.grad`` 是
#   ``None``\ 。
# * 梯度累积需要一个只在最后一个微批量上执行更新步的钩子，而这样又要存下全部
#   梯度；全局范数裁剪需要标准的训练循环；学习率调度需要每个优化器一个调度器。
# * 梯度累积本身见《:ref:`gradient_accumulation`》，把它放进完整的训练循环见
#   《:ref:`accumulation_in_practice`》，标准训练循环中 ``zero_grad()`` 应放在
#   哪里见《:ref:`zero_grad_pitfalls`》。

# sphinx_gallery_thumbnail_number = 1

# sphinx_gallery_start_ignore
# Translates recipes/en/optimizer_step_in_backward.py, English text 0c7b977936fe7a2b (make translation-status)
# sphinx_gallery_end_ignore
