"""Test defaults for the whole repository (unit tests and the notebooks nbmake executes).

The tests and notebooks run offline: the `smoke` profile unless RLHF_PROFILE says otherwise. Kernels
started by nbmake inherit this environment.
"""

import os

os.environ.setdefault("RLHF_PROFILE", "smoke")
os.environ.setdefault("MPLBACKEND", "Agg")
