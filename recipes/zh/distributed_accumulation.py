"""
.. _distributed_accumulation:

在 DistributedDataParallel 中做梯度累积
=======================================

数据并行训练在多个进程里各放一份模型副本，这些进程称为「工作进程」。每个工作进程
只处理一批数据中属于自己的那一份；``torch.nn.parallel.DistributedDataParallel``
（DDP）在 ``backward()`` 期间用 all-reduce（全归约）把所有工作进程的梯度取平均，
于是每份副本都执行同样的更新步。再加上梯度累积（见《:ref:`gradient_accumulation`》），
就多出一笔开销：DDP 在每次 ``backward()`` 中都做 all-reduce，也就是每个微批量一次，
而优化器其实只需要在每个更新步的最后一个微批量之后拿到一次平均值。

``model.no_sync()`` 可以为最后一个之前的那些微批量关掉这个 all-reduce。本教程
实际运行 DDP：两个进程，在 CPU 上使用 ``gloo`` 后端；如果机器上有两块 GPU，
则在 GPU 上使用 ``nccl``。它会展示：

* 用了 ``no_sync()`` 之后，累积得到的梯度就等于在单个进程中对整批数据算出的梯度；
* 每个更新步调用多少次 all-reduce（用 DDP 的通信钩子来数），以及每个更新步耗时多少；
* 文档里提醒过的陷阱：只把 ``backward()`` 放进 ``no_sync()``，每个微批量照样
  做 all-reduce；
* 模型分片时（FSDP2）的同一种做法。

这个脚本本身就是一个真正的分布式程序。用
``torchrun --nproc_per_node=2 distributed_accumulation.py`` 启动时，它作为其中
一个工作进程运行，既可以在一台机器上，也可以跨多台机器（借助 torchrun 的
``--nnodes`` 和 rendezvous 选项，就像在集群上那样）。单独运行时，无论是用
``python`` 还是在笔记本中，它都会自己启动两个本地工作进程。
"""

# %%
# 准备工作
# --------
#
# 只需要 PyTorch、matplotlib 和 Python 标准库。

import datetime
import os
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
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
import torch.optim as optim
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.nn.parallel import DistributedDataParallel as DDP

# %%
# 谁在运行这个脚本，用什么设备
# ----------------------------
#
# ``torchrun`` 为每个工作进程启动一个进程，并通过环境变量告诉它自己是谁：有
# ``RANK``\ （它在所有工作进程中的编号）、``LOCAL_RANK``\ （它在本机上的编号）、
# 总数 ``WORLD_SIZE`` 和本机上的个数 ``LOCAL_WORLD_SIZE``，以及到哪里与其他进程
# 会合（``MASTER_ADDR``、``MASTER_PORT``）。没有这些变量，说明脚本是单独启动的。
#
# 如果每个工作进程都能分到一块 GPU，它就用自己的 GPU 和 ``nccl`` 后端；否则所有
# 工作进程共用 CPU，通过 ``gloo`` 通信。这里的判断用的是
# ``torch.cuda.device_count()``，而不是常见的 ``torch.cuda.is_available()``：
# 前者在可能时通过 NVML 查询，这样就不会在本进程中初始化 CUDA；后者会初始化 CUDA
# 驱动，也就是 PyTorch 文档所说的「poison fork」（此后 fork 出来的进程都无法再使用
# CUDA），而这个脚本正是 fork 出工作进程的（见下文）。在笔记本中，如果前面的
# 单元格已经用过 CUDA（哪怕只调用过 ``torch.cuda.is_available()``），或者在本站的
# 构建中（同一个进程先运行了排在前面的教程），这件事已经发生了。从这样的进程 fork
# 出来的工作进程处于「bad fork」状态，只有私有函数 ``torch.cuda._is_in_bad_fork()``
# 能查出来；这时工作进程改用 CPU 上的 ``gloo``，脚本会打印一行说明，而不是在第一次
# 调用 CUDA 时出错。用 torchrun 启动时，每个工作进程都是全新的进程，可以使用自己的 GPU。

