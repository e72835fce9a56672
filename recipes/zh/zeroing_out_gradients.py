"""
.. _zeroing_out_gradients:

训练分类器时清零梯度
====================

每次调用 ``loss.backward()``，新算出的梯度都会 **加到** 各个参数的 ``.grad``
属性上。PyTorch 从不自动清零 ``.grad``，这件事要由训练循环来做：每个小批量调用一次
``optimizer.zero_grad()``。如果不清零，每次更新用到的就不是当前小批量的梯度，而是到目前为止见过的所有梯度之和。

本教程把经典的小型 CIFAR-10 图像分类器训练两遍，两遍的初始权重相同，小批量的顺序也相同：

1. 按常规写法，在每个更新步开始时调用 ``optimizer.zero_grad()``；
2. 其余完全一样，只删掉这一行。

然后画出两条损失曲线，比较两者的测试准确率，最后说明 ``model.zero_grad()`` 和
``optimizer.zero_grad()`` 在什么情况下作用不同。

.. note::
   相关教程：《:ref:`gradients_accumulate`》在一个只有两个元素的张量上演示累积的机制，《:ref:`linear_regression_without_zero_grad`》在直线拟合中重现同样的问题，《:ref:`gradient_accumulation`》讲解怎样主动利用这种累积，《:ref:`zero_grad_pitfalls`》说明
   ``zero_grad()`` 在循环中应该放在哪里。
"""

# %%
# 准备工作
# --------
#
# 除了 PyTorch，还要用 torchvision 加载数据集，用 matplotlib 画图。有 CUDA GPU
# 时本教程在 GPU 上运行，否则在 CPU 上运行，两种情况都只需几分钟。

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

# 测试套件会设置 ZERO_GRAD_SMOKE=1，用随机图像只训练几秒钟。
SMOKE_TEST = os.environ.get("ZERO_GRAD_SMOKE") == "1"

device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
print(f"Using device: {device}")
torch.manual_seed(0)  # 每次运行都得到相同的随机数，因而结果也相同

# %%
# 加载 CIFAR-10 并归一化
# ----------------------
#
# CIFAR-10 包含十个类别、大小为 32x32 像素的图像，其中训练图像 50,000 张，测试图像 10,000
# 张。能联网时，torchvision 会把它下载到 ``./data``；不能联网时，请把环境变量
# ``CIFAR10_ROOT`` 指向一份本地副本，目录结构为 ``train/<class>/*.jpg`` 和
# ``test/<class>/*.jpg``。
#
# 这个教程的经典版本在每一轮（epoch）都要把每张图像重新转换、归一化一遍。这里每张图像只解码一次，训练集和测试集各存成一个
# ``uint8`` 张量，再对整个张量一次性做同样的归一化（每个通道的均值和标准差都取 0.5，像素值因此落在
# [-1, 1] 区间）。网络看到的数值完全相同，只是训练循环不用再等待图像解码了。

CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck")
DATA_ROOT = Path(os.environ.get("CIFAR10_ROOT", "data"))


def read_image_folder(folder):
    """把 ``folder/<class>/*`` 解码成形状为 (N, 3, 32, 32) 的 uint8 张量，并返回对应的标签。"""
    found = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    if tuple(found) != CLASSES:
        raise RuntimeError(f"{folder} must hold one folder per CIFAR-10 class, "
                           f"{', '.join(CLASSES)}; found: {', '.join(found) or 'nothing'}")
    dataset = torchvision.datasets.ImageFolder(folder)  # 只列出文件；标签顺序与 CLASSES 一致
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
# 这就是经典的小型卷积网络：两级“卷积 + 最大池化”，后接三个全连接层。它的初始权重是随机的（上面设定的随机种子保证脚本每次运行时都一样）。我们保存一份副本，让第二次训练从完全相同的起点出发。


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
# ``train`` 就是标准的训练循环，只多了一个开关 ``zero_grad``。每一轮先用 ``torch.randperm`` 打乱训练图像的顺序，再按每 4 张切成小批量；每次训练都重新设定随机数生成器的种子，两次训练因此以相同的顺序拿到相同的小批量，
# ``optimizer.zero_grad()`` 这一行就成了两者唯一的区别。每训练 2,000
# 个小批量，循环就打印一次这些小批量的平均损失。一旦损失不再是有限的数，循环会报告出错的位置并停止，因为在那之后已经学不到任何有用的东西了。``train_from_initial_weights``
# 为每次训练新建一个网络，载入保存的初始权重，并记录训练耗时。


def train(model, zero_grad, epochs=2, print_every=2000):
    """在训练集上训练 ``model``，返回每个更新步的损失。"""
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
                optimizer.zero_grad()  # 清零上一个小批量留下的梯度
            outputs = model(inputs)
            loss = criterion(outputs, labels)
            loss.backward()  # 把这个小批量的梯度加到 .grad 上
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
    """从 ``initial_weights`` 出发训练一个新网络，并记录耗时。"""
    model = Net().to(device)
    model.load_state_dict(initial_weights)
    start = time.perf_counter()
    losses = train(model, zero_grad)
    seconds = time.perf_counter() - start
    print(f"Finished in {seconds:.1f} s")
    return model, losses, seconds


# %%
# 调用 ``optimizer.zero_grad()`` 训练
# -----------------------------------
#
# 这是大家都应该写的训练循环。打印出的损失从 2.3 左右开始，这正是在十个类别中均匀随机猜测时的损失（ln 10），之后稳步下降。

net, losses_with, time_with = train_from_initial_weights(zero_grad=True)

