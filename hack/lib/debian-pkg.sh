# shellcheck shell=bash
#
# hack/lib/debian-pkg.sh - fetch Debian packages from another suite (e.g.
# trixie) into a private prefix, without touching the system's apt state.
#
# Source it:   . hack/lib/debian-pkg.sh
#
#   debian_pkg_extract SUITE PREFIX PKG [PKG...]
#       `apt-get download` each PKG (a name, name=VERSION or name/SUITE) from
#       SUITE and `dpkg -x` every .deb into PREFIX. Only the named packages are
#       fetched: dependencies are NOT resolved, list them explicitly.
#   debian_pkg_version SUITE PKG
#       Print PKG's candidate version in SUITE.
#   debian_pkg_update SUITE [--force]
#       Refresh SUITE's package lists if they are older than
#       DEBIAN_PKG_MAX_AGE_MIN minutes (default 1440 = one day), or always
#       with --force. The other functions call it themselves.
#   debian_pkg_apt SUITE COMMAND [ARG...]
#       Run an apt command (apt-get, apt-cache, ...) with SUITE's private
#       configuration, e.g. `debian_pkg_apt trixie apt-cache depends criu`.
#   debian_pkg_cache_dir
#       Print the absolute cache root (created if missing).
#
# Everything apt needs lives under
#   ${SERVERLESSOS_CACHE:-$HOME/.cache/serverlessos}/apt-SUITE/
# (sources list, lists, cache, an empty dpkg status file, and an apt.conf that
# points apt at them). /etc/apt is only read for the site settings in
# /etc/apt/apt.conf.d (proxies, Acquire::*), never written; nothing is
# installed system-wide.
#
# Overridable: DEBIAN_PKG_MIRROR (default http://deb.debian.org/debian),
# DEBIAN_PKG_KEYRING (default /usr/share/keyrings/debian-archive-keyring.gpg),
# DEBIAN_PKG_COMPONENTS (default main), DEBIAN_PKG_MAX_AGE_MIN (default 1440).
#
# Safe to source under `set -euo pipefail`: the functions check every step
# themselves, return non-zero on failure and say which step failed on stderr.

if [[ -n ${_DEBIAN_PKG_SH_LOADED:-} ]]; then
    return 0
fi
_DEBIAN_PKG_SH_LOADED=1

_debian_pkg_log() {
    printf 'debian-pkg: %s\n' "$*" >&2
}

_debian_pkg_err() {
    printf 'debian-pkg: error: %s\n' "$*" >&2
}

# Print the last lines of an apt log after a failure.
_debian_pkg_show_log() {
    local log=$1
    if [[ -s $log ]]; then
        printf 'debian-pkg: --- last lines of %s ---\n' "$log" >&2
        tail -n 15 "$log" | sed 's/^/debian-pkg:   /' >&2
    fi
}

# _debian_pkg_write FILE CONTENT: replace FILE atomically (safe against
# concurrent runs writing the same content).
_debian_pkg_write() {
    local tmp
    if ! tmp=$(mktemp "$1.XXXXXX") || ! printf '%s' "$2" >"$tmp" || ! chmod 644 "$tmp" ||
        ! mv -f "$tmp" "$1"; then
        [[ -z ${tmp:-} ]] || rm -f "$tmp"
        _debian_pkg_err "setup: cannot write $1"
        return 1
    fi
}

debian_pkg_cache_dir() {
    local dir=${SERVERLESSOS_CACHE:-${HOME:?HOME is not set}/.cache/serverlessos}
    if ! mkdir -p "$dir"; then
        _debian_pkg_err "cannot create cache directory $dir"
        return 1
    fi
    (cd "$dir" && pwd -P)
}

_debian_pkg_check_suite() {
    if [[ ! ${1:-} =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]]; then
        _debian_pkg_err "invalid suite name '${1:-}'"
        return 1
    fi
}

