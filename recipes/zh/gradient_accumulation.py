"""
.. _gradient_accumulation:

有意地累积梯度
==============

``loss.backward()`` 把梯度加到 ``.grad`` 上，而不是覆盖它。其他几篇教程把这一点
当作陷阱（见《:ref:`zeroing_out_gradients`》），但它也是一个有用的特性：借助它，
可以用内存装不下的大批量来训练。做法是把想要的那一批数据切成 ``k`` 个 **微批量**，
依次对每个微批量做前向传播和反向传播，让梯度在 ``.grad`` 里逐步累积；算完第
``k`` 个微批量，优化器才执行一个更新步，随后清零梯度。这样，内存里同一时刻只存放
一个微批量的激活值，而每次更新用的却是整批数据的梯度。

整个技巧可以归结为一条规则：

* 每个微批量执行 ``(loss / k).backward()``；如果同一次更新中各微批量的大小不同，
  则改为按该微批量在这次更新的样本中所占的比例给损失加权；
* 每到第 ``k`` 个微批量，以及一轮中的最后一个微批量，先执行
  ``optimizer.step()``，再执行 ``optimizer.zero_grad()``。

本教程先验证按这条规则累积出的梯度与整批数据一次算出的梯度完全一致，再逐一展示
出错的情形：循环中忘了除以 ``k``\\ （以及这对 SGD、Adam 和梯度裁剪各有什么影响）、
损失本来就是求和却仍然除以 ``k``、一轮末尾剩下的微批量凑不满一次更新、模型中有
批量归一化层。最后用两种方式训练同一个小网络，说明两条损失曲线其实是同一条。
"""

# %%
# 准备工作
# --------
#
# 只需要 PyTorch 和 matplotlib。有 CUDA GPU 时在 GPU 上运行，否则在 CPU 上运行，
# 整个脚本运行几秒钟。
#
# 设定了随机种子后，只要在同一台机器上、使用相同的 PyTorch 版本和线程数，每次运行
# 打印的数字都相同；换一种 CPU，最后几位数字可能不同。在 GPU 上得到的数字则不一样：CUDA
# 有自己的随机数生成器，连随机生成的数据都和 CPU 上的不同，而且 GPU 核函数的求和
# 顺序也不同。在同一块 GPU 上重复运行，结果通常也一致，但只有
# ``torch.use_deterministic_algorithms(True)`` 才会让 PyTorch 在有确定性实现的地方
# 采用它，在没有的地方直接报错。本教程要说明的结论，即哪些梯度一致、
# 哪些不一致，在哪种设备上都成立。

import copy

# 图中的标签是中文。如果显示成方框，说明 matplotlib 没找到中文字体：请安装一种（如 Noto Sans CJK SC），
# 再在画图前加上 plt.rcParams["font.family"] = ["DejaVu Sans", "Noto Sans CJK SC"]。
import matplotlib.pyplot as plt
import torch
import torch.nn as nn
import torch.optim as optim

device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
print(f"Using device: {device}")
torch.manual_seed(0)  # 同一台机器上每次运行数据都相同；GPU 生成的随机数与 CPU 不同

# %%
# 一个小小的回归任务
# ------------------
#
# 数据是当场生成的：2,200 个样本点，每个有 8 个特征；目标值是这些特征的一个光滑的
# 非线性函数，再加上一点噪声。模型是带一个隐藏层的小型多层感知机。
#
# 假设一批 256 个样本点对我们的设备来说太大，能放下的最大批量大小只有 64。于是
# **等效批量大小** 是 256，**微批量** 的大小是 64，每次更新由 ``k = 4`` 个微批量
# 组成。（特意选了不是 256 倍数的 2,200：每一轮最后都剩下一个较小的批量，后面讲
# 最后一个窗口的一节会处理它。）

inputs = torch.randn(2200, 8, device=device)
true_direction = torch.randn(8, 1, device=device)
targets = torch.sin(inputs @ true_direction) + 0.1 * torch.randn(2200, 1, device=device)

