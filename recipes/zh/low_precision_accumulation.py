"""
.. _low_precision_accumulation:

低精度下的梯度累积
==================

《:ref:`accumulation_in_practice`》用混合精度运行训练循环，其中没有任何数值上溢。
而在真实的低精度训练中，有两个问题是那个循环碰不到的：

* 只要一个微批量的 ``float16`` 梯度上溢，``GradScaler`` 就会跳过整个窗口的
  更新，而不管三七二十一照常调用的学习率调度器却继续前进；只有当被跳过的是整个
  训练的第一次更新时，PyTorch 才会给出警告；
* 在 ``bfloat16`` 中求和的梯度会丢掉每个微批量的一部分贡献，``k`` 越大丢得
  越多，这正是训练框架提供 ``float32`` 累积缓冲区的原因。

你将学到：

* 累积窗口中一次被跳过的更新是什么样子，实测参数、缩放因子、优化器的步数和
  学习率调度；
* 如何用一次比较发现被跳过的更新，让学习率调度与实际执行的更新保持一致；
* 不做缩放时，``float16`` 会把多少梯度元素舍入为零；
* 在 ``bfloat16`` 中对 ``k`` 个梯度求和的误差有多大，与 ``float32`` 缓冲区
  相比如何，以及缓冲区的代价。
"""

# %%
# 准备工作
# --------
#
# 数据、模型和循环都沿用《:ref:`accumulation_in_practice`》，这里重写一遍，好让
# 脚本可以单独运行。混合精度部分在所有设备上都用 ``float16``：它是 CUDA 上
# autocast 的默认类型，也是需要 ``GradScaler`` 的那种类型；CPU 上的 autocast
# 同样接受它（那里的默认类型是 ``bfloat16``）。在 CPU 上，缩放器是
# ``GradScaler("cpu")``，在 GPU 上是 ``GradScaler("cuda")``；页面会打印实际使用
# 的设备和类型。

import copy
import math
import os
import warnings

# 图中的标签是中文。如果显示成方框，说明 matplotlib 没找到中文字体：请安装一种（如 Noto Sans CJK SC），
# 再在画图前加上 plt.rcParams["font.family"] = ["DejaVu Sans", "Noto Sans CJK SC"]。
import matplotlib.pyplot as plt
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim

# 冒烟测试模式（测试套件使用）：训练更短。
SMOKE_TEST = os.environ.get("ZERO_GRAD_SMOKE") == "1"

device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
print(f"Using device: {device}")
torch.manual_seed(0)  # 每次运行的数据和权重都相同
amp_dtype = torch.float16
print(f"Autocast dtype: {amp_dtype}")
defaults = torch.amp.GradScaler(device.type)
print(f"GradScaler defaults: initial scale {defaults.get_scale():.0f}, backoff factor {defaults.get_backoff_factor()}, "
      f"growth factor {defaults.get_growth_factor()}, growth interval {defaults.get_growth_interval()}")

# %%
# 数据、模型和一次更新
# --------------------
#
# 240 条虚构的词元序列，长度为 3 到 64 个词元，词表大小为 32；一个预测下一个词元
# 的模型；每个微批量 8 条序列，每次更新 ``k = 4`` 个微批量。``train_window`` 是
# 《:ref:`accumulation_in_practice`》中完整循环的一次更新：每个微批量按词元求和的
# 损失除以整个窗口的真实词元数，执行 ``scaler.scale(loss).backward()``；每个窗口
# 再执行一次 ``unscale_``、梯度裁剪、``scaler.step``、``scaler.update`` 和
# ``zero_grad``。它的参数 ``spike_micro_batch`` 把某一个微批量的损失乘以一个很大
# 的因子，模拟一次损失尖峰，大到无论在哪种设备上，这个微批量的 ``float16`` 反向
# 传播都会上溢。

VOCAB_SIZE = 32
IGNORE_INDEX = -100  # F.cross_entropy 默认的 ignore_index
MICRO_BATCH_SIZE = 8
K = 4  # 每次更新的微批量个数
PEAK_LR = 0.02
MAX_NORM = 0.1
LOSS_SPIKE = 2.0**20

