# shellcheck shell=bash
# What the hack/install-*.sh scripts share: messages, logged steps, installing a
# prepared directory into the cache atomically, and the cache's bin/ symlinks.
#
#   . hack/lib/debian-pkg.sh; . hack/lib/install.sh
#   install_setup NAME      # sets $cache, $logs; messages say "NAME: ..."
#   step STEP CMD [ARG...]  # CMD's output in $logs/NAME-STEP.log; failure says so and exits
#   finish TMP DEST         # mark TMP complete and move it to DEST
#   link BIN TARGET         # point $cache/bin/BIN at TARGET

install_setup() {
    install_name=$1
    cache=$(debian_pkg_cache_dir) || die "cannot set up the cache directory"
    logs=$cache/logs
    mkdir -p "$logs" "$cache/bin" || die "cannot create $logs or $cache/bin"
}

log() { printf '%s: %s\n' "$install_name" "$*" >&2; }

die() {
    printf '%s: error: %s\n' "$install_name" "$*" >&2
    exit 1
}

step() {
    local name=$1 logfile=$logs/$install_name-$1.log start rc=0
    shift
    start=$SECONDS
    log "step $name: $* (log: $logfile)"
    "$@" >"$logfile" 2>&1 </dev/null || rc=$?
    if ((rc != 0)); then
        printf '%s: --- last lines of %s ---\n' "$install_name" "$logfile" >&2
        tail -n 25 "$logfile" | sed "s/^/$install_name:   /" >&2
        die "step '$name' failed (exit $rc); full log: $logfile"
    fi
    log "step $name: done in $((SECONDS - start))s"
}

# An incomplete leftover (interrupted run) is replaced; a complete one installed
# meanwhile by a concurrent run is kept.
finish() {
    local tmp=$1 dest=$2
    touch "$tmp/.complete"
    chmod 755 "$tmp"
    if [[ -e $dest && ! -f $dest/.complete ]]; then
        rm -rf "$dest"
    fi
    if ! mv -T "$tmp" "$dest" 2>/dev/null; then
        [[ -f $dest/.complete ]] || die "cannot move $tmp to $dest"
    fi
}

# Atomically: a temporary link renamed over the old one.
link() {
    local link=$cache/bin/$1 target=$2
    if [[ $(readlink "$link" 2>/dev/null) != "$target" ]]; then
        if ! ln -sfn "$target" "$link.tmp.$$" || ! mv -Tf "$link.tmp.$$" "$link"; then
            rm -f "$link.tmp.$$"
            die "cannot update the symlink $link"
        fi
    fi
}
