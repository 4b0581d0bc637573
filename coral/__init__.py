"""coral: reproduction pipeline for CORAL (NeurIPS 2025) and its long-tailed diffusion baselines."""
# The one place the version is written: pyproject.toml reads it (dynamic version), `coral --version`
# prints it and every lineage record stores it.
__version__ = "0.1.0"
