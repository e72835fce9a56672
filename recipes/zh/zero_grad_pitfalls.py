"""
.. _zero_grad_pitfalls:

zero_grad() 该放在哪里，又不能做什么
===================================

编写中。
"""
print("Using device: cpu")
