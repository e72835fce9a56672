"""
.. _zero_grad_pitfalls:

Where to call zero_grad(), and what it does not do
==================================================

Work in progress.
"""
print("Using device: cpu")
