"""Put on PYTHONPATH by tests/markers.py for the processes a test starts: they check what they
start (and themselves) against the test's markers. Then any other sitecustomize runs as usual."""

import os
import sys


def _markers_check() -> None:
    if not os.environ.get("PYTEST_MARKERS_TEST"):
        return
    import importlib.util

    spec = importlib.util.spec_from_file_location("_test_markers", os.path.join(os.path.dirname(__file__), "..", "markers.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    module.install_in_child()


def _next_sitecustomize() -> None:
    import importlib.machinery
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is not None and spec.loader is not None:
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


_markers_check()
_next_sitecustomize()
