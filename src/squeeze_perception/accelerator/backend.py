"""Moved: the `synetgy` inference backend is backends/synetgy.py (one module per backend in
backends/). This name stays for code written against it; new code imports
`squeeze_perception.backends.synetgy`."""
from ..backends.synetgy import SYNETGY, SynetgyBackend

__all__ = ["SYNETGY", "SynetgyBackend"]
