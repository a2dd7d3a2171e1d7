#!/usr/bin/env bash
#
# hack/install-promtool.sh - install Prometheus's promtool (and the prometheus
# server) from Debian trixie into a private, versioned cache directory:
#
#   ${SERVERLESSOS_CACHE:-$HOME/.cache/serverlessos}/prometheus-<version>/usr/bin/{promtool,prometheus}
#   ${SERVERLESSOS_CACHE:-$HOME/.cache/serverlessos}/bin/{promtool,prometheus} -> the above
#
# <version> is whatever trixie currently ships (Debian packages `promtool` and
# `prometheus`, both built from source `prometheus`); nothing is installed
# system-wide. Prints the absolute path of promtool on stdout (and nothing
# else); progress goes to stderr. A warm run only checks the version and the
# symlinks.
#
# Environment: SERVERLESSOS_CACHE (cache root), PROMETHEUS_DEBIAN_SUITE
# (default trixie), plus the DEBIAN_PKG_* knobs of hack/lib/debian-pkg.sh.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
# shellcheck source=hack/lib/debian-pkg.sh
. "$here/lib/debian-pkg.sh"
# shellcheck source=hack/lib/install.sh
. "$here/lib/install.sh"

suite=${PROMETHEUS_DEBIAN_SUITE:-trixie}

install_setup install-promtool

# Fail if BINARY does not run: report unresolved shared libraries first.
check_runs() {
    local bin=$1 missing out
    [[ -x $bin ]] || die "$bin is missing or not executable"
    if missing=$(ldd "$bin" 2>/dev/null | grep 'not found'); then
        die "$bin needs shared libraries this system lacks (extract them from $suite too):
$missing"
    fi
    if ! out=$("$bin" --version 2>&1); then
        printf '%s\n' "$out" >&2
        die "'$bin --version' failed"
    fi
    printf '%s\n' "$out" | head -n 1
}

version=$(debian_pkg_version "$suite" promtool) || die "cannot determine the promtool version in $suite"
# ':' (an epoch) would break PATH entries; '/' cannot appear in a version.
dest=$cache/prometheus-${version//:/_}

if [[ ! -f $dest/.complete ]]; then
    server_version=$(debian_pkg_version "$suite" prometheus) ||
        die "cannot determine the prometheus version in $suite"
    log "installing promtool $version and prometheus $server_version from $suite into $dest"
    tmp=$(mktemp -d "$cache/.prometheus-${version//:/_}.XXXXXX") || die "cannot create a temporary directory in $cache"
    # shellcheck disable=SC2064 # expand $tmp now
    trap "rm -rf '$tmp'" EXIT
    # Pin the versions just resolved, so a list refresh in between cannot mix them.
    debian_pkg_extract "$suite" "$tmp" "promtool=$version" "prometheus=$server_version" ||
        die "downloading/extracting the Debian packages failed"
    check_runs "$tmp/usr/bin/promtool" >/dev/null
    check_runs "$tmp/usr/bin/prometheus" >/dev/null
    printf 'promtool %s\nprometheus %s\nsuite %s\n' "$version" "$server_version" "$suite" >"$tmp/VERSIONS"
    finish "$tmp" "$dest"
    trap - EXIT
    rm -rf "$tmp"
fi

for name in promtool prometheus; do
    link "$name" "$dest/usr/bin/$name"
done

promtool=$dest/usr/bin/promtool
log "$(check_runs "$promtool")"
printf '%s\n' "$promtool"
