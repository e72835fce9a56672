"""
.. _distributed_pitfalls:

跨工作进程做梯度累积的陷阱
==========================

《:ref:`distributed_accumulation`》在 DDP 下做梯度累积时，损失都是大小相同的微批量
上的平均值，这时只要用对 ``no_sync()`` 就够了。真实的训练会接着遇到下面这些问题：
序列长短不一；一些 DDP 选项改变了它跟踪梯度的方式；模型分片之后，要在工作进程之间
传送的不只是梯度，还有参数。本教程把这些情形逐一真正地运行一遍（两个进程：在 CPU
上用 ``gloo``，或者每个工作进程一块 GPU、用 ``nccl``），并测量发生了什么。

你将学到：

* 为什么每个工作进程都必须把自己的词元损失之和除以 **所有** 工作进程的词元总数，
  在 DDP 下有哪两种做法，以及按各工作进程各自取平均为什么会让短序列的权重过大；
* 在构建本页面所用的 PyTorch 版本中，哪些 DDP 选项会破坏 ``no_sync()``：一张由
  代码填写的表（``find_unused_parameters``、``static_graph``、激活检查点）；
* FSDP2 在累积梯度时每个更新步要做多少次 all-gather 和 reduce-scatter，以及
  ``set_reshard_after_backward(False)`` 省下了什么、又付出了什么；
* 许多训练脚本照抄的 ``require_backward_grad_sync`` 开关做了什么，又会在哪里出错。

与《:ref:`distributed_accumulation`》一样，这个脚本是一个真正的分布式程序：
``torchrun --nproc_per_node=2 distributed_pitfalls.py`` 把它作为其中一个工作进程
运行；单独运行时，无论是用 ``python`` 还是在笔记本中，它都会自己启动两个本地工作
进程。
"""

# %%
# 准备工作
# --------
#
# 只需要 PyTorch、matplotlib 和 Python 标准库。

import datetime
import os
import re
import sys
import tempfile
import time
import traceback
from contextlib import nullcontext
from pathlib import Path

# 图中的标签是中文。如果显示成方框，说明 matplotlib 没找到中文字体：请安装一种（如 Noto Sans CJK SC），
# 再在画图前加上 plt.rcParams["font.family"] = ["DejaVu Sans", "Noto Sans CJK SC"]。
import matplotlib.pyplot as plt
import torch

# DDP 的构造函数第一次运行时会导入 torch._dynamo（torch.compile 的前端），
# 要花一秒甚至更久。在 fork 出工作进程之前先在这里导入，就只导入一次，
# 而不是每个工作进程各导入一次。
import torch._dynamo  # noqa: F401
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.checkpoint import checkpoint

# %%
# 谁在运行这个脚本，用什么设备
# ----------------------------
#
# 与《:ref:`distributed_accumulation`》相同：在 ``torchrun`` 之下，本进程是一个
# 工作进程，由环境变量告诉它自己是谁；单独运行时，脚本自己启动工作进程。如果每个
# 工作进程都能分到一块 GPU，它就用自己的 GPU 和 ``nccl`` 后端；否则所有工作进程
# 共用 CPU，通过 ``gloo`` 通信。``torch.cuda.device_count()`` 在能通过 NVML 查询
# 时，不会在本进程中初始化 CUDA；这一点很重要，因为本地工作进程是 fork 出来的
# （见下文）。
#
# 如果本进程此前已经初始化过 CUDA，fork 出来的工作进程就无法再使用它：例如在笔记本
# 中，前面的某个单元格用过 CUDA（哪怕只是调用了 ``torch.cuda.is_available()``）；
# 又如本站的构建，它先在同一个进程中运行了排在本篇之前的教程。这样的工作进程处于
# 「bad fork」状态，只有私有函数 ``torch.cuda._is_in_bad_fork()`` 能告诉我们这一点；
# 这时工作进程改在 CPU 上用 ``gloo`` 运行，脚本也会说明这一点，而不是在第一次调用
# CUDA 时出错。在 torchrun 之下，每个工作进程都是全新的进程，可以使用自己的 GPU。

UNDER_TORCHRUN = "LOCAL_RANK" in os.environ
WORKERS_ON_THIS_MACHINE = int(os.environ.get("LOCAL_WORLD_SIZE", 2))
BACKEND = "nccl" if torch.cuda.device_count() >= WORKERS_ON_THIS_MACHINE else "gloo"

# %%
# 四个实验共用的辅助函数
# ----------------------
#
# ``flat_gradient`` 把模型的所有梯度拼成一个向量（没有得到梯度的参数记为零）。
# ``gradients_of_all_workers`` 从每个工作进程收集这个向量，这样就能检查所有工作
# 进程持有的梯度是否相同，而这正是 DDP 的职责。``counting_allreduce_hook`` 就是
# 《:ref:`distributed_accumulation`》中的通信钩子：它记下 DDP 对每个梯度桶做的
# 每一次 all-reduce，然后执行 DDP 在没有钩子时执行的那个取平均的 all-reduce。
#
# ``sync_on_last(model, i)`` 是 ``no_sync()`` 的正确用法：除最后一个以外，每个
# 微批量的前向传播和反向传播都在它里面执行。``make_ddp`` 在本工作进程的设备上用
# DDP 包装一个模型。

K = 3  # 每个工作进程上，每个更新步的微批量个数


def flat_gradient(model):
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten()
                      for p in model.parameters()])


def gradients_of_all_workers(model, world_size):
    gradient = flat_gradient(model)
    gathered = [torch.empty_like(gradient) for _ in range(world_size)]
    dist.all_gather(gathered, gradient)
    return torch.stack(gathered).cpu()


