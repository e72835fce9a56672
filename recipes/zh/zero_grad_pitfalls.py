"""
.. _zero_grad_pitfalls:

zero_grad() 该放在哪里，它又不能做什么
======================================

``optimizer.zero_grad()`` 只有一行，但它放在哪里、清零的是哪些梯度，仍然很要紧。
本教程把下面每一种情况都实际运行一遍，并打印出证据：

* 放在循环开头和紧跟在 ``optimizer.step()`` 之后，两者等价；放在
  ``loss.backward()`` 和 ``optimizer.step()`` 之间，则会悄无声息地让训练失效；
* 优化器并不掌管全部参数时，``model.zero_grad()`` 和 ``optimizer.zero_grad()``
  清零的梯度并不相同，生成器和判别器各用一个优化器就是这种情况；
* 在默认的 ``set_to_none=True`` 下，优化器会跳过没有得到梯度的参数；而用了权重
  衰减，或者用了动量或 Adam 且之前已经有过更新步时，零梯度仍然会让参数移动；
* ``zero_grad()`` 对推理毫无帮助：要让 autograd 不再为一次不会发生的反向传播
  保存张量，靠的是 ``torch.no_grad()`` 和 ``torch.inference_mode()``；
* 默认的 ``set_to_none=True`` 比写入零开销更小，这里在 ResNet-18 上实际计时。
"""

# %%
# 准备工作
# --------
#
# 需要 PyTorch、torchvision（只用到 ResNet-18 的网络结构，不下载任何权重）和
# matplotlib。有 CUDA GPU 时在 GPU 上运行，否则在 CPU 上运行，整个脚本运行几秒钟。
#
# 设定了随机种子后，只要在同一台机器上、使用相同的 PyTorch 版本和线程数，除计时
# 以外的每个数字每次运行都相同。在 GPU 上得到的数字则不一样：CUDA 有自己的随机数生成器，
# 连随机生成的数据都和 CPU 上的不同，GPU 核函数的舍入也不同。在同一块 GPU 上重复
# 运行，结果通常也一致，但只有 ``torch.use_deterministic_algorithms(True)`` 才会让
# PyTorch 在有确定性实现的地方采用它，在没有的地方直接报错（举一个例子：默认情况下，对于本教程末尾那个
# ResNet-18 中卷积的反向传播，cuDNN 可能选用非确定性的算法）。每一节要说明的结论，
# 在哪种设备上都成立。

import contextlib
import copy
import logging
import os

# 图中的标签是中文。如果显示成方框，说明 matplotlib 没找到中文字体：请安装一种（如 Noto Sans CJK SC），
# 再在画图前加上 plt.rcParams["font.family"] = ["DejaVu Sans", "Noto Sans CJK SC"]。
import matplotlib.pyplot as plt
import torch
import torch.nn as nn
import torch.optim as optim
import torchvision

# torch.utils.benchmark 会加载 torch.utils.cpp_extension，后者在装了 CUDA 编译器
# 却没有 GPU 的机器上会打印一条警告；这里并不编译任何 CUDA 代码。
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
from torch.utils import benchmark

# 测试套件设置 ZERO_GRAD_SMOKE=1，把每项计时缩短到零点几秒。
SMOKE_TEST = os.environ.get("ZERO_GRAD_SMOKE") == "1"

device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
print(f"Using device: {device}")
torch.manual_seed(0)  # 同一台机器上每次运行数字都相同；GPU 生成的随机数与 CPU 不同

# %%
# 放在循环开头，还是紧跟在 ``step()`` 之后
# ----------------------------------------
#
# 前几个例子用的是线性回归：256 个随机生成的样本点，每个有四个特征，用带动量的
# SGD 训练。``train`` 是标准的训练循环，只多了一个开关 ``zero_grad_at``，用来把
# ``optimizer.zero_grad()`` 这一行挪到三个位置之一。

x = torch.randn(256, 4, device=device)
y = x @ torch.tensor([[2.0], [-1.0], [0.5], [3.0]], device=device) + 0.1 * torch.randn(256, 1, device=device)
criterion = nn.MSELoss()
initial_weights = nn.Linear(4, 1).state_dict()