# %%
# 去掉这一行再训练一次
# --------------------
#
# 初始权重相同，小批量相同，只少了一行代码。现在 ``.grad``
# 里存的是到目前为止所有小批量梯度的总和，而动量又会把这些越来越大的总和再累积一遍。更新一步比一步大，网络很快就被推得远远越过了任何极小值。在前
# 2,000 个小批量里，打印出的损失就已经远高于随机猜测的 2.3；此后，相邻两行之间动辄相差好几个数量级：只要有一次过大的更新，就足以把权重推到这样一个位置：网络的输出极大，损失也随之极大。一旦数值大到浮点数装不下，损失就会变成 ``nan``，循环报告出现的位置后停止。
# 构建本页时的运行正是如此；换一台硬件，这次训练也可能拖着巨大的损失一直跑到结束。

net_without, losses_without, time_without = train_from_initial_weights(zero_grad=False)

# %%
# 比较两次训练
# ------------
#
# 单个小批量的损失波动很大，所以图中画的是每个窗口内的平均损失，一个窗口占全部更新步的 1
# %，纵轴为对数刻度。虚线是随机猜测的损失。圆圈标出发散点：在这个窗口里，不调用
# ``zero_grad()`` 那次训练的损失第一次达到正常训练的两倍。如果出现了非有限的损失值，会用叉号标出。


def smooth(losses, window):
    """计算各个连续窗口内的平均损失；返回每个窗口结束时的步数和平均值。"""
    means = torch.tensor(losses[: len(losses) // window * window]).view(-1, window).mean(dim=1)
    return torch.arange(1, len(means) + 1) * window, means


window = max(1, len(losses_with) // 100)
steps_with, smooth_with = smooth(losses_with, window)
steps_without, smooth_without = smooth(losses_without, window)
compared = min(len(smooth_with), len(smooth_without))
diverged = (smooth_without[:compared] > 2 * smooth_with[:compared]).nonzero()

fig, ax = plt.subplots(figsize=(8, 4.5))
ax.plot(steps_with, smooth_with, label="调用 optimizer.zero_grad()")
ax.plot(steps_without, smooth_without, label="不调用 zero_grad()")
ax.axhline(math.log(len(CLASSES)), color="gray", linestyle="--", linewidth=1,
           label="随机猜测（ln 10）")
if len(diverged) > 0:
    point = (steps_without[diverged[0]].item(), smooth_without[diverged[0]].item())
    print(f"Divergence point: step {point[0]:,}, where the loss without zero_grad() is "
          f"{point[1]:.2f} against {smooth_with[diverged[0]].item():.2f} with it")
    ax.plot(*point, "o", color="C1", markersize=9, fillstyle="none")
    ax.annotate(f"发散点：更新步 {point[0]:,}", point, xytext=(30, 45),
                textcoords="offset points", arrowprops={"arrowstyle": "->"})
if not math.isfinite(losses_without[-1]):
    ax.plot(len(losses_without), max(x for x in losses_without if math.isfinite(x)), "x",
            color="C3", markersize=10, label="非有限的损失值")
ax.set_yscale("log")
ax.set_xlabel("更新步（每步一个含 4 张图像的小批量）")
ax.set_ylabel("交叉熵损失（窗口平均值）")
ax.set_title("同一网络调用与不调用 zero_grad() 的训练对比")
ax.legend()
fig.tight_layout()
plt.show()

# %%
# 测试准确率
# ----------
#
# 现在让两个网络分别对 10,000 张测试图像分类。``torch.no_grad()``
# 关闭了梯度跟踪，因为评估时不需要反向传播。


def accuracy(model):
    """``model`` 分类正确的测试图像所占的比例。"""
    correct = 0
    with torch.no_grad():
        for images, labels in zip(test_images.split(1000), test_labels.split(1000)):
            correct += (model(images).argmax(dim=1) == labels).sum().item()
    return correct / len(test_labels)


def final_loss(losses, last=2000):
    """最后 ``last`` 步的平均损失（即最后一行打印出的值）。"""
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
# 调用 ``zero_grad()`` 时，网络大约能把一半的测试图像分对，与经典教程训练两轮后的结果相当；一共十个类别，随机猜测的准确率是
# 10 %。不调用它，网络最终并不比随机猜测强。
#
# 用 ``model.zero_grad()`` 还是 ``optimizer.zero_grad()``？
# ---------------------------------------------------------
#
# ``optimizer.zero_grad()`` 清零的是“交给优化器的那些参数”的梯度，``model.zero_grad()``
# 清零的则是“模型所有参数”的梯度。上面传给优化器的是 ``model.parameters()``，所以两种调用的效果一样。当优化器只更新一部分参数时，例如微调时只训练最后一层，两者就不同了：这时用
# ``optimizer.zero_grad()``，其余各层的梯度会一直累积下去。只要没有任何东西更新这些层，这倒无妨；但它白白占用内存，而且哪天换了另一个优化器，或者在后续阶段开始训练这些层，累积下来的梯度就会悄无声息地把它们弄坏。


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
# 小结
# ----
#
# * ``loss.backward()`` 把梯度加到 ``.grad`` 上，从不覆盖它。
# * 每个更新步调用一次 ``optimizer.zero_grad()``，而且要在 ``loss.backward()``
#   之前（通常放在循环开头）。
# * 忘了调用它，每次更新用的就是过去所有梯度的累积和：损失不降反升，上面的两条曲线都说明了这一点。
# * 如果有参数会收到梯度，却不归优化器管，就用 ``model.zero_grad()``。
#
# 有时累积梯度恰恰是你想要的，例如想用超出内存容量的批量大小来训练；《:ref:`gradient_accumulation`》介绍了具体做法。

# sphinx_gallery_thumbnail_number = 1
