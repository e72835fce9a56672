"""
.. _gradients_accumulate:

梯度是怎样累积的
================

``loss.backward()`` 并不是把算出的梯度 *写入* 张量的 ``.grad`` 属性，而是
*加到* 它上面。之前的反向传播留在那里的值，仍然是这个和的一部分。优化器的
``step()`` 拿到的就是此刻 ``.grad`` 里的值；如果中间没有把 ``.grad`` 清零，
每次更新依据的就是过去所有梯度的总和，而不是当前这一次的梯度。

本教程用一个最小的例子来演示这个机制：一个只有两个元素的张量，加上一个梯度
事先就能算出来的损失。打印出来的每一行都可以用笔算核对。

.. note::
   相关教程：累积对真实拟合过程的影响见 :ref:`linear_regression_without_zero_grad`，
   对图像分类器训练的影响见 :ref:`zeroing_out_gradients`；有意地做梯度累积见
   :ref:`gradient_accumulation`；``zero_grad()`` 在循环中应该放在哪里见
   :ref:`zero_grad_pitfalls`。
"""

# %%
# 准备工作
# --------
#
# 只需要 PyTorch 和 matplotlib。这里没有任何随机因素，运算也很简单，所以在
# CPU 和 GPU 上得到的数字完全相同。

# 图中的标签是中文。如果显示成方框，说明 matplotlib 没找到中文字体：请安装一种（如 Noto Sans CJK SC），
# 再在画图前加上 plt.rcParams["font.family"] = ["DejaVu Sans", "Noto Sans CJK SC"]。
import matplotlib.pyplot as plt
import torch

device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
print(f"Using device: {device}")
torch.manual_seed(0)  # 下面没有随机数，只是和本站其他教程保持一致

# %%
# 叶子张量和它的第一个梯度
# ------------------------
#
# ``x`` 是我们用 ``requires_grad=True`` 直接创建的，不是由其他张量计算得到的，
# 所以它是一个 *叶子张量*：autograd 会为这类张量填写 ``.grad``，模型的参数也
# 属于这一类。在第一次反向传播之前，它的 ``.grad`` 是 ``None``。
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
# 优化器的一个更新步
# ------------------
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
# 现在在新的 ``x`` 处重新计算损失，再调用 ``backward()``。这个损失的梯度仍然
# 是 100，但 ``.grad`` 里还留着第一次反向传播的 100，新梯度被加了上去：

loss = (100 * x).sum()
loss.backward()
print(f"x.grad after second backward, not zeroed: {x.grad}")

# %%
# ``.grad`` 变成了 200，是真实梯度的两倍。如果这时调用 ``optimizer.step()``，
# ``x`` 移动的距离就是应有距离的两倍；这样做上十次反向传播，就是十倍。训练
# 循环从不清零梯度时，发生的正是这种情况。
#
# 先调用 ``optimizer.zero_grad()`` 再做同样的事
# ---------------------------------------------
#
# ``optimizer.zero_grad()`` 会把交给优化器的每个张量的 ``.grad`` 清零。从
# PyTorch 2.0 起，它默认的做法是把 ``.grad`` 设为 ``None``，于是下一次
# ``backward()`` 从头开始求和，``.grad`` 里恰好就是当前损失的梯度：

optimizer.zero_grad()
print(f"x.grad after optimizer.zero_grad(): {x.grad}")

loss = (100 * x).sum()
loss.backward()
print(f"x.grad after zero_grad() and backward: {x.grad}")

# %%
# ``None`` 还是零？
# -----------------
#
# ``optimizer.zero_grad(set_to_none=False)`` 是 PyTorch 2.0 之前的行为：保留
# ``.grad`` 这个张量，把它填成零。

optimizer.zero_grad(set_to_none=False)
print(f"x.grad after zero_grad(set_to_none=False): {x.grad}")

# %%
# 两种做法之后，下一次 ``backward()`` 在 ``.grad`` 里留下的梯度都一样。区别在
# 别的地方：
#
# * 设为 ``None`` 时，梯度占用的内存在下一次反向传播之前就被释放了，而且那次
#   反向传播直接写入结果，不必再加到一个全零张量上。
# * 优化器会跳过 ``.grad`` 为 ``None`` 的参数，却会照常更新 ``.grad`` 为零的
#   参数。对普通 SGD 来说，零梯度不会让参数移动；但如果用了动量或权重衰减，
#   参数仍然会变。
# * 在 ``zero_grad()`` 之后读取 ``.grad`` 的代码（比如记录梯度范数的代码）
#   必须能处理 ``None``。
#
# 对同一个计算图反向传播两次
# --------------------------
#
# 前向传播会记录一张 *计算图*：``loss`` 是经过哪些运算从 ``x`` 得到的，以及
# 这些运算求梯度时需要的中间值。为了节省内存，``backward()`` 会边算边释放
# 这些中间值，所以对同一个 ``loss`` 第二次调用它就会出错：

optimizer.zero_grad()
loss = (100 * x).sum()
loss.backward()
try:
    loss.backward()
except RuntimeError as error:
    # 错误信息很长，第一句就说明了问题所在
    print(f"second backward on the same graph: RuntimeError: {str(error).split('. ')[0]}")

# %%
# 错误信息的后半部分给出了解决办法：``retain_graph=True`` 让计算图在反向传播
# 之后继续保留。这样第二次调用就能成功，而且和所有反向传播一样，它的结果也会
# 加到 ``.grad`` 上：

optimizer.zero_grad()
loss = (100 * x).sum()
loss.backward(retain_graph=True)
loss.backward()
print(f"x.grad after two backward calls with retain_graph=True: {x.grad}")

# %%
# 两次调用算出的梯度都是 100，所以 ``.grad`` 是它们的和 200。当两个损失共用
# 计算图的一部分、需要先后各做一次反向传播时，才需要 ``retain_graph=True``；
# 除此之外，它很少是正确的解决办法，因为它会占住本来可以释放的内存。
#
# 多次迭代中的 ``.grad``
# ----------------------
#
# 最后是一个简短的训练循环：五次迭代，每次都做前向传播、反向传播和一个更新步；
# 一次不调用 ``zero_grad()``，一次在每次迭代开始时调用它。每次迭代的真实梯度
# 都是 100，所以 ``.grad`` 本应始终是 100。


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
ax.set_xlabel("迭代（每次一次反向传播）")
ax.set_ylabel("x.grad[0]")
ax.set_title("真实梯度始终是 100")
ax.set_xticks(iterations.tolist())
ax.legend()
fig.tight_layout()
plt.show()

# %%
# 不调用 ``zero_grad()`` 时，柱子每次迭代升高 100：做了 *n* 次反向传播之后，
# ``.grad`` 是真实梯度的 *n* 倍，优化器迈出的步子也是应有大小的 *n* 倍。调用
# ``zero_grad()`` 时，每根柱子都是 100。
#
# 小结
# ----
#
# * ``backward()`` 把算出的梯度加到 ``.grad`` 上，从不替换原有的值。
# * ``optimizer.step()`` 直接使用 ``.grad`` 里的值，不管里面累积了多少。
# * ``optimizer.zero_grad()`` 把 ``.grad`` 设为 ``None``，传入
#   ``set_to_none=False`` 时则填成零，让下一次反向传播从头开始。
# * 对同一个计算图反向传播两次需要 ``retain_graph=True``，两次的梯度同样会
#   累积起来。
#
# 不断累积的梯度会对正在训练的模型造成什么影响，请看
# :ref:`linear_regression_without_zero_grad`。

# sphinx_gallery_thumbnail_number = 1
