"""``python tests/slow_pass.py [python -m evaluate flags]``: the real CLI, with a slow pass.

Each validation step first writes ``step N`` to stderr and sleeps, so a test can signal the process
while it is inside Lightning's pass (not before, not after). Everything else is the product's code.
"""

from __future__ import annotations

import os
import signal
import sys
import time

# As from a terminal: Python's own SIGINT handler, even where this process was started with SIGINT ignored (a
# background job of a non-interactive shell, `cmd &` in a CI script, ignores SIGINT by POSIX rule, and so would
# the product: it keeps an inherited "ignore", as Python does).
signal.signal(signal.SIGINT, signal.default_int_handler)

from evaluate.cli import main  # noqa: E402
from evaluate.validation.lightning_module import EvalModule  # noqa: E402

DELAY = float(os.environ.get("SLOW_PASS_DELAY", "0.5"))
_step = EvalModule.validation_step


def slow_step(self, batch, batch_idx):
    print(f"step {batch_idx}", file=sys.stderr, flush=True)
    time.sleep(DELAY)
    return _step(self, batch, batch_idx)


EvalModule.validation_step = slow_step

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
