"""Where a result came from: the versions of Python and of the libraries that computed it.

Every record cvt-port writes (``conversion.json``, ``report.json``, a cache's manifest) says which
versions produced it, so a figure that changes between machines can be traced to a library. This
module is the one place that reads them; fuller provenance (the package, the command) grows here.
"""

from __future__ import annotations

import importlib
import sys

_MODULES = {"pillow": "PIL"}  # distribution name -> module name, where they differ


def library_versions(*libraries: str) -> dict[str, str]:
    """``{"python": ..., library: version, ...}`` for the named libraries (imported to read their
    ``__version__``: the code that ran, not whatever metadata an environment carries)."""
    versions = {"python": sys.version.split()[0]}
    for name in libraries:
        versions[name] = str(importlib.import_module(_MODULES.get(name, name)).__version__)
    return versions
