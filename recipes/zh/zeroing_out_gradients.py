"""
.. _zeroing_out_gradients:

训练分类器时清零梯度
====================

每次调用 ``loss.backward()``，新算出的梯度都会 **加到** 各个参数的 ``.grad``
属性上（``.grad`` 还是 ``None`` 时则直接设为这个梯度）。PyTorch 从不自动清零
``.grad``，这件事要由训练循环来做：每个小批量调用一次 ``optimizer.zero_grad()``。
如果不清零，每次更新用的就不是当前小批量的梯度，而是到目前为止所有梯度之和。

本教程把经典的小型 CIFAR-10 图像分类器训练两遍，两遍的初始权重相同，小批量的顺序也相同：

1. 按常规写法，在每个更新步开始时调用 ``optimizer.zero_grad()``；
2. 其余完全一样，只删掉这一行。

你将学到：

* 少了这一行，真实的训练会怎样：训练过程中 ``.grad`` 和 SGD 动量缓冲区的大小、
  损失曲线、测试准确率；
* 为什么不调用 ``zero_grad()`` 的训练像一个永远不会减速的球，它最后怎样收场又为什么
  取决于机器；
* ``model.zero_grad()`` 和 ``optimizer.zero_grad()`` 在什么情况下作用不同，以及怎样
  冻结网络层才不会留下过时的梯度。

.. note::
   相关教程：《:ref:`gradients_accumulate`》在一个含两个元素的张量上演示累积的
   机制，《:ref:`linear_regression_without_zero_grad`》在直线拟合中重现同样的问题，
   《:ref:`gradient_accumulation`》讲解怎样有意地累积梯度，《:ref:`zero_grad_pitfalls`》
   说明 ``zero_grad()`` 在循环中应该放在哪里。
"""

# %%
# 准备工作
# --------
#
# 除了 PyTorch，还要用 torchvision 加载数据集，用 matplotlib 画图。有 CUDA GPU
# 时本教程在 GPU 上运行，否则在 CPU 上运行；在 CPU 上大约需要一两分钟。随机种子
# 让每次运行得到相同的随机数，初始权重和下文小批量的顺序因此都相同。
#
# .. note::
#    **你的数字会和本页一样吗？** 在 CPU 上，只要机器、PyTorch 版本和线程数不变，
#    除了耗时以外，整个输出每次运行都完全一样。页面底部的记录写明了本页运行时的
#    条件：CPU 的指令集级别（PyTorch 的核函数所用的向量指令，如 AVX512 或 AVX2）
#    和线程数。换一种指令集级别或线程数，同样的数相加的顺序不同，舍入也不同。正常
#    训练只会差一点；不调用 ``zero_grad()`` 的训练会把微小的差别放大，可能走上完全
#    不同的路，所以下文把每一种可能的走向都讲到了。在 CUDA GPU 上，相同的只有起点和
#    小批量的顺序：cuDNN 在卷积的反向传播中可能选用非确定性的算法；在支持 TF32 的
#    GPU 上，cuDNN 还默认用 TF32 计算卷积，尾数位比 CPU 上的 float32 少。

import copy
import math
import os
import time
from pathlib import Path

# 图中的标签是中文。如果显示成方框，说明 matplotlib 没找到中文字体：请安装一种（如 Noto Sans CJK SC），
# 再在画图前加上 plt.rcParams["font.family"] = ["DejaVu Sans", "Noto Sans CJK SC"]。
import matplotlib.pyplot as plt
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
import torchvision
from torchvision.transforms import v2 as transforms

# 测试套件会设置 ZERO_GRAD_SMOKE=1，用随机图像训练几秒钟。
SMOKE_TEST = os.environ.get("ZERO_GRAD_SMOKE") == "1"

device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
print(f"Using device: {device}")
torch.manual_seed(0)  # 每次运行的初始权重都相同（其他结果能否复现，见上文）

