"""
.. _accumulation_in_practice:

真实训练循环中的梯度累积
========================

《:ref:`gradient_accumulation`》把这项技术归结为一条规则：每个微批量的损失除以
``k``，每累积 ``k`` 个微批量，执行一次更新步并清零梯度。真实的训练循环里还有混合
精度、梯度裁剪、学习率调度，以及长短不一的序列；这些环节都必须顾及一点：现在
一次更新由 ``k`` 次反向传播组成。

你将学到：在真实的训练循环中，梯度累积会在哪些地方出错。

* 每个微批量都调用一次 ``unscale_``，``GradScaler`` 就会报错
  ``unscale_() has already been called on this optimizer``；
* 在微批量循环内部裁剪梯度，裁剪的只是部分和，而不是这次更新的梯度；
* 每个微批量都调用一次 ``scheduler.step()``，预热的推进速度就成了应有速度的
  ``k`` 倍；而 ``GradScaler`` 跳过的更新步，仍然会让调度往前走；
* 序列长短不一时，把每个微批量按词元取平均的损失除以 ``k``，得到的梯度是错的；
* 一轮（epoch）的最后一个窗口往往不足 ``k`` 个微批量，这时仍把损失除以 ``k``，
  这次更新就会偏小；
* ``total_loss += loss`` 会让每个微批量的计算图节点一直存活；
* 在窗口中途保存的检查点，不包含到那时为止累积的梯度。

本教程为一个小小的下一词元预测模型搭建一个训练循环，每次加入一个环节，并把
每种错误写法放在正确写法旁边实测对比。最后一节把各个环节组合起来，完整地训练
一遍。
"""

# %%
# 准备工作
# --------
#
# 只需要 PyTorch 和 matplotlib，几秒钟就能跑完。在 CUDA GPU 上，循环用
# ``float16`` 做混合精度，这是 CUDA 上 autocast 的默认类型，也正是需要
# ``GradScaler`` 的类型（在支持 ``bfloat16`` 的 GPU 上，常用的是 ``bfloat16``，
# 它不需要缩放器）；在 CPU 上则用 ``bfloat16``，这是 CPU 上 autocast 的默认类型
# （它也接受 ``float16``）。页面会打印实际使用的类型。
#
# .. note::
#    设定了种子后，只要在同一台机器上、用同一个 PyTorch 版本和同样的线程数运行，脚本
#    每次打印的数字都相同。数据和初始权重都在 CPU 上生成，所以 GPU 上的起点相同，但
#    算出的数字会有出入：GPU 用 ``float16`` 计算，核函数做加法的顺序也与 CPU 不同；
#    即使在同一块 GPU 上，多次运行也不保证逐位一致。

import copy
import functools
import warnings
import weakref

# 图中的标签是中文。如果显示成方框，说明 matplotlib 没找到中文字体：请安装一种（如 Noto Sans CJK SC），
# 再在画图前加上 plt.rcParams["font.family"] = ["DejaVu Sans", "Noto Sans CJK SC"]。
import matplotlib.pyplot as plt
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim

device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
print(f"Using device: {device}")
torch.manual_seed(0)  # 每次运行的数据和权重都相同
amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
print(f"Autocast dtype: {amp_dtype}")

# %%
# 长短不一的序列
# --------------
#
# 数据是当场生成的 240 条词元（token）序列，词表里有 32 个词元；每个词元都从一个
# 固定的随机分布中抽取，这个分布取决于它前面的那个词元。序列长度在 3 到 64 个
# 词元之间。模型根据当前词元预测下一个词元：一个嵌入层、一个隐藏层，再加一个
# 输出整个词表的线性层。
#
# ``collate`` 像 ``DataLoader`` 的 collate 函数那样，把一批序列填充到其中最长
# 那条的长度。填充位置的目标值是 ``-100``，``F.cross_entropy`` 会忽略它，所以只有
# 「真实词元」计入损失：长度为 ``n`` 的序列贡献 ``n - 1`` 个。
#
# 一个微批量有 8 条序列，每次更新由 ``k = 4`` 个微批量组成，所以等效批量大小是
# 32 条序列。240 条序列每轮分成 30 个微批量。一次更新所用的那些微批量，下文称为
# 一个「窗口」：每轮有 7 个完整的窗口，每个 4 个微批量，最后还有一个只有 2 个
# 微批量的窗口。

VOCAB_SIZE = 32
IGNORE_INDEX = -100  # F.cross_entropy 默认的 ignore_index
MICRO_BATCH_SIZE = 8
K = 4  # 每次更新的微批量个数

next_token_probabilities = torch.softmax(3 * torch.randn(VOCAB_SIZE, VOCAB_SIZE), dim=1)


def make_sequences(lengths):
    """每个长度生成一条序列，每个词元都取决于它前面的那个词元。"""
    tokens = [torch.randint(VOCAB_SIZE, (len(lengths),))]
    for _ in range(max(lengths) - 1):
        tokens.append(torch.multinomial(next_token_probabilities[tokens[-1]], 1).squeeze(1))
    tokens = torch.stack(tokens, dim=1)
    return [row[:length] for row, length in zip(tokens, lengths)]


sequences = make_sequences(torch.randint(3, 65, (240,)).tolist())
micro_batches = [sequences[i:i + MICRO_BATCH_SIZE] for i in range(0, len(sequences), MICRO_BATCH_SIZE)]
windows = [micro_batches[i:i + K] for i in range(0, len(micro_batches), K)]  # 每个窗口对应一次更新
window = windows[0]  # 下面比较梯度时用的窗口