BATCH_SIZE = 256  # 希望每次更新看到的批量大小
K = 4  # 每次更新累积的微批量个数
MICRO_BATCH_SIZE = BATCH_SIZE // K


def make_model(batch_norm=False):
    """单隐藏层的多层感知机，可选加入批量归一化。"""
    layers = [nn.Linear(8, 64)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(64))
    layers += [nn.Tanh(), nn.Linear(64, 1)]
    return nn.Sequential(*layers).to(device)


model = make_model()
initial_weights = copy.deepcopy(model.state_dict())  # 下面每次训练都从这组权重出发
criterion = nn.MSELoss()  # reduction="mean"：损失是整批样本的平均值
batch_inputs, batch_targets = inputs[:BATCH_SIZE], targets[:BATCH_SIZE]

# %%
# 求同一个梯度的两种方法
# ----------------------
#
# ``full_batch_gradient`` 对全部 256 个样本点做一次前向传播和反向传播。而
# ``accumulate`` 把同样这些样本点切成大小为 64 的微批量，每个微批量调用一次
# ``backward()``，让梯度在 ``.grad`` 里累加起来。每个微批量的损失按它所占样本的
# 比例加权，这里是 64 / 256 = 1 / ``k``；其他加权方式就是后文要展示的错误。（这里的
# 「整批」指一次处理完这 256 个样本点，而不是整个数据集。）\ ``accumulated_gradient`` 和
# ``full_batch_gradient`` 都把所有参数的梯度拼成一个一维向量返回。然后由 ``compare``
# 用 ``torch.allclose`` 比较两者，允许的舍入误差与梯度本身的大小成比例，并打印两者
# 之间最大的绝对差。


def flat_gradient(model):
    """把所有参数的 ``.grad`` 拼成一个向量返回，随后清零梯度。"""
    gradient = torch.cat([p.grad.flatten() for p in model.parameters()])
    model.zero_grad()
    return gradient


def full_batch_gradient(model, loss_fn, x, y):
    loss_fn(model(x), y).backward()
    return flat_gradient(model)


def accumulate(model, loss_fn, x, y, weighting="share of the points"):
    """把 ``x`` 的各个微批量依次做反向传播，每个损失按指定的方式加权。"""
    for x_micro, y_micro in zip(x.split(MICRO_BATCH_SIZE), y.split(MICRO_BATCH_SIZE)):
        loss = loss_fn(model(x_micro), y_micro)
        weight = {"share of the points": len(x_micro) / len(x), "1/k": 1 / K, "none": 1.0}[weighting]
        (weight * loss).backward()  # 加到 .grad 上


def accumulated_gradient(model, loss_fn, x, y, weighting="share of the points"):
    accumulate(model, loss_fn, x, y, weighting)
    return flat_gradient(model)


def compare(description, gradient, reference):
    """打印两个梯度是否一致，以及它们最多相差多少。"""
    # 舍入误差随数值大小增长，所以容差也随之放大。
    same = torch.allclose(gradient, reference, atol=1e-5 * reference.abs().max().item())
    difference = (gradient - reference).abs().max().item()
    print(f"{description}: {same} (max abs difference {difference:.2e})")
    return same


full = full_batch_gradient(model, criterion, batch_inputs, batch_targets)
accumulated = accumulated_gradient(model, criterion, batch_inputs, batch_targets)
compare("accumulated == full batch", accumulated, full)

# %%
# 两者一致。剩下的那一点点差别来自舍入：浮点数加法的顺序一变，结果就不再逐位相同。
#
# 为什么要除以 ``k``？``MSELoss`` 对它拿到的那批样本取平均，所以每个微批量的损失是
# 64 个样本点的平均值；整批的损失是 256 个样本点的平均值，也就是四个微批量平均值的
# 平均值，即它们的和除以 4。求梯度是线性运算，梯度之间也有同样的关系：把每个微批量
# 的梯度除以 ``k`` 后在 ``.grad`` 里加起来，得到的正是整批平均损失的梯度。
#
# 对不上的情形：忘了做除法
# --------------------------
#
# 不做除法时，``.grad`` 最后存的是四个微批量梯度的 **和**，是整批梯度的 ``k`` 倍：
# 方向没错，长度却是应有值的 ``k`` 倍。

