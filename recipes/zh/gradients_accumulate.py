"""
.. _gradients_accumulate:

梯度是怎样累积的
================

``loss.backward()`` 并不是把算出的梯度 **写入** 张量的 ``.grad`` 属性，而是
**加到** 它上面。之前的反向传播留下的值，仍然是这个和的一部分。优化器的
``step()`` 直接使用此刻 ``.grad`` 里的值；如果中间没有清零 ``.grad``，每次更新
依据的就是以往所有梯度的总和，而不是当前这一次的梯度。

本教程用一个小得不能再小的例子演示这个机制：一个由两个数组成的张量，以及一个
梯度事先已知的损失。打印出来的每一行都可以手算核对。

.. note::
   相关教程：累积对真实拟合的影响见《:ref:`linear_regression_without_zero_grad`》，
   对训练出的分类器的影响见《:ref:`zeroing_out_gradients`》；怎样有意地累积梯度见
   《:ref:`gradient_accumulation`》；``zero_grad()`` 在循环中应该放在哪里见
   《:ref:`zero_grad_pitfalls`》。
"""

# %%
# 准备工作
# --------
#
# 只需要 PyTorch 和 matplotlib。这里没有任何随机因素，运算也很简单，所以在 CPU 和
# GPU 上得到的数字一样。

# 图中的标签是中文。如果显示成方框，说明 matplotlib 没找到中文字体：请安装一种（如 Noto Sans CJK SC），
# 再在画图前加上 plt.rcParams["font.family"] = ["DejaVu Sans", "Noto Sans CJK SC"]。
import matplotlib.pyplot as plt
import torch

device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
print(f"Using device: {device}")
torch.manual_seed(0)  # 下面没有随机数；和本站每篇教程一样设置随机种子

# %%
# 叶子张量和它的第一个梯度
# ------------------------
#
# ``x`` 是我们用 ``requires_grad=True`` 直接创建的，不是由其他张量计算得到的，所以
# 它是一个 **叶子张量**：autograd 会为这类张量填写 ``.grad``，模型的参数也属于
# 这一类。在第一次反向传播之前，它的 ``.grad`` 是 ``None``。
#
# 损失为 *L* = 100 *x*\ :sub:`1` + 100 *x*\ :sub:`2`，因此无论 ``x`` 取什么值，损失对
# ``x`` 两个元素的梯度都是 100。

x = torch.tensor([1.0, 2.0], requires_grad=True, device=device)
print(f"x: {x}")
print(f"x.is_leaf: {x.is_leaf}")
print(f"x.grad before backward: {x.grad}")

y = 100 * x
loss = y.sum()
loss.backward()
print(f"x.grad after first backward: {x.grad}")

# %%
# 执行一个更新步
# --------------
#
# 普通的 SGD 让每个元素沿梯度的反方向移动：``x = x - lr * x.grad``。学习率为
# 0.001、梯度为 100 时，两个元素都减小 0.1。

lr = 0.001
optimizer = torch.optim.SGD([x], lr=lr)
optimizer.step()
print(f"x after optimizer.step() (lr={lr}): {x}")

# %%
# 不清零，再做一次反向传播
# ------------------------
#
# 现在在新的 ``x`` 处重新计算损失，再调用 ``backward()``。这个损失的梯度仍然是
# 100，但 ``.grad`` 里还留着第一次反向传播得到的 100，新梯度加在了它上面：

loss = (100 * x).sum()
loss.backward()
print(f"x.grad after second backward, not zeroed: {x.grad}")

# %%
# ``.grad`` 变成了 200，是真实梯度的两倍。如果这时调用 ``optimizer.step()``，``x``
# 移动的距离就是应有距离的两倍；像这样做十次反向传播，就是十倍。训练循环从不清零
# 梯度时，发生的正是这种情况。
#
# 先调用 ``optimizer.zero_grad()``，再做同样的反向传播
# ----------------------------------------------------
#
# 对创建优化器时传入的每个张量，``optimizer.zero_grad()`` 都会清零它的 ``.grad``。
# 从 PyTorch 2.0 起，它默认的做法是把 ``.grad`` 设为 ``None``，于是下一次
# ``backward()`` 从头开始求和，``.grad`` 里恰好是当前损失的梯度：