UNDER_TORCHRUN = "LOCAL_RANK" in os.environ
WORKERS_ON_THIS_MACHINE = int(os.environ.get("LOCAL_WORLD_SIZE", 2))
BACKEND = "nccl" if torch.cuda.device_count() >= WORKERS_ON_THIS_MACHINE else "gloo"

# %%
# 模型和数据
# ----------
#
# 每个更新步的那批数据，每个工作进程取其中属于自己的一份，再切成 ``K = 4`` 个
# 微批量，每个 16 个样本点。有两个工作进程时，**等效批量大小** 是
# 2 × 4 × 16 = 128 个样本点。
#
# ``global_batch(step, world_size)`` 用一个以更新步编号为种子的随机数生成器，当场生成
# 一个更新步的整批数据，因此每个进程都能生成完全相同的数据，不需要传来传去；而
# ``my_micro_batches`` 只留下本工作进程的那一份。（真正的程序会用
# ``DistributedSampler`` 把数据集分给各个工作进程。）\ ``make_model`` 会先设置随机
# 种子，所以每个进程的模型都从相同的权重出发。

K = 4  # 每个工作进程在每个更新步中的微批量个数
MICRO_BATCH_SIZE = 16
FEATURES = 32
TIMED_STEPS = 10  # 每种累积循环计时的更新步数
criterion = nn.MSELoss()  # 一个微批量中各样本点的平均值


def make_model():
    """一个小型多层感知机，在每个进程中都有相同的初始权重。"""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(FEATURES, 128), nn.Tanh(),
        nn.Linear(128, 128), nn.Tanh(),
        nn.Linear(128, 128), nn.Tanh(),
        nn.Linear(128, 1),
    )


def global_batch(step, world_size):
    """一个更新步的输入和目标值，包括所有工作进程的份额。"""
    generator = torch.Generator().manual_seed(step)
    inputs = torch.randn(world_size * K * MICRO_BATCH_SIZE, FEATURES, generator=generator)
    targets = torch.sin(inputs[:, :4].sum(dim=1, keepdim=True))
    return inputs, targets


def my_micro_batches(step, rank, world_size, device):
    """本工作进程在该更新步中的份额，切成 K 个（输入，目标值）对。"""
    inputs, targets = global_batch(step, world_size)
    inputs, targets = inputs.chunk(world_size)[rank].to(device), targets.chunk(world_size)[rank].to(device)
    return list(zip(inputs.chunk(K), targets.chunk(K)))


# %%
# 在 DDP 下做累积的三种写法
# -------------------------
#
# 三种写法都做 ``K`` 次前向传播和反向传播，并像《:ref:`gradient_accumulation`》
# 里那样把每个损失除以 ``K``。区别只在于 ``no_sync()`` 放在哪里：
#
# * ``sync every micro-batch`` 不改动 DDP：每次 ``backward()`` 都做 all-reduce；
# * ``no_sync: forward and backward`` 按照文档的要求，把前 ``K − 1`` 个微批量的
#   前向传播 **和** 反向传播都放进 ``model.no_sync()``，最后一个微批量放在外面；
# * ``no_sync: backward only`` 在 ``no_sync()`` 之外算出损失，只把
#   ``backward()`` 放进去，这正是 ``no_sync()`` 的文档所警告的陷阱。
#
# ``nullcontext()`` 是一个什么也不做的上下文管理器：最后一个微批量照常同步。


def sync_every_micro_batch(model, micro_batches):
    for inputs, targets in micro_batches:
        loss = criterion(model(inputs), targets)
        (loss / K).backward()  # DDP 每次都在这里做 all-reduce


def no_sync_forward_and_backward(model, micro_batches):
    for i, (inputs, targets) in enumerate(micro_batches):
        last = i == K - 1
        with nullcontext() if last else model.no_sync():
            loss = criterion(model(inputs), targets)
            (loss / K).backward()  # 加到本工作进程的 .grad 上；只有最后一次做 all-reduce