no_division = accumulated_gradient(model, criterion, batch_inputs, batch_targets, weighting="none")
compare("no division by k == full batch", no_division, full)
compare("no division by k == k x full batch", no_division, K * full)
print(f"no division / full batch gradient norm: {(no_division.norm() / full.norm()).item():.4f} (k = {K})")

# %%
# 梯度是应有值的 ``k`` 倍，对训练有什么影响，要看优化器怎样使用梯度。下面让每种
# 优化器从相同的初始权重出发，在相同的 2,048 个样本点上做 8 次累积更新，各做三遍：
# 不除以 ``k``；除以 ``k``；除以 ``k``，同时把学习率乘以 ``k``。表中给出不做除法时
# 权重的变化量与另外两遍相差多少，以变化量本身的大小为单位（0 表示完全相同）。
# 最后一行用 SGD 再做一遍，每次更新前都调用 ``clip_grad_norm_(max_norm=1.0)``，
# 并统计梯度被裁剪的更新次数。

OPTIMIZERS = {
    "SGD, momentum=0.9": lambda params, lr_scale: optim.SGD(params, lr=0.05 * lr_scale, momentum=0.9),
    "SGD, momentum=0.9, weight_decay=0.01":
        lambda params, lr_scale: optim.SGD(params, lr=0.05 * lr_scale, momentum=0.9, weight_decay=0.01),
    "Adam": lambda params, lr_scale: optim.Adam(params, lr=1e-3 * lr_scale),
    "AdamW, weight_decay=0.01": lambda params, lr_scale: optim.AdamW(params, lr=1e-3 * lr_scale, weight_decay=0.01),
}


def weight_change(make_optimizer, weighting, lr_scale=1, max_norm=None, updates=8):
    """``updates`` 次累积更新让初始权重变化了多少；以及其中有几次的梯度被裁剪。"""
    model = make_model()
    model.load_state_dict(initial_weights)
    start = nn.utils.parameters_to_vector(model.parameters()).detach()
    optimizer = make_optimizer(model.parameters(), lr_scale)
    clipped = 0
    for x, y in zip(inputs.split(BATCH_SIZE)[:updates], targets.split(BATCH_SIZE)[:updates]):
        accumulate(model, criterion, x, y, weighting)
        if max_norm is not None:
            clipped += int(nn.utils.clip_grad_norm_(model.parameters(), max_norm) > max_norm)
        optimizer.step()
        optimizer.zero_grad()
    return nn.utils.parameters_to_vector(model.parameters()).detach() - start, clipped


def relative_difference(change, reference):
    return ((change - reference).abs().max() / reference.abs().max()).item()


print(f"{'optimizer':<40}{'vs with division':>18}{'vs with division, lr x k':>26}")
for name, make_optimizer in OPTIMIZERS.items():
    no_division_change, _ = weight_change(make_optimizer, "none")
    divided_change, _ = weight_change(make_optimizer, "share of the points")
    faster_change, _ = weight_change(make_optimizer, "share of the points", lr_scale=K)
    print(f"{name:<40}{relative_difference(no_division_change, divided_change):>18.2e}"
          f"{relative_difference(no_division_change, faster_change):>26.2e}")

clipped = {weighting: weight_change(OPTIMIZERS["SGD, momentum=0.9"], weighting, max_norm=1.0)[1]
           for weighting in ("none", "share of the points")}
print(f"SGD with clip_grad_norm_(max_norm=1.0): clipped {clipped['none']} of 8 updates without division, "
      f"{clipped['share of the points']} of 8 with it")