# _debian_pkg_setup SUITE -> prints the private apt root for SUITE, after
# (re)writing its sources list and apt.conf.
_debian_pkg_setup() {
    local suite=$1 cache root
    _debian_pkg_check_suite "$suite" || return 1
    cache=$(debian_pkg_cache_dir) || return 1
    root=$cache/apt-$suite

    local mirror=${DEBIAN_PKG_MIRROR:-http://deb.debian.org/debian}
    local keyring=${DEBIAN_PKG_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}
    local components=${DEBIAN_PKG_COMPONENTS:-main}
    if [[ ! -r $keyring ]]; then
        _debian_pkg_err "setup: keyring $keyring is not readable (install debian-archive-keyring)"
        return 1
    fi
    if ! mkdir -p "$root/lists/partial" "$root/cache/archives/partial" "$root/state"; then
        _debian_pkg_err "setup: cannot create $root"
        return 1
    fi
    [[ -e $root/status ]] || : >"$root/status" || {
        _debian_pkg_err "setup: cannot create $root/status"
        return 1
    }

    # Only the Packages indices: no Translations, no DEP-11/Contents targets
    # that site configuration (appstream, apt-file) may add.
    local sources
    sources="Types: deb
URIs: $mirror
Suites: $suite
Components: $components
Signed-By: $keyring
Targets: Packages
"
    # A changed sources list (other mirror/components) invalidates the lists.
    if [[ ! -f $root/sources.sources ]] || [[ $(<"$root/sources.sources") != "${sources%$'\n'}" ]]; then
        _debian_pkg_write "$root/sources.sources" "$sources" || return 1
        rm -f "$root/updated.stamp" "$root/update-failed.stamp"
    fi

    # Read after /etc/apt/apt.conf.d, so it wins. The #clear lines drop site
    # hooks (e.g. docker-clean deleting /var/cache/apt/*.bin, appstream
    # refreshes) that must not run for a private cache; pkgcache.bin is
    # re-enabled (docker-clean disables it) so warm apt-cache calls are fast;
    # srcpkgcache.bin (43 MB, only useful when the dpkg status changes, which
    # the private, empty one never does) stays off.
    local sandbox_user=
    if [[ $(id -u) == 0 ]]; then
        # _apt cannot reach a cache under /root: download as root instead of
        # warning about it. (Signatures and hashes are still checked.)
        sandbox_user='APT::Sandbox::User "root";'
    fi
    local conf
    conf=$(cat <<EOF
// Generated by hack/lib/debian-pkg.sh - private apt configuration for $suite.
#clear APT::Update::Pre-Invoke;
#clear APT::Update::Post-Invoke;
#clear APT::Update::Post-Invoke-Success;
#clear DPkg::Pre-Invoke;
#clear DPkg::Post-Invoke;
#clear DPkg::Pre-Install-Pkgs;
Dir::Etc::SourceList "$root/sources.sources";
Dir::Etc::SourceParts "/dev/null";
Dir::Etc::Preferences "/dev/null";
Dir::Etc::PreferencesParts "/dev/null";
Dir::State "$root/state";
Dir::State::Lists "$root/lists";
Dir::State::status "$root/status";
Dir::Cache "$root/cache";
Dir::Cache::Archives "$root/cache/archives";
Dir::Cache::pkgcache "pkgcache.bin";
Dir::Cache::srcpkgcache "";
APT::Get::List-Cleanup "true";
$sandbox_user
EOF
    )
    if [[ ! -f $root/apt.conf ]] || [[ $(<"$root/apt.conf") != "$conf" ]]; then
        _debian_pkg_write "$root/apt.conf" "$conf"$'\n' || return 1
    fi
    printf '%s\n' "$root"
}

# _debian_pkg_run ROOT COMMAND [ARG...]: apt command with ROOT's private config.
_debian_pkg_run() {
    local root=$1 cmd=$2
    shift 2
    LC_ALL=C "$cmd" -c "$root/apt.conf" "$@"
}

debian_pkg_apt() {
    if (($# < 2)); then
        _debian_pkg_err "usage: debian_pkg_apt SUITE COMMAND [ARG...]"
        return 2
    fi
    local suite=$1 root
    shift
    root=$(_debian_pkg_setup "$suite") || return 1
    _debian_pkg_run "$root" "$@"
}

_debian_pkg_have_lists() {
    compgen -G "$1/lists/*_Packages*" >/dev/null
}

# _debian_pkg_newer_than FILE MINUTES: FILE exists and is younger than that.
_debian_pkg_newer_than() {
    [[ -f $1 && -n $(find "$1" -mmin "-$2" 2>/dev/null) ]]
}

# _debian_pkg_lists_ok ROOT: no refresh needed, because the lists were
# refreshed within DEBIAN_PKG_MAX_AGE_MIN, or a refresh failed less than 10
# minutes ago (keep using the stale lists rather than retrying on every call).
_debian_pkg_lists_ok() {
    local root=$1
    _debian_pkg_have_lists "$root" || return 1
    _debian_pkg_newer_than "$root/updated.stamp" "${DEBIAN_PKG_MAX_AGE_MIN:-1440}" ||
        _debian_pkg_newer_than "$root/update-failed.stamp" 10
}

debian_pkg_update() {
    local suite=${1:-} force=${2:-} root
    if [[ -z $suite ]]; then
        _debian_pkg_err "usage: debian_pkg_update SUITE [--force]"
        return 2
    fi
    root=$(_debian_pkg_setup "$suite") || return 1
    if [[ $force != --force ]] && _debian_pkg_lists_ok "$root"; then
        return 0
    fi

    # Serialise concurrent refreshes of the same suite (apt would fail on its
    # lock instead of waiting); re-check freshness once we hold the lock.
    (
        if command -v flock >/dev/null 2>&1; then
            exec 9>"$root/update.lock"
            flock -w 900 9 || {
                _debian_pkg_err "update: timed out waiting for $root/update.lock"
                exit 1
            }
            if [[ $force != --force ]] && _debian_pkg_lists_ok "$root"; then
                exit 0
            fi
        fi
        _debian_pkg_log "refreshing $suite package lists ($root)"
        local log=$root/update.log
        if _debian_pkg_run "$root" apt-get -q --error-on=any update >"$log" 2>&1 && _debian_pkg_have_lists "$root"; then
            touch "$root/updated.stamp"
            rm -f "$root/update-failed.stamp"
            exit 0
        fi
        if _debian_pkg_have_lists "$root"; then
            touch "$root/update-failed.stamp"
            _debian_pkg_show_log "$log"
            _debian_pkg_log "warning: apt-get update for $suite failed; using the existing (stale) lists"
            exit 0
        fi
        _debian_pkg_show_log "$log"
        _debian_pkg_err "apt-get update for $suite failed (see $log)"
        exit 1
    )
}

debian_pkg_version() {
    if (($# != 2)); then
        _debian_pkg_err "usage: debian_pkg_version SUITE PKG"
        return 2
    fi
    local suite=$1 pkg=$2 root out version
    debian_pkg_update "$suite" || return 1
    root=$(_debian_pkg_setup "$suite") || return 1
    if ! out=$(_debian_pkg_run "$root" apt-cache policy "$pkg" 2>&1); then
        printf '%s\n' "$out" | sed 's/^/debian-pkg:   /' >&2
        _debian_pkg_err "apt-cache policy $pkg ($suite) failed"
        return 1
    fi
    version=$(printf '%s\n' "$out" | sed -n 's/^ *Candidate: *//p' | head -n 1)
    if [[ -z $version || $version == "(none)" ]]; then
        _debian_pkg_err "package '$pkg' has no candidate version in $suite"
        return 1
    fi
    printf '%s\n' "$version"
}

debian_pkg_extract() {
    if (($# < 3)); then
        _debian_pkg_err "usage: debian_pkg_extract SUITE PREFIX PKG [PKG...]"
        return 2
    fi
    local suite=$1 prefix=$2 root
    shift 2
    debian_pkg_update "$suite" || return 1
    root=$(_debian_pkg_setup "$suite") || return 1
    if ! mkdir -p "$prefix"; then
        _debian_pkg_err "cannot create prefix $prefix"
        return 1
    fi

    # Subshell: the cd and the cleanup trap stay local.
    (
        dl=$(mktemp -d "$root/cache/download.XXXXXX") || {
            _debian_pkg_err "cannot create a download directory under $root/cache"
            exit 1
        }
        # shellcheck disable=SC2064 # expand $dl now
        trap "rm -rf '$dl'" EXIT
        cd "$dl" || exit 1
        log=$dl/download.log
        _debian_pkg_log "downloading from $suite: $*"
        if ! _debian_pkg_run "$root" apt-get -q download "$@" >"$log" 2>&1; then
            # Lists up to a day old can name files the archive has since
            # dropped: refresh once and retry.
            _debian_pkg_log "download failed; refreshing $suite lists and retrying"
            rm -f ./*.deb
            if ! debian_pkg_update "$suite" --force ||
                ! _debian_pkg_run "$root" apt-get -q download "$@" >"$log" 2>&1; then
                cp -f "$log" "$root/download.log" 2>/dev/null || :
                _debian_pkg_show_log "$log"
                _debian_pkg_err "apt-get download from $suite failed for: $* (see $root/download.log)"
                exit 1
            fi
        fi
        shopt -s nullglob
        debs=(./*.deb)
        if ((${#debs[@]} == 0)); then
            _debian_pkg_err "apt-get download from $suite produced no .deb files for: $*"
            exit 1
        fi
        for deb in "${debs[@]}"; do
            _debian_pkg_log "extracting ${deb#./} into $prefix"
            if ! dpkg -x "$deb" "$prefix"; then
                _debian_pkg_err "dpkg -x ${deb#./} into $prefix failed"
                exit 1
            fi
        done
    )
}
