"""
.. _gradient_accumulation:

有意地累积梯度
==============

``loss.backward()`` 把梯度加到 ``.grad`` 上，而不是覆盖它。其他几篇教程把这一点
当作陷阱来讲（:ref:`zeroing_out_gradients`），但它同样是一个有用的特性：借助它，
可以用超出内存容量的批量大小来训练。做法是把想要的那一批数据切成 ``k`` 个
*微批量*，依次对每个微批量做前向传播和反向传播，让梯度在 ``.grad`` 里逐步累积；
等到第 ``k`` 个微批量算完，优化器才执行一个更新步，随后把梯度清零。这样，内存里
同一时刻只需存放一个微批量的激活值，而每次更新用的却是整批数据的梯度。

整个技巧可以归结为一条规则：

* 每个微批量：``(loss / k).backward()``；
* 每第 ``k`` 个微批量：先 ``optimizer.step()``，再 ``optimizer.zero_grad()``。

本教程先验证按这条规则累积出的梯度与整批数据一次算出的梯度完全一致，再展示
三种对不上的情形（带批量归一化的模型、忘了除以 ``k`` 的循环、损失本来就是求和
却仍然除以 ``k``），最后用两种方式训练同一个小网络，说明两条损失曲线其实是
同一条曲线。
"""

# %%
# 准备工作
# --------
#
# 只需要 PyTorch 和 matplotlib。有 CUDA GPU 时在 GPU 上运行，否则在 CPU 上运行，
# 都只要几秒钟。

import copy

# 图中的标签是中文。如果显示成方框，说明 matplotlib 没找到中文字体：请安装一种（如 Noto Sans CJK SC），
# 再在画图前加上 plt.rcParams["font.family"] = ["DejaVu Sans", "Noto Sans CJK SC"]。
import matplotlib.pyplot as plt
import torch
import torch.nn as nn
import torch.optim as optim

device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
print(f"Using device: {device}")
torch.manual_seed(0)  # 每次运行都得到相同的随机数，因而结果也相同

# %%
# 一个小小的回归任务
# ------------------
#
# 数据当场生成：2,048 个样本点，每个有 8 个特征；目标值是这些特征的一个光滑的
# 非线性函数，再加上一点噪声。模型是只有一个隐藏层的小型多层感知机。
#
# 假设一批 256 个样本点对我们的设备来说太大，能放下的最大批量大小只有 64。于是
# *等效批量大小* 是 256，*微批量* 的大小是 64，每次更新由 ``k = 4`` 个微批量组成。

inputs = torch.randn(2048, 8, device=device)
true_direction = torch.randn(8, 1, device=device)
targets = torch.sin(inputs @ true_direction) + 0.1 * torch.randn(2048, 1, device=device)

BATCH_SIZE = 256  # 希望每次更新看到的批量大小
K = 4  # 每次更新累积的微批量个数
MICRO_BATCH_SIZE = BATCH_SIZE // K


def make_model(batch_norm=False):
    """只有一个隐藏层的多层感知机，可选加入批量归一化。"""
    layers = [nn.Linear(8, 64)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(64))
    layers += [nn.Tanh(), nn.Linear(64, 1)]
    return nn.Sequential(*layers).to(device)


model = make_model()
criterion = nn.MSELoss()  # reduction="mean"：损失是整批样本的平均值
batch_inputs, batch_targets = inputs[:BATCH_SIZE], targets[:BATCH_SIZE]

# %%
# 求同一个梯度的两种方法
# ----------------------
#
# ``full_batch_gradient`` 对全部 256 个样本点做一次前向传播和反向传播。
# ``accumulated_gradient`` 把同样这些样本点切成 ``k`` 个微批量，每个微批量调用
# 一次 ``backward()``，让梯度在 ``.grad`` 里累积起来。（这里的“整批”指一次处理
# 完这 256 个样本点，而不是整个数据集。）两个函数都把所有参数的梯度拼成一个
# 一维向量返回。
# 然后由 ``compare`` 用 ``torch.allclose`` 比较两者，允许的舍入误差与梯度本身的
# 大小成比例，并打印两者之间最大的绝对差。


def flat_gradient(model):
    """把所有参数的 ``.grad`` 拼成一个向量返回，随后清零梯度。"""
    gradient = torch.cat([p.grad.flatten() for p in model.parameters()])
    model.zero_grad()
    return gradient


def full_batch_gradient(model, loss_fn, x, y):
    loss_fn(model(x), y).backward()
    return flat_gradient(model)


