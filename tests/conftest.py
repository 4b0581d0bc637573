import torch

# One thread per test process: tiny CPU kernels on 2 shared cores slow down 100x when
# torch's thread pool competes with other processes.
torch.set_num_threads(1)
