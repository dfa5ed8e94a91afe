"""Repository-level pytest setup: modules that need an optional package are not imported for doctests
when that package is absent (the tests that use them skip with a reason instead)."""

import importlib.util

collect_ignore = [] if importlib.util.find_spec("triton") else ["zoo/kernels/_triton_message.py"]
