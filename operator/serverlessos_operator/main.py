"""Placeholder entry point until the operator is built."""

from __future__ import annotations

import sys


def main() -> int:
    print(
        "serverlessos-operator is not built yet; the node agent (serverlessos-agent) is.",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