def counting_allreduce_hook(calls, bucket):
    calls.append("gradients")
    return default_hooks.allreduce_hook(None, bucket)  # None：所有工作进程


def sync_on_last(model, i):
    return nullcontext() if i == K - 1 else model.no_sync()


def make_ddp(model, device, **options):
    return DDP(model.to(device), device_ids=[device.index] if device.type == "cuda" else None, **options)


# %%
# 1. 跨工作进程按词元加权的损失
# -----------------------------
#
# 语言模型的损失是一批数据中所有真实词元上的平均值；填充不算在内
# （``ignore_index``）。这里有意让两个工作进程分到的份额不均：工作进程 0 拿到长
# 序列，工作进程 1 拿到短序列（工作进程更多时，偶数编号的拿长序列，奇数编号的拿
# 短序列）。``token_batch(rank)`` 用以编号为种子的生成器造出一个工作进程的 ``K``
# 个微批量，这样本进程可以为参照值把每个工作进程的份额重新造一遍。

VOCABULARY = 64
SEQUENCES = 4  # 每个微批量的序列数
LENGTH = 16  # 每条序列的词元数，含填充
PAD = -100  # cross_entropy 默认的 ignore_index
SHORTEST = {0: 12, 1: 1}  # 每条序列至少有的真实词元数：工作进程 0 长，工作进程 1 短
LONGEST = {0: 16, 1: 4}


def make_language_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Embedding(VOCABULARY, 32), nn.Linear(32, 32), nn.Tanh(),
                         nn.Linear(32, VOCABULARY))


def token_batch(rank):
    """本工作进程的 K 个微批量，每个是 (tokens, targets)，targets 用 PAD 填充。"""
    generator = torch.Generator().manual_seed(1000 + rank)
    micro_batches = []
    for _ in range(K):
        tokens = torch.randint(VOCABULARY, (SEQUENCES, LENGTH), generator=generator)
        targets = torch.randint(VOCABULARY, (SEQUENCES, LENGTH), generator=generator)
        lengths = torch.randint(SHORTEST[rank % 2], LONGEST[rank % 2] + 1, (SEQUENCES, 1),
                                generator=generator)
        targets[torch.arange(LENGTH) >= lengths] = PAD
        micro_batches.append((tokens, targets))
    return micro_batches


def token_loss(model, tokens, targets, reduction):
    logits = model(tokens)
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=PAD,
                           reduction=reduction)


# %%
# 三种累积循环，``no_sync()`` 都放在正确的位置上：
#
# * ``per-worker mean / K``，大多数循环的写法：每个微批量在自己的词元上取平均，
#   除以 ``K``；然后由 DDP 在工作进程之间取平均。
# * ``global count, loss × world size``：各工作进程先在第一次 ``backward()`` 之前
#   对词元数做 all-reduce；每个微批量的词元损失 **之和** 除以这个全局词元数，再
#   乘以进程总数（world size），以抵消 DDP 的取平均。
# * ``global count, summing hook``：同样的全局词元数，但改为关掉 DDP 的取平均：
#   用一个只求和、不做除法的 all-reduce 通信钩子。
#
# ``global_token_count`` 就是每个更新步多出的那一次 all-reduce，只传一个数。它
# 始终是张量：``loss_sum / count`` 不需要 Python 数，所以在 GPU 上没有什么要等
# 这次 all-reduce 完成；而 ``count.item()`` 会让 CPU 在每个更新步都等它。


def summing_allreduce_hook(calls, bucket):
    calls.append("gradients")
    work = dist.all_reduce(bucket.buffer(), async_op=True)  # 求和；DDP 默认的钩子还会做除法
    return work.get_future().then(lambda future: future.value()[0])


def real_tokens(micro_batches):
    return sum((targets != PAD).sum() for _, targets in micro_batches)


def global_token_count(micro_batches, device, calls):
    count = real_tokens(micro_batches)
    dist.all_reduce(count)
    calls.append("token count")
    return count


def per_worker_mean(model, micro_batches, world_size, device, calls):
    for i, (tokens, targets) in enumerate(micro_batches):
        with sync_on_last(model, i):
            (token_loss(model, tokens, targets, "mean") / K).backward()


def global_count_times_world_size(model, micro_batches, world_size, device, calls):
    count = global_token_count(micro_batches, device, calls)
    for i, (tokens, targets) in enumerate(micro_batches):
        with sync_on_last(model, i):
            (token_loss(model, tokens, targets, "sum") * world_size / count).backward()


def global_count_summing_hook(model, micro_batches, world_size, device, calls):
    count = global_token_count(micro_batches, device, calls)
    for i, (tokens, targets) in enumerate(micro_batches):
        with sync_on_last(model, i):
            (token_loss(model, tokens, targets, "sum") / count).backward()


TOKEN_LOOPS = {
    "per-worker mean / K": (per_worker_mean, counting_allreduce_hook),
    "global count, loss x world size": (global_count_times_world_size, counting_allreduce_hook),
    "global count, summing hook": (global_count_summing_hook, summing_allreduce_hook),
}

# %%
# **记录下来** 的损失也有同样的问题。大多数脚本打印的是各工作进程平均损失的
# 平均值；而整个更新步的损失，是所有工作进程的词元损失之和除以它们的词元总数。
# ``logged_losses`` 用一次三个数的 all-reduce 算出这两者：本工作进程的损失之和、
# 它的词元数和它的平均损失。


def logged_losses(model, micro_batches, world_size):
    with torch.no_grad():
        loss_sum = sum(token_loss(model, tokens, targets, "sum") for tokens, targets in micro_batches)
        count = real_tokens(micro_batches)
        sums = torch.stack([loss_sum, count.float(), loss_sum / count])
        dist.all_reduce(sums)
    return {"average of worker means": (sums[2] / world_size).item(),
            "token-weighted": (sums[0] / sums[1]).item()}