def make_regression_model():
    model = nn.Linear(4, 1).to(device)
    model.load_state_dict(initial_weights)  # 每次运行都从相同的权重出发
    return model


def train(model, zero_grad_at, steps=50):
    """用全部数据把 ``model`` 训练 ``steps`` 个更新步，返回最终的损失。"""
    optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(steps):
        if zero_grad_at == "start of the loop":
            optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        if zero_grad_at == "between backward() and step()":
            optimizer.zero_grad()  # 错误所在：抹掉了更新步要用的梯度
        optimizer.step()
        if zero_grad_at == "after step()":
            optimizer.zero_grad()
    return criterion(model(x), y).item()


def max_difference(model_a, model_b):
    """两个模型的参数之间最大的绝对差。"""
    return max((a - b).abs().max().item() for a, b in zip(model_a.parameters(), model_b.parameters()))


untrained = make_regression_model()
models, final_losses = {}, {}
for place in ["start of the loop", "after step()", "between backward() and step()"]:
    models[place] = make_regression_model()
    final_losses[place] = train(models[place], place)

print(f"loss before training: {criterion(untrained(x), y).item():.4f}")
for place, loss in final_losses.items():
    print(f"loss after 50 steps, zero_grad() {place}: {loss:.4f}")
print("start of the loop vs after step(), max abs weight difference:",
      max_difference(models["start of the loop"], models["after step()"]))

# %%
# 前两种位置得到的权重逐位相同（差值恰好是 ``0.0``）。关键在于 ``loss.backward()``
# 运行时 ``.grad`` 已经清零；是在上一次迭代的末尾清零，还是在这一次迭代的开头清零，
# 并没有区别。两种写法都在下一次前向传播之前释放了梯度（默认 ``set_to_none=True``）。
# 它们唯一的区别在于 ``step()`` 之后、下一次迭代开始之前运行的那些代码，比如加载
# 下一个批量、做评估或保存检查点：紧跟在 ``step()`` 之后清零，这些代码运行时
# 内存里就没有梯度。放在循环开头清零，则能防止循环之前的代码留下的梯度混进第一个
# 更新步。
#
# 错误用法：在 ``backward()`` 和 ``step()`` 之间清零
# --------------------------------------------------
#
# 第三种位置就不同了。``zero_grad()`` 恰好在更新步之前把每个 ``.grad`` 设为
# ``None``，于是优化器找不到任何梯度，跳过了所有参数。模型始终不变，也不会报任何
# 错：上面的损失只是一直停在初始值上。

print("zero_grad() between backward() and step(), weights changed:",
      max_difference(models["between backward() and step()"], untrained) != 0,
      f"(max abs difference from the initial weights "
      f"{max_difference(models['between backward() and step()'], untrained)})")

# %%
# 换成 ``set_to_none=False``，这里的结果也一样：对普通的 SGD 来说，零梯度带来的
# 更新就是零；对这里的动量也是如此，因为动量从来没有接收过真正的梯度。零梯度在
# 什么时候确实会让参数移动，见下文讲 ``set_to_none`` 的一节。
#
# ``model.zero_grad()`` 还是 ``optimizer.zero_grad()``？
# ------------------------------------------------------
#
# ``optimizer.zero_grad()`` 清零的是创建优化器时传给它的那些参数的梯度，而
# ``model.zero_grad()`` 清零的是模型全部参数的梯度。只要这两组参数不一样，两者的
# 效果就不一样。
#
# 优化器不知道的参数
# ~~~~~~~~~~~~~~~~~~
#
# 这里只训练一个小网络的最后一层，但第一层仍然需要梯度。``optimizer.zero_grad()``
# 从不碰它，于是它的 ``.grad`` 一步接一步地越变越大。解决办法有两个：改用
# ``model.zero_grad()``；或者，如果这一层要一直冻结，更好的做法是调用
# ``requires_grad_(False)``，这样反向传播也省去了这部分计算。


small_network = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1)).to(device)


def first_layer_gradient_norms(zero_grad, steps=10):
    """只训练最后一层时，每个更新步之后第一层 .grad 的范数。"""
    model = copy.deepcopy(small_network)  # 两次运行从相同的权重出发
    optimizer = optim.SGD(model[2].parameters(), lr=0.05)
    norms = []
    for _ in range(steps):
        zero_grad(model, optimizer)
        criterion(model(x), y).backward()
        optimizer.step()
        norms.append(model[0].weight.grad.norm().item())
    return norms