next_token_probabilities = torch.softmax(3 * torch.randn(VOCAB_SIZE, VOCAB_SIZE), dim=1)


def make_sequences(lengths):
    """每个长度生成一条序列，每个词元依据前一个词元抽取。"""
    tokens = [torch.randint(VOCAB_SIZE, (len(lengths),))]
    for _ in range(max(lengths) - 1):
        tokens.append(torch.multinomial(next_token_probabilities[tokens[-1]], 1).squeeze(1))
    tokens = torch.stack(tokens, dim=1)
    return [row[:length] for row, length in zip(tokens, lengths)]


sequences = make_sequences(torch.randint(3, 65, (240,)).tolist())
micro_batches = [sequences[i:i + MICRO_BATCH_SIZE] for i in range(0, len(sequences), MICRO_BATCH_SIZE)]
windows = [micro_batches[i:i + K] for i in range(0, len(micro_batches), K)]  # 每个窗口对应一次更新


def collate(batch):
    """把一组序列填充成 (inputs, targets)；填充位置的目标会被损失忽略。"""
    inputs = nn.utils.rnn.pad_sequence([s[:-1] for s in batch], batch_first=True, padding_value=0)
    targets = nn.utils.rnn.pad_sequence([s[1:] for s in batch], batch_first=True, padding_value=IGNORE_INDEX)
    return inputs.to(device), targets.to(device)


def real_tokens(batch):
    return sum(len(s) - 1 for s in batch)


def make_model():
    return nn.Sequential(
        nn.Embedding(VOCAB_SIZE, 32), nn.Linear(32, 64), nn.Tanh(), nn.Linear(64, VOCAB_SIZE),
    ).to(device)


def token_loss(model, batch, reduction):
    """批量中每个真实词元的交叉熵：取平均（"mean"）或求和（"sum"）。"""
    inputs, targets = collate(batch)
    logits = model(inputs)
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction=reduction)


def train_window(model, optimizer, scaler, window, spike_micro_batch=None):
    """完整循环的一次更新；第 ``spike_micro_batch`` 个微批量（从 0 数起）的损失出现尖峰。"""
    window_tokens = real_tokens([s for micro_batch in window for s in micro_batch])
    window_loss = torch.zeros((), device=device)
    for number, micro_batch in enumerate(window):
        with torch.autocast(device_type=device.type, dtype=amp_dtype):
            loss = token_loss(model, micro_batch, "sum") / window_tokens
        if number == spike_micro_batch:
            loss = loss * LOSS_SPIKE
        scaler.scale(loss).backward()
        window_loss += loss.detach()
    scaler.unscale_(optimizer)
    nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)
    scaler.step(optimizer)  # 只要有梯度是 inf 或 nan，就跳过 optimizer.step()
    scaler.update()
    optimizer.zero_grad()
    return window_loss


initial_weights = copy.deepcopy(make_model().state_dict())
print(f"{len(micro_batches)} micro-batches per epoch, {len(windows)} updates per epoch")

# %%
# 一个上溢的窗口
# --------------
#
# ``train`` 用 AdamW 跑几次更新，带一个每次更新后调用的预热学习率调度，缩放器取
# 默认的初始缩放因子；在 ``spiking_updates`` 列出的那几次更新里，第二个微批量的
# 损失出现尖峰。在这几次更新前后，它记录参数、缩放因子和 AdamW 的步数（即其状态
# 中的 ``"step"``，偏差修正用的就是它）。它还记录优化器实际执行的每次更新所用的
# 学习率，以及 PyTorch 是否发出了警告。警告会被捕获并计数，不会显示出来。
#
# 第一次运行在第一次更新时出现尖峰，第二次运行在第四次更新时出现。

WARMUP_STEPS = 8
TOTAL_STEPS = 40


def warmup_then_decay(optimizer_step):
    """LambdaLR 的系数：前 WARMUP_STEPS 次更新线性预热，之后线性衰减到 0。"""
    if optimizer_step < WARMUP_STEPS:
        return (optimizer_step + 1) / WARMUP_STEPS
    return max(0.0, (TOTAL_STEPS - optimizer_step) / (TOTAL_STEPS - WARMUP_STEPS))


