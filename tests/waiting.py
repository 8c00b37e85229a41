"""Shared test helper: poll a condition instead of sleeping a fixed time."""
import time


def wait_until(predicate, limit_s=5.0):
    """True as soon as ``predicate()`` is true, False after ``limit_s`` seconds of polling."""
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return False