def collate(batch):
    """把一组序列填充成 (inputs, targets)；损失会忽略填充位置的目标值。"""
    inputs = nn.utils.rnn.pad_sequence([s[:-1] for s in batch], batch_first=True, padding_value=0)
    targets = nn.utils.rnn.pad_sequence([s[1:] for s in batch], batch_first=True, padding_value=IGNORE_INDEX)
    return inputs.to(device), targets.to(device)


def real_tokens(batch):
    return sum(len(s) - 1 for s in batch)


def sequences_of(window):
    """把一个窗口里各微批量的全部序列合成一个批量。"""
    return [s for micro_batch in window for s in micro_batch]


def make_model():
    return nn.Sequential(
        nn.Embedding(VOCAB_SIZE, 32), nn.Linear(32, 64), nn.Tanh(), nn.Linear(64, VOCAB_SIZE),
    ).to(device)


def token_loss(model, batch, reduction):
    """这批数据中每个真实词元的交叉熵：取平均（"mean"）或求和（"sum"）。"""
    inputs, targets = collate(batch)
    logits = model(inputs)
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction=reduction)


model = make_model()
print(f"{len(micro_batches)} micro-batches per epoch, {len(windows)} updates per epoch")

# %%
# 测量梯度
# --------
#
# 下面的比较用到几个小函数。``accumulate`` 用给定的损失，对一个窗口里的每个
# 微批量做反向传播，让梯度在 ``.grad`` 里累积；``current_gradient`` 把梯度读成
# 一个向量，``flat_gradient`` 读完后还会清零梯度；``compare`` 用
# ``torch.allclose`` 比较两个梯度，允许的舍入误差与梯度的大小成比例；函数
# ``relative_error`` 给出差值的范数占参考梯度范数的比例。``mean_loss_over_k``
# 是《:ref:`gradient_accumulation`》里的损失：每个微批量的平均损失除以 ``k``。
# 每个损失函数都以模型和微批量为参数，其他要除的数则用 ``functools.partial`` 传入。
# 这些比较都在 ``float32`` 下进行，不开 autocast，这样「相等」才能表示只差舍入
# 误差。


def accumulate(model, window, micro_batch_loss, clip_every_micro_batch_to=None):
    """对每个微批量的 micro_batch_loss(model, micro_batch) 做反向传播；梯度在 .grad 里累积。"""
    for micro_batch in window:
        micro_batch_loss(model, micro_batch).backward()
        if clip_every_micro_batch_to is not None:
            nn.utils.clip_grad_norm_(model.parameters(), clip_every_micro_batch_to)  # 裁剪的是到目前为止的和


def current_gradient(model):
    """把所有参数的 ``.grad`` 拼成一个向量。"""
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def flat_gradient(model):
    """把梯度拼成一个向量返回，随后清零 ``.grad``。"""
    gradient = current_gradient(model)
    model.zero_grad()
    return gradient


def compare(description, gradient, reference):
    """打印两个梯度是否一致，以及它们最大的绝对差。"""
    same = torch.allclose(gradient, reference, atol=1e-5 * reference.abs().max().item())
    difference = (gradient - reference).abs().max().item()
    print(f"{description}: {same} (max abs difference {difference:.2e})")
    return same


def relative_error(gradient, reference):
    return ((gradient - reference).norm() / reference.norm()).item()


def mean_loss_over_k(model, micro_batch):
    """gradient_accumulation 的规则：每个微批量的平均损失除以 k。"""
    return token_loss(model, micro_batch, "mean") / K


# %%
# 混合精度：每个微批量都缩放，只反缩放一次
# ----------------------------------------
#
# ``torch.autocast`` 让前向传播中的矩阵乘法等运算以较低的精度运行。损失缩放器
# ``torch.amp.GradScaler`` 在 ``backward()`` 之前把损失乘以一个很大的因子，
# 使很小的 ``float16`` 梯度不至于被舍入成零，并在优化器使用梯度之前，把梯度再除以同一个
# 因子。``bfloat16`` 的指数范围与 ``float32`` 相同，不需要缩放；不过在 CPU 上，
# 这里仍然启用了缩放器（``GradScaler("cpu")`` 是一个真正起作用的缩放器，而不是
# 空操作），好让两种设备运行同一份代码。这段代码还用一个禁用的缩放器把梯度再算
# 一遍，看看缩放改变了什么。
#
# 有了梯度累积，这些工作就分成两部分：
#
# * 每个微批量：在 autocast 下做前向传播，然后执行
#   ``scaler.scale(loss / k).backward()``；
# * 每次更新只做一次，放在最后一个微批量之后：``scaler.unscale_(optimizer)``、梯度
#   裁剪、``scaler.step(optimizer)``、``scaler.update()`` 和
#   ``optimizer.zero_grad()``。
#
# 下面的代码先算出这四个微批量在 ``float32`` 下的梯度作为对照，再按上面的方式
# 处理第一个窗口。在 ``unscale_`` 之前，``.grad`` 里存的是乘上了缩放因子的梯度；
# 之后才是真实的梯度。

PEAK_LR = 0.02
MAX_NORM = 0.1


def scaled_backward(model, scaler, micro_batch):
    with torch.autocast(device_type=device.type, dtype=amp_dtype):
        loss = token_loss(model, micro_batch, "mean") / K
    scaler.scale(loss).backward()  # 把缩放后的梯度加到 .grad 上