def adamw_steps(optimizer):
    """AdamW 自己的步数，从它第一个参数的状态中读取（尚未执行任何更新步时为 0）。"""
    state = optimizer.state[optimizer.param_groups[0]["params"][0]]
    return int(state["step"]) if "step" in state else 0


def flat_parameters(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def train(model, windows, spiking_updates=(), detect_skips=False, init_scale=2.0**16):
    """把 ``windows`` 训练一遍；返回每次更新前后发生的情况。"""
    optimizer = optim.AdamW(model.parameters(), lr=PEAK_LR)
    scheduler = optim.lr_scheduler.LambdaLR(optimizer, warmup_then_decay)
    scaler = torch.amp.GradScaler(device.type, init_scale=init_scale)
    record = {"spikes": [], "learning rates of the steps taken": [], "skipped updates": [], "losses": []}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for update, window in enumerate(windows, start=1):
            spike = 1 if update in spiking_updates else None
            before = flat_parameters(model)
            scale_before, steps_before = scaler.get_scale(), adamw_steps(optimizer)
            learning_rate = optimizer.param_groups[0]["lr"]
            record["losses"].append(train_window(model, optimizer, scaler, window, spike))
            skipped = scaler.get_scale() < scale_before  # 只有跳过之后，update() 才会降低缩放因子
            if skipped:
                record["skipped updates"].append(update)
            else:
                record["learning rates of the steps taken"].append(learning_rate)
            if not (detect_skips and skipped):
                scheduler.step()
            if spike is not None:
                record["spikes"].append({
                    "update": update, "parameters unchanged": torch.equal(before, flat_parameters(model)),
                    "scale": (scale_before, scaler.get_scale()), "steps": (steps_before, adamw_steps(optimizer)),
                    "scheduler position": scheduler.last_epoch})
    record["scheduler warned"] = any("lr_scheduler.step()` before `optimizer.step()" in str(w.message)
                                     for w in caught)
    record["losses"] = torch.stack(record["losses"]).tolist()  # 最后一次性复制到 CPU
    return record


def fresh_model():
    model = make_model()
    model.load_state_dict(initial_weights)
    return model


def describe_spikes(name, record):
    for spike in record["spikes"]:
        print(f"{name}, spiked update {spike['update']}: parameters bit-identical to before: "
              f"{spike['parameters unchanged']}")
        print(f"  scale {spike['scale'][0]:.0f} -> {spike['scale'][1]:.0f}; "
              f"AdamW step count {spike['steps'][0]} -> {spike['steps'][1]}; "
              f"scheduler position {spike['scheduler position']}")
    print(f"  scheduler warning raised: {record['scheduler warned']}")


first_update_run = train(fresh_model(), windows[:6], spiking_updates=(1,))
describe_spikes("skip on the first update", first_update_run)
later_update_run = train(fresh_model(), windows[:6], spiking_updates=(4,))
describe_spikes("skip on a later update", later_update_run)

# %%
# 两次运行中，出现尖峰的窗口都没有改变任何参数，一位也没有：一个微批量上溢的值
# （inf，或 inf 相遇时产生的 nan）进入了梯度之和，于是 ``scaler.step`` 根本没有
# 调用 ``optimizer.step()``，另外三个微批量的梯度也随之作废。``update()`` 把
# 缩放因子减半，AdamW 的步数保持不变。而每次更新后都调用的调度器比优化器多数了
# 一次更新：从此以后，它一直比优化器超前一个位置。
#
# 只有第一次运行得到了警告。``LRScheduler.step`` 只在第一次被调用时检查调用顺序，
# 看 ``optimizer.step()`` 是否还从未运行过；训练中途的一次跳过会悄无声息地让学习率
# 调度错位。有读者在先调用 ``scaler.step``、后调用 ``scheduler.step`` 的循环里
# 遇到这个警告，到 PyTorch 的问题跟踪系统里询问它为什么出现
# （`这条讨论 <https://github.com/pytorch/pytorch/issues/44511>`_）；缩放器也没有
# 一个标志能说明它是否执行了更新步
# （`有人提出过这个需求 <https://github.com/pytorch/pytorch/issues/67590>`_）。
# 能说明这一点的是缩放因子本身。
#
# 发现被跳过的更新
# ----------------
#
# 跳过一次更新后，``update()`` 把缩放因子乘以它的回退系数 0.5，否则保持不变或
# 增大，所以 ``update()`` 之后的缩放因子比之前小，就说明这次更新被跳过了（前提
# 是一个缩放器只对应一个优化器，就像这里）。``train(..., detect_skips=True)``
# 这时让调度器原地不动：
#
# .. code-block:: python
#
#     scale_before = scaler.get_scale()
#     scaler.step(optimizer)
#     scaler.update()
#     if scaler.get_scale() >= scale_before:  # 优化器确实执行了更新步
#         scheduler.step()
#
# 下面的运行在第 1 次和第 4 次更新时出现尖峰，分别不带和带上这个检查，并把优化器
# 实际执行的更新所用的学习率与学习率调度的前几个值对比。

for name, detect_skips in [("scheduler.step() every update", False),
                           ("scheduler.step() only after a real step", True)]:
    run = train(fresh_model(), windows[:6], spiking_updates=(1, 4), detect_skips=detect_skips)
    rates = run["learning rates of the steps taken"]
    intended = [PEAK_LR * warmup_then_decay(step) for step in range(len(rates))]
    print(f"{name}: skipped updates {run['skipped updates']}, {len(rates)} steps taken")
    print(f"  learning rates of the steps taken: {', '.join(f'{rate:.4f}' for rate in rates)}")
    print(f"  the schedule's first {len(rates)} values: {', '.join(f'{rate:.4f}' for rate in intended)}")
    print(f"  steps taken at the intended learning rates: {rates == intended}")

# %%
# 每次更新后都调用调度器时，实际执行的第一个更新步用的是学习率调度的第二个值；
# 第二次跳过之后，每一步用的都是本该晚两步才用的值。带上检查后，实际执行的每一步
# 用的都是学习率调度为它安排的值。错开一两次更新是否要紧，取决于学习率调度本身；
# 凡是按更新步计算进度的循环（用于日志、检查点或决定何时结束训练），都需要同样的
# 检查。
#
# 默认的缩放因子要付出多少次更新
# ------------------------------
#
# ``GradScaler`` 的缩放因子从 65536 开始，每跳过一次更新就减半；只有连续 2000 次
# 更新都没有跳过，才会加倍（见页面开头打印的默认值）。所以，如果一次训练的梯度
# 承受不了初始的缩放因子，它就会丢掉开头的若干次更新，每减半一次丢一次，直到缩放
# 因子合适为止。``largest_finite_scale`` 针对本页的第一个窗口，找出使其
# ``float16`` 反向传播仍得到有限梯度的最大的 2 的幂；下面两次运行分别从默认的
# 初始缩放因子和一个更大的值出发，统计两轮中被跳过的更新。


def largest_finite_scale(model, window):
    """在 2**10 到 2**40 之间，使窗口缩放后的梯度全部有限的最大的 2 的幂。"""
    window_tokens = real_tokens([s for micro_batch in window for s in micro_batch])
    for exponent in range(10, 41):
        model.zero_grad()
        for micro_batch in window:
            with torch.autocast(device_type=device.type, dtype=amp_dtype):
                loss = token_loss(model, micro_batch, "sum") / window_tokens
            (loss * 2.0**exponent).backward()
        if not all(torch.isfinite(p.grad).all() for p in model.parameters()):
            model.zero_grad()
            return 2.0**(exponent - 1)
    model.zero_grad()
    return 2.0**40


largest_scale = largest_finite_scale(fresh_model(), windows[0])
print(f"largest scale with finite gradients on the first window: 2**{math.log2(largest_scale):.0f}")
two_epochs = windows * 2
trained_model = fresh_model()
for init_scale in (2.0**16, 2.0**24):
    model = trained_model if init_scale == 2.0**16 else fresh_model()
    run = train(model, two_epochs, detect_skips=True, init_scale=init_scale)
    print(f"initial scale 2**{math.log2(init_scale):.0f}: skipped updates {run['skipped updates']} "
          f"of {len(two_epochs)}")

# %%
# 每一次被跳过的更新，都是一个窗口的数据：梯度算出来了，又被丢掉。一次训练要跳过
# 的更新次数，就是把初始缩放因子减半到其梯度所能承受的最大缩放因子以下所需的次数
# （对照上面打印的数字；后面的窗口可能需要比第一个窗口更小的缩放因子）。对于像
# 这样梯度很小的小模型，默认的缩放因子可能一次也不用跳过。此后，缩放因子要连续
# 2000 次更新没有跳过才会加倍，所以由它自己引起的跳过很少；但像上面那样的一次损失
# 尖峰，随时都可能让一个窗口作废。
#
# 下溢：``float16`` 为什么需要缩放
# --------------------------------
#
# 上溢、下溢分别发生在浮点范围的两端：上面那个出现尖峰的窗口超出了 ``float16``
# 范围的上端；缩放因子要应对的则是下端，那里很小的数会下溢。
# 在 autocast 下，参数和它们的 ``.grad`` 仍是 ``float32``；反向传播中以
# ``float16`` 计算的是激活值的梯度，例如 logits 的梯度：每个词元的 softmax 概率
# 减去其独热（one-hot）目标，再除以窗口的词元数。``float16`` 能表示小到约 6e-8
# 的数，但只有从 2**-14（约 6.1e-5）起才有完整的精度（数值打印在下面）；小于
# 2**-14 的数有效位会变少，小于最小值一半的数则舍入为零。``logit_gradient_underflow`` 在第一个窗口的
# 真实词元上统计 logits 的梯度中有多少元素为零、多少小于 2**-14，分别在不缩放和
# 用缩放器的 65536 缩放时，对初始权重和上面训练了两轮的权重各测一次。


def logit_gradient_underflow(model, window, scale, autocast=True):
    """在整个窗口上，logits 的梯度中为零的元素和小于 2**-14 的元素所占的比例。"""
    window_tokens = real_tokens([s for micro_batch in window for s in micro_batch])
    zero = small = total = 0
    for micro_batch in window:
        inputs, targets = collate(micro_batch)
        with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=autocast):
            logits = model(inputs)
            loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX,
                                   reduction="sum") / window_tokens
        logits.retain_grad()
        (loss * scale).backward()
        gradient = logits.grad[targets != IGNORE_INDEX]  # 填充位置没有梯度
        zero += (gradient == 0).sum().item()
        small += (gradient.abs() < 2.0**-14).sum().item()
        total += gradient.numel()
    model.zero_grad()
    return zero / total, small / total