for name, zero_grad in [("optimizer.zero_grad()", lambda model, optimizer: optimizer.zero_grad()),
                        ("model.zero_grad()", lambda model, optimizer: model.zero_grad())]:
    norms = first_layer_gradient_norms(zero_grad)
    print(f"{name}: first layer .grad norm after step 1: {norms[0]:.3f}, after step 10: {norms[-1]:.3f}")

# %%
# 两个优化器，一张计算图
# ~~~~~~~~~~~~~~~~~~~~~~
#
# 生成对抗网络（GAN）用两个优化器训练两个网络：判别器学习区分真实的点和生成的点，
# 生成器学习骗过判别器。判别器的损失依赖于生成的点，所以除非对这些点调用
# ``detach()``，判别器的 ``backward()`` 也会一路穿过生成器，在生成器的 ``.grad``
# 里留下梯度。
#
# 下面，一个处理二维点的小生成器和小判别器完成一次训练迭代，**没有** 对生成的点调用
# ``detach()``。我们先看判别器的更新步之后生成器的 ``.grad``，再比较生成器的更新步
# 在事先清零和不清零两种情况下所用的梯度，以及更新步本身。

generator = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2)).to(device)
discriminator = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 1)).to(device)
generator_optimizer = optim.Adam(generator.parameters(), lr=1e-3)
discriminator_optimizer = optim.Adam(discriminator.parameters(), lr=1e-3)
bce = nn.BCEWithLogitsLoss()
real_points = torch.randn(64, 2, device=device) * 0.5 + torch.tensor([2.0, -1.0], device=device)
noise = torch.randn(64, 4, device=device)
real, fake = torch.ones(64, 1, device=device), torch.zeros(64, 1, device=device)


def generator_gradient():
    """把生成器当前的 ``.grad`` 拼成一个向量（为 ``None`` 的地方填零）。"""
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten()
                      for p in generator.parameters()])


def generator_loss():
    """生成器希望判别器把它生成的点判为真。"""
    return bce(discriminator(generator(noise)), real)


# 判别器的更新步，没有对生成的点调用 detach()。
discriminator_optimizer.zero_grad()
generated = generator(noise)  # 正确的写法是 generator(noise).detach()
discriminator_loss = bce(discriminator(real_points), real) + bce(discriminator(generated), fake)
discriminator_loss.backward()
discriminator_optimizer.step()
stale = generator_gradient()

# 生成器的更新步，忘了先清零梯度……
generator_loss().backward()
without_zeroing = generator_gradient()
# ……以及正确的做法。
generator_optimizer.zero_grad()
generator_loss().backward()
own = generator_gradient()

print(f"generator .grad left by the discriminator's backward(): norm {stale.norm().item():.4f}")
print(f"generator's own gradient: norm {own.norm().item():.4f}, "
      f"cosine similarity with the stale one: {torch.cosine_similarity(stale, own, dim=0).item():.3f}")
print(f"gradient the generator's step uses without zeroing first: norm {without_zeroing.norm().item():.4f}, "
      f"max abs difference from its own: {(without_zeroing - own).abs().max().item():.4f}, "
      f"cosine similarity with its own: {torch.cosine_similarity(without_zeroing, own, dim=0).item():.3f}")

# %%
# 残留的梯度和生成器自己的梯度差不多大，方向却相反（余弦相似度为 -1.000）：它是让
# 生成的点看起来 **更假** 的梯度，也就是判别器的目标。如果没有清零 ``.grad``，更新步
# 用的是两者之和：方向仍然基本正确（余弦相似度 0.986），长度却只有应有值的六分之一
# 左右（0.0184，而应有值是 0.1190）。
#
# 生成器的更新步会怎样使用这个梯度，取决于它的优化器。``generator_update`` 把一个
# 梯度交给生成器的一份副本，用一个新建的优化器执行一个更新步，返回权重的变化量。
# 优化器先用上面的 Adam（生成器还没有执行过更新步，所以新建的 Adam 与
# ``generator_optimizer`` 状态相同），再用普通的 SGD 作对比。


