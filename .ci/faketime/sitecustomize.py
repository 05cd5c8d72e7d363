"""Loaded by every Python process of the CI run under libfaketime (PYTHONPATH=.ci/faketime).

libfaketime 0.9.10 (Debian 12's ``faketime``) with ``DONT_FAKE_MONOTONIC=1`` hands the kernel a negative
time for ``clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME)``, which ``time.sleep`` uses since Python
3.11, so every ``time.sleep`` fails with EINVAL (wolfcw/libfaketime#426, fixed after 0.9.10). Faking the
monotonic clock too is no way out: timed thread waits (``sem_clockwait`` on CLOCK_MONOTONIC) reach the
kernel unfaked and never end (wolfcw/libfaketime#390). So, under libfaketime only, ``time.sleep`` waits
on a ``threading.Event`` instead: the same real duration, through a call libfaketime leaves alone.
Wall-clock reads (``datetime.now``, ``time.time``) stay faked: that is what the run tests.
"""
import os
import threading
import time

if os.environ.get("FAKETIME") and "libfaketime" in os.environ.get("LD_PRELOAD", ""):
    def _sleep(seconds: float) -> None:
        if seconds < 0:
            raise ValueError("sleep length must be non-negative")
        threading.Event().wait(seconds)

    time.sleep = _sleep