float16 = torch.finfo(torch.float16)
print(f"float16: full precision from {float16.smallest_normal:.1e} = 2**{math.log2(float16.smallest_normal):.0f} on, "
      f"smallest number {float16.smallest_normal * float16.eps:.1e} = "
      f"2**{math.log2(float16.smallest_normal * float16.eps):.0f}")
for weights, model in [("initial weights", fresh_model()), ("trained weights", trained_model)]:
    zero, _ = logit_gradient_underflow(model, windows[0], 1.0, autocast=False)
    print(f"{weights}, float32: {zero:.2%} of the logits' gradient zero")
    for scale in (1.0, 2.0**16):
        zero, small = logit_gradient_underflow(model, windows[0], scale)
        print(f"{weights}, float16, scale {scale:.0f}: {zero:.2%} zero, {small:.2%} below 2**-14")

# %%
# 在 ``float32`` 中没有任何元素为零。在不缩放的 ``float16`` 中，logits 的梯度
# 大部分元素都小于 2**-14，有效位有损失；模型学到东西以后，它对预测很有把握，不太
# 可能出现的词元的梯度小到有一部分舍入为零：这些 logits 不再被往下压。乘以 65536
# 之后，同样的梯度落在 ``float16`` 的完整精度范围内，没有一个为零；``unscale_``
# 直到梯度进入 ``float32`` 的 ``.grad`` 之后才除以缩放因子。（每行第二个数统计的是
# 缩放后的值，也就是 ``float16`` 需要容纳的值。）
#
# 在 ``bfloat16`` 中对梯度求和
# ----------------------------
#
# ``bfloat16`` 的指数范围与 ``float32`` 相同，因此不需要缩放，但有效位要少得多：
# 在 1 附近，相邻两个 ``bfloat16`` 数相差 2**-7，相邻两个 ``float32`` 数相差
# 2**-23（数值打印在下面）。参数为 ``bfloat16`` 的模型，``.grad`` 也是
# ``bfloat16``，梯度累积把每个微批量的梯度加到它上面，每加一次就舍入一次。训练
# 框架因此提供改用 ``float32`` 缓冲区的选项（例如 DeepSpeed 的
# ``data_types.grad_accum_dtype`` 设置）。
#
# 测量方法：模型的一个 ``bfloat16`` 副本，每个微批量一条序列；对每个 ``k``，取前
# ``k`` 个微批量，每个损失除以 ``k``。这 ``k`` 个梯度用三种方式求和：
#
# * 在 ``.grad`` 中，由 ``backward()`` 自己以 ``bfloat16`` 相加；
# * 在 ``float32`` 缓冲区中：每次 ``backward()`` 之后，把 ``.grad`` 加到缓冲区，
#   再把它设为 ``None``；
# * 以同样的方式在 ``float64`` 缓冲区中求和，作为参考值。
#
# autograd 先以 ``bfloat16`` 算出每个微批量的梯度，再把它加到 ``.grad`` 上，所以
# 三种方式加的是同样的梯度，不同的只是加法本身。