def accumulated_gradient(model, loss_fn, x, y, k, divide_by_k=True):
    for x_micro, y_micro in zip(x.chunk(k), y.chunk(k)):
        loss = loss_fn(model(x_micro), y_micro)
        (loss / k if divide_by_k else loss).backward()  # 加到 .grad 上
    return flat_gradient(model)


def compare(description, gradient, reference):
    """打印两个梯度是否一致，以及它们最多相差多少。"""
    # 舍入误差随数值大小增长，所以容差也随之放大。
    same = torch.allclose(gradient, reference, atol=1e-5 * reference.abs().max().item())
    difference = (gradient - reference).abs().max().item()
    print(f"{description}: {same} (max abs difference {difference:.2e})")
    return same


full = full_batch_gradient(model, criterion, batch_inputs, batch_targets)
accumulated = accumulated_gradient(model, criterion, batch_inputs, batch_targets, K)
compare("accumulated == full batch", accumulated, full)

# %%
# 两者一致。剩下的那一点点差别来自舍入：浮点数的加法换一个顺序，结果就不再
# 逐位相同。
#
# 为什么要除以 ``k``？``MSELoss`` 对它拿到的那批样本取平均，所以每个微批量的
# 损失是 64 个样本点的平均值；整批的损失是 256 个样本点的平均值，也就是四个
# 微批量平均值的平均值，即它们的和除以 4。求梯度是线性运算，梯度之间也有同样
# 的关系：把每个微批量的梯度除以 ``k`` 后在 ``.grad`` 里加起来，得到的正是整批
# 平均损失的梯度。
#
# 对不上的情形：忘了除以 k
# ------------------------
#
# 不做除法时，``.grad`` 最后存的是四个微批量梯度的 *和*，恰好是整批梯度的
# ``k`` 倍。方向没错，但每一步都迈得长了 ``k`` 倍，相当于把学习率乘上了
# ``k``。

no_division = accumulated_gradient(model, criterion, batch_inputs, batch_targets, K, divide_by_k=False)
compare("no division by k == full batch", no_division, full)
compare("no division by k == k x full batch", no_division, K * full)
print(f"no division / full batch gradient norm: {(no_division.norm() / full.norm()).item():.4f} (k = {K})")

# %%
# 对不上的情形：求和的损失
# ------------------------
#
# 使用 ``reduction="sum"`` 时，整批的损失 *本身就是* 各微批量损失之和，直接
# 累积就已经是对的，再除以 ``k`` 反而错了：梯度会小 ``k`` 倍。所以规则的本意
# 是“让各微批量的损失加起来等于整批的损失”；对于常用的 ``reduction="mean"``，
# 这才意味着要除以 ``k``。

sum_criterion = nn.MSELoss(reduction="sum")
full_sum = full_batch_gradient(model, sum_criterion, batch_inputs, batch_targets)
compare("sum reduction, divided by k == full batch",
        accumulated_gradient(model, sum_criterion, batch_inputs, batch_targets, K), full_sum)
compare("sum reduction, not divided == full batch",
        accumulated_gradient(model, sum_criterion, batch_inputs, batch_targets, K, divide_by_k=False), full_sum)

# %%
# 同样的道理也适用于最后一个微批量比其他的小的情况：对平均损失，应按每个微批量
# 所占样本的比例（它的大小除以批量大小）加权，而不是一律乘以 ``1 / k``。
#
# 对不上的情形：批量归一化
# ----------------------
#
# 批量归一化层在训练模式下，用 *它拿到的这批数据* 的均值和方差对每个特征做归一化。
# 每次只喂 64 个样本点，它就会算出四组不同的统计量，而不是基于全部 256 个样本点
# 的一组。这样网络本身算的就已经是另一个函数了，无论除以什么数都找不回整批的
# 梯度。此外，它的滑动平均统计量也会被更新四次，而不是一次。

bn_model = make_model(batch_norm=True)
compare("batch norm, accumulated == full batch",
        accumulated_gradient(bn_model, criterion, batch_inputs, batch_targets, K),
        full_batch_gradient(bn_model, criterion, batch_inputs, batch_targets))