def token_counts_of_all_workers(micro_batches, world_size):
    count = real_tokens(micro_batches)
    gathered = [torch.zeros_like(count) for _ in range(world_size)]
    dist.all_gather(gathered, count)
    return [int(count) for count in gathered]


def token_experiment(rank, world_size, device):
    micro_batches = [(tokens.to(device), targets.to(device))
                     for tokens, targets in token_batch(rank)]
    results = {"tokens per worker": token_counts_of_all_workers(micro_batches, world_size)}
    for name, (accumulate, hook) in TOKEN_LOOPS.items():
        model = make_ddp(make_language_model(), device)
        calls = []
        model.register_comm_hook(calls, hook)
        accumulate(model, micro_batches, world_size, device, calls)
        results[name] = {"gradient": flat_gradient(model).cpu(), "calls": calls}
    results["logged loss"] = logged_losses(make_language_model().to(device), micro_batches, world_size)
    return results


# %%
# 2. 哪些 DDP 选项会破坏 ``no_sync()``？
# --------------------------------------
#
# 表中每一行用 DDP 加一个选项包装同一个小网络，累积三个更新步的梯度（不让优化器
# 更新权重，这样每个更新步用一个参照值就能检查），一次每个微批量都同步，一次除
# 最后一个外都放进 ``no_sync()``：
#
# * ``find_unused_parameters=True``，网络让前 ``K − 1`` 个微批量走一个分支，最后
#   一个走另一个分支，混合专家模型就可能这样：第一个分支不参与最后一个微批量，
#   而 DDP 只同步这一个；\ `一个 PyTorch issue <https://github.com/pytorch/pytorch/issues/69031>`_
#   报告过这样的参数没有被同步；
# * ``static_graph=True``，从第一个更新步起就用 ``no_sync()``，以及先完整同步一个
#   更新步之后再用；
# * 对中间那一块做激活检查点，用 ``torch.utils.checkpoint.checkpoint``，非重入和
#   重入两种，单独使用，以及分别与上面两个选项一起使用（搭配
#   ``find_unused_parameters`` 时用带分支的网络）。


class BranchyNet(nn.Module):
    def __init__(self, with_branches, checkpointing):
        super().__init__()
        torch.manual_seed(0)
        self.first = nn.Linear(8, 32)
        self.block = nn.Sequential(nn.Linear(32, 32), nn.Tanh())
        self.branches = nn.ModuleList([nn.Linear(32, 32), nn.Linear(32, 32)]) if with_branches else None
        self.last = nn.Linear(32, 1)
        self.checkpointing = checkpointing  # None、"reentrant" 或 "non-reentrant"

    def forward(self, x, branch=None):
        h = torch.tanh(self.first(x))
        if self.checkpointing is None:
            h = self.block(h)
        else:  # 在反向传播中重算这一块，而不保存它的激活值
            h = checkpoint(self.block, h, use_reentrant=self.checkpointing == "reentrant")
        if branch is not None:
            h = h + self.branches[branch](h)
        return self.last(h)


TABLE_STEPS = 3
MICRO_BATCH_SIZE = 8


def regression_batch(step, world_size):
    """一个更新步的输入和目标，所有工作进程的合在一起。"""
    generator = torch.Generator().manual_seed(step)
    inputs = torch.randn(world_size * K * MICRO_BATCH_SIZE, 8, generator=generator)
    return inputs, torch.sin(inputs[:, :2].sum(dim=1, keepdim=True))


def my_regression_micro_batches(step, rank, world_size, device):
    inputs, targets = regression_batch(step, world_size)
    inputs, targets = inputs.chunk(world_size)[rank].to(device), targets.chunk(world_size)[rank].to(device)
    return list(zip(inputs.chunk(K), targets.chunk(K)))


# %%
# 每一行是一个字典：DDP 选项、激活检查点、微批量是否走分支，以及在
# ``no_sync()`` 那一列中哪些更新步使用 ``no_sync()``。

ALL_STEPS = range(TABLE_STEPS)
AFTER_FIRST = range(1, TABLE_STEPS)
TABLE_ROWS = {
    "plain DDP": dict(options={}),
    "find_unused_parameters, two branches": dict(options={"find_unused_parameters": True},
                                                       branches=True),
    "static_graph": dict(options={"static_graph": True}),
    "static_graph, first step synced": dict(options={"static_graph": True}, no_sync_steps=AFTER_FIRST),
    "checkpoint, non-reentrant": dict(options={}, checkpointing="non-reentrant"),
    "checkpoint, reentrant": dict(options={}, checkpointing="reentrant"),
    "checkpoint non-reentrant + find_unused": dict(options={"find_unused_parameters": True},
                                                   branches=True, checkpointing="non-reentrant"),
    "checkpoint reentrant + find_unused": dict(options={"find_unused_parameters": True},
                                               branches=True, checkpointing="reentrant"),
    "checkpoint reentrant + static_graph": dict(options={"static_graph": True}, checkpointing="reentrant"),
}


def branch_of(row, i):
    """第 ``i`` 个微批量走的分支：最后一个走 1，其余走 0；没有分支时为 None。"""
    return (0 if i < K - 1 else 1) if row.get("branches") else None


def short_error(error):
    """错误信息的第一句，去掉有些信息附带的 C++ 源文件路径。"""
    message = str(error).strip().splitlines()[0]
    message = re.sub(r' at "[^"]*":\d+', "", message)
    message = re.split(r"(?<=[.!?]) ", message)[0].rstrip(",")
    return f"{type(error).__name__}: {message}"