ONE_SEQUENCE_MICRO_BATCHES = [[s] for s in sequences]
K_VALUES = [1, 2, 4, 8, 16, 32, 64]


def make_bfloat16_model():
    model = make_model()
    model.load_state_dict(initial_weights)
    return model.to(torch.bfloat16)


def accumulate(model, window, buffer_dtypes=()):
    """对每个微批量的平均损失 / len(window) 做反向传播：梯度在 .grad 或缓冲区中求和。

    返回 {dtype: 梯度之和}：每种缓冲区类型一项；没有缓冲区时，只有 ``.grad`` 的类型一项。
    """
    model.zero_grad()
    buffers = {dtype: [torch.zeros_like(p, dtype=dtype) for p in model.parameters()] for dtype in buffer_dtypes}
    window_loss = torch.zeros((), device=device)
    for micro_batch in window:
        loss = token_loss(model, micro_batch, "mean") / len(window)
        loss.backward()
        window_loss += loss.detach().float()
        if buffers:
            for number, p in enumerate(model.parameters()):
                for buffer in buffers.values():
                    buffer[number] += p.grad
                p.grad = None
    if not buffers:
        return {torch.bfloat16: [p.grad for p in model.parameters()]}, window_loss
    return buffers, window_loss


def flat(tensors):
    return torch.cat([t.flatten().double() for t in tensors])