# %%
# 加载 CIFAR-10 并归一化
# ----------------------
#
# CIFAR-10 有十个类别的 32×32 像素图像，训练图像 50,000 张，测试图像 10,000 张。
# 能联网时，torchvision 会把它下载到 ``./data``。不能联网时，请把环境变量
# ``CIFAR10_ROOT`` 指向一份本地副本，目录结构为 ``train/<class>/*.jpg`` 和
# ``test/<class>/*.jpg``。
#
# 这个教程的经典版本在 ``DataLoader`` 里处理图像，每一轮（epoch）都把每张图像
# 重新转换、归一化一遍。这里每张图像只解码一次，训练集和测试集各存成一个
# ``uint8`` 张量，再对整个张量一次性做同样的归一化：每个通道的均值和标准差都取
# 0.5，像素值因此落在 [-1, 1] 区间。网络看到的数值相同（个别像素可能在最后一位
# 上有舍入差别），只是训练循环不用再等待图像解码了。

CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck")
DATA_ROOT = Path(os.environ.get("CIFAR10_ROOT", "data"))


def read_image_folder(folder):
    """把 ``folder/<class>/*`` 解码成形状为 (N, 3, 32, 32) 的 uint8 张量，并返回对应的标签。"""
    found = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    if tuple(found) != CLASSES:
        raise RuntimeError(f"{folder} must hold one folder per CIFAR-10 class, "
                           f"{', '.join(CLASSES)}; found: {', '.join(found) or 'nothing'}")
    dataset = torchvision.datasets.ImageFolder(folder)  # 列出文件；标签顺序与 CLASSES 一致
    images = []
    for path, _ in dataset.samples:
        try:
            images.append(torchvision.io.decode_image(path, mode=torchvision.io.ImageReadMode.RGB))
        except RuntimeError as error:
            raise RuntimeError(f"Cannot read image {path}: {error}") from None
    return torch.stack(images), torch.tensor(dataset.targets)


def load_cifar10(root):
    """以张量形式返回训练图像、训练标签、测试图像和测试标签。"""
    if SMOKE_TEST:  # 仅供测试套件使用：形状与 CIFAR-10 相同的随机像素和标签
        return [torch.randint(256, (2000, 3, 32, 32), dtype=torch.uint8), torch.randint(10, (2000,))] * 2
    if (root / "train").exists() or (root / "test").exists():
        return [*read_image_folder(root / "train"), *read_image_folder(root / "test")]
    try:
        splits = [torchvision.datasets.CIFAR10(root, train=train, download=True) for train in (True, False)]
    except OSError as error:  # 没有网络，或者下载失败
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
    transforms.ToDtype(torch.float32, scale=True),  # uint8 [0, 255] -> 浮点数 [0, 1]
    transforms.Normalize(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5]),
])
train_images, train_labels = normalize(train_images).to(device), train_labels.to(device)
test_images, test_labels = normalize(test_images).to(device), test_labels.to(device)
print(f"Loaded {len(train_labels):,} training and {len(test_labels):,} test images "
      f"in {time.perf_counter() - start:.1f} s")

# %%
# 定义网络
# --------
#
# 这就是经典的小型卷积网络：两级「卷积 + 最大池化」，后接三个全连接层。它的
# 初始权重是随机的，上面设定的随机种子保证脚本每次运行时都一样。我们保存一份
# 副本，让第二次训练从完全相同的起点出发。


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
# 损失函数、优化器和训练循环
# --------------------------
#
# 损失函数用交叉熵，优化器用学习率为 0.001、动量为 0.9 的 SGD，每个小批量 4
# 张图像，训练 2 轮，与经典教程完全一致。
#
# ``train`` 就是标准的训练循环，只多了一个开关 ``zero_grad``。每一轮先用
# ``torch.randperm`` 打乱训练图像的顺序，再按每 4 张切成小批量。每次训练都重新
# 设定随机数生成器的种子，所以两次训练以相同的顺序拿到相同的小批量，而
# ``optimizer.zero_grad()`` 这一行就是两者唯一的区别。
#
# 循环每一轮打印五行。每行依次是：上次打印以来各小批量的平均损失、``.grad`` 的
# 大小、动量缓冲区的大小，以及缓冲区是 ``.grad`` 的多少倍。SGD 在
# ``optimizer.state`` 里为每个参数保存一个动量缓冲区，每个更新步都从参数中减去
# 学习率乘以缓冲区。这里的「大小」指把所有参数的全部数值合在一起求出的欧几里得范数。
# 一旦损失不再是有限的数，循环就报告出错的位置、当时输出有多大、权重是否仍然有限，
# 然后停止，因为之后已经学不到任何有用的东西了。``train_from_initial_weights`` 为每次训练新建一个网络，载入保存
# 的初始权重，并记录训练耗时。