def table_cell(row, use_no_sync, rank, world_size, device):
    """每个更新步、每个工作进程上的梯度；或者那个错误，缩成短短一行。"""
    try:
        model = make_ddp(BranchyNet(row.get("branches", False), row.get("checkpointing")), device,
                         **row["options"])
        gradients = []
        for step in range(TABLE_STEPS):
            step_uses_no_sync = use_no_sync and step in row.get("no_sync_steps", ALL_STEPS)
            micro_batches = my_regression_micro_batches(step, rank, world_size, device)
            for i, (inputs, targets) in enumerate(micro_batches):
                with sync_on_last(model, i) if step_uses_no_sync else nullcontext():
                    loss = F.mse_loss(model(inputs, branch=branch_of(row, i)), targets)
                    (loss / K).backward()
            gradients.append(gradients_of_all_workers(model, world_size))
            model.zero_grad()
        return gradients
    except RuntimeError as error:
        return short_error(error)


def table_experiment(rank, world_size, device):
    return {(name, use_no_sync): table_cell(row, use_no_sync, rank, world_size, device)
            for name, row in TABLE_ROWS.items() for use_no_sync in (False, True)}


# %%
# 3. FSDP2 在累积梯度时的通信
# ---------------------------
#
# ``fully_shard`` 在每个工作进程上只保存每个参数的一个分片。在一层的前向传播之前，
# 它用 all-gather 收集出完整的参数；前向传播之后释放收集来的这份（根模块除外），
# 到反向传播时再收集一次；反向传播之后，它对梯度做 reduce-scatter，让每个工作进程
# 只留下自己那个分片上所有工作进程梯度的平均值。FSDP2 允许我们用自己的实现替换
# 这两种集合通信（``set_custom_all_gather``、``set_custom_reduce_scatter``）：
# ``CountingAllGather`` 和 ``CountingReduceScatter`` 先计数，再执行调用。


class CountingAllGather:
    def __init__(self, counts):
        self.counts = counts

    def allocate(self, size, *, dtype, device):
        return torch.empty(*size, dtype=dtype, device=device)

    def __call__(self, output_tensor, input_tensor, group, async_op=False):
        self.counts["all-gathers"] += 1
        return dist.all_gather_single(output_tensor, input_tensor, group=group, async_op=async_op)


class CountingReduceScatter:
    def __init__(self, counts):
        self.counts = counts

    def allocate(self, size, *, dtype, device):
        return torch.empty(*size, dtype=dtype, device=device)

    def __call__(self, output_tensor, input_tensor, group, op, async_op=False):
        self.counts["reduce-scatters"] += 1
        return dist.reduce_scatter_single(output_tensor, input_tensor, op=op, group=group, async_op=async_op)


# %%
# 用 FSDP2 累积 ``K`` 个微批量的四种做法：
#
# * ``sync every micro-batch``：什么开关都不用；
# * ``no gradient sync``：除最后一次外，每次反向传播之前调用
#   ``set_requires_gradient_sync(False)``；
# * ``+ keep after backward``：再加上 ``set_reshard_after_backward(False)``，让
#   一层在反向传播之后保留收集来的参数；
# * ``+ keep after forward``：再加上 ``fully_shard(reshard_after_forward=False)``，
#   让一层在前向传播之后也保留它们。
#
# FSDP2 在反向传播期间才读取这两个开关，所以与 DDP 的 ``no_sync()`` 不同，它们
# 不必在前向传播之前设置。在最后一个微批量上，两个开关都设回 ``True``：它的反向
# 传播对累积下来的梯度做 reduce-scatter，并释放收集来的参数。
#
# ``bytes_held`` 测量一个工作进程在两个微批量之间保留了多少：它的分片，加上它保留
# 着的完整参数和完整梯度。FSDP2 没有提供这方面的公开 API，所以这里读取 FSDP2 的
# 内部状态，但不做任何改动。FSDP2 释放掉的收集参数保留着形状，却已没有存储空间。

FSDP_CONFIGS = {
    "sync every micro-batch": dict(gradient_sync=True, keep_after_backward=False, keep_after_forward=False),
    "no gradient sync": dict(gradient_sync=False, keep_after_backward=False, keep_after_forward=False),
    "+ keep after backward": dict(gradient_sync=False, keep_after_backward=True, keep_after_forward=False),
    "+ keep after forward": dict(gradient_sync=False, keep_after_backward=True, keep_after_forward=True),
}
FSDP_STEPS = 2  # 更新步数：第一个给出梯度，第二个给出稳定状态


def make_mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 128), nn.Tanh(), nn.Linear(128, 128), nn.Tanh(), nn.Linear(128, 1))


def fsdp_batch(world_size):
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(world_size * K * 16, 32, generator=generator)
    return inputs, torch.sin(inputs[:, :4].sum(dim=1, keepdim=True))


def my_micro_batches_for_fsdp(rank, world_size, device):
    inputs, targets = fsdp_batch(world_size)
    inputs, targets = inputs.chunk(world_size)[rank].to(device), targets.chunk(world_size)[rank].to(device)
    return list(zip(inputs.chunk(K), targets.chunk(K)))


def nbytes(tensor):
    return tensor.numel() * tensor.element_size()


def bytes_held(model):
    parameters = gradients = 0
    for module in model.modules():
        group = module._get_fsdp_state()._fsdp_param_group if isinstance(module, FSDPModule) else None
        for fsdp_param in group.fsdp_params if group is not None else []:
            shard = fsdp_param.sharded_param
            parameters += nbytes(shard.to_local())
            gradients += nbytes(shard.grad.to_local()) if shard.grad is not None else 0
            whole = getattr(fsdp_param, "_unsharded_param", None)
            if whole is not None and whole.untyped_storage().nbytes() > 0:
                parameters += nbytes(whole)
            if whole is not None and whole.grad is not None:
                gradients += nbytes(whole.grad)
    return {"parameters": parameters, "gradients": gradients}