# %%
# 说忘了除以 ``k``\ 「相当于把学习率乘以 ``k``」，只对不带权重衰减的 SGD（有没有动量
# 都一样）严格成立：它的更新量是梯度的线性函数（有动量时，是迄今全部梯度的线性
# 函数），所以不做除法得到的权重与把学习率乘以
# ``k`` 的那一遍相同（这里是逐位相同，因为在二进制浮点数中乘以或除以 4 不损失任何
# 精度），而与本该得到的权重相去甚远。
#
# * ``optim.SGD``\ （以及 ``optim.Adam``）的权重衰减是 **耦合** 的：它把
#   ``weight_decay * param`` 加到梯度上，而这一项不会乘以 ``k``。不做除法时，这一遍
#   与另外两遍都对不上：它相当于学习率乘以 ``k``、权重衰减除以 ``k``。
# * Adam 和 AdamW 用梯度的滑动平均值除以梯度平方的滑动平均值的平方根。梯度变成
#   原来的 ``k`` 倍时，两者按同样的比例变化，所以更新量几乎不变：权重的差别只有变化量的十万分之几，而且完全来自 ``eps``，即加在
#   那个平方根上的小常数。在这里忘了除以 ``k`` 几乎没有影响，为了「补偿」而把学习率
#   乘以 ``k``，才是真正的错误。AdamW 的权重衰减直接作用在权重上，不经过梯度，所以
#   它的含义也不受影响。
# * 梯度裁剪拿 ``.grad`` 的范数与 ``max_norm`` 比较。不做除法时，这个范数是应有值的
#   ``k`` 倍，于是按真实梯度选定的阈值在这里裁剪了全部 8 次更新，而做了除法时只裁剪
#   了 1 次。
#
# 对不上的情形：求和的损失
# ------------------------
#
# 使用 ``reduction="sum"`` 时，整批的损失 **本身就是** 各微批量损失之和，直接累积
# 就已经是对的，再除以 ``k`` 反而错了：梯度只有应有值的 ``1 / k``。所以规则的本意是
# 「让各微批量的损失加起来等于整批的损失」；对于常用的 ``reduction="mean"``，这就意味着
# 要除以 ``k``。

sum_criterion = nn.MSELoss(reduction="sum")
full_sum = full_batch_gradient(model, sum_criterion, batch_inputs, batch_targets)
compare("sum reduction, divided by k == full batch",
        accumulated_gradient(model, sum_criterion, batch_inputs, batch_targets, weighting="1/k"), full_sum)
compare("sum reduction, not divided == full batch",
        accumulated_gradient(model, sum_criterion, batch_inputs, batch_targets, weighting="none"), full_sum)

# %%
# 对不上的情形：一轮中的最后一个窗口
# ----------------------------------
#
# 2,200 个样本点切成 34 个各含 64 个样本点的微批量和 1 个含 24 个样本点的微批量，共 35 个。
# 把一次更新所用的那些微批量称为一个窗口，这 35 个微批量就是 8 个 ``k = 4`` 的窗口，
# 外加最后一个由 3 个微批量组成的窗口，共 64 + 64 + 24 = 152 个样本点。整批训练
# 则把同样的一轮数据分成 8 个大小为 256 的批量和 1 个大小为 152 的批量。
#
# 最后这个窗口要单独加权。它的损失应当是这 152 个样本点的平均值，所以每个微批量
# 按它在其中所占的比例计入：64 / 152、64 / 152 和 24 / 152。如果仍然除以 ``k``，
# 每个微批量的权重都是 1 / 4：三个权重加起来只有 3 / 4 而不是 1，更新量偏小，而且
# 24 个样本点与 64 个样本点分量相同。

LEFTOVER = len(inputs) % BATCH_SIZE
short_inputs, short_targets = inputs[-LEFTOVER:], targets[-LEFTOVER:]
full_short = full_batch_gradient(model, criterion, short_inputs, short_targets)
compare(f"last window of {LEFTOVER} points, weighted by share == full batch",
        accumulated_gradient(model, criterion, short_inputs, short_targets), full_short)
compare(f"last window of {LEFTOVER} points, divided by k == full batch",
        accumulated_gradient(model, criterion, short_inputs, short_targets, weighting="1/k"), full_short)

