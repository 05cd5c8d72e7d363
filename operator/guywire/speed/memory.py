"""Memory tricks for a long-lived process: heap handed back to the OS, long-lived objects kept out of the
collector's full scans."""
from __future__ import annotations

import gc


def release_free_memory() -> None:
    """Hand freed heap pages back to the OS (glibc's malloc_trim). The start-up listing frees much more
    than the index keeps, and a crowd of webhook connections leaves its buffers behind; without this the
    process keeps the peak as its resident size."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def freeze_long_lived() -> None:
    """Collect once, then move every object alive now into the permanent generation: a long-lived index is
    never rescanned by full collections (which would otherwise pause admission answers)."""
    gc.collect()
    gc.freeze()
