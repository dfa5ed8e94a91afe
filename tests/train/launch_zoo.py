"""Run the `zoo` command in a fresh process with the test-only architecture of tests/conftest.py registered.

Used by the DDP test (under torchrun) and the SIGKILL resume test. With ``ZOO_TEST_PAUSE_AFTER_SAVES=N`` in the
environment, the process prints ``PAUSED AT STEP <step>`` after its N-th write of ``last.safetensors`` and
sleeps, so the test can kill it with SIGKILL at a known point in the middle of an epoch.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import conftest  # noqa: F401  (registers test-pair-potential)
from zoo.cli.main import main
from zoo.train import trainer


def _pause_after_saves(count: int) -> None:
    original = trainer.save_state
    saves = {"last": 0}

    def save_state(state, path):
        result = original(state, path)
        if Path(path).name == "last.safetensors":
            saves["last"] += 1
            if saves["last"] == count:
                print(f"PAUSED AT STEP {state['progress']['step']}", flush=True)
                time.sleep(600)
        return result

    trainer.save_state = save_state


if __name__ == "__main__":
    if "ZOO_TEST_PAUSE_AFTER_SAVES" in os.environ:
        _pause_after_saves(int(os.environ["ZOO_TEST_PAUSE_AFTER_SAVES"]))
    sys.exit(main(sys.argv[1:]))