# %%
# 常见的写法在这个窗口上还有第二个问题。它用 ``enumerate`` 给微批量计数，在
# ``(i + 1) % k == 0`` 时执行更新步；而计数每一轮都从头开始，所以第 32 个微批量
# 之后，最后三个微批量做了反向传播，却没有更新步跟在后面。它们的梯度留在
# ``.grad`` 里，被加进下一轮的第一次更新（最后一轮留下的则根本用不上）。只要每一轮
# 的微批量个数恰好是 ``k`` 的倍数，这个问题就不会暴露。下面用这种写法跑一轮，看看
# 它留下了什么：


def epoch_stepping_every_kth_micro_batch(model):
    """用常见的写法训练一轮，返回之后 .grad 里剩下的梯度。"""
    optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    order = torch.randperm(len(inputs), generator=torch.Generator().manual_seed(0)).to(device)
    for i, indices in enumerate(order.split(MICRO_BATCH_SIZE)):
        loss = criterion(model(inputs[indices]), targets[indices])
        (loss / K).backward()
        if (i + 1) % K == 0:
            optimizer.step()
            optimizer.zero_grad()
    return [p.grad for p in model.parameters() if p.grad is not None]


left_over = epoch_stepping_every_kth_micro_batch(copy.deepcopy(model))
print(f"micro-batches per epoch: {len(inputs.split(MICRO_BATCH_SIZE))}, k = {K}; "
      f"gradient left in .grad after the epoch: norm {torch.cat([g.flatten() for g in left_over]).norm().item():.4f}")

# %%
# 解决办法是在每个窗口结束时都执行更新步，包括最后那个较短的窗口，并且每个微批量按
# 它在所属窗口的样本中所占的比例加权。下面的训练循环两件事都做了。
#
# 对不上的情形：批量归一化
# ------------------------
#
# 批量归一化层在训练模式下，用 **它拿到的这批数据** 的均值和方差对每个特征做归一化。
# 每次只喂 64 个样本点，它就会算出四组不同的统计量，而不是基于全部 256 个样本点的
# 一组。这样网络本身算的就已经是另一个函数了，无论除以什么数都找不回整批的梯度。
# 此外，它的滑动平均统计量也会更新四次，而不是一次。

bn_model = make_model(batch_norm=True)
compare("batch norm, accumulated == full batch",
        accumulated_gradient(bn_model, criterion, batch_inputs, batch_targets),
        full_batch_gradient(bn_model, criterion, batch_inputs, batch_targets))

# %%
# 这次的差别已经不是舍入误差了。它在实践中要不要紧，取决于微批量的大小：基于 64 个
# 样本点的统计量比基于 256 个的噪声大一些，但通常仍然够用；只有 2 个或 4 个样本点时
# 就不行了。不在批内样本之间混合信息的层，例如 ``nn.LayerNorm`` 和 ``nn.GroupNorm``，
# 累积的结果与整批一致，只差舍入误差。dropout 也会造成差异，原因只是随机掩码不同，
# 但它并不改变所估计的量。
#
# 两种方式各训练一遍
# ------------------
#
# 下面是一个真正的训练循环。``train`` 把每一轮数据切成微批量，再把微批量每
# ``accumulation_steps`` 个分成一个窗口；每个窗口结束时（包括最后那个较短的窗口）
# 执行更新步并清零梯度，每个微批量按它在所属窗口的样本中所占的比例加权。取
# ``accumulation_steps=1``、微批量大小为 256，就是普通的整批训练循环；取 ``4``、
# 微批量大小为 64，就是梯度累积。两次运行从相同的初始权重出发，并按相同的
# 打乱顺序取样本点（用相同种子初始化的随机数生成器），所以两次运行的每次更新看到的
# 都是同一批样本点。
#
# 每次更新记录的损失是它那些样本点上的平均损失；对梯度累积的那次运行来说，就是它的
# 各个微批量加权后的损失之和。循环里累加的是 ``loss.detach()``，而不是
# ``loss.item()``：在 GPU 上，``.item()`` 要等 GPU 算完，CPU 才能继续提交后面的
# 计算，每个微批量都调用一次会让循环走走停停。所有损失在最后一次性复制到 CPU 上。