def generator_update(gradient, make_optimizer):
    """把生成器的一份副本的梯度设为 ``gradient``，返回新建的优化器执行一个更新步后权重的变化量。"""
    params = list(copy.deepcopy(generator).parameters())
    for param, grad in zip(params, gradient.split([p.numel() for p in params])):
        param.grad = grad.view_as(param).clone()
    before = nn.utils.parameters_to_vector(params).detach()
    make_optimizer(params).step()
    return nn.utils.parameters_to_vector(params).detach() - before


for name, make_optimizer in [("Adam(lr=1e-3)", lambda params: optim.Adam(params, lr=1e-3)),
                             ("SGD(lr=0.1)", lambda params: optim.SGD(params, lr=0.1))]:
    wrong, right = generator_update(without_zeroing, make_optimizer), generator_update(own, make_optimizer)
    print(f"generator's first step, {name}, without zeroing vs zeroed: "
          f"norm ratio {(wrong.norm() / right.norm()).item():.3f}, "
          f"cosine similarity {torch.cosine_similarity(wrong, right, dim=0).item():.3f}, "
          f"elements moved the wrong way: {(wrong * right < 0).sum().item()} of {right.numel()}")

# %%
# * 用 SGD 时，更新量等于学习率乘以梯度，所以更新步随梯度一起缩短，只有应有值的
#   0.154，方向基本正确：残留的梯度抵消了大部分更新。
# * 用 Adam 时（这里用的就是它），情况不同。Adam 的第一个更新步大约是学习率乘以
#   梯度每个元素的符号，与梯度的大小无关，所以不清零时更新步的长度和正确的一样
#   （范数之比为 1.000）。出错的是被残留梯度翻转了符号的那些元素：114 个元素中有
#   5 个朝错误的方向移动，余弦相似度降到 0.912。此外，Adam 的滑动平均值也记下了这个
#   错误的梯度，并把它带进之后的更新步。
#
# 无论哪种优化器，这个更新步都不是生成器的损失所要求的那一步。标准的防护措施有两条，
# 大多数 GAN 代码两条都用：在判别器的损失里对生成的点调用 ``detach()``\ （即
# ``generator(noise).detach()``），这还能省掉穿过生成器的那段反向传播；以及在对每个
# 网络做它自己的 ``backward()`` 之前，先清零它的梯度。生成器的 ``backward()`` 同样会在
# 判别器里留下梯度，下一次判别器更新步开头的 ``discriminator_optimizer.zero_grad()``
# 会把它们清零。
#
# ``set_to_none``：没有梯度不等于零梯度
# -------------------------------------
#
# 从 PyTorch 2.0 起，``zero_grad()`` 默认把 ``.grad`` 设为 ``None``，而不是填上零。
# 对大多数训练循环来说两者可以互换，因为 ``backward()`` 会重新给每个参数算出梯度。
# 但对于在某些更新步中没有参与计算的参数，两者就不一样了，例如模型中没有走到的分支，
# 或者混合专家（mixture-of-experts）模型中这一步没有分到任何输入的专家。优化器会跳过
# ``.grad`` 为 ``None`` 的参数；而零梯度终究还是梯度：动量会带着之前各步的速度继续
# 前进，权重衰减仍会让权重缩小，Adam 仍会按它对以往梯度的滑动平均值继续更新。
#
# ``idle_trajectory`` 让一个初始值为 1 的权重先用梯度 1 走一个真正的更新步，再走
# 20 个没有任何梯度的更新步，并记录它一路上的取值。

OPTIMIZERS = {
    "SGD, momentum=0.9": lambda params: optim.SGD(params, lr=0.1, momentum=0.9),
    "SGD, weight_decay=0.1": lambda params: optim.SGD(params, lr=0.1, weight_decay=0.1),
    "Adam": lambda params: optim.Adam(params, lr=0.1),
}


def idle_trajectory(make_optimizer, set_to_none, idle_steps=20):
    """一个权重在一个真正的更新步和随后 ``idle_steps`` 个无梯度更新步中的取值。"""
    weight = torch.ones(1, device=device, requires_grad=True)
    optimizer = make_optimizer([weight])
    weight.sum().backward()  # 梯度为 1
    optimizer.step()
    values = [1.0, weight.item()]
    for _ in range(idle_steps):
        optimizer.zero_grad(set_to_none=set_to_none)
        optimizer.step()  # 没有 backward()：这个权重没有参与计算
        values.append(weight.item())
    return values


