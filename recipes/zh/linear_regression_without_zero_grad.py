"""
.. _linear_regression_without_zero_grad:

不清零梯度的线性回归
====================

《:ref:`gradients_accumulate`》已经说明，``backward()`` 会把梯度加到 ``.grad``
上，而不是替换原来的值。本教程看看这对训练有什么影响。模型选最简单的一种：
用手写的梯度下降，把直线 *ŷ* = *w* *x* + *b* 拟合到 20 个带噪声的点上。

拟合从同一个起点出发运行两次：一次在每次迭代中都清零梯度，一次从不清零。
我们先看前两次迭代的梯度，再看完整的损失曲线，然后改用小批量做同样的拟合，
最后用通常的写法，即 ``nn.Linear`` 加 ``optimizer.zero_grad()``，把它再写一遍。

.. note::
   同样的问题在图像分类器上的表现见《:ref:`zeroing_out_gradients`》；
   有意地累积梯度见《:ref:`gradient_accumulation`》；``zero_grad()`` 在循环中
   应该放在哪里见《:ref:`zero_grad_pitfalls`》。
"""

# %%
# 准备工作
# --------
#
# 本教程的所有计算都留在 CPU 上：区区 20 个数，GPU 帮不上忙。下面设定的随机
# 种子让每次运行都生成相同的随机数，所以本页引用的数值都可以拿你自己的运行结果
# 来核对。凡是我们发现还取决于 CPU 如何舍入运算结果的数值，正文都会注明。

# 图中的标签是中文。如果显示成方框，说明 matplotlib 没找到中文字体：请安装一种（如 Noto Sans CJK SC），
# 再在画图前加上 plt.rcParams["font.family"] = ["DejaVu Sans", "Noto Sans CJK SC"]。
import matplotlib.pyplot as plt
import torch
import torch.nn as nn
import torch.optim as optim

device = torch.device("cpu")  # 张量很小，用 GPU 只会增加额外开销
print(f"Using device: {device}")

# %%
# 数据和参数
# ----------
#
# 二十个点散布在直线 *y* = 2\ *x* + 5 周围，噪声的标准差为 1。斜率 ``w`` 的初始值
# 是随机的，截距 ``b`` 从零开始。两者都是 ``requires_grad=True`` 的叶子张量，
# 因此 ``backward()`` 会填写它们的 ``.grad``。损失取均方误差的一半。
#
# 随机种子是 6（本站其他教程用的是 0）。换成别的种子，数字会不同，但下面各次
# 运行表现出的规律不变。

torch.manual_seed(6)
lr = 0.01

x = torch.rand(20, 1) * 10
y = 2 * x + (5 + torch.randn(20, 1))

w = torch.randn(1, requires_grad=True)
b = torch.zeros(1, requires_grad=True)

# 下面的每次运行都从这两个值出发。
w_init, b_init = w.detach().clone(), b.detach().clone()


def initial_parameters():
    """返回新的叶子张量，值为 ``w`` 和 ``b`` 的初始值。"""
    return w_init.clone().requires_grad_(), b_init.clone().requires_grad_()


def compute_loss(w, b, rows=slice(None)):
    """在 ``rows`` 选出的数据行上（默认为全部数据），直线的均方误差的一半。"""
    y_pred = w * x[rows] + b
    return (0.5 * (y[rows] - y_pred) ** 2).mean()


# %%
# 对直线来说，最佳拟合也可以用最小二乘法直接算出来。它是梯度下降应当逼近的
# 目标，它的损失也是任何直线在这些点上所能达到的最低值。

design = torch.cat([x, torch.ones_like(x)], dim=1)  # 两列：x 和 1
w_best, b_best = torch.linalg.lstsq(design, y).solution.flatten()
print(f"initial line:       w = {w_init.item():.4f}, b = {b_init.item():.4f}, "
      f"loss = {compute_loss(w_init, b_init).item():.4f}")
print(f"least-squares line: w = {w_best:.4f}, b = {b_best:.4f}, "
      f"loss = {compute_loss(w_best, b_best).item():.4f}")