# %%
# 这次的差别已经不是舍入误差了。它在实践中要不要紧，取决于微批量的大小：基于
# 64 个样本点的统计量比基于 256 个的噪声大一些，但通常仍然够用；只有 2 个或 4 个
# 样本点时就不行了。不在批内样本之间混合信息的层，例如 ``nn.LayerNorm`` 和
# ``nn.GroupNorm``，累积的结果与整批完全一致。Dropout 也会造成差异，原因只是随机
# 掩码不同，但它并不改变所估计的量。
#
# 两种方式各训练一遍
# ------------------
#
# 下面是一个真正的训练循环。``train`` 就是标准的训练循环，只是内置了梯度累积：
# 每处理 ``accumulation_steps`` 个微批量，执行一个更新步并清零梯度。
# ``accumulation_steps=1`` 配合大小为 256 的微批量，就是普通的整批训练循环；取
# ``4`` 配合大小为 64 的微批量，就是梯度累积。两次运行从相同的初始权重出发，并
# 按相同的打乱顺序取样本点（用相同种子初始化的随机数生成器），所以两次运行的每次
# 更新看到的都是同样的 256 个样本点。
#
# 每次更新记录的损失是它那 256 个样本点上的损失；对累积的那次运行来说，就是它的
# 各个微批量的 ``loss / k`` 之和。


def train(model, micro_batch_size, accumulation_steps, epochs=30):
    """在数据集上用带动量的 SGD 训练，返回每次更新的损失。"""
    optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    shuffle = torch.Generator().manual_seed(0)
    losses = []
    for epoch in range(epochs):
        order = torch.randperm(len(inputs), generator=shuffle).to(device)
        update_loss = 0.0
        for i, indices in enumerate(order.split(micro_batch_size)):
            loss = criterion(model(inputs[indices]), targets[indices])
            (loss / accumulation_steps).backward()  # 加到 .grad 上
            update_loss += loss.item() / accumulation_steps
            if (i + 1) % accumulation_steps == 0:  # 第 k 个微批量：更新参数，然后从头累积
                optimizer.step()
                optimizer.zero_grad()
                losses.append(update_loss)
                update_loss = 0.0
    return losses


initial_weights = copy.deepcopy(make_model().state_dict())
runs = {}
for name, micro_batch_size, accumulation_steps in [
    ("full batch", BATCH_SIZE, 1),
    ("accumulated", MICRO_BATCH_SIZE, K),
]:
    model = make_model()
    model.load_state_dict(initial_weights)
    runs[name] = train(model, micro_batch_size, accumulation_steps)
    print(f"{name}: {len(runs[name])} updates, final loss {runs[name][-1]:.4f}")

loss_difference = max(abs(a - b) for a, b in zip(runs["full batch"], runs["accumulated"]))
print(f"max difference between the two loss histories: {loss_difference:.2e}")

# %%
# 两次运行的更新次数相同，最终损失也相同；两份损失记录之间只差舍入误差。不同的
# 是代价：累积的那次运行每次更新要做四次较小的前向传播和反向传播，而不是一次，
# 所以只要整批数据放得下，它就更慢。梯度累积是用时间换内存。
#
# 下图画出了两条损失曲线。虚线（梯度累积）与实线（整批）完全重合。

fig, ax = plt.subplots(figsize=(8, 4.5))
ax.plot(runs["full batch"], linewidth=3, alpha=0.5, label="整批：256 个样本")
ax.plot(runs["accumulated"], "--", color="black", linewidth=1,
        label="梯度累积：4 个微批量，每个 64 个样本")
ax.set_yscale("log")
ax.set_xlabel("更新步")
ax.set_ylabel("该批数据的均方误差")
ax.set_title("整批训练与梯度累积：同一个训练过程")
ax.legend()
fig.tight_layout()
plt.show()

# %%
# 什么时候用
# ----------
#
# 当想要的批量大小在内存里放不下时，就该用梯度累积：模型很大、序列很长、图像分辨率
# 很高，或者 GPU 显存很小。随批量大小增长的内存，主要是为反向传播保存的激活值，
# 而它们在每个微批量的 ``backward()`` 之后就被释放了；``.grad`` 本身的大小与参数
# 相同，与批量大小无关。梯度累积并不会让训练变快，它让一台小设备一个微批量一个
# 微批量地复现大批量训练的每一次更新。
#
# 小结
# ----
#
# * 每个微批量执行 ``(loss / k).backward()``；每第 ``k`` 个微批量执行
#   ``optimizer.step()`` 和 ``optimizer.zero_grad()``。
# * 除以 ``k`` 是为了让各微批量的损失加起来等于整批的平均损失。不除，梯度就大了
#   ``k`` 倍；如果用的是 ``reduction="sum"``，就不要除。
# * 跨样本计算的层（首先是批量归一化）每次只能看到一个微批量，结果也就不再与整批
#   相同。
# * ``zero_grad()`` 在循环中应该放在哪里、它不能做什么，见
#   :ref:`zero_grad_pitfalls`。

# sphinx_gallery_thumbnail_number = 1