def fsdp_run(config, rank, world_size, device):
    model = make_mlp().to(device)
    mesh = init_device_mesh(device.type, (world_size,))
    counts = {"all-gathers": 0, "reduce-scatters": 0}
    layers = [layer for layer in model if isinstance(layer, nn.Linear)]
    for module in layers + [model]:  # 先包装各层，再包装根模块
        # None 是 FSDP2 的默认值：前向传播之后释放，根模块除外。
        fully_shard(module, mesh=mesh, reshard_after_forward=False if config["keep_after_forward"] else None)
        module.set_custom_all_gather(CountingAllGather(counts))
        module.set_custom_reduce_scatter(CountingReduceScatter(counts))
    optimizer = optim.SGD(model.parameters(), lr=0.01)
    micro_batches = my_micro_batches_for_fsdp(rank, world_size, device)
    for step in range(FSDP_STEPS):
        counts.update({"all-gathers": 0, "reduce-scatters": 0})
        for i, (inputs, targets) in enumerate(micro_batches):
            last = i == K - 1
            loss = F.mse_loss(model(inputs), targets)
            model.set_requires_gradient_sync(last or config["gradient_sync"])
            model.set_reshard_after_backward(last or not config["keep_after_backward"])
            (loss / K).backward()
            if i == 0:
                held = bytes_held(model)
        if step == 0:  # 还没有任何更新：用来与单个进程对照的梯度
            gradient = torch.cat([p.grad.full_tensor().flatten() for p in model.parameters()]).cpu()
        optimizer.step()
        optimizer.zero_grad()
    whole_model = sum(nbytes(p.full_tensor()) for p in model.parameters())
    return {**counts, "held": held, "gradient": gradient, "whole model": whole_model}


def fsdp_experiment(rank, world_size, device):
    results = {}
    for name, config in FSDP_CONFIGS.items():
        try:
            results[name] = fsdp_run(config, rank, world_size, device)
        except RuntimeError as error:
            results[name] = short_error(error)
    return results


# %%
# 4. ``require_backward_grad_sync`` 开关
# --------------------------------------
#
# 许多训练脚本（nanoGPT 就是其中之一）不用 ``no_sync()``，而是直接设置
# ``no_sync()`` 所设置的那个属性 ``model.require_backward_grad_sync``：最后一个
# 微批量设为 ``True``，其余设为 ``False``。下面用钩子计数，把两种写法与
# ``no_sync()`` 放在一起比较：像那些脚本一样在前向传播之前设置这个属性，以及在
# 前向传播和反向传播之间设置。


def toggle_before_forward(model, micro_batches):
    for i, (inputs, targets) in enumerate(micro_batches):
        model.require_backward_grad_sync = i == K - 1
        (F.mse_loss(model(inputs), targets) / K).backward()


def toggle_before_backward(model, micro_batches):
    for i, (inputs, targets) in enumerate(micro_batches):
        loss = F.mse_loss(model(inputs), targets)
        model.require_backward_grad_sync = i == K - 1
        (loss / K).backward()


def with_no_sync(model, micro_batches):
    for i, (inputs, targets) in enumerate(micro_batches):
        with sync_on_last(model, i):
            (F.mse_loss(model(inputs), targets) / K).backward()


TOGGLE_LOOPS = {"no_sync()": with_no_sync, "toggle before forward": toggle_before_forward,
                "toggle before backward": toggle_before_backward}


def toggle_experiment(rank, world_size, device):
    results = {}
    for name, accumulate in TOGGLE_LOOPS.items():
        model = make_ddp(BranchyNet(False, None), device)
        calls = []
        model.register_comm_hook(calls, counting_allreduce_hook)
        gradients, calls_per_step = [], []
        for step in range(TABLE_STEPS):
            calls.clear()
            accumulate(model, my_regression_micro_batches(step, rank, world_size, device))
            calls_per_step.append(len(calls))
            gradients.append(gradients_of_all_workers(model, world_size))
            model.zero_grad()
        results[name] = {"gradients": gradients, "all-reduce calls": calls_per_step}
    return results


# %%
# 运行工作进程
# ------------
#
# ``run_worker`` 是一个工作进程要做的全部事情：加入进程组，选定设备，完成四个
# 实验，然后离开进程组。设置了超时之后，一个等待已死工作进程的集合通信调用会在
# 60 秒后报错，而不是永远等下去。


def run_worker(rank, local_rank, world_size, init_method):
    # 如果本进程此前初始化过 CUDA，fork 出来的工作进程就无法使用它（见上文）。
    backend = "gloo" if BACKEND == "nccl" and torch.cuda._is_in_bad_fork() else BACKEND
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=60))
    device = torch.device("cuda", local_rank) if backend == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    results = {"device": str(device), "backend": dist.get_backend(), "world size": world_size,
               "tokens": token_experiment(rank, world_size, device),
               "table": table_experiment(rank, world_size, device),
               "fsdp": fsdp_experiment(rank, world_size, device),
               "toggle": toggle_experiment(rank, world_size, device)}
    dist.destroy_process_group()
    return results


# %%
# 启动工作进程的代码与《:ref:`distributed_accumulation`》中的相同：在 ``torchrun``
# 之下，本进程就是一个工作进程；单独运行时，脚本 fork 出两个工作进程，它们通过
# 临时文件夹中的一个文件会合；有工作进程失败时，报告最早的那个失败；无论发生什么，
# 剩下的进程都会被杀掉并回收。