BATCH_SIZE = 4
PRINT_EVERY = len(train_labels) // BATCH_SIZE // 5  # 每轮打印五行，即每 2,500 个小批量一行


def size(tensors):
    """把几个张量连成一个长向量，求它的欧几里得范数。"""
    # 用 float64：在 float32 下，很大但有限的梯度求范数时可能溢出成 inf
    norms = [torch.linalg.vector_norm(t, dtype=torch.float64) for t in tensors]
    return torch.linalg.vector_norm(torch.stack(norms)).item()


def train(model, zero_grad, epochs=2):
    """训练 ``model``；返回每个更新步的损失，以及每一行打印时的两个大小。"""
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    batch_order = torch.Generator().manual_seed(0)
    losses, sizes = [], []
    model.train()
    for epoch in range(epochs):
        running_loss = 0.0
        # 在 CPU 上用设定了种子的生成器打乱顺序，再把整轮的顺序一次性移到设备上，
        # 而不是每个小批量移动一次。
        shuffled = torch.randperm(len(train_labels), generator=batch_order).to(device)
        for i, batch in enumerate(shuffled.split(BATCH_SIZE)):
            inputs, labels = train_images[batch], train_labels[batch]
            if zero_grad:
                optimizer.zero_grad()  # 清零上一个小批量留下的梯度
            outputs = model(inputs)
            loss = criterion(outputs, labels)
            losses.append(loss.item())
            if not math.isfinite(losses[-1]):
                finite_weights = all(p.isfinite().all() for p in model.parameters())
                print(f"Non-finite loss ({losses[-1]}) at epoch {epoch + 1}, batch {i + 1} "
                      f"(step {len(losses):,}): largest output {outputs.abs().max().item():.3g}, "
                      f"weights all finite: {finite_weights}. Stopping this run.")
                return losses, sizes
            loss.backward()  # 把这个小批量的梯度加到 .grad 上
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
    """从 ``initial_weights`` 出发训练一个新网络，并记录耗时。"""
    model = Net().to(device)
    model.load_state_dict(initial_weights)
    start = time.perf_counter()
    losses, sizes = train(model, zero_grad)
    seconds = time.perf_counter() - start
    print(f"Finished in {seconds:.1f} s")
    return model, losses, sizes, seconds


# %%
# 调用 ``optimizer.zero_grad()`` 训练
# -----------------------------------
#
# 这是大家都应该写的训练循环。损失从 2.3 左右开始，这正是在十个类别中均匀随机
# 猜测时的损失（ln 10），之后稳步下降。

net, losses_with, sizes_with, time_with = train_from_initial_weights(zero_grad=True)


def print_size_ranges(sizes):
    """打印各行 ``.grad`` 大小的范围，以及缓冲区与它之比的范围。"""
    grads = [grad for grad, _ in sizes]
    ratios = [buffer / grad for grad, buffer in sizes]
    print(f"over the printed lines: size of .grad {min(grads):.3g} to {max(grads):.3g}, "
          f"momentum buffer {min(ratios):.1f} to {max(ratios):.1f} times as large")


print_size_ranges(sizes_with)

