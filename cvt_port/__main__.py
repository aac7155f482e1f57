import gc
import sys

from .cli import main

status = main()
# Skip the interpreter's last garbage collection over the millions of objects that importing torch and
# transformers created (about 0.8 s of exit on 2 cores); everything main() wrote is closed, atexit still runs.
gc.freeze()
sys.exit(status)