def no_sync_backward_only(model, micro_batches):
    for i, (inputs, targets) in enumerate(micro_batches):
        last = i == K - 1
        loss = criterion(model(inputs), targets)  # 在 no_sync() 之外：DDP 已经准备好做 all-reduce
        with nullcontext() if last else model.no_sync():
            (loss / K).backward()


ACCUMULATION_LOOPS = {
    "sync every micro-batch": sync_every_micro_batch,
    "no_sync: forward and backward": no_sync_forward_and_backward,
    "no_sync: backward only": no_sync_backward_only,
}

# %%
# 数一数 all-reduce 的调用次数
# ----------------------------
#
# DDP 并不是一个梯度一个梯度地做 all-reduce：它把梯度分组装进若干个「桶」
# （bucket），一个桶里的梯度一旦全部算好，就对这个桶做 all-reduce，同时反向传播
# 继续计算前面各层。通信钩子用我们自己的函数替换对一个桶的 all-reduce。这里的
# ``counting_allreduce_hook`` 先把桶的编号记到一个列表里，再调用
# ``default_hooks.allreduce_hook``：按 PyTorch 文档的说法，这个求平均的 all-reduce
# 与不注册钩子时的 DDP 结果相同。
#
# 桶的默认上限是 25 MiB（第一个桶为 1 MiB），我们整个模型的梯度（约 150 KB）
# 装一个桶都绰绰有余。设置 ``bucket_cap_mb=0.05`` 让它分成几个桶，就像参数上亿
# 的模型在默认设置下那样。

BUCKET_CAP_MB = 0.05


def counting_allreduce_hook(bucket_indices, bucket):
    bucket_indices.append(bucket.index())
    return default_hooks.allreduce_hook(None, bucket)  # None：所有工作进程


def make_ddp_model(device):
    """一个 DDP 模型，它的每次 all-reduce 调用都记录在一同返回的列表里。"""
    model = DDP(make_model().to(device), device_ids=[device.index] if device.type == "cuda" else None,
                bucket_cap_mb=BUCKET_CAP_MB)
    bucket_indices = []
    model.register_comm_hook(bucket_indices, counting_allreduce_hook)
    return model, bucket_indices


# %%
# 每个工作进程测量什么
# --------------------
#
# ``measure`` 用一种累积循环训练一个新建的 DDP 模型。第 0 个更新步给出要与单进程
# 结果比较的梯度（在任何参数更新之前取，所以每种循环都从相同的权重出发）；它同时
# 也是预热，而且 DDP 正是在这一步之后按梯度实际算好的顺序重建它的桶。之后的各个
# 更新步都会计时，并统计其中的 all-reduce 调用次数；``dist.barrier()`` 让所有工作进程
# 同时开始每个更新步。


def flat_gradient(model):
    return torch.cat([p.grad.flatten() for p in model.parameters()]).cpu()


def measure(accumulate, rank, world_size, device):
    model, bucket_indices = make_ddp_model(device)
    optimizer = optim.SGD(model.parameters(), lr=0.01)
    accumulate(model, my_micro_batches(0, rank, world_size, device))
    gradient = flat_gradient(model)
    optimizer.step()
    optimizer.zero_grad()

    calls, seconds = [], []
    for step in range(1, TIMED_STEPS + 1):
        micro_batches = my_micro_batches(step, rank, world_size, device)
        bucket_indices.clear()
        dist.barrier()
        start = time.perf_counter()
        accumulate(model, micro_batches)
        optimizer.step()
        optimizer.zero_grad()
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # GPU 是异步执行的：读时钟之前先等它算完
        seconds.append(time.perf_counter() - start)
        calls.append(len(bucket_indices))
    return {"gradient": gradient, "all-reduce calls": calls, "buckets": len(set(bucket_indices)),
            "seconds": seconds}