# %%
# 前两次迭代
# ----------
#
# 每次迭代计算损失，调用 ``backward()``，再让 ``w`` 和 ``b`` 沿梯度的反方向
# 移动。更新放在 ``torch.no_grad()`` 里进行，这样 autograd 就不会把它记成下一次
# 计算的一部分。更新原地修改 ``w`` 和 ``b``，所以它们仍是会收集梯度的叶子张量。
#
# 我们把这两次迭代运行两遍：一遍照原样运行，另一遍在第二次 ``backward()`` 之前
# 先调用 ``w.grad.zero_()`` 和 ``b.grad.zero_()``。两遍的第一次迭代相同，所以
# 第二次梯度也是在同一个点上计算的。


def first_two_iterations(zero_grad):
    """运行两次迭代，打印每次 ``backward()`` 之后留下的梯度。"""
    w, b = initial_parameters()
    for iteration in (1, 2):
        if zero_grad and iteration == 2:
            w.grad.zero_()
            b.grad.zero_()
        loss = compute_loss(w, b)
        loss.backward()
        print(f"{'zeroed' if zero_grad else 'not zeroed'}, iteration {iteration}: "
              f"w.grad = {w.grad.item():9.4f}, b.grad = {b.grad.item():8.4f}")
        with torch.no_grad():
            w -= lr * w.grad
            b -= lr * b.grad


first_two_iterations(zero_grad=False)
first_two_iterations(zero_grad=True)

# %%
# 两遍的第一次迭代结果相同。梯度是负的：初始直线太平、位置太低，``w`` 和
# ``b`` 增大时损失会下降。清零之后再做第二次 ``backward()``，``.grad`` 里是新
# 位置上的梯度，``w`` 的梯度为 -48.2813，绝对值比 -74.6261 小，因为第一步已经
# 让直线靠近了数据。不清零时，``.grad`` 里是 -122.9075，在舍入误差范围内
# 等于 -74.6261 + -48.2813。第二次更新按这个和来算，步长约是梯度所要求的
# 2.5 倍；而且从此以后，第一次的梯度会出现在每一次更新里。
#
# 用 ``torch.no_grad()``，不用 ``.data``
# --------------------------------------
#
# 较早的代码常常通过 ``.data``，即张量背后的原始数值，来做同样的更新：
#
# .. code-block:: python
#
#    w.data.sub_(lr * w.grad)
#    b.data.sub_(lr * b.grad)
#
# 在这里它算出的数字一样，但这种修改完全瞒过了 autograd：如果之后还有某次
# 反向传播要用到被这样改过的张量，autograd 察觉不到，会悄无声息地算出错误的
# 梯度。在 ``torch.no_grad()`` 里，运算同样不会记入计算图，但 autograd 仍然
# 知道张量被原地修改过；如果这次修改让一次尚未进行的反向传播失效，它就会报错。
# 此外，``torch.optim`` 中的优化器也是在关闭梯度跟踪的情况下原地更新参数的。
#
# 两种方式各训练一次
# ------------------
#
# ``train`` 最多运行 1,000 次迭代；如果给了 ``stop_below``，损失一旦低于它
# 就停止。``zero_grad=True`` 时，它在每次 ``backward()`` 之前把 ``w.grad``
# 和 ``b.grad`` 设为 ``None``，这正是 ``optimizer.zero_grad()`` 所做的事。
# 如果给了 ``batch_size``，它就只用一个小批量而不是全部 20 个点来计算梯度，
# 这一点后面才会用到。它记录的损失始终是全部 20 个点上的损失。


def mini_batches(batch_size):
    """无限地产生各个小批量的行号：每遍历一次 20 个点，都换一个新的顺序。"""
    order = torch.Generator().manual_seed(0)
    while True:
        yield from torch.randperm(len(x), generator=order).split(batch_size)


def train(zero_grad, iterations=1000, stop_below=None, batch_size=None):
    """用梯度下降拟合直线，返回每次迭代的损失以及 ``w``、``b``。"""
    w, b = initial_parameters()
    batches = mini_batches(batch_size) if batch_size else None
    losses = []
    for _ in range(iterations):
        loss = compute_loss(w, b)
        losses.append(loss.item())
        if stop_below is not None and losses[-1] < stop_below:
            break
        if batches is not None:
            loss = compute_loss(w, b, next(batches))
        if zero_grad:
            w.grad = None
            b.grad = None
        loss.backward()
        with torch.no_grad():
            w -= lr * w.grad
            b -= lr * b.grad
    return losses, w, b


def report(name, losses, w, b):
    print(f"{name:<16} iterations: {len(losses):4d}, final loss: {losses[-1]:8.4f}, "
          f"w = {w.item():7.4f}, b = {b.item():7.4f}")