def local_worker(rank, world_size, folder):
    torch.set_num_threads(1)
    try:
        results = run_worker(rank, rank, world_size, f"file://{folder}/rendezvous")
        if rank == 0:
            torch.save(results, Path(folder) / "results.pt")
    except Exception:
        # 每个进程用的是同一个时钟，补零对齐：最早的失败排在最前面。
        failure = Path(folder) / f"failure {time.monotonic_ns():020d}.txt"
        failure.write_text(f"worker {rank}: {traceback.format_exc()}")
        raise


def start_local_workers(world_size, deadline_seconds=300):
    """fork 出 ``world_size`` 个工作进程，等它们结束，返回 rank 0 的结果。"""
    if "fork" not in mp.get_all_start_methods():
        raise RuntimeError("This system cannot fork a process (Windows?), so the script cannot start "
                           "its workers itself: run it with torchrun --nproc_per_node=2 instead.")
    with tempfile.TemporaryDirectory() as folder:
        workers = mp.start_processes(local_worker, args=(world_size, folder), nprocs=world_size,
                                     start_method="fork", join=False)
        deadline = time.monotonic() + deadline_seconds
        try:
            while not workers.join(timeout=1):  # 全部结束后为 True
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the workers did not finish within {deadline_seconds} seconds")
        except mp.ProcessRaisedException as error:
            first_failure = min(Path(folder).glob("failure *.txt"))
            raise RuntimeError(f"the first worker to fail was {first_failure.read_text()}") from error
        finally:
            for worker in workers.processes:
                if worker.is_alive():
                    worker.kill()
                worker.join()
        return torch.load(Path(folder) / "results.pt")


