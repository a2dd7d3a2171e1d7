"""`serverlessos-operator`: run the kopf operator with production settings."""

from __future__ import annotations

import argparse
import logging
import sys

import kopf

from . import handlers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="serverlessos-operator", description=__doc__)
    parser.add_argument(
        "--liveness",
        default="http://0.0.0.0:8080/healthz",
        help="liveness endpoint URL (kopf's probes)",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat.PLAIN)
    logging.getLogger("serverlessos_operator").setLevel(logging.INFO)
    if not args.verbose:  # "Handler ... succeeded" for every watch event is noise at scale
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    assert handlers.__all__  # importing the package registers the handlers
    # standalone: one replica (the Deployment is Recreate), no peering CRDs needed.
    kopf.run(clusterwide=True, standalone=True, liveness_endpoint=args.liveness)
    return 0


if __name__ == "__main__":
    sys.exit(main())
