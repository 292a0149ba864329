"""The test suite. Imported before conftest.py and every test module, so the setting below is in
place before numpy, OpenCV or torch load, and the stage and DVC subprocesses inherit it.

One intra-op thread per process: the tests run tiny models and small arrays, where more OpenMP
threads mostly wait on each other, and tests run side by side (make test: -n 2) on few cores.
An OMP_NUM_THREADS already set is kept.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