accumulate(model, window, mean_loss_over_k)
float32_gradient = flat_gradient(model)
for micro_batch in window:
    scaled_backward(model, torch.amp.GradScaler(device.type, enabled=False), micro_batch)
unscaled_mixed_precision_gradient = flat_gradient(model)

optimizer = optim.AdamW(model.parameters(), lr=PEAK_LR)
scaler = torch.amp.GradScaler(device.type)
print(f"GradScaler enabled: {scaler.is_enabled()}")
for micro_batch in window:
    scaled_backward(model, scaler, micro_batch)
print(f"gradient norm before unscale_: {current_gradient(model).norm():.1f} (scale {scaler.get_scale():.0f})")
scaler.unscale_(optimizer)  # 只调用一次，在窗口的最后一个微批量之后
mixed_precision_gradient = current_gradient(model)
print(f"gradient norm after unscale_: {mixed_precision_gradient.norm():.4f}")
print(f"mixed precision vs float32 gradient: relative error "
      f"{relative_error(mixed_precision_gradient, float32_gradient):.1e}")
print(f"same gradient as with a disabled scaler, bit for bit: "
      f"{torch.equal(mixed_precision_gradient, unscaled_mixed_precision_gradient)}")
nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)
scaler.step(optimizer)
scaler.update()
optimizer.zero_grad()

# %%
# 在 ``unscale_`` 之前，梯度的范数等于真实范数乘以缩放因子。之后，梯度与
# ``float32`` 下的梯度只差低精度带来的舍入误差：在构建本页面的机器上，相对误差
# 远小于 1%，但已不是 ``float32`` 那种量级的舍入误差。所以后面的精确比较
# 都在 ``float32`` 下进行。
#
# 在 ``bfloat16`` 下，缩放没有改变任何东西：乘以 2 的幂、再除回去，在浮点运算中
# 是精确的，除非某个数上溢，或者小到无法表示；而凭 ``bfloat16`` 的范围，这里
# 两种情况都没有发生。在 CPU 上，上面最后一行输出的是 ``True``。在 GPU 上用
# ``float16`` 时，如果不缩放，最小的那些梯度就可能被舍入成零，两个梯度也就可能不同。
# 如果 ``float16`` 梯度反过来上溢，会对一个窗口和学习率调度造成什么影响，
# 《:ref:`low_precision_accumulation`》做了实测。
#
# 错误的顺序：每个微批量都反缩放
# ------------------------------
#
# 如果要在微批量循环内部裁剪梯度，就得在那里拿到反缩放后的梯度，于是每次
# ``backward()`` 之后都调用 ``unscale_``。``GradScaler`` 会记下这个优化器的梯度
# 已经反缩放过，在 ``update()`` 之前拒绝再做一次：第二个微批量就会报错。我们
# 捕获这个错误，打印它的消息。


def unscale_every_micro_batch(model, optimizer, scaler, window):
    for number, micro_batch in enumerate(window, start=1):
        scaled_backward(model, scaler, micro_batch)
        try:
            scaler.unscale_(optimizer)  # 错误：它应该放在最后一个微批量之后
        except RuntimeError as error:
            print(f"unscale_ on every micro-batch: micro-batch {number} raised RuntimeError: {error}")
            return
        nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)


unscale_every_micro_batch(model, optimizer, torch.amp.GradScaler(device.type), window)
optimizer.zero_grad()

# %%
# 这个错误是一道保护：第一次 ``unscale_`` 之后，``.grad`` 里是第一个微批量已经
# 反缩放的梯度，加上第二个微批量仍带着缩放因子的梯度，无论再除以什么数，都得
# 不到正确的和。正确的做法是把 ``unscale_`` 和梯度裁剪移到微批量循环之后。
#
# 梯度裁剪：对反缩放后的梯度之和只裁剪一次
# ----------------------------------------
#
# ``clip_grad_norm_`` 把梯度按比例缩小，使它的范数不超过 ``max_norm``。应当裁剪
# 的是这次更新的梯度，也就是全部 ``k`` 个微批量的梯度之和。如果在微批量循环内部
# 调用它，裁剪的就是到目前为止的部分和，而且每个微批量之后都要裁剪一次：靠前的
# 微批量被缩小好几次，最后一个最多一次。参考值是手工把梯度之和缩放到范数为
# ``MAX_NORM`` 的结果。

accumulate(model, window, mean_loss_over_k)
summed = flat_gradient(model)
print(f"summed gradient norm: {summed.norm():.4f} (max_norm {MAX_NORM})")
clipped_by_hand = summed * min(1.0, MAX_NORM / summed.norm().item())

accumulate(model, window, mean_loss_over_k)
nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)  # 只裁剪一次，在最后一个微批量之后
clipped_once = flat_gradient(model)
accumulate(model, window, mean_loss_over_k, clip_every_micro_batch_to=MAX_NORM)
clipped_every_micro_batch = flat_gradient(model)

compare("clipped once == summed gradient clipped", clipped_once, clipped_by_hand)
compare("clipped every micro-batch == summed gradient clipped", clipped_every_micro_batch, clipped_by_hand)
print(f"clipped every micro-batch: relative error "
      f"{relative_error(clipped_every_micro_batch, clipped_by_hand):.1%}, norm {clipped_every_micro_batch.norm():.4f}")