# %%
# 对于分片的模型，FSDP2 的 ``fully_shard`` 把每个参数及其梯度切分到各个工作进程上；
# 它的反向传播不对梯度做 all-reduce，而是做 reduce-scatter（归约散射）：每个
# 工作进程只收到自己那一片梯度在所有工作进程上的平均值。它用于梯度累积的开关是
# ``model.set_requires_gradient_sync(False)``，在每个不该通信的微批量做前向传播
# 之前设置。``full_tensor()`` 把分片的梯度重新拼成完整的张量，以便比较。


def fsdp2_gradient(rank, world_size, device):
    model = make_model().to(device)
    mesh = init_device_mesh(device.type, (world_size,))
    for layer in model:
        if isinstance(layer, nn.Linear):
            fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    for i, (inputs, targets) in enumerate(my_micro_batches(0, rank, world_size, device)):
        model.set_requires_gradient_sync(i == K - 1)  # 只在最后一次反向传播中通信
        loss = criterion(model(inputs), targets)
        (loss / K).backward()
    return torch.cat([p.grad.full_tensor().flatten() for p in model.parameters()]).cpu()


# %%
# ``run_worker`` 是一个工作进程要做的全部事情：与其他进程会合（组成「进程组」），
# 选定设备，完成测量，然后离开进程组。设置超时后，如果某个集合
# 通信调用在等一个已经退出的工作进程，它会在 60 秒后报错，而不是永远等下去。


def run_worker(rank, local_rank, world_size, init_method):
    # 如果本进程在 fork 之前已经初始化了 CUDA，fork 出来的工作进程就用不了它（见上文）。
    backend = "gloo" if BACKEND == "nccl" and torch.cuda._is_in_bad_fork() else BACKEND
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=60))
    device = torch.device("cuda", local_rank) if backend == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    results = {"device": str(device), "backend": dist.get_backend(), "world size": world_size}
    for name, accumulate in ACCUMULATION_LOOPS.items():
        results[name] = measure(accumulate, rank, world_size, device)
    results["FSDP2"] = fsdp2_gradient(rank, world_size, device)
    dist.destroy_process_group()
    return results


# %%
# 启动工作进程
# ------------
#
# 在 ``torchrun`` 之下，本进程就是一个工作进程：它到 torchrun 给出的地址与其他
# 进程会合（``init_method="env://"``）。
#
# 单独运行时，脚本用 ``torch.multiprocessing.start_processes`` 启动两个工作进程。
# 它们是 fork 出来的：每个都是本进程的一份拷贝，连同其中定义的函数。常用的
# ``spawn`` 会启动一个全新的解释器，再按名字导入工作进程要运行的函数；而在笔记本
# 中，或者在构建本页面时，脚本并不是一个可以导入的模块，这条路走不通。工作进程
# 通过临时文件夹中的一个文件（``file://``）会合，而不是约定一个固定的端口号，
# 因此不会发生端口冲突；它们之间随后建立的连接使用系统挑选的端口。
#
# rank 0 把结果保存到这个文件夹中的一个文件里，等所有工作进程结束后，本进程再去
# 读取。如果某个工作进程抛出异常，``join`` 会终止其他进程，并在这里抛出错误。
# 不过，一个工作进程失败后，其他工作进程很快也会在下一次集合通信时失败
# （``Connection closed by peer``），而 ``join`` 报告的是它最先注意到的那个失败。
# 所以失败的工作进程还会把自己的 traceback 写进一个以时间命名的文件，这里抛出的
# 是其中最早的那个错误。另设一个截止时间，以防某个工作进程一直不结束；``finally`` 子句
# 则杀掉并回收剩下的所有进程。
#
# 每个工作进程只用一个线程，这与 torchrun 的默认设置相同：如果本进程已经执行过
# 多线程运算，fork 出来的工作进程可能会卡死在它的第一个多线程运算上。


def local_worker(rank, world_size, folder):
    torch.set_num_threads(1)
    try:
        results = run_worker(rank, rank, world_size, f"file://{folder}/rendezvous")
        if rank == 0:
            torch.save(results, Path(folder) / "results.pt")
    except Exception:
        # 所有进程共用同一个时钟，补零到相同位数：最早的失败排在最前面。
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
            while not workers.join(timeout=1):  # 全部结束时返回 True
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
        sys.exit(0)  # 任务完成：由 rank 0 替所有工作进程报告结果