trajectories = {(name, set_to_none): idle_trajectory(make_optimizer, set_to_none)
                for name, make_optimizer in OPTIMIZERS.items() for set_to_none in (False, True)}

print(f"{'optimizer':<24}{'.grad after zero_grad()':>26}{'moved in the 20 idle steps':>30}")
for (name, set_to_none), values in trajectories.items():
    grad = "None" if set_to_none else "zeros"
    print(f"{name:<24}{grad:>26}{abs(values[-1] - values[1]):>30.4f}")

# %%
# 梯度为零时，三个优化器都在继续移动这个权重，尽管它根本没有得到梯度；梯度为
# ``None`` 时，它们让权重原地不动。下图画出了权重在这 21 个更新步中的变化。

fig, axes = plt.subplots(1, 3, figsize=(11, 3.8), sharey=True)
for ax, name in zip(axes, OPTIMIZERS):
    ax.plot(trajectories[name, False], "o-", markersize=3, label="zero_grad(set_to_none=False)")
    ax.plot(trajectories[name, True], "s--", markersize=3, label="zero_grad(set_to_none=True)")
    ax.axvspan(1, 21, color="gray", alpha=0.1)
    ax.set_title(name)
    ax.set_xlabel("更新步")
axes[0].set_ylabel("权重的值")
axes[0].legend(loc="lower left", fontsize="small")
fig.suptitle("第 1 步之后权重不再得到梯度（阴影部分）：零梯度让它移动，None 则不会")
fig.tight_layout()
plt.show()

# %%
# 推理需要的是 ``no_grad()``，而不是 ``zero_grad()``
# ---------------------------------------------------
#
# ``zero_grad()`` 只是清零 ``.grad``，并不会让 autograd 停止工作。只要模型的参数
# 需要梯度，前向传播就照样记录计算图，并让反向传播可能用到的每个张量一直留在内存里，
# 不管之后有没有调用 ``backward()``：

mlp = nn.Sequential(*[layer for _ in range(4) for layer in (nn.Linear(1024, 1024), nn.ReLU())]).to(device)
batch = torch.randn(256, 1024, device=device)
mlp.zero_grad()
output = mlp(batch)
print(f"after mlp.zero_grad(): output.requires_grad={output.requires_grad}, "
      f"output.grad_fn={type(output.grad_fn).__name__}")
del output

# %%
# 推理时应当关掉 autograd：``torch.no_grad()`` 不记录计算图，而
# ``torch.inference_mode()`` 更进一步，连那些让输出日后还能参与 autograd 的记录
# 工作也省掉了。
#
# 下面用三种方式运行这个四层多层感知机（每层 1024 个单元，批量大小 256）的同一次
# 前向传播，测量两项指标：
#
# * **saved for backward**：autograd 为反向传播保留的张量的字节数。它用
#   ``torch.autograd.graph.saved_tensors_hooks`` 统计，这个钩子能看到每个被保存的
#   张量。参数不计在内（它们本来就存在），同一个张量保存两次只算
#   一次。这就是只要输出还在、计算图就一直占用的内存，在任何设备上都能这样测。
#   在 CUDA 上，表中还会给出前向传播分配内存的峰值
#   （``torch.cuda.max_memory_allocated``）。
# * **time per forward**，即每次前向传播的耗时：``torch.utils.benchmark.Timer``
#   给出的中位数；它会先预热、同步 CUDA，并在设定的时间内反复调用。

MIN_RUN_TIME = 0.05 if SMOKE_TEST else 0.4  # 每项计时反复调用的秒数
MODES = {
    "plain": contextlib.nullcontext,
    "torch.no_grad()": torch.no_grad,
    "torch.inference_mode()": torch.inference_mode,
}


def forward(model, inputs, mode):
    with mode():
        return model(inputs)


def bytes_saved_for_backward(model, inputs, mode):
    """一次前向传播中 autograd 保存的非参数张量的字节数。"""
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        forward(model, inputs, mode)
    return sum(saved.values())