# %%
# 两个梯度的范数都是 ``MAX_NORM``，所以步长看上去没问题；但在循环内部裁剪改变
# 了方向：它给各个微批量的权重并不相等，最后一个最重。
#
# 用了 ``GradScaler``，还有第二种裁错梯度的方式：在 ``unscale_`` 之前裁剪。这时
# ``.grad`` 里是乘上了缩放因子的梯度，裁剪会把它缩小到范数为
# ``MAX_NORM``——但这是「缩放后」的范数；接着 ``unscale_`` 再除以缩放因子，优化器拿到的梯度，范数只有
# ``MAX_NORM`` 除以缩放因子。

for micro_batch in window:
    scaled_backward(model, scaler, micro_batch)
nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)  # 错误：.grad 仍然带着缩放因子
scaler.unscale_(optimizer)
print(f"clipped before unscale_: gradient norm {current_gradient(model).norm():.2e} "
      f"instead of {MAX_NORM} (scale {scaler.get_scale():.0f})")
scaler.step(optimizer)
scaler.update()
optimizer.zero_grad()

# %%
# 这对更新有什么影响，取决于优化器。SGD 的步长是学习率乘以梯度，所以它也缩小同样
# 的倍数；如果变化小到在权重的舍入中丢失，缩小得还会更多。本页用的 AdamW 则把梯度的
# 每个元素除以它自身大小的滑动平均值，所以除以缩放因子之后的梯度，给出的步长仍在
# 同一个量级：之所以变小一些，只是因为这个极小的梯度已经和 ``eps``\ （加在那个平均值
# 上的小常数）差不多大了。这个错误几乎看不出来，也就不会被察觉。``step_length`` 从
# 当前权重出发，用新建的优化器和缩放器在这个窗口上走一步，分别在 ``unscale_`` 之后
# 和之前裁剪，并打印 AdamW 和 SGD 两种情况下两个步长之比。


def step_length(model, make_optimizer, window, clip_before_unscale):
    """在 ``window`` 上做一步混合精度更新，返回 ``model`` 的副本移动了多远。"""
    trial = copy.deepcopy(model)
    optimizer = make_optimizer(trial.parameters())
    scaler = torch.amp.GradScaler(device.type)
    before = nn.utils.parameters_to_vector(trial.parameters()).detach().clone()
    for micro_batch in window:
        scaled_backward(trial, scaler, micro_batch)
    if clip_before_unscale:
        nn.utils.clip_grad_norm_(trial.parameters(), MAX_NORM)  # 错误：单位仍是缩放后的
    scaler.unscale_(optimizer)
    if not clip_before_unscale:
        nn.utils.clip_grad_norm_(trial.parameters(), MAX_NORM)
    scaler.step(optimizer)
    scaler.update()
    return (nn.utils.parameters_to_vector(trial.parameters()).detach() - before).norm().item()


for name, make_optimizer in [("AdamW", lambda params: optim.AdamW(params, lr=PEAK_LR)),
                             ("SGD", lambda params: optim.SGD(params, lr=PEAK_LR))]:
    right = step_length(model, make_optimizer, window, clip_before_unscale=False)
    wrong = step_length(model, make_optimizer, window, clip_before_unscale=True)
    print(f"{name}: step length clipped before unscale_ / clipped after: "
          f"{wrong / right if right else float('nan'):.2e}")

# %%
# 学习率调度：按更新步计数
# ------------------------
#
# 带预热的学习率调度是按更新步来写的：这里学习率在前 ``WARMUP_STEPS`` 个更新步
# 里线性上升，然后线性下降，在训练的最后一个更新步之后恰好降为零。``LambdaLR`` 数的是
# ``scheduler.step()`` 被调用的次数，所以每次更新必须调用它一次，紧跟在
# ``optimizer.step()`` 之后。如果每个微批量调用一次，它数的就是微批量，整个调度
# 的推进速度都成了应有速度的 ``k`` 倍。
#
# 这里只关心计数，所以下面的循环不做前向传播和反向传播，只记录 5 轮、每轮 8 个
# 更新步里，每个更新步会用到的学习率。最后一节会分别用这两种调度来训练。

EPOCHS = 5
TOTAL_STEPS = EPOCHS * len(windows)  # 整个训练的更新步数
WARMUP_STEPS = 8


def warmup_then_decay(optimizer_step):
    """LambdaLR 的系数：前 WARMUP_STEPS 个更新步线性预热，之后线性衰减到 0。"""
    if optimizer_step < WARMUP_STEPS:
        return (optimizer_step + 1) / WARMUP_STEPS
    return max(0.0, (TOTAL_STEPS - optimizer_step) / (TOTAL_STEPS - WARMUP_STEPS))


def learning_rate_of_each_update(scheduler_step_every_micro_batch):
    optimizer = optim.AdamW(make_model().parameters(), lr=PEAK_LR)
    scheduler = optim.lr_scheduler.LambdaLR(optimizer, warmup_then_decay)
    rates = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(EPOCHS):
            for window in windows:
                for _micro_batch in window:
                    # 前向传播和反向传播本应放在这里
                    if scheduler_step_every_micro_batch:
                        scheduler.step()  # 错误：数的是微批量
                rates.append(optimizer.param_groups[0]["lr"])
                optimizer.step()
                optimizer.zero_grad()
                if not scheduler_step_every_micro_batch:
                    scheduler.step()  # 每次更新调用一次
    for warning in caught:
        print(f"  PyTorch warned: {str(warning.message).split('. ')[0]}.")
    return rates