# %%
# 先加上停止条件：损失一旦低于 1 就停止。

stopped_with = train(zero_grad=True, stop_below=1.0)
stopped_without = train(zero_grad=False, stop_below=1.0)
report("zeroed", *stopped_with)
report("not zeroed", *stopped_without)

# %%
# 出人意料的是，从不清零梯度的那次运行反而先停了下来：只用了 50 次迭代，另一次
# 用了 675 次。难道忘了 ``zero_grad()`` 反而让训练变快了？把两个结果和最小二乘
# 直线 w = 1.9059、b = 5.4334 比较一下。清零的那次停在 w = 2.2148、b = 3.4815：
# 斜率已经差不多了，截距还在往上走。它走得慢，是因为 ``x`` 的值最大到 10，损失
# 对 ``w`` 远比对 ``b`` 敏感。学习率要小到让 ``w`` 保持稳定，``b`` 每次迭代就
# 只能挪动一点点。另一次停在 w = 1.6857、b = 6.9272，截距已经越过了最佳值，
# 它只是恰好路过这一点而已。
#
# 现在去掉停止条件，两种方式各完整运行 1,000 次迭代，并画出损失曲线：

losses_with, w_with, b_with = train(zero_grad=True)
losses_without, w_without, b_without = train(zero_grad=False)
for name, losses, w_fit, b_fit in [("zeroed", losses_with, w_with, b_with),
                                   ("not zeroed", losses_without, w_without, b_without)]:
    report(name, losses, w_fit, b_fit)
    last = losses[-100:]
    print(f"{'':<16} iterations with loss < 1: {sum(v < 1 for v in losses)} of {len(losses)}, "
          f"loss over the last 100: {min(last):.4f} to {max(last):.4f}")

fig, (ax_all, ax_start) = plt.subplots(1, 2, figsize=(10, 5), width_ratios=[2, 1], layout="constrained")
for ax, shown in [(ax_all, len(losses_with)), (ax_start, 50)]:
    steps = range(1, shown + 1)
    ax.plot(steps, losses_with[:shown], color="C0", label="清零 w.grad、b.grad")
    ax.plot(steps, losses_without[:shown], color="C1", linewidth=1, label="从不清零")
    ax.axhline(1, color="gray", linestyle="--", linewidth=1, label="损失 = 1")
    for (losses, _, _), color in [(stopped_with, "C0"), (stopped_without, "C1")]:
        if len(losses) <= shown:
            ax.plot(len(losses), losses[-1], "o", color=color, markersize=9, fillstyle="none")
    ax.set_yscale("log")
    ax.set_xlabel("迭代次数")
ax_all.plot([], [], "o", color="gray", fillstyle="none", label="停止条件生效之处")
ax_all.set_ylabel("损失（均方误差的一半）")
ax_all.set_title("全部 1,000 次迭代")
ax_start.set_title("前 50 次迭代")
fig.legend(*ax_all.get_legend_handles_labels(), loc="outside lower center", ncols=4)
plt.show()

# %%
# 清零时（蓝线），前十来次迭代中损失急剧下降，这时 ``w`` 在找斜率；之后
# ``b`` 慢慢追上来，损失也随之缓慢而稳定地下降。它在第 675 次迭代时降到 1 以下，
# 此后一直保持在 1 以下，最终为 0.8316，正朝着最小二乘的最小值 0.7215 靠近。
#
# 不清零时（橙线），损失始终稳定不下来。从最初几次迭代开始，它大约每五次迭代
# 就上下摆动一轮，低点接近最小值，高点超过初始损失 83.8424。到了最后 100 次
# 迭代，它仍在 0.9263 到 91.5686 之间来回。1,000 次迭代中只有 7 次低于 1，
# 每次都在一轮摆动的谷底，其中第一次就是第 50 次迭代，停止条件正是在这里生效
# 的。1,000 次迭代之后，直线回到了 w = 0.5015、b = -0.0090，几乎就是它出发的
# 地方（w = 0.5922、b = 0）。基于损失的停止条件只能说明训练 **经过** 了一个
# 好的点，不能说明它会停在那里。
#
# 摆动从何而来
# ------------
#
# 不清零时，第 *t* 次迭代之后的 ``.grad`` 是到目前为止全部 *t* 个梯度之和，每次
# 更新都减去 ``lr`` 乘以这个和。一个每次迭代都要再加上最新梯度的累加和，就是
# **速度**：参数就像一个在损失这只碗里滚动、完全没有摩擦的小球。它一路加速冲下
# 去，冲过碗底，爬上对面直到停住，再滚回来，永不停歇。
#
# 这恰好就是动量为 1、没有阻尼（dampening）的 SGD：它的动量缓冲区就是所有
# 梯度的简单求和。因此，用 ``optim.SGD(..., momentum=1.0)`` 训练、并且每次
# 迭代都调用 ``zero_grad()``，得到的损失曲线应当和忘记 ``zero_grad()`` 时
# 一样：


