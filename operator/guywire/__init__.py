"""guywire: keeps AI infrastructure on Kubernetes understandable as it grows."""

__version__ = "0.1.0"