for dtype in (torch.bfloat16, torch.float32):
    print(f"{dtype}: eps (spacing next to 1) 2**{math.log2(torch.finfo(dtype).eps):.0f} = {torch.finfo(dtype).eps:.1e}")
bfloat16_model = make_bfloat16_model()
errors = {"bfloat16 .grad": [], "float32 buffer": []}
for k in K_VALUES:
    window = ONE_SEQUENCE_MICRO_BATCHES[:k]
    in_grad = accumulate(bfloat16_model, window)[0][torch.bfloat16]
    in_buffers = accumulate(bfloat16_model, window, (torch.float32, torch.float64))[0]
    reference = flat(in_buffers[torch.float64])
    for name, summed in [("bfloat16 .grad", in_grad), ("float32 buffer", in_buffers[torch.float32])]:
        errors[name].append(((flat(summed) - reference).norm() / reference.norm()).item())
    print(f"k = {k:3d}: relative error, bfloat16 .grad {errors['bfloat16 .grad'][-1]:.2e}, "
          f"float32 buffer {errors['float32 buffer'][-1]:.2e}")

# %%
# ``k = 1`` 时不需要做加法，三者完全一致。从 ``k = 2`` 起，``bfloat16`` 的和
# 出现误差，而且误差随 ``k`` 增大：每次加法都有舍入，而后面的微批量被加到一个
# 相对它们已经很大的和上，它们的贡献有更多被舍入掉。``float32`` 缓冲区的误差
# 并不总是恰好为零，但在每个 ``k`` 下都小于 ``float32`` 的 eps，比
# ``bfloat16`` 的误差小好几个数量级。（图中缺少的点表示误差恰好为零。）