def describe_schedule(name, rates):
    peak = rates.index(max(rates)) + 1
    zero = next((i + 1 for i, rate in enumerate(rates) if rate == 0), None)
    print(f"{name}: peak learning rate at update {peak}, learning rate 0 from update "
          f"{zero if zero else 'never'} of {len(rates)}")


schedules = {}
for name, every_micro_batch in [("scheduler.step() every update", False),
                                ("scheduler.step() every micro-batch", True)]:
    schedules[name] = learning_rate_of_each_update(every_micro_batch)
    describe_schedule(name, schedules[name])

# %%
# 每个微批量都调用一次时，调度器每轮前进 30 步，而不是 8 步，推进速度是应有速度的
# 3.75 倍（不完全是 ``k`` 倍，因为每轮的最后一个窗口只有 2 个微批量）。预热在第
# 2 个更新步就结束了，而不是第 8 个；在全部 40 个更新步中，从第 11 个起学习率为
# 零：此后的每次更新都不再改变权重。
#
# PyTorch 唯一的提示是上面那条警告，而且只给一次：在第一个微批量处，调用
# ``scheduler.step()`` 时还没有调用过任何一次 ``optimizer.step()``。它并没有指出
# 调度跑得太快。
#
# 正确的循环也可能给出同一条警告，但那时它的含义不同。``GradScaler`` 在梯度中发现
# ``inf`` 或 ``nan`` 时，``scaler.step()`` 会跳过 ``optimizer.step()``，
# ``scaler.update()`` 会调低缩放因子，而 ``scheduler.step()`` 照样推进调度。在
# ``float16`` 下，头几次更新里这很常见：缩放因子要从初始值一路降到梯度放得下的
# 大小。跳过的如果是第一次更新，就会出现这条警告；之后再跳过则悄无声息。每跳过一步，
# 调度就比权重多走一步，这通常无伤大雅。下面在一次新训练的第一次更新中，把一个梯度
# 元素设为 ``inf``，就像 ``float16`` 溢出后留下的那样。


def first_update_with_overflow(model, window):
    """做一次梯度溢出的正确更新；打印哪些东西变了，以及 PyTorch 说了什么。"""
    optimizer = optim.AdamW(model.parameters(), lr=PEAK_LR)
    scheduler = optim.lr_scheduler.LambdaLR(optimizer, warmup_then_decay)
    scaler = torch.amp.GradScaler(device.type)
    weights = nn.utils.parameters_to_vector(model.parameters()).detach().clone()
    scale, learning_rate = scaler.get_scale(), optimizer.param_groups[0]["lr"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for micro_batch in window:
            scaled_backward(model, scaler, micro_batch)
        model[0].weight.grad[0, 0] = float("inf")  # float16 溢出后 .grad 里留下的值
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)
        scaler.step(optimizer)  # 发现 inf：跳过 optimizer.step()
        scaler.update()
        scheduler.step()  # 调度照样往前走
        optimizer.zero_grad()
    moved = not torch.equal(weights, nn.utils.parameters_to_vector(model.parameters()))
    print(f"update with an overflow: weights changed: {moved}, scale {scale:.0f} -> {scaler.get_scale():.0f}, "
          f"learning rate {learning_rate:.4f} -> {optimizer.param_groups[0]['lr']:.4f}")
    for warning in caught:
        print(f"  PyTorch warned: {str(warning.message).split('. ')[0]}.")


first_update_with_overflow(copy.deepcopy(model), window)

fig, ax = plt.subplots(figsize=(8, 4))
updates = range(1, TOTAL_STEPS + 1)
ax.plot(updates, schedules["scheduler.step() every update"], linewidth=2,
        label="每次更新调用一次 scheduler.step()（正确）")
ax.plot(updates, schedules["scheduler.step() every micro-batch"], "--", linewidth=2,
        label="每个微批量都调用 scheduler.step()（错误）")
ax.axvline(WARMUP_STEPS, color="gray", linewidth=0.8)
ax.text(WARMUP_STEPS + 0.5, PEAK_LR * 0.45, "预热结束", color="gray")
ax.set_xlabel("更新步")
ax.set_ylabel("学习率")
ax.set_title(f"预热与衰减：每次更新 k = {K} 个微批量")
ax.legend()
fig.tight_layout()
plt.show()

# %%
# 长短不一的序列：按词元加权
# --------------------------
#
# 一次更新应当最小化的是什么？对语言模型来说，通常是等效批量里所有真实词元的
# 平均损失。``F.cross_entropy`` 取 ``reduction="mean"`` 时，给出的是「一个
# 微批量」里真实词元的平均值，而各个微批量包含的词元数并不相同。把每个微批量的
# 平均值除以 ``k``，等于给每个微批量相同的权重，于是短微批量里的一个词元，比长
# 微批量里的一个词元分量更重。无论 ``k`` 取多少，结果都不是等效批量的梯度。
#
# 解决办法是对每个微批量的词元损失求和（``reduction="sum"``），再除以整个窗口
# 的真实词元数，这个数在窗口的第一次反向传播之前就要数好。这样，各微批量的损失
# 加起来恰好是等效批量的词元平均损失。
#
# .. note::
#    2024 年 10 月，Hugging Face 介绍了自家那个被广泛使用的 ``transformers`` 库里
#    ``Trainer`` 的这个错误：同样的训练，开启梯度累积与不开启时，损失对不上。他们的
#    修复办法是把整个等效批量的真实词元数传给损失函数（见
#    `他们的说明 <https://huggingface.co/blog/gradient_accumulation>`_）。
#
# 参考值是整批：把这个窗口的 32 条序列填充成一个批量，对词元平均损失做一次前向
# 传播和反向传播。

