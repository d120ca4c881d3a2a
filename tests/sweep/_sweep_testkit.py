"""Shared pieces of the sweep tests."""

#: The ``[base]`` table of a tiny sweep: SGD, the tiny MLP, one 5-class task of 8 steps.
TINY_BASE = """
[base]
optim = { name = "sgd" }
model = { preset = "tiny", dropout = 0.0 }
tasks = { classes_per_task = 5, num_tasks = 1 }
train = { steps_per_task = 8, batch_size = 8 }
record = { every = 4, metrics = false }
"""