def peak_forward_memory(model, inputs, mode):
    """在 CUDA 上，前向传播在峰值时比开始前多分配的字节数。"""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    output = forward(model, inputs, mode)  # 保留输出，也就保留了它的计算图
    peak = torch.cuda.max_memory_allocated() - before
    del output
    return peak


def median_time(stmt, **names):
    return benchmark.Timer(stmt=stmt, globals=names).blocked_autorange(min_run_time=MIN_RUN_TIME).median


MiB = 2**20
print(f"{'mode':<24}{'saved for backward':>20}{'time per forward':>18}{'peak memory':>14}")
for name, mode in MODES.items():
    saved = bytes_saved_for_backward(mlp, batch, mode)
    seconds = median_time("forward(mlp, batch, mode)", forward=forward, mlp=mlp, batch=batch, mode=mode)
    peak = peak_forward_memory(mlp, batch, mode)
    peak = "n/a (CPU)" if peak is None else f"{peak / MiB:.1f} MiB"
    print(f"{name:<24}{saved / MiB:>16.1f} MiB{seconds * 1e3:>15.2f} ms{peak:>14}")

# %%
# 普通的前向传播会为一次不会发生的反向传播保存输入批量和每个 ReLU 的输出：每个
# 线性层保存自己的输入，每个 ReLU 保存自己的输出，而一个 ReLU 的输出就是下一个
# 线性层的输入，所以一共是五个 1 MiB 的张量。在 ``torch.no_grad()`` 和
# ``torch.inference_mode()`` 下什么都不保存，每一层的输入在下一层用完之后就可以
# 释放。耗时则是另一回事，它取决于硬件。在 CPU 上（这里用一个线程计时），四次大
# 矩阵乘法每次都要花几毫秒，autograd 为八个运算做的记录工作与之相比微不足道，三种
# 方式的耗时之差不超过计时本身的波动。在 GPU 上，矩阵乘法只要几微秒，记录工作就
# 可能占到看得出的比例。模型中的小运算越多，省下的时间就越多。
#
# 为什么默认是 ``set_to_none=True``
# ---------------------------------
#
# 用零填充梯度，要写入每个梯度的每一个元素，写入的数字和模型的参数一样多。设为
# ``None`` 则什么都不用写，还会把这块内存交还给分配器，直到下一次 ``backward()``；
# 届时每个梯度都重新创建，而不是加到一个全零的张量上。这就是 ``set_to_none=True``
# 在 PyTorch 2.0 中成为默认值的原因。
#
# 为了在一个规模接近实际的模型上测量，我们用随机权重构建一个 ResNet-18
# （``weights=None``，因此不下载任何东西），做一次前向传播和反向传播，让每个参数
# 都有梯度，然后用两种方式为 ``optimizer.zero_grad()`` 计时：用本教程的 SGD；写入零
# 的那种方式，还用一个以 ``foreach=True`` 创建的 SGD 再测一次（下文解释）。每次
# 计时的调用都先像反向传播那样把原来的梯度张量放回 ``.grad``，好让
# ``set_to_none=True`` 每次都有梯度可丢；放回梯度这一步也单独计时。

resnet = torchvision.models.resnet18(weights=None).to(device)
resnet_optimizer = optim.SGD(resnet.parameters(), lr=0.1, momentum=0.9)
foreach_optimizer = optim.SGD(resnet.parameters(), lr=0.1, momentum=0.9, foreach=True)
resnet(torch.randn(2, 3, 64, 64, device=device)).sum().backward()
parameters = list(resnet.parameters())
gradients = [p.grad for p in parameters]


def put_gradients_back():
    for parameter, gradient in zip(parameters, gradients):
        parameter.grad = gradient


def zero_grad(set_to_none, optimizer=resnet_optimizer):
    put_gradients_back()
    optimizer.zero_grad(set_to_none=set_to_none)


gradient_bytes = sum(g.numel() * g.element_size() for g in gradients)
print(f"ResNet-18: {sum(p.numel() for p in parameters):,} parameters in {len(parameters)} tensors, "
      f"{gradient_bytes / MiB:.1f} MiB of gradients")
