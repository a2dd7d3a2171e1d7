#!/usr/bin/env bash
# Copy the generated CRDs (crds/, written by `make crds`) into the Helm chart
# (charts/serverlessos/crds/). The chart holds copies, not symlinks: `helm
# package` does not reliably follow links out of the chart directory.
#
#   hack/sync-chart-crds.sh          copy crds/*.yaml into the chart, drop stale ones
#   hack/sync-chart-crds.sh --check  only compare; exit 1 and name the files that differ
#
# Run it after `make crds`; the test suite fails when the two directories drift.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRC="$REPO/crds"
DST="$REPO/charts/serverlessos/crds"

check=false
case "${1:-}" in
  "") ;;
  --check) check=true ;;
  -h | --help) sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

shopt -s nullglob
srcs=("$SRC"/*.yaml)
(( ${#srcs[@]} > 0 )) || { echo "error: no CRDs in $SRC (run 'make crds')" >&2; exit 1; }

drift=0
for src in "${srcs[@]}"; do
  dst="$DST/$(basename "$src")"
  if ! cmp -s "$src" "$dst"; then
    if $check; then
      echo "differs: ${dst#"$REPO"/} (from ${src#"$REPO"/})" >&2
      drift=1
    else
      mkdir -p "$DST"
      cp -- "$src" "$dst"
      echo "updated ${dst#"$REPO"/}"
    fi
  fi
done
for dst in "$DST"/*.yaml; do
  if [[ ! -e "$SRC/$(basename "$dst")" ]]; then
    if $check; then
      echo "stale: ${dst#"$REPO"/} (not in crds/)" >&2
      drift=1
    else
      rm -f -- "$dst"
      echo "removed ${dst#"$REPO"/}"
    fi
  fi
done

if $check && (( drift )); then
  echo "the chart's CRDs drifted from crds/: run hack/sync-chart-crds.sh" >&2
  exit 1
fi