print(f"real tokens per micro-batch: {[real_tokens(micro_batch) for micro_batch in window]}")
token_loss(model, sequences_of(window), "mean").backward()
full_batch = flat_gradient(model)

accumulate(model, window, mean_loss_over_k)
mean_over_k = flat_gradient(model)



def token_sum_over_window_tokens(model, micro_batch, window_tokens):
    """微批量的词元损失之和，除以它所在整个窗口的真实词元数。"""
    return token_loss(model, micro_batch, "sum") / window_tokens


window_tokens = real_tokens(sequences_of(window))  # 在任何反向传播之前数好
accumulate(model, window, functools.partial(token_sum_over_window_tokens, window_tokens=window_tokens))
token_weighted = flat_gradient(model)

compare("micro-batch mean / k == full batch", mean_over_k, full_batch)
compare("token sum / window tokens == full batch", token_weighted, full_batch)
print(f"micro-batch mean / k: relative error {relative_error(mean_over_k, full_batch):.1%}")
print(f"token sum / window tokens: relative error {relative_error(token_weighted, full_batch):.1e}")

# %%
# 按词元加权得到的梯度与整批梯度只差舍入误差。按微批量取平均的做法，在这个窗口
# 里差了百分之几；各微批量的词元数相差越大，误差越大，如果它们完全相等，误差就会
# 消失。这是一种偏差，而不是会被平均掉的噪声：每次更新时，词元少的微批量里的
# 词元分量都更重。
#
# .. note::
#    在 DDP 下（见《:ref:`distributed_accumulation`》），窗口指的是所有工作进程的窗口
#    合在一起：要除以每个工作进程窗口里的真实词元数之和（用 ``all_reduce`` 求和），
#    再把损失乘以工作进程数，因为 DDP 对各工作进程的梯度取的是平均而不是总和。
#    《:ref:`distributed_pitfalls`》演示了这一点。
#
# 一轮的最后一个窗口
# ------------------
#
# 30 个微批量分不成整数个 4 个一组的窗口：最后一个窗口只有 2 个。只在
# ``(i + 1) % k == 0`` 时执行更新步的循环会怎样处理这样的窗口，见
# 《:ref:`gradient_accumulation`》：它永远不会为这个窗口执行更新步，窗口的梯度会加到
# 下一轮的第一次更新上。在一轮结束时确实执行了更新步、却仍然除以 ``k`` 的循环，
# 得到的梯度只有应有值的 2/4：一般地说，是窗口里实际的微批量个数除以 ``k``。各
# 微批量大小相同时，对平均损失，除数应当是 ``len(window)``\ （一般情况下，每个微批量
# 按它在窗口的样本中所占的比例加权，就像《:ref:`gradient_accumulation`》里那样）；
# 对上面按词元加权的损失，除数是窗口里实际的词元数，最后这个较短的窗口无需特别处理。

last_window = windows[-1]
print(f"last window: {len(last_window)} micro-batches, k = {K}")


def mean_loss_over_window_length(model, micro_batch, window_length):
    return token_loss(model, micro_batch, "mean") / window_length


accumulate(model, last_window, mean_loss_over_k)
divided_by_k = flat_gradient(model)
accumulate(model, last_window, functools.partial(mean_loss_over_window_length, window_length=len(last_window)))
divided_by_window_length = flat_gradient(model)
print(f"last window, loss / k vs loss / len(window): gradient norm ratio "
      f"{(divided_by_k.norm() / divided_by_window_length.norm()).item():.4f}")

token_loss(model, sequences_of(last_window), "mean").backward()
last_full_batch = flat_gradient(model)
last_window_tokens = real_tokens(sequences_of(last_window))  # 窗口里实际有的词元
accumulate(model, last_window, functools.partial(token_sum_over_window_tokens, window_tokens=last_window_tokens))
compare("last window, token sum / window tokens == full batch", flat_gradient(model), last_full_batch)

# %%
# 记录损失时不要带上计算图
# ------------------------
#
# 训练循环通常会把损失加起来，以便打印。``total_loss += loss`` 加上的是带着
# ``grad_fn`` 的张量：于是 ``total_loss`` 引用着到目前为止每个微批量的计算图，
# 只要它还在，这些计算图的节点就一直存活。``total_loss += loss.item()`` 加上的是
# 一个 Python 数，但在 GPU 上，每个微批量的 ``.item()`` 都要等 GPU 算完；
# ``loss.detach()`` 在设备上保留一个张量，但不带计算图，本页最后的完整循环用的
# 就是它。第四种循环同样把张量加起来，但只在窗口结束时对总和调用一次
# ``backward()``。
#
# ``log_losses`` 用这几种循环各处理一个窗口，测量两样东西。``SavedTensorMeter``
# 借助 ``torch.autograd.graph.saved_tensors_hooks``：它能看到 autograd 为反向
# 传播保存的每一个张量，并统计其中仍然存活的张量所占的字节数（参数本身除外），
# 包括峰值和窗口结束之后的值。它数的是张量，而不是内存分配器报告的数字，所以在
# CPU 和 GPU 上的做法完全一样。``graph_nodes`` 在每个微批量之后，数一数
# ``total_loss`` 引用着多少个 autograd 计算图节点。


class SavedTensor:
    __slots__ = ("tensor", "__weakref__")

    def __init__(self, tensor):
        self.tensor = tensor