fig, ax = plt.subplots(figsize=(8, 4))
ax.plot(K_VALUES, errors["bfloat16 .grad"], "o-", label="在 bfloat16 .grad 中求和")
ax.plot(K_VALUES, errors["float32 buffer"], "s--", label="在 float32 缓冲区中求和")
ax.set_xscale("log", base=2)
ax.set_yscale("log", nonpositive="mask")
ax.set_xlabel("k（求和的微批量个数）")
ax.set_ylabel("相对于 float64 之和的相对误差")
ax.set_title("对 k 个 bfloat16 微批量梯度求和")
ax.legend()
fig.tight_layout()
plt.show()

# %%
# 这在训练中看得出来吗？从同样的 ``bfloat16`` 权重出发做三次短训练，都用
# AdamW，每次更新 ``k = 16`` 个单序列微批量，区别只在于这 ``k`` 个梯度在哪里
# 求和；``float32`` 和 ``float64`` 的和在更新步之前舍入为 ``bfloat16`` 一次，
# 因为优化器更新的是 ``bfloat16`` 参数。每次运行记录每个窗口的平均损失；最后在
# ``float32`` 中测量全部 240 条序列上的损失。

TRAINING_K = 16
TRAINING_UPDATES = 4 if SMOKE_TEST else 20


def train_bfloat16(sum_in):
    """训练 bfloat16 模型，每个窗口的梯度在 .grad（torch.bfloat16）或缓冲区中求和。"""
    buffer_dtypes = () if sum_in == torch.bfloat16 else (sum_in,)
    model = make_bfloat16_model()
    optimizer = optim.AdamW(model.parameters(), lr=PEAK_LR)
    losses = []
    for update in range(TRAINING_UPDATES):
        first = update * TRAINING_K % len(ONE_SEQUENCE_MICRO_BATCHES)
        window = ONE_SEQUENCE_MICRO_BATCHES[first:first + TRAINING_K]
        summed, window_loss = accumulate(model, window, buffer_dtypes)
        for p, gradient in zip(model.parameters(), summed[sum_in]):
            p.grad = gradient.to(p.dtype)  # 对缓冲区：在更新步之前舍入一次
        optimizer.step()
        optimizer.zero_grad()
        losses.append(window_loss)
    return model, torch.stack(losses).tolist()


def loss_over_all_sequences(model):
    model = copy.deepcopy(model).float()
    with torch.no_grad():
        return (token_loss(model, sequences, "sum") / real_tokens(sequences)).item()


training = {}
for name, sum_in in [("bfloat16 .grad", torch.bfloat16), ("float32 buffer", torch.float32),
                     ("float64 buffer", torch.float64)]:
    model, losses = train_bfloat16(sum_in)
    training[name] = losses
    print(f"{name}: {TRAINING_UPDATES} updates of k = {TRAINING_K}, window loss {losses[0]:.4f} -> "
          f"{losses[-1]:.4f}, final loss over all sequences {loss_over_all_sequences(model):.4f}")
print(f"float32 buffer and float64 buffer, same loss at every update: "
      f"{training['float32 buffer'] == training['float64 buffer']}")
reference = torch.tensor(training["float64 buffer"])
print(f"largest loss difference from the float64 buffer's run: "
      f"bfloat16 .grad {(torch.tensor(training['bfloat16 .grad']) - reference).abs().max():.4f}, "
      f"float32 buffer {(torch.tensor(training['float32 buffer']) - reference).abs().max():.4f}; "
      f"largest change of the loss from one update to the next: {reference.diff().abs().max():.4f}")

# %%
# 下图左边，三条曲线几乎分不出来。右边是每次运行的损失减去 ``float64`` 缓冲区那次
# 运行的损失：``bfloat16`` 的那次运行在几次更新之后开始偏离，但偏离的幅度远小于
# 损失本身从一个窗口到下一个窗口的变化（上面打印的最后一行对比了这两者），最终
# 损失也表明三次运行的结果有多接近。在这么短的训练里，``k = 16`` 时上面测得的那种
# 大小的梯度误差，几乎不影响 AdamW 的更新步，何况 AdamW 本来就会对梯度做归一化。
# 小模型上的短训练显示不了的，是这个误差在长时间训练中、或在更大的 ``k`` 下（误差
# 更大）会造成什么代价。``float32`` 缓冲区让求和与 ``float64`` 参考值一样好：上面
# 有一行说明两者的运行是否在每次更新时都一致。

