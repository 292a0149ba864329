"""The test suite. Imported before conftest.py and every test module, so the setting below is in
place before numpy, OpenCV or torch load, and the stage and DVC subprocesses inherit it.

One intra-op thread per process: the tests run tiny models and small arrays, where two OpenMP
threads mostly wait on each other; on 2 busy cores a tiny-policy rollout of 20 tiles took 104 s
with two threads and 7.6 s with one. An OMP_NUM_THREADS already set is kept.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