else:
    results = start_local_workers(world_size=2)

if results["backend"] != BACKEND:
    print("CUDA was initialised in this process before the workers were forked, so they could not use "
          "the GPUs: they ran on the CPU with gloo (run the script in a fresh process, or with torchrun, "
          "to use the GPUs)")
print(f"Using device: {results['device']}")
print(f"Backend: {results['backend']}, world size: {results['world size']}")

# %%
# 上面几行打印了本页的两个工作进程用的是哪种设备和后端。
#
# 累积得到的梯度等于整批梯度吗？
# ------------------------------
#
# 参考值就在本进程中、不经过 DDP 直接算出：对第 0 个更新步的整批数据（所有
# 工作进程的份额合在一起）做一次前向传播和一次反向传播。``compare`` 就是
# 《:ref:`gradient_accumulation`》中的那个检查：用 ``torch.allclose`` 比较，容差与
# 梯度的大小成比例，并打印最大的绝对差。


def full_batch_gradient(world_size):
    model = make_model()
    inputs, targets = global_batch(0, world_size)
    criterion(model(inputs), targets).backward()
    return flat_gradient(model)


def compare(description, gradient, reference):
    # 舍入误差随数值大小增长，所以容差也随之放大。
    same = torch.allclose(gradient, reference, atol=1e-5 * reference.abs().max().item())
    difference = (gradient - reference).abs().max().item()
    print(f"{description}: {same} (max abs difference {difference:.2e})")
    return same


reference = full_batch_gradient(results["world size"])
for name in ACCUMULATION_LOOPS:
    compare(f"{name} == full batch", results[name]["gradient"], reference)

# %%
# 三种写法得到的都是整批梯度，只差舍入误差。每个微批量的损失是 16 个样本点的
# 平均值；除以 ``K``，再由 DDP 在各工作进程之间取平均，加起来正好是全部 128 个
# 样本点的平均值。``no_sync()`` 改变的是梯度 **什么时候** 取平均，而不是结果：
# all-reduce 对 ``.grad`` 里现有的值取平均，最后平均一次与每个微批量之后都平均
# 一次，结果相同。
#
# all-reduce 调用次数和每个更新步的耗时
# -------------------------------------
#
# 下表列出 rank 0 上计时的那些更新步中，每个更新步的 all-reduce 调用次数，以及
# 一个更新步耗时的中位数。

def median_milliseconds(name):
    return 1000 * torch.tensor(results[name]["seconds"]).median().item()


buckets = results["sync every micro-batch"]["buckets"]
print(f"DDP buckets: {buckets}, micro-batches per step: K = {K}")
print(f"{'accumulation loop':<31}{'all-reduce calls per step':>27}{'time per step (ms)':>20}")
for name in ACCUMULATION_LOOPS:
    calls = results[name]["all-reduce calls"]
    calls_per_step = str(calls[0]) if len(set(calls)) == 1 else f"{min(calls)} to {max(calls)}"
    print(f"{name:<31}{calls_per_step:>27}{median_milliseconds(name):>20.2f}")

# %%
# 不用 ``no_sync()`` 时，``K`` 次反向传播中的每一次都对每个桶做 all-reduce：每个
# 更新步调用 all-reduce 的次数是 ``K`` × 桶数。把前向传播和反向传播都放进
# ``no_sync()`` 之后，只有最后一次反向传播通信：每个桶一次。每个更新步在工作进程
# 之间传送的数据减少到原来的 ``K`` 分之一，更新步也更快。
#
# 陷阱写法做 all-reduce 的次数与完全不用 ``no_sync()`` 一样多。DDP 在 **前向传播**
# 中就决定了下一次反向传播是否做 all-reduce：在 ``no_sync()`` 之外执行的前向传播
# 会让 DDP 的 reducer 为此做好准备，之后再只用 ``no_sync()`` 包住 ``backward()`` 来关闭同步，已经太晚了。
# 梯度依然正确（见上文），所以不会有任何提示：没有我们这样的计数钩子，就只有
# 耗时能看出问题。
#
# 下图画的是同样的数字。耗时取决于机器：本页的数字来自构建它的那台机器，设备和
# 后端见上面的打印结果；两个工作进程都在这一台机器上，数据没有经过网络。跨机器
# 通过网络通信时，all-reduce 的开销通常比这里更大。