fig, (curves, differences) = plt.subplots(1, 2, figsize=(11, 4))
updates = range(1, TRAINING_UPDATES + 1)
curves.plot(updates, training["bfloat16 .grad"], "-", linewidth=2, label="在 bfloat16 .grad 中求和")
curves.plot(updates, training["float32 buffer"], "--", linewidth=2, label="在 float32 缓冲区中求和")
curves.plot(updates, training["float64 buffer"], ":", linewidth=2, label="在 float64 缓冲区中求和")
curves.set_xlabel("更新（更新步）")
curves.set_ylabel("每个词元的平均交叉熵")
curves.set_title(f"每次更新的损失，bfloat16 参数，k = {TRAINING_K}")
curves.legend()
differences.plot(updates, torch.tensor(training["bfloat16 .grad"]) - reference, "-", linewidth=2,
                 label="在 bfloat16 .grad 中求和")
differences.plot(updates, torch.tensor(training["float32 buffer"]) - reference, "--", linewidth=2,
                 label="在 float32 缓冲区中求和")
differences.axhline(0, color="gray", linewidth=0.8)
differences.set_xlabel("更新（更新步）")
differences.set_ylabel("损失减去 float64 缓冲区那次运行的损失")
differences.set_title("与 float64 缓冲区那次运行之差")
differences.legend()
for ax in (curves, differences):
    ax.xaxis.get_major_locator().set_params(integer=True)
fig.tight_layout()
plt.show()

# %%
# 缓冲区的代价是内存：下面实测上面最后一次求和中缓冲区和 ``.grad`` 的字节数。
# ``.grad`` 在缓冲区旁边仍一次保存一个微批量的梯度，所以缓冲区是额外增加的。

parameter_count = sum(p.numel() for p in bfloat16_model.parameters())
grad_bytes = sum(g.nbytes for g in in_grad)
buffer_bytes = sum(b.nbytes for b in in_buffers[torch.float32])
print(f"{parameter_count} parameters: bfloat16 .grad {grad_bytes} bytes, float32 buffer {buffer_bytes} bytes "
      f"({buffer_bytes / parameter_count:.0f} bytes per parameter, {buffer_bytes / grad_bytes:.0f} x .grad)")

# %%
# 怎么做
# ------
#
# * 使用 ``float16`` 和 ``GradScaler`` 时：把 ``update()`` 之后的
#   ``scaler.get_scale()`` 与之前的值比较，只有它没有变小时，才调用调度器或把
#   这一步计入步数。代价是每次更新一次比较；在 GPU 上，读取缩放因子要等待 GPU，
#   而 ``scaler.step`` 为了决定是否执行更新步，每次更新本来就要等待一次。在调用
#   顺序正确的循环里，不要屏蔽 PyTorch 关于 ``lr_scheduler.step()`` 在
#   ``optimizer.step()`` 之前调用的警告：在那里，它说明第一次更新被跳过了。
# * 如果一次训练的梯度承受不了初始缩放因子，就要预料到它开头的若干次更新会被
#   跳过，每减半一次跳过一次；而任何一次训练，只要某个微批量上溢，就会丢掉一个
#   窗口。
# * 参数为 ``bfloat16`` 时，在 ``float32`` 缓冲区中对微批量的梯度求和：在测过的
#   每个 ``k`` 下，它的误差都小于 ``float32`` 的 eps，代价是每个参数 4 个字节，
#   是 ``bfloat16`` 梯度的两倍。或者像《:ref:`accumulation_in_practice`》那样，
#   让参数保持 ``float32`` 并使用 autocast，这时 ``.grad`` 本来就是
#   ``float32``。
# * 训练循环的其余部分见《:ref:`accumulation_in_practice`》。

# sphinx_gallery_thumbnail_number = 1

# sphinx_gallery_start_ignore
# Translates recipes/en/low_precision_accumulation.py, English text 80d3548872a8a771 (make translation-status)
# sphinx_gallery_end_ignore
