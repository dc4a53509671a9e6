"""Run the unit tests on one intra-op thread.

The tests use small tensors, where threads barely help; on a busy 2-core machine they cost a lot (OpenMP
threads wait for each other: a 32x3 linear layer took 10 ms instead of 10 us, and this suite 90 s instead
of 14 s). The notebooks run in their own kernels and are not affected.
"""

import torch

torch.set_num_threads(1)
