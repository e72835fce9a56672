"""
.. _linear_regression_without_zero_grad:

Linear regression without zero_grad
===================================

Work in progress.
"""