class SavedTensorMeter:
    """跟踪 autograd 为反向传播保存的张量，直到它们被释放。"""

    def __init__(self, model):
        self.parameter_storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self.saved = weakref.WeakSet()  # autograd 释放一个张量时，对应的条目随之消失
        self.peak_bytes = 0

    def pack(self, tensor):
        saved = SavedTensor(tensor)
        self.saved.add(saved)
        return saved

    def unpack(self, saved):
        return saved.tensor

    def bytes_alive(self):
        sizes = {}
        for saved in self.saved:
            storage = saved.tensor.untyped_storage()
            sizes[storage.data_ptr()] = storage.nbytes()  # 被保存两次的张量只算一次
        return sum(size for pointer, size in sizes.items() if pointer not in self.parameter_storages)

    def record_peak(self):
        self.peak_bytes = max(self.peak_bytes, self.bytes_alive())


def graph_nodes(total):
    """``total`` 通过它的 ``grad_fn`` 引用着多少个 autograd 计算图节点。"""
    seen, stack = set(), [total.grad_fn] if isinstance(total, torch.Tensor) else []
    while stack:
        node = stack.pop()
        if node is not None and node not in seen:
            seen.add(node)
            stack += [next_node for next_node, _ in node.next_functions]
    return len(seen)


def log_losses(model, window, description, kept, backward_once=False):
    """在 float32 下处理一个窗口，把 kept(loss) 加到 total_loss 上；报告还有什么保持存活。"""
    meter = SavedTensorMeter(model)
    total_loss, nodes_held = 0.0, []
    with torch.autograd.graph.saved_tensors_hooks(meter.pack, meter.unpack):
        for micro_batch in window:
            loss = token_loss(model, micro_batch, "mean") / K
            meter.record_peak()  # 前向传播之后：这个微批量保存的张量最多
            if not backward_once:
                loss.backward()
            total_loss += kept(loss)
            nodes_held.append(graph_nodes(total_loss))
        if backward_once:
            total_loss.backward()
    model.zero_grad()
    print(f"{description}: saved tensors {meter.peak_bytes / 1024:.0f} KiB at the peak, "
          f"{meter.bytes_alive() / 1024:.0f} KiB after the window; "
          f"graph nodes held by total_loss: {', '.join(map(str, nodes_held))}")


log_losses(model, window, "total_loss += loss.item()", lambda loss: loss.item())
log_losses(model, window, "total_loss += loss.detach()", lambda loss: loss.detach())
log_losses(model, window, "total_loss += loss", lambda loss: loss)
log_losses(model, window, "total_loss += loss, one backward() on the sum", lambda loss: loss, backward_once=True)

# %%
# 用 ``.item()`` 或 ``.detach()`` 时，``total_loss`` 不持有任何计算图。把张量
# 加起来、每个微批量调用一次 ``backward()`` 时，每过一个微批量，它持有的计算图
# 节点就更多一些；如果这个累计值存活一整轮，就会一直增加到这一轮结束。这些节点
# 保存的张量已经没有了（窗口结束后为 0 KiB），因为每次 ``backward()`` 都释放了
# 它们；节点本身占用多少内存，这里没有测量。对总和只调用一次 ``backward()``，则会
# 同时留住全部四个微批量保存的张量，峰值大约是其他循环的 ``k`` 倍：这正是梯度
# 累积本来要省下的内存。一个训练步的其余内存（包括梯度和优化器状态）花在哪里，
# 见《:ref:`optimizer_step_in_backward`》中的测量。
#
# 检查点：在窗口结束时保存
# ------------------------
#
# 检查点保存的是 ``model.state_dict()`` 和 ``optimizer.state_dict()``：权重，以及
# AdamW 为每个参数维护的滑动平均值和步数。两者都不包含 ``.grad``。如果在窗口中途、
# 处理完其中 2 个微批量时保存检查点，再从它恢复训练，那么窗口里剩下的微批量开始时
# 没有任何梯度，这次更新也就漏掉了前 2 个微批量。下面把恢复后的梯度与整个窗口的梯度
# 作比较。

accumulate(model, window, mean_loss_over_k)
whole_window = flat_gradient(model)

accumulate(model, window[:2], mean_loss_over_k)  # 处理完 2 个微批量后中断
checkpoint = {"model": copy.deepcopy(model.state_dict()), "optimizer": copy.deepcopy(optimizer.state_dict())}
print(f"in the checkpoint, per parameter: the weights, and {sorted(checkpoint['optimizer']['state'][0])}")
model.zero_grad()  # 训练在这里停下；新进程里的参数没有 .grad
model.load_state_dict(checkpoint["model"])
optimizer.load_state_dict(checkpoint["optimizer"])
accumulate(model, window[2:], mean_loss_over_k)
compare("resumed in the middle of the window == whole window", flat_gradient(model), whole_window)

# %%
# 检查点应当在 ``optimizer.step()`` 和 ``zero_grad()`` 之后、即窗口结束时保存；
# 如果训练可能在任意位置停下，就把每个参数的 ``.grad`` 和它在窗口中的位置一起保存。
#
# 组合起来
# --------
#
# 完整的循环，每个环节各就各位：
#
# * 在窗口的第一个微批量之前，数出窗口的真实词元数；
# * 每个微批量：在 autocast 下做前向传播，词元损失之和除以窗口的词元数，执行
#   ``scaler.scale(loss).backward()``，并把 ``loss.detach()`` 加起来记录损失；
# * 每个窗口一次，无论窗口有多长：先 ``unscale_``，再裁剪梯度，然后依次调用
#   ``scaler.step``、``scaler.update``、``scheduler.step`` 和 ``zero_grad``。
#
# 它从相同的初始权重出发训练两次，第二次每个微批量都调用一次调度器的
# ``step()``。两次运行都记录每次更新的损失：它那个窗口里全部真实词元的平均损失。
# 只有第二次运行过滤掉调度器的那条警告（上文已经展示过）：在正确的循环里，它意味着
# 第一次更新被跳过了。