if UNDER_TORCHRUN:
    rank = int(os.environ["RANK"])
    results = run_worker(rank, int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"]), "env://")
    if rank != 0:
        sys.exit(0)  # 完成：由 rank 0 代表所有工作进程报告结果
else:
    results = start_local_workers(world_size=2)

if results["backend"] != BACKEND:
    print("CUDA was initialised in this process before the workers were forked, so they could not use "
          "the GPUs: they ran on the CPU with gloo (run the script in a fresh process, or with torchrun, "
          "to use the GPUs)")

print(f"torch {torch.__version__}")
print(f"Using device: {results['device']}")
print(f"Backend: {results['backend']}, world size: {results['world size']}")

# %%
# 1. 按词元加权的损失：结果
# -------------------------
#
# 参照值是单个进程一次看到所有工作进程的全部微批量时的损失：所有真实词元上的
# 平均值。``relative_error`` 是与参照梯度之差的大小，相对于参照梯度本身的大小。


def reference_token_gradient(world_size):
    model = make_language_model()
    micro_batches = [mb for rank in range(world_size) for mb in token_batch(rank)]
    tokens = torch.cat([tokens for tokens, _ in micro_batches])
    targets = torch.cat([targets for _, targets in micro_batches])
    loss = token_loss(model, tokens, targets, "mean")
    loss.backward()
    return flat_gradient(model), loss.item()


def relative_error(gradient, reference):
    return ((gradient - reference).norm() / reference.norm()).item()


tokens = results["tokens"]
reference, reference_loss = reference_token_gradient(results["world size"])
print(f"real tokens per worker: {tokens['tokens per worker']}")
print(f"{'loop':<33}{'relative gradient error':>24}{'gradient all-reduces':>22}{'count all-reduces':>19}")
for name in TOKEN_LOOPS:
    calls = tokens[name]["calls"]
    error = relative_error(tokens[name]["gradient"], reference)
    print(f"{name:<33}{error:>24.2e}{calls.count('gradients'):>22}{calls.count('token count'):>19}")

# %%
# 按各工作进程取平均的做法，误差就是它那一行打印的相对误差，远远超过舍入误差：
# DDP 对两个工作进程的梯度取平均时，把它们当作词元数相同，于是工作进程 1 那为数
# 不多的词元，每一个都比工作进程 0 的词元分量更重，大约重到上面打印的两个词元数
# 之比。两种使用全局词元数的循环都得到参照值，只差舍入误差。它们的区别只在于由谁
# 除以进程总数：一种是让损失乘以进程总数，以抵消 DDP 的除法；另一种用求和钩子，
# 谁都不除。前者不需要钩子，但这个乘法很容易忘；后者让损失与进程总数无关。
#
# 两种做法每个更新步都多一次 all-reduce，只传一个数，另外就是梯度桶的那一次；它
# 必须在第一次 ``backward()`` 之前完成，因为这次反向传播的损失要除以这个词元数。
# 在 GPU 上，让这个词元数保持为张量：对它调用 ``.item()`` 会让 CPU 停下来，直到
# all-reduce 完成之后才能继续排入新的工作。
#
# 记录下来的损失
# ~~~~~~~~~~~~~~

logged = tokens["logged loss"]
print(f"single-process loss over all tokens: {reference_loss:.4f}")
for name, value in logged.items():
    print(f"{name}: {value:.4f}")

# %%
# 按词元加权的损失就是单个进程的损失（只差舍入误差）；各工作进程平均损失的平均值
# 则不是，用它画出的学习曲线会随词元碰巧如何分到各工作进程而变化。
#
# 2. 表格：DDP 选项与 ``no_sync()``
# ---------------------------------
#
# 如果在每个更新步中，所有工作进程持有的梯度都相同，而且就是单个进程的整批梯度，
# 单元格就写 ``correct``；否则写 ``wrong``，附上与该梯度的最大差；或者写
# ``raises``，附上一个字母，对应表格下方打印的错误。参照网络有同样的分支，让同样
# 的微批量走同样的分支；激活检查点不改变任何梯度。


def reference_regression_gradients(row, world_size):
    model = BranchyNet(row.get("branches", False), None)
    gradients = []
    for step in range(TABLE_STEPS):
        inputs, targets = regression_batch(step, world_size)
        micro_batches = zip(inputs.chunk(world_size * K), targets.chunk(world_size * K))
        # 第 j 个微批量就是它所在工作进程的第 j % K 个微批量：走同一个分支。
        loss = sum(F.mse_loss(model(x, branch=branch_of(row, j % K)), y)
                   for j, (x, y) in enumerate(micro_batches)) / (world_size * K)
        loss.backward()
        gradients.append(flat_gradient(model))
        model.zero_grad()
    return gradients


def verdict(per_step_gradients, references):
    """'correct' 或 'wrong (最大差 ...)'：每个更新步、每个工作进程都与参照值比较。"""
    difference = max((gradients - reference).abs().max().item()
                     for gradients, reference in zip(per_step_gradients, references))
    scale = max(reference.abs().max().item() for reference in references)
    return "correct" if difference <= 1e-5 * scale else f"wrong ({difference:.2e})"


errors = {}
print(f"DDP options with no_sync(), torch {torch.__version__}, backend {results['backend']}, K = {K}")
print(f"{'DDP option':<46}{'sync every micro-batch':<24}{'no_sync()':<12}")
for name, row in TABLE_ROWS.items():
    references = reference_regression_gradients(row, results["world size"])
    cells = []
    for use_no_sync in (False, True):
        outcome = results["table"][(name, use_no_sync)]
        if isinstance(outcome, str):
            letter = errors.setdefault(outcome, "abcdefgh"[len(errors)])
            cells.append(f"raises ({letter})")
        else:
            cells.append(verdict(outcome, references))
    print(f"{name:<46}{cells[0]:<24}{cells[1]:<12}")
for error, letter in errors.items():
    print(f"({letter}) {error}")

# %%
# 这张表对应标题中打印的 PyTorch 版本；其他版本的行为曾经不同，所以这张表由代码
# 填写。在本次构建中：
#
# * ``find_unused_parameters=True`` 与 ``no_sync()`` 一起使用时，第一个分支累积
#   下来的梯度照样得到同步，尽管这个分支没有参与最后一个微批量：DDP 把在
#   ``no_sync()`` 微批量中用到的参数也算作用过。
# * ``static_graph=True`` 时从第一个更新步起就用 ``no_sync()``，会触发 DDP 的
#   reducer 的一个内部断言
#   （\ `已报告给 PyTorch <https://github.com/pytorch/pytorch/issues/143580>`_\ ）。
#   在静态图的第一次迭代中，即使在 ``no_sync()`` 之下，DDP 的反向传播也会排入一次
#   推迟到反向传播结束时执行的、对全部梯度的 all-reduce，而这次的前向传播并没有让
#   reducer 为此做好准备（见 ``torch/nn/parallel/distributed.py`` 中的
#   ``_DDPSink``）。先完整同步第一个更新步，再使用 ``no_sync()``，梯度就是正确的，
#   如下一行所示。
# * 单独使用激活检查点，无论重入与否，``no_sync()`` 都正确。重入式检查点与
#   ``find_unused_parameters=True`` 一起使用时，不管用不用 ``no_sync()`` 都会报错：
#   被检查点包住的那一块的参数不出现在 DDP 用来查找未使用参数的 autograd 计算图中，
#   于是 DDP 把它们当作未使用的参数标记为就绪，随后它们的梯度又从重算中到来。DDP 的
#   文档为这种情形给出的办法是 ``static_graph=True``，而它又会碰上上面第一个更新步
#   的问题。非重入式检查点（``use_reentrant=False``）是 ``checkpoint`` 的文档推荐的
#   用法，这些问题它都没有。
#
# 3. FSDP2 的集合通信：结果
# -------------------------
#
# 下表是工作进程 0 在第二个更新步（FSDP2 已完成初始化）中的集合通信次数，以及它在
# 该更新步第一个微批量的反向传播之后保留的字节数；梯度取自第一个更新步。


def reference_fsdp_gradient(world_size):
    model = make_mlp()
    inputs, targets = fsdp_batch(world_size)
    F.mse_loss(model(inputs), targets).backward()
    return flat_gradient(model)


fsdp = results["fsdp"]
fsdp_reference = reference_fsdp_gradient(results["world size"])
fsdp_failures = {name: outcome for name, outcome in fsdp.items() if isinstance(outcome, str)}
fsdp_runs = {name: outcome for name, outcome in fsdp.items() if not isinstance(outcome, str)}
whole_model = next(iter(fsdp_runs.values()))["whole model"] if fsdp_runs else 0
print(f"FSDP2, K = {K}, whole model: {whole_model} bytes of parameters")
print(f"{'accumulation':<24}{'all-gathers':>12}{'reduce-scatters':>16}{'parameters held':>17}"
      f"{'gradients held':>16}  gradient")
for name, outcome in fsdp_runs.items():
    same = torch.allclose(outcome["gradient"], fsdp_reference, atol=1e-5 * fsdp_reference.abs().max().item())
    print(f"{name:<24}{outcome['all-gathers']:>12}{outcome['reduce-scatters']:>16}"
          f"{outcome['held']['parameters']:>17}{outcome['held']['gradients']:>16}  "
          f"{'== full batch' if same else '!= full batch'}")
for name, error in fsdp_failures.items():
    print(f"{name}: raises {error}")

# %%
# 四种做法累积得到的都是整批梯度，不同的是通信多少、保留多少：
#
# * 每个微批量都同步时，每层每个微批量做一次 reduce-scatter，只保留分片：两个工作
#   进程各自保留模型参数和梯度的大约一半。
# * ``set_requires_gradient_sync(False)`` 之后，每层每个更新步只剩一次
#   reduce-scatter。all-gather 的次数不变：每个微批量仍要为前向传播收集每一层的
#   参数，到反向传播时再收集一次。在两个微批量之间，每个工作进程现在保留着
#   **完整的** 梯度，字节数与整个模型相同。
# * ``set_reshard_after_backward(False)`` 省掉了第一个之后各微批量前向传播中的
#   all-gather，代价是在微批量之间保留完整的参数。反向传播中的 all-gather 依然
#   存在：一层在前向传播之后仍会释放它的参数。
# * 在前向传播之后也保留参数，每层每个更新步只收集一次：集合通信最少，而整个更新步
#   中都保留着完整的模型，与普通的 DDP 一样。选哪一种，是在通信量与分片本来要节省
#   的内存之间权衡。

def pair_of_bars(ax, runs, left, right, label):
    """每种累积做法画两根柱子，高度是 ``left(run)`` 和 ``right(run)``，图例为 ``label``。"""
    positions = range(len(runs))
    for offset, value, bar_label in ((-0.2, left, label[0]), (0.2, right, label[1])):
        ax.bar([p + offset for p in positions], [value(run) for run in runs.values()], 0.4, label=bar_label)
    ax.set_xticks(list(positions))
    ax.legend()


fig, (collectives_ax, memory_ax) = plt.subplots(1, 2, figsize=(10, 4.5))
pair_of_bars(collectives_ax, fsdp_runs, lambda run: run["all-gathers"], lambda run: run["reduce-scatters"],
             label=("all-gather", "reduce-scatter"))
pair_of_bars(memory_ax, fsdp_runs, lambda run: run["held"]["parameters"] / 1000,
             lambda run: run["held"]["gradients"] / 1000, label=("参数", "梯度"))
for ax in (collectives_ax, memory_ax):
    ax.set_xticklabels([tick for name, tick in zip(FSDP_CONFIGS, [
        "每个微批量\n都同步", "不同步\n梯度", "+ 反向传播\n后保留", "+ 前向传播\n后保留",
    ]) if name in fsdp_runs])
collectives_ax.yaxis.get_major_locator().set_params(integer=True)  # 次数是整数
collectives_ax.set_title("每个更新步的集合通信次数")
memory_ax.set_title("微批量之间保留的内存（每个工作进程，kB）")
fig.suptitle(f"FSDP2：{results['world size']} 个工作进程，每个更新步 {K} 个微批量")
fig.tight_layout()
plt.show()

# %%
# 4. 开关：结果
# -------------

plain_references = reference_regression_gradients(TABLE_ROWS["plain DDP"], results["world size"])
print(f"{'loop':<26}{'all-reduce calls per step':>27}  gradients")
for name, outcome in results["toggle"].items():
    calls = outcome["all-reduce calls"]
    calls_per_step = str(calls[0]) if len(set(calls)) == 1 else f"{min(calls)} to {max(calls)}"
    print(f"{name:<26}{calls_per_step:>27}  {verdict(outcome['gradients'], plain_references)}")

# %%
# 在前向传播之前设置时，这个开关做的就是 ``no_sync()`` 做的事：all-reduce 调用
# 次数相同，梯度也相同。``no_sync()`` 就是围绕这个属性的一个上下文管理器；它多出
# 来的是：它有文档，而且在代码块结束时（即使代码块抛出异常）会把属性恢复成原来的
# 值，下一个更新步就不会意外地在不同步的状态下运行。这个属性不是有文档的 API，
# 将来的版本可能会改名。
#
# 在前向传播和反向传播之间设置时，这个开关会落入只把 ``backward()`` 放进
# ``no_sync()`` 的那个陷阱（《:ref:`distributed_accumulation`》），而且后果更糟。
# DDP 在前向传播中做决定：第一个微批量的前向传播运行时，开关还是上一个更新步留下的
# ``True``\ （或者 DDP 创建时的初始值），所以它的反向传播做了 all-reduce；最后一个
# 微批量的前向传播运行时开关是 ``False``，于是唯一应该同步的那次反向传播没有同步。
# all-reduce 的次数看起来没错，但每个工作进程都保留着自己的梯度，从第一个更新步起，
# 它们的权重就会各自漂移，而且不会有任何报错。
#
# 总结
# ----
#
# * 序列长短不一时，在第一次 ``backward()`` 之前对真实词元数做 all-reduce，把每个
#   词元损失之和除以它，并抵消 DDP 的取平均：乘以进程总数，或者注册一个求和钩子。
#   记录按词元加权的损失，而不是各工作进程平均损失的平均值。
# * 在你所用的 PyTorch 版本中，检查 ``no_sync()`` 与你的 DDP 选项是否相容：本页的
#   表格针对的是其中打印的版本。优先使用非重入式检查点。
# * 在 FSDP2 下，``set_requires_gradient_sync(False)`` 停掉的是 reduce-scatter，
#   而不是 all-gather；保留收集来的参数可以省掉后者，内存代价如上文所测。
# * 用 ``no_sync()``，不要用 ``require_backward_grad_sync`` 开关；如果保留这个
#   开关，就在前向传播之前设置它。
# * 《:ref:`accumulation_in_practice`》在单个进程中按词元数给微批量加权。

# sphinx_gallery_thumbnail_number = 1

# sphinx_gallery_start_ignore
# Translates recipes/en/distributed_pitfalls.py, English text 0fa049cd850c6125 (make translation-status)
# sphinx_gallery_end_ignore