optimizer.zero_grad()
print(f"x.grad after optimizer.zero_grad(): {x.grad}")

loss = (100 * x).sum()
loss.backward()
print(f"x.grad after zero_grad() and backward: {x.grad}")

# %%
# ``None`` 还是零？
# -----------------
#
# ``optimizer.zero_grad(set_to_none=False)`` 就是 PyTorch 2.0 之前 ``zero_grad()``
# 的默认行为：保留 ``.grad`` 这个张量，把它填成零。

optimizer.zero_grad(set_to_none=False)
print(f"x.grad after zero_grad(set_to_none=False): {x.grad}")

# %%
# 无论用哪种方式，下一次 ``backward()`` 之后 ``.grad`` 里的梯度都一样。区别在别处：
#
# * 设为 ``None`` 会释放梯度占用的内存，直到下一次反向传播才重新分配；而且那次反向
#   传播直接写入结果，不必再加到一个全零张量上。
# * 优化器会跳过 ``.grad`` 为 ``None`` 的参数，却会照常更新 ``.grad`` 为零的参数。
#   对普通的 SGD 来说，零梯度不会让参数移动；但如果用了权重衰减，或者之前的更新步
#   还留有动量或 Adam 的滑动平均值，零梯度仍然会让参数移动
#   （《:ref:`zero_grad_pitfalls`》演示了这一点）。
# * 在 ``zero_grad()`` 之后读取 ``.grad`` 的代码（比如记录梯度范数的代码）必须能
#   处理 ``None``。
#
# 对同一个计算图反向传播两次
# --------------------------
#
# 前向传播会记录一张 **计算图**：``loss`` 是经过哪些运算从 ``x`` 得到的，以及这些
# 运算求梯度时需要的中间值。为了节省内存，``backward()`` 会边算边释放这些中间值，
# 所以对同一个 ``loss`` 第二次调用它时，一旦需要用到其中某个值就会报错，这里正是
# 如此：

optimizer.zero_grad()
loss = (100 * x).sum()
loss.backward()
try:
    loss.backward()
except RuntimeError as error:
    # 错误信息很长，第一句就说明了问题所在
    print(f"second backward on the same graph: RuntimeError: {str(error).split('. ')[0]}")

# %%
# 错误信息的后半部分建议使用 ``retain_graph=True``，它让计算图在反向传播之后继续
# 保留。需要反向传播两次，最常见的原因是同一次前向传播算出了两个损失。下面的
# ``first`` 和 ``second`` 都用到 ``y = 100 * x``：``first = y.sum()`` 对 ``x`` 每个
# 元素的梯度是 100，``second = (y / 2).sum()`` 的梯度是 50。``backward_both`` 要么先后
# 对两个损失各做一次反向传播（第一次保留计算图，留给第二次用），要么对两者之和只做
# 一次；同时用 ``y`` 上的钩子（hook）统计梯度有几次经过两者共用的那部分计算图。


def backward_both(one_after_the_other):
    """对共用 ``y`` 的两个损失做反向传播，返回梯度到达 ``y`` 的次数。"""
    optimizer.zero_grad()
    y = 100 * x  # 两个损失共用的那部分计算图
    gradients_reaching_y = []
    y.register_hook(gradients_reaching_y.append)  # 每当反向传播到达 y 时调用
    first, second = y.sum(), (y / 2).sum()
    if one_after_the_other:
        first.backward(retain_graph=True)  # 如果不保留计算图，second.backward() 就会像上面那样报错
        second.backward()
    else:
        (first + second).backward()
    return len(gradients_reaching_y)


passes = backward_both(one_after_the_other=True)
print(f"x.grad after first.backward(retain_graph=True), second.backward(): {x.grad}")
print(f"backward passes through y, one after the other: {passes}")
passes = backward_both(one_after_the_other=False)
print(f"x.grad after (first + second).backward(): {x.grad}")
print(f"backward passes through y, summed: {passes}")