timings = {"putting gradients back only": median_time("put_gradients_back()", put_gradients_back=put_gradients_back)}
for name, set_to_none, optimizer in [("zero_grad(set_to_none=False)", False, resnet_optimizer),
                                     ("zero_grad(set_to_none=False), foreach=True", False, foreach_optimizer),
                                     ("zero_grad(set_to_none=True)", True, resnet_optimizer)]:
    timings[name] = median_time("zero_grad(set_to_none, optimizer)",
                                zero_grad=zero_grad, set_to_none=set_to_none, optimizer=optimizer)
for name, seconds in timings.items():
    print(f"{name:<44}{seconds * 1e6:>10.1f} us per call")
ratio = timings["zero_grad(set_to_none=False)"] / timings["zero_grad(set_to_none=True)"]
print(f"set_to_none=False takes {ratio:.1f}x as long as set_to_none=True")

# %%
# 设为 ``None`` 的开销是用 Python 把 62 个参数循环一遍，是放回梯度那一步的几倍。
# 写入零则在此之外还要把全部 44.6 MiB 的梯度写一遍；在 CPU 上这部分开销占了大头，
# 从上面的比值就能看出来。
#
# 零是怎样写入的，取决于优化器的 ``foreach`` 参数。本教程的 SGD 没有指定它，取默认值
# ``None``，此时 ``zero_grad(set_to_none=False)`` 对每个梯度依次调用 ``zero_()``：
# 一共 62 次单独的运算，在 CUDA GPU 上就是 62 次核函数启动。GPU 写 44.6 MiB 用不了
# 多少时间，所以在 GPU 上，开销主要来自这些启动以及外面那层 Python 循环，而不是显存
# 带宽。以 ``foreach=True``\ （或 ``fused=True``）创建的优化器则不同：它的
# ``zero_grad()`` 先按设备和数据类型把梯度分组，再对每组调用一次
# ``torch._foreach_zero_``，在 CUDA 上一次核函数启动就能清零许多张量。在 CPU 上它
# 没有多大区别，表中的数字也说明了这一点：``_foreach_zero_`` 的 CPU 版本仍然一个张量接一个
# 张量地清零。注意，默认的 ``foreach=None`` 并不够：在 CUDA 上，``step()`` 这时会
# 自行选用 foreach 实现，但 ``zero_grad()`` 只看创建优化器时传入的值。无论在哪种
# 设备上，``set_to_none=True`` 还会交还梯度占用的内存（在 GPU 上是交还给 PyTorch
# 的缓存分配器），直到下一次 ``backward()``。训练循环还可以更进一步：在
# ``backward()`` 过程中，每个参数一更新完就释放它的梯度，完全不用
# ``zero_grad()``，见《:ref:`optimizer_step_in_backward`》。
#
# 默认值的代价是：在 ``zero_grad()`` 之后读取 ``.grad`` 的代码必须考虑它为
# ``None`` 的情况；另外，如上文所示，没有梯度的参数会被优化器跳过，而不是按零梯度
# 更新。
#
# 小结
# ----
#
# * 在循环开头或紧跟在 ``optimizer.step()`` 之后调用 ``optimizer.zero_grad()``；
#   千万不要放在 ``loss.backward()`` 和 ``optimizer.step()`` 之间，那样每个更新步
#   都什么也不做。
# * ``optimizer.zero_grad()`` 只清零优化器自己那些参数的梯度。如果有参数不在优化器里，
#   或者一张计算图上有好几个优化器，就在每组参数自己的 ``backward()`` 之前清零
#   它们的梯度，或者对不该让另一个网络看到的张量调用 ``detach()``。
# * 默认的 ``set_to_none=True`` 开销更小，还让优化器跳过没有得到梯度的参数；
#   如果换成零梯度，那么在用了权重衰减，或用了动量或 Adam 且之前已有更新步的情况下，
#   参数仍会移动。
# * 推理时请用 ``torch.no_grad()`` 或 ``torch.inference_mode()``，因为
#   ``zero_grad()`` 并不会关掉 autograd。
# * 有时梯度是有意累积的：见《:ref:`gradient_accumulation`》。

# sphinx_gallery_thumbnail_number = 1

# sphinx_gallery_start_ignore
# Translates recipes/en/zero_grad_pitfalls.py, English text ecf7b777384919c7 (make translation-status)
# sphinx_gallery_end_ignore