def train(model, scheduler_step_every_micro_batch=False):
    """混合精度、梯度裁剪、预热、按词元加权：返回每次更新的损失。"""
    optimizer = optim.AdamW(model.parameters(), lr=PEAK_LR)
    scheduler = optim.lr_scheduler.LambdaLR(optimizer, warmup_then_decay)
    scaler = torch.amp.GradScaler(device.type)
    losses = []
    with warnings.catch_warnings():
        if scheduler_step_every_micro_batch:
            # 这种写法的警告，上文已经展示过。在正确的循环里，它意味着 GradScaler
            # 跳过了第一次更新，所以在那里保留它。
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")
        for _ in range(EPOCHS):
            for window in windows:
                window_tokens = real_tokens(sequences_of(window))
                window_loss = torch.zeros((), device=device)
                for micro_batch in window:
                    with torch.autocast(device_type=device.type, dtype=amp_dtype):
                        loss = token_loss(model, micro_batch, "sum") / window_tokens
                    scaler.scale(loss).backward()
                    window_loss += loss.detach()  # 不保留计算图，也不用等 GPU
                    if scheduler_step_every_micro_batch:
                        scheduler.step()
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)
                scaler.step(optimizer)
                scaler.update()
                if not scheduler_step_every_micro_batch:
                    scheduler.step()
                optimizer.zero_grad()
                losses.append(window_loss)
    return torch.stack(losses).tolist()  # 最后一次性复制到 CPU


initial_weights = copy.deepcopy(make_model().state_dict())
runs = {}
for name, every_micro_batch in [("scheduler.step() every update", False),
                                ("scheduler.step() every micro-batch", True)]:
    model = make_model()
    model.load_state_dict(initial_weights)
    runs[name] = train(model, every_micro_batch)
    print(f"{name}: {len(runs[name])} updates, loss {runs[name][0]:.3f} -> {runs[name][-1]:.3f}")
    last_epoch, epoch_before = runs[name][-len(windows):], runs[name][-2 * len(windows):-len(windows)]
    print(f"{name}: the last epoch's losses repeat the epoch before: {last_epoch == epoch_before}")

# %%
# 调度器按微批量计数的那次运行，起初下降得更快，因为它的预热在第 2 个更新步就
# 结束了；随后学习率在第 11 个更新步降为零，它也就不再学习：此后权重不再变化，
# 最后几轮重复着同样的八个损失值。调度正确的那次运行则一直改进到最后。（每次更新的损失
# 是在它自己那个窗口的序列上测得的，各窗口的序列不同，所以曲线呈锯齿状。）

fig, ax = plt.subplots(figsize=(8, 4))
ax.plot(range(1, TOTAL_STEPS + 1), runs["scheduler.step() every update"], linewidth=2,
        label="每次更新调用一次 scheduler.step()（正确）")
ax.plot(range(1, TOTAL_STEPS + 1), runs["scheduler.step() every micro-batch"], "--", linewidth=2,
        label="每个微批量都调用 scheduler.step()（错误）")
ax.set_xlabel("更新步")
ax.set_ylabel("每个词元的平均交叉熵")
ax.set_title("完整的循环，分别用两种调度训练")
ax.legend()
fig.tight_layout()
plt.show()

# %%
# 小结
# ----
#
# * 每个微批量执行 ``scaler.scale(loss).backward()``；每次更新在最后一个微批量
#   之后执行一次 ``scaler.unscale_``、梯度裁剪、``scaler.step`` 和
#   ``scaler.update``。反缩放两次会报错。
# * 只裁剪一次，在 ``unscale_`` 之后，裁剪的是梯度之和：在微批量循环内部裁剪会
#   改变梯度的方向，在 ``unscale_`` 之前裁剪会让梯度再除以一次缩放因子（用 Adam 时
#   还看不出任何迹象）。
# * 每次更新调用一次调度器的 ``step()``，预热按更新步计数。``GradScaler`` 跳过的
#   更新步，仍会让调度往前走。
# * 对词元（或任何在各微批量里数目不定的项），把各项的损失求和，再除以整个窗口
#   里的项数。
# * 除以窗口里实际有的量，最后那个较短的窗口也一样。
# * 记录 ``loss.item()`` 或 ``loss.detach()``，并且每个微批量调用一次
#   ``backward()``。
# * 在窗口结束时保存检查点：两个 ``state_dict()`` 都不包含 ``.grad``。
# * 规则本身见《:ref:`gradient_accumulation`》，推广到多块 GPU 见
#   《:ref:`distributed_accumulation`》，``zero_grad()`` 应该放在哪里见
#   《:ref:`zero_grad_pitfalls`》。

# sphinx_gallery_thumbnail_number = 1

# sphinx_gallery_start_ignore
# Translates recipes/en/accumulation_in_practice.py, English text 6e7602a8989836ac (make translation-status)
# sphinx_gallery_end_ignore
