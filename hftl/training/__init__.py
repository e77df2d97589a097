"""The training loop and what it leans on: the Accelerator, trackers, evaluation, checkpoints, the feature
cache, divergence and preemption guards, learning-rate range tests.
"""