def train_with_momentum(momentum, iterations=1000):
    """用 ``optim.SGD`` 和 ``zero_grad()`` 拟合直线，返回每次迭代的损失。"""
    w, b = initial_parameters()
    optimizer = optim.SGD([w, b], lr=lr, momentum=momentum)
    losses = []
    for _ in range(iterations):
        optimizer.zero_grad()
        loss = compute_loss(w, b)
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
    return losses


losses_momentum = train_with_momentum(momentum=1.0)
difference = max(abs(p - q) for p, q in zip(losses_momentum, losses_without))
print(f"largest difference from the never-zeroed loss curve: {difference:.2e}, "
      f"on losses up to {max(losses_without):.1f}")
last = train_with_momentum(momentum=0.9)[-100:]
print(f"momentum 0.9, zeroed: loss over the last 100: {min(last):.4f} to {max(last):.4f}")

# %%
# 两条曲线的差别不超过上面打印的最大差值，而损失本身最高达到其后打印的大小。
# 若有差别，也只来自浮点舍入：手写的更新和 ``optimizer.step()`` 算的是同一个量，
# 但走的是不同的代码，舍入可能不同，摆动又把这些差别一路带了下去。有没有差别取决于
# CPU 的向量指令：设置环境变量 ``ATEN_CPU_CAPABILITY=default``，让 PyTorch
# 只用普通指令，这里的差别就正好是 0。所以，忘了 ``zero_grad()`` 的训练循环，实际上是在运行
# 没有摩擦的动量 SGD。常用的动量，比如 0.9，每一步只保留之前速度的 90%；
# 正是这部分速度的损耗，让摆动得以逐渐平息。调用 ``zero_grad()`` 并使用 0.9 的
# 动量，同样的拟合在最后 100 次迭代中损失始终是 0.7215，即最小二乘的最小值。
#
# 用小批量时摆幅越来越大
# ----------------------
#
# 到目前为止，每个梯度都是在全部 20 个点上算出来的。训练循环通常用小批量来算
# 梯度，这里每次取 4 个点，顺序随机打乱，每遍历一次数据共 5 个小批量。每个小
# 批量都有自己的最佳直线，它的梯度把参数拉向这条直线，而不是拉向全部点的最佳
# 直线。清零时，每次拉动只起一次作用就消失了，平均下来相互抵消。不清零时，
# 每次拉动都留在累积和里，在之后的每次迭代中继续起作用，也没有任何机制把它去掉。
# 下面几次运行和前面一样，起点相同，学习率也相同，只是改用了小批量。每次运行
# 把 1,000 次迭代等分成四段，打印每段中最大的损失（在全部 20 个点上计算）。

losses_batches_with, _, _ = train(zero_grad=True, batch_size=4)
losses_batches_without, _, _ = train(zero_grad=False, batch_size=4)
for name, losses in [("all 20 points, not zeroed", losses_without),
                     ("mini-batches, zeroed", losses_batches_with),
                     ("mini-batches, not zeroed", losses_batches_without)]:
    quarters = [max(losses[i:i + 250]) for i in range(0, len(losses), 250)]
    print(f"{name:<26} largest loss per 250 iterations: {', '.join(f'{v:.4g}' for v in quarters)}")
last = losses_batches_with[-100:]
print(f"{'mini-batches, zeroed':<26} loss over the last 100: {min(last):.4f} to {max(last):.4f}")

