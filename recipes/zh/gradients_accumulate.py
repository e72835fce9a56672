"""
.. _gradients_accumulate:

How gradients accumulate
========================

Work in progress.
"""
