"""coral: reproduction pipeline for CORAL (NeurIPS 2025) and its long-tailed diffusion baselines."""
__version__ = "0.1.0"
