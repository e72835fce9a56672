"""
.. _gradient_accumulation:

有意累积梯度
============

编写中。
"""
print("Using device: cpu")