allreduce_calls = [max(results[name]["all-reduce calls"]) for name in ACCUMULATION_LOOPS]
step_milliseconds = [median_milliseconds(name) for name in ACCUMULATION_LOOPS]
fig, (calls_ax, time_ax) = plt.subplots(1, 2, figsize=(10, 4.5))
for ax, values in ((calls_ax, allreduce_calls), (time_ax, step_milliseconds)):
    ax.bar(0, values[0], color="tab:gray", label="不用 no_sync()")
    ax.bar(1, values[1], color="tab:green", label="no_sync()：前向传播和反向传播")
    ax.bar(2, values[2], color="tab:red", label="no_sync()：只包反向传播（陷阱）")
    ax.set_xticks([])
calls_ax.set_title("每个更新步的 all-reduce 调用次数")
time_ax.set_title("每个更新步的耗时（毫秒，中位数）")
fig.legend(*calls_ax.get_legend_handles_labels(), loc="lower center", ncol=3)
fig.suptitle(f"DDP：{results['world size']} 个工作进程，每个更新步 {K} 个微批量")
fig.tight_layout(rect=(0, 0.07, 1, 1))  # 在下方给图例留出位置
plt.show()

# %%
# 分片的模型：FSDP2
# -----------------
#
# 对 FSDP2 模型做同样的检查；它在同一次运行中用
# ``set_requires_gradient_sync(False)`` 做了累积。

compare("FSDP2, set_requires_gradient_sync == full batch", results["FSDP2"], reference)

# %%
# FSDP2 也能在 CPU 上用 ``gloo`` 运行，累积出的梯度同样正确。不过有内存上的代价：
# 同步关闭期间，每个工作进程为 **整个** 参数（而不只是自己的分片）保存到目前为止
# 各微批量的梯度，直到最后一次反向传播把它 reduce-scatter 出去。这正是分片本想
# 省下的内存：如果完整的梯度放不下，就让同步保持开启，每个微批量都做
# reduce-scatter，代价是 ``K`` 倍的通信量。
#
# 小结
# ----
#
# * 在 DDP 下，把前 ``K − 1`` 个微批量的前向传播和反向传播都放进
#   ``model.no_sync()``；最后一个微批量放在外面，由它把累积好的梯度在所有工作
#   进程之间取平均。
# * 只把 ``backward()`` 放进 ``no_sync()``，挡不住 all-reduce：DDP 在前向传播中
#   就已经决定要做 all-reduce。梯度是对的，通信量却是所需的 ``K`` 倍。
# * FSDP2 中对应的做法是 ``model.set_requires_gradient_sync(False)``。
# * ``torchrun --nproc_per_node=N`` 会把这个脚本本身作为 ``N`` 个工作进程运行。
# * 《:ref:`accumulation_in_practice`》把梯度累积放进一个真正的训练循环，而
#   《:ref:`zero_grad_pitfalls`》说明 ``zero_grad()`` 在其中应该放在哪里。
# * 《:ref:`distributed_pitfalls`》更进一步：各工作进程上序列长短不一时怎么办，
#   哪些 DDP 选项会破坏 ``no_sync()``，以及 FSDP2 在累积时要通信多少。

# sphinx_gallery_thumbnail_number = 1

# sphinx_gallery_start_ignore
# Translates recipes/en/distributed_accumulation.py, English text f4ff80789f862873 (make translation-status)
# sphinx_gallery_end_ignore