# %%
# 两种做法都在 ``.grad`` 里留下 100 + 50 = 150：先后调用时，第二次反向传播和任何
# 反向传播一样，把结果加到第一次留下的值上；求和时，和的梯度就是梯度的和。通常求和
# 更好：只做一次反向传播，共用的部分只经过一次而不是两次，计算图也边算边释放，不必
# 为第二次调用一直留着。只有计算图必须在一次反向传播之后继续存在时，才需要
# ``retain_graph=True``：要在相加之前分别拿到每个损失的梯度（分别记录、比较或裁剪），
# 或者要对同一张计算图多次调用 ``torch.autograd.grad``，例如一次求雅可比矩阵的一行。
# ``create_graph=True`` 会为反向传播本身再建一张计算图，用来求梯度的梯度；它同样会
# 保留原来的计算图，因为 ``retain_graph`` 的默认值就取 ``create_graph`` 的值。
#
# 多次迭代中的 ``.grad``
# ----------------------
#
# 最后是一个简短的训练循环：五次迭代，每次都做前向传播、反向传播和一个更新步；
# 一遍不调用 ``zero_grad()``，一遍在每次迭代开头调用它。每次迭代的真实梯度都是
# 100，所以 ``.grad`` 本应始终是 100。


def grad_after_each_backward(zero_grad, iterations=5):
    """用一个新的 ``x`` 训练几次迭代，返回每次反向传播后的 ``x.grad[0]``。"""
    x = torch.tensor([1.0, 2.0], requires_grad=True, device=device)
    optimizer = torch.optim.SGD([x], lr=0.001)
    grads = []
    for _ in range(iterations):
        if zero_grad:
            optimizer.zero_grad()
        loss = (100 * x).sum()
        loss.backward()
        grads.append(x.grad[0].item())
        optimizer.step()
    return grads


grads_without = grad_after_each_backward(zero_grad=False)
grads_with = grad_after_each_backward(zero_grad=True)
print("x.grad[0] after each backward, without zero_grad():", ", ".join(f"{g:g}" for g in grads_without))
print("x.grad[0] after each backward, with zero_grad():   ", ", ".join(f"{g:g}" for g in grads_with))

iterations = torch.arange(1, len(grads_with) + 1)
fig, ax = plt.subplots(figsize=(7, 4))
ax.bar(iterations - 0.2, grads_with, width=0.4, label="调用 optimizer.zero_grad()")
ax.bar(iterations + 0.2, grads_without, width=0.4, label="不调用 zero_grad()")
ax.set_xlabel("第几次迭代（每次迭代做一次反向传播）")
ax.set_ylabel("x.grad[0]")
ax.set_title("真实梯度始终是 100")
ax.set_xticks(iterations.tolist())
ax.legend()
fig.tight_layout()
plt.show()

# %%
# 不调用 ``zero_grad()`` 时，柱子每次迭代升高 100：做了 *n* 次反向传播之后
# ``.grad`` 是真实梯度的 *n* 倍，优化器迈出的步子也是应有大小的 *n* 倍。调用
# ``zero_grad()`` 时，每根柱子都是 100。
#
# 小结
# ----
#
# * ``backward()`` 把算出的梯度加到 ``.grad`` 上，从不替换原有的值。
# * ``optimizer.step()`` 直接使用 ``.grad`` 里的值，不管里面累积了多少。
# * ``optimizer.zero_grad()`` 把 ``.grad`` 设为 ``None``\ （传入 ``set_to_none=False``
#   时则填成零），让下一次反向传播从头开始。
# * 两个损失共用一张计算图时，对它们的和做反向传播。``retain_graph=True`` 留给需要
#   单独拿到每个损失梯度的场合；无论哪种做法，梯度都会在 ``.grad`` 里加起来。
#
# 不断累积的梯度会对正在训练的模型造成什么影响，请看
# 《:ref:`linear_regression_without_zero_grad`》。

# sphinx_gallery_thumbnail_number = 1

# sphinx_gallery_start_ignore
# Translates recipes/en/gradients_accumulate.py, English text ff9370e23609869a (make translation-status)
# sphinx_gallery_end_ignore
