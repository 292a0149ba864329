"""realsr_r1: the RealSR-R1 method as a library (no DVC, no Prefect in here)."""

__version__ = "0.1.0"