# %%
# 平均损失稳步下降，第一轮降得最多。打印出的两个大小说明了优化器在用什么
# 更新参数。``.grad`` 是当前小批量（4 张图像）的梯度，所以它的大小每行都不一样，
# 范围见最后一行。动量缓冲区把以往的梯度加在一起，每个梯度的系数每过一步乘以
# 0.9；如果梯度始终不变，缓冲区就会是它的十倍。可缓冲区只是 ``.grad`` 的几倍，
# 因为不同小批量的梯度方向各异，相加时会部分抵消。
#
# 去掉这一行再训练一次
# --------------------
#
# 初始权重相同，小批量相同，只少了一行代码。现在 ``.grad`` 再也不会被清零：
# 第 *t* 步之后，它存的是到目前为止全部 *t* 个小批量的梯度之和。如果是普通的
# SGD，每一步会减去学习率乘以这个和。一个每步都要再加上最新梯度的累加和，其实就是速度。
# 所以单是这一点，就已经把 SGD 变成了没有摩擦的重球动量法：一个在损失曲面上
# 滚动、永远不会减速的球。在《:ref:`linear_regression_without_zero_grad`》的
# 直线拟合中，损失曲面是一个二次的碗，用全部数据计算梯度时，参数永远围绕最小值
# 来回摆动，但摆幅有界。改用小批量后，每个小批量的梯度都会把参数往偏离的方向拉一下，
# 又没有任何机制让这些拉力衰减，摆幅就越来越大。
#
# 这里的优化器还叠加了 0.9 的动量。它的缓冲区等于上一步的缓冲区乘以 0.9，再加上
# ``.grad``。喂给它的是一个不断增大的和，缓冲区最终约为这个和的
# 1 / (1 − 0.9) = 10 倍，而每个更新步都要减去学习率乘以缓冲区。于是小批量的梯度
# 被累积了两遍：一遍在 ``.grad`` 里，另一遍在缓冲区里，而缓冲区约是 ``.grad``
# 的 10 倍。

net_without, losses_without, sizes_without, time_without = train_from_initial_weights(zero_grad=False)
grad_with, grad_without = sizes_with[0][0], sizes_without[0][0]
print(f"at the first printed line, .grad is {grad_without / grad_with:.3g} times as large as in the normal run")

# %%
# 打印出的第一行就同时显示了这两处累积。``.grad`` 比正常训练在同一步时大得多
# （大多少倍见上面最后一行），动量缓冲区又是它的十倍左右，与上面的推算一致。
# 这些步的平均损失明显高于随机猜测的 2.3：这么大的更新步把权重甩到了网络输出极大、
# 损失也随之极大的地方。
#
# 这次训练最后怎样收场，取决于确切的数值；构建本页的机器上的结果见上面的打印。
# 一种可能是，到了某一步，输出或权重超出了 ``float32`` 的范围，损失不再是有限的数：
# 循环报告是哪一步、当时输出有多大、权重是否仍然有限，然后停止。另一种可能是，训练
# 一直跑完两轮，损失远高于随机猜测。初始权重只要
# 改动舍入误差那么一点，或者换一个线程数、换一种 CPU、换到 GPU 上运行，同样的训练
# 就可能换一种收场，或者在另一步收场。
#
# 比较两次训练
# ------------
#
# 单个小批量的损失波动很大，所以图中画的是连续若干步组成的窗口内的平均损失。
# 左图用普通刻度画出两次训练的全过程，每个窗口占全部更新步的 1%，看的是正常
# 训练怎样学习。右图用对数刻度，只画不调用 ``zero_grad()`` 的那次训练持续的
# 那些步，窗口长度是左图的 1/10。虚线是随机猜测的损失。圆圈标出的窗口，是不调用
# ``zero_grad()`` 的训练的损失第一次达到正常训练两倍的地方。如果这次训练因损失
# 不再有限而停止，红色竖线标出停止的那一步。