def train(model, micro_batch_size, accumulation_steps, epochs=25):
    """在数据集上用带动量的 SGD 训练，返回每次更新的损失。"""
    optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    shuffle = torch.Generator().manual_seed(0)
    losses = []
    for epoch in range(epochs):
        order = torch.randperm(len(inputs), generator=shuffle).to(device)
        micro_batches = order.split(micro_batch_size)
        for start in range(0, len(micro_batches), accumulation_steps):
            window = micro_batches[start:start + accumulation_steps]  # 最后一个窗口可能较短
            window_points = sum(len(indices) for indices in window)
            update_loss = torch.zeros((), device=device)
            for indices in window:
                loss = criterion(model(inputs[indices]), targets[indices])
                weighted_loss = loss * (len(indices) / window_points)  # 它在窗口平均损失中所占的份额
                weighted_loss.backward()  # 加到 .grad 上
                update_loss += weighted_loss.detach()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(update_loss)
    return torch.stack(losses).tolist()


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
# 两次运行的更新次数相同（每轮 9 次），最终损失也相同；两份损失记录之间只差舍入
# 误差，较短的窗口也不例外。不同的是代价：梯度累积的那次运行每次更新要做四次较小的
# 前向传播和反向传播，而不是一次；只要整批数据其实放得下，这样做就更慢。梯度累积是用
# 时间换内存。
#
# 下图画出了两条损失曲线。虚线（梯度累积）与实线（整批）完全重合。

fig, ax = plt.subplots(figsize=(8, 4.5))
ax.plot(runs["full batch"], linewidth=3, alpha=0.5, label="整批：256 个样本点")
ax.plot(runs["accumulated"], "--", color="black", linewidth=1,
        label="梯度累积：4 个微批量，每个 64 个样本点")
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
# 很高，或者 GPU 显存很小。随批量大小增长的内存，主要是为反向传播保存的激活值，而它们
# 在每个微批量的 ``backward()`` 之后就被释放了；``.grad`` 本身的大小与参数相同，与
# 批量大小无关。它们在一个训练步中各占多少内存，以及怎样避免同时存下全部梯度，见
# 《:ref:`optimizer_step_in_backward`》。梯度累积并不会让训练变快，它让一台小设备一个微批量接一个微批量地
# 复现大批量训练的每一次更新。
#
# 小结
# ----
#
# * 每个微批量执行 ``(loss / k).backward()``；每凑满 ``k`` 个微批量，执行
#   ``optimizer.step()`` 和 ``optimizer.zero_grad()``。
# * 除以 ``k`` 是为了让各微批量的损失加起来等于整批的平均损失。不除，梯度就是应有值
#   的 ``k`` 倍：对 SGD 来说相当于学习率乘以 ``k``，对 Adam 几乎没有影响，但它会改变
#   权重衰减和裁剪阈值的含义。如果用的是 ``reduction="sum"``，就不要除。
# * 一轮中最后一个窗口结束时也要执行更新步，每个微批量按它在所属窗口的样本中所占的
#   比例加权。
# * 跨样本计算的层（尤其是批量归一化）每次只能看到一个微批量，结果也就不再与整批
#   相同。
# * 《:ref:`accumulation_in_practice`》更进一步，讲混合精度、梯度裁剪、学习率调度器，
#   以及按词元（token）数加权的损失。
# * ``zero_grad()`` 在循环中应该放在哪里、它不能做什么，见
#   《:ref:`zero_grad_pitfalls`》。

# sphinx_gallery_thumbnail_number = 1

# sphinx_gallery_start_ignore
# Translates recipes/en/gradient_accumulation.py, English text ecd0cc7a2f3382a2 (make translation-status)
# sphinx_gallery_end_ignore