fig, ax = plt.subplots(figsize=(8, 4.5), layout="constrained")
steps = range(1, len(losses_without) + 1)
ax.plot(steps, losses_batches_without, color="C3", linewidth=1, label="每个小批量 4 个点，从不清零")
ax.plot(steps, losses_without, color="C1", linewidth=1, label="全部 20 个点，从不清零")
ax.plot(steps, losses_batches_with, color="C0", label="每个小批量 4 个点，清零")
ax.set_yscale("log")
ax.set_xlabel("迭代次数")
ax.set_ylabel("全部 20 个点上的损失（均方误差的一半）")
ax.set_title("从不清零：用全部点时摆幅有界，用小批量时摆幅越来越大")
ax.legend()
plt.show()

# %%
# 用全部 20 个点时，摆幅有界：每段的最大损失都在 91.49 到 91.69 之间，
# 比初始损失 83.8424 高出约 9%，运行多久都是如此。用小批量时，没有任何机制约束
# 摆动，摆幅越来越大：每段的最大损失从第一段的 980.1 变为最后一段的
# 2.854e+05，图中也能看到摆动一轮比一轮剧烈。清零时，同样的小批量让损失在最后
# 100 次迭代中降到 0.8237 到 0.9781 之间。每个梯度只来自 4 个点，所以比用全部 20 个点时波动大，但已经稳定
# 在最小值附近。
#
# 实际的训练循环用的是小批量，所以实践中遇到的正是这种情况。
# 《:ref:`zeroing_out_gradients`》展示了它对图像分类器的影响：那里每个小批量
# 4 张图像，还叠加了 0.9 的动量。
#
# 用通常的写法完成同类的拟合
# ----------------------------
#
# 实际工作中没有人手写更新：``nn.Linear(1, 1)`` 保存 ``w`` 和 ``b``，名字
# 分别是 ``weight`` 和 ``bias``；``nn.MSELoss()`` 计算损失；``optim.SGD``
# 负责更新参数。每次迭代开始时的那一行 ``optimizer.zero_grad()``，保证了
# ``.grad`` 始终等于当前损失的梯度。
#
# 数据是恰好落在直线 *y* = 2\ *x* 上的四个点，所以要找的答案是权重 ``weight``
# 为 2、偏置 ``bias`` 为 0。作为对照，``fit_line`` 还会在不调用 ``zero_grad()``
# 的情况下运行一次。

x = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
y = torch.tensor([[2.0], [4.0], [6.0], [8.0]])


def fit_line(zero_grad, iterations):
    """在 ``x``、``y`` 上训练 ``nn.Linear(1, 1)``，返回模型和最终的损失。"""
    torch.manual_seed(0)  # 两次运行的初始权重和偏置相同
    model = nn.Linear(1, 1).to(device)
    criterion = nn.MSELoss()
    optimizer = optim.SGD(model.parameters(), lr=0.01)
    for _ in range(iterations):
        if zero_grad:
            optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
    with torch.no_grad():  # 最终权重下的损失，在最后一个更新步之后计算
        return model, criterion(model(x), y).item()


iterations = 2000
for name, zero_grad in [("with zero_grad()", True), ("without zero_grad()", False)]:
    model, loss = fit_line(zero_grad, iterations)
    print(f"nn.Linear, {iterations} iterations {name + ':':<21} weight = {model.weight.item():.4f}, "
          f"bias = {model.bias.item():.4f}, loss = {loss:.2e}")

# %%
# 调用 ``zero_grad()`` 时，2,000 次迭代之后权重为 1.9991，偏置为 0.0027，
# 损失为 1.23e-06，两者与准确答案的差距都在 0.003 以内。不调用时，同样的循环
# 结束在权重 0.7037、偏置 -1.5219，损失为 24.8：参数和上面的 ``w``、``b``
# 一样，在答案周围来回摆动，迭代次数只决定了结束时它们恰好摆到哪里。
#
# 小结
# ----
#
# * 不清零时，每次更新用的都是过去所有梯度之和。
# * 在这样的凸损失上，这个和就像没有摩擦的动量。用全部的点计算梯度时，参数
#   围绕最小值来回摆动，而不是停在那里；用小批量时，摆幅越来越大。
# * 基于损失的停止条件可能被一次碰巧的摆动骗过。
# * 每次迭代在 ``backward()`` 之前清零一次梯度：用 ``optimizer.zero_grad()``；
#   手写代码时，把 ``.grad`` 设为 ``None``。

# sphinx_gallery_thumbnail_number = 1

# sphinx_gallery_start_ignore
# Translates recipes/en/linear_regression_without_zero_grad.py, English text 1bff52f851c3f29f (make translation-status)
# sphinx_gallery_end_ignore