def smooth(losses, window):
    """计算各个连续窗口内的平均损失；返回每个窗口结束时的步数和平均值。"""
    means = torch.tensor(losses[: len(losses) // window * window]).view(-1, window).mean(dim=1)
    return torch.arange(1, len(means) + 1) * window, means


random_guess = math.log(len(CLASSES))
stopped = not math.isfinite(losses_without[-1])
fig, (ax_all, ax_zoom) = plt.subplots(1, 2, figsize=(11, 4.5), layout="constrained")

window = max(1, len(losses_with) // 100)
steps_with, smooth_with = smooth(losses_with, window)
steps_without, smooth_without = smooth(losses_without, window)
ax_all.plot(steps_with, smooth_with, color="C0", label="调用 optimizer.zero_grad()")
ax_all.plot(steps_without, smooth_without, color="C1", label="不调用 zero_grad()")
ax_all.set_ylim(0.8 * smooth_with.min().item(), 1.2 * random_guess)
ax_all.set_title("两次训练，普通刻度")
ax_all.set_ylabel(f"交叉熵损失（{window:,} 步的平均值）")

window = max(1, window // 10)
shown = len(losses_without)
steps_with, smooth_with = smooth(losses_with[:shown], window)
steps_without, smooth_without = smooth(losses_without, window)
ax_zoom.plot(steps_with, smooth_with, color="C0")
ax_zoom.plot(steps_without, smooth_without, color="C1")
ax_zoom.set_yscale("log")
ax_zoom.set_title(f"前 {shown:,} 步，对数刻度")
ax_zoom.set_ylabel(f"交叉熵损失（{window:,} 步的平均值）")
compared = min(len(smooth_with), len(smooth_without))
diverged = (smooth_without[:compared] > 2 * smooth_with[:compared]).nonzero()
if len(diverged) > 0:
    point = (steps_without[diverged[0]].item(), smooth_without[diverged[0]].item())
    print(f"Twice the normal loss: step {point[0]:,}, where the mean loss of {window} steps without zero_grad() "
          f"is {point[1]:.2f} against {smooth_with[diverged[0]].item():.2f} with it")
    ax_zoom.plot(*point, "o", color="C1", markersize=9, fillstyle="none")
    ax_zoom.annotate(f"第 {point[0]:,} 步：\n损失达到正常训练的两倍", point, xytext=(0.04, 0.8),
                     textcoords="axes fraction", arrowprops={"arrowstyle": "->"})
if stopped:
    ax_zoom.axvline(len(losses_without), color="C3", linewidth=1.5,
                    label=f"损失为 {losses_without[-1]}（第 {len(losses_without):,} 步）：训练停止")
for ax in (ax_all, ax_zoom):
    ax.axhline(random_guess, color="gray", linestyle="--", linewidth=1, label="随机猜测（ln 10）")
    ax.set_xlabel("更新步（每步一个小批量，4 张图像）")
handles, labels = zip(*[entry for ax in (ax_all, ax_zoom) for entry in zip(*ax.get_legend_handles_labels())])
unique = dict(zip(labels, handles))
fig.legend(unique.values(), unique.keys(), loc="outside lower center", ncols=len(unique))
fig.suptitle("同一网络调用与不调用 zero_grad() 的训练对比")
plt.show()

# %%
# 左图中，正常训练确实在学习：损失降到远低于随机猜测的 2.3，而且还在继续下降；
# 不调用 ``zero_grad()`` 的训练则很快冲出了图的上边界。右图是第二次训练持续的那些步，
# 步数见图的标题。它的损失在圆圈标出、上面也打印了的那一步第一次达到正常训练的
# 两倍，之后攀升几个数量级，个别尖峰还要更高，再也没有回落到随机猜测的水平。如果
# 有红线，它标出的是损失不再有限的那一步。
#
# 测试准确率
# ----------
#
# 现在让两个网络分别对 10,000 张测试图像分类。``model.eval()`` 把网络切换到
# 评估模式。这个网络没有 dropout，也没有批量归一化，所以这里没有区别，但一般
# 情况下这一步不能省。``torch.no_grad()`` 关闭梯度跟踪，因为评估不需要反向传播。
# 表中的最终损失是一次训练最后 2,500 步的平均损失，与最后一行打印出的损失是同一
# 个窗口。因损失不再有限而停止的训练，表中显示的就是那个损失：窗口里只要有一个
# ``nan``，平均值就是 ``nan``。


def accuracy(model):
    """``model`` 分类正确的测试图像所占的比例。"""
    model.eval()
    correct = 0
    with torch.no_grad():
        for images, labels in zip(test_images.split(1000), test_labels.split(1000)):
            correct += (model(images).argmax(dim=1) == labels).sum().item()
    return correct / len(test_labels)


def final_loss(losses, last=PRINT_EVERY):
    """最后 ``last`` 步的平均损失，与最后一行打印出的损失是同一个窗口。"""
    return sum(losses[-last:]) / len(losses[-last:])


def predicted_classes(model):
    """``model`` 对测试图像一共给出了多少种不同的类别。"""
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
# 调用 ``zero_grad()`` 时，网络大约能把一半的测试图像分对，与经典教程训练两轮后的
# 结果相当；一共十个类别，随机猜测的准确率是 10%。最后一行是每个网络给出了多少种
# 不同的答案。如果不调用 ``zero_grad()`` 训练出的网络对每张图像都给出同一个答案
# （权重已经是 ``nan``，或者某个输出无论输入什么图像都远远大过其他输出时，就会
# 这样），它恰好能分对十分之一的测试图像，因为测试集中每个类别各有 1,000 张。
#
# 用 ``model.zero_grad()`` 还是 ``optimizer.zero_grad()``？
# ---------------------------------------------------------
#
# ``optimizer.zero_grad()`` 清零的是 **交给优化器的那些参数** 的梯度，而
# ``model.zero_grad()`` 清零的是 **模型所有参数** 的梯度。上面传给优化器的是
# ``model.parameters()``，所以两种调用的效果一样。如果有些参数优化器不更新，却
# 仍然会收到梯度，两者就不同了。下面的优化器只拿到最后一层 ``fc3``，就像微调时
# 只训练这一层；其他各层仍然需要梯度：


def parameters_with_gradient(model):
    """``.grad`` 已被设置的参数的名称。"""
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
# 只调用 ``optimizer.zero_grad()`` 的话，其余八个参数的梯度会一步接一步地累积
# 下去。只要这些层一直不被更新，这倒无妨，但既浪费内存，也浪费时间。而且
# 一旦另一个优化器或后续的训练阶段开始训练这些层，累积下来的梯度就会悄无声息地
# 把它们弄坏。
#
# ``model.zero_grad()`` 能清零这些梯度，但微调时更好的做法是根本不计算它们：用
# ``requires_grad_(False)`` 冻结不训练的层。这样 ``backward()`` 不会给它们设置
# ``.grad``，它仍是 ``None``，两种调用的效果又一样了：

model.requires_grad_(False)
model.fc3.requires_grad_(True)
F.cross_entropy(model(inputs), labels).backward()
print("frozen all but fc3, after backward():", len(parameters_with_gradient(model)),
      "have a gradient:", ", ".join(parameters_with_gradient(model)))

# %%
# 冻结只是让 **以后** 的反向传播不再写入 ``.grad``。它不会清掉参数已有的梯度，而
# 拿到了这个参数的优化器仍会用这个梯度更新它：优化器跳过的是 ``.grad`` 为 ``None``
# 的参数，而不是不再需要梯度的参数。下面先做一次反向传播，让每个参数都有梯度，
# 再冻结 ``conv1``，然后让持有全部参数的优化器走两步：

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
# 所以，要在第一次反向传播之前冻结网络层，或者在冻结时清掉它们的梯度，并且只把要
# 训练的参数交给优化器。

# %%
# 小结
# ----
#
# * ``loss.backward()`` 把梯度加到 ``.grad`` 上（``.grad`` 为 ``None`` 时则直接
#   设置它），从不覆盖已有的值。
# * 每个更新步调用一次 ``optimizer.zero_grad()``，而且要在 ``loss.backward()``
#   之前（通常放在循环开头）。
# * 忘了调用它，``.grad`` 就成了过去所有梯度的累积和：SGD 像一个有动量、没有
#   摩擦的球；再叠加 0.9 的动量，每一步的幅度又会变成原来的约 10 倍；用小批量
#   训练时，更新步越来越大，直到损失失控。
# * 只微调模型的一部分时，在任何反向传播之前用 ``requires_grad_(False)`` 冻结
#   其余部分（或者在冻结时清掉它们的梯度），并且只把要训练的参数交给优化器，免得
#   梯度在没有优化器清零的地方越积越多，或者一直残留。
#
# 有时累积梯度恰恰是你想要的，例如想用内存装不下的大批量来训练；
# 《:ref:`gradient_accumulation`》介绍了怎样有意地这样做。

# sphinx_gallery_thumbnail_number = 1

# sphinx_gallery_start_ignore
# Translates recipes/en/zeroing_out_gradients.py, English text c0b3eddd44ba8407 (make translation-status)
# sphinx_gallery_end_ignore
