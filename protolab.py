"""Entry point of the `protolab` console script.

impacket installs its example scripts into the environment's bin/, and one of them is
called services.py. The launcher pip writes runs with bin/ first on sys.path, where that
script would shadow our `services` package ("'services' is not a package"). So the
launcher enters here, drops its own directory from the path, and only then imports it.
"""

from __future__ import annotations

import os
import sys


def main() -> int:
    launcher = os.path.dirname(os.path.abspath(sys.argv[0]))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != launcher]
    from services.cli import main as run

    return run()
