#!/usr/bin/env bash
#
# hack/install-criu.sh - install CRIU from Debian forky into a private,
# versioned cache directory, together with the glibc and libraries it needs,
# and set the sysctls CRIU needs on this machine:
#
#   $CACHE/criu-<version>/usr/sbin/criu        forky's criu (<version> = its
#                                              Debian version, e.g. 4.2.1-1)
#   $CACHE/criu-<version>/usr/lib/<triplet>/   forky's libc6 and the rest of
#                                              criu's dependency closure
#   $CACHE/criu-<version>/bin/criu             wrapper: runs criu through the
#                                              prefix's own loader
#   $CACHE/bin/criu -> the wrapper
#
# where CACHE=${SERVERLESSOS_CACHE:-$HOME/.cache/serverlessos}. Why (see
# PLATFORM.md, "CRIU"): bookworm's criu 3.17 fails on this kernel; trixie's
# 4.1.1 dumps no process with a TCP or UDP socket on kernels >= 6.16 ("Can't
# get 1:16 opt": SO_PASSCRED became unix/netlink-only; fixed in CRIU 4.2), so
# forky's 4.2.1 it is. It needs a newer glibc than bookworm's, so it runs
# through its own ld-linux with --library-path pointing into the prefix. --library-path (not
# LD_LIBRARY_PATH) applies to criu alone: the programs criu runs (ip,
# iptables, tar, action scripts) keep using the system's libraries.
#
# Sysctls, changed only when they are not already right (reported on stderr;
# they do not survive a reboot, a warm run sets them again):
#   fs.nr_open               lowered to the hard nofile limit (ulimit -Hn)
#                            when CAP_SYS_RESOURCE is missing (else criu
#                            cannot raise RLIMIT_NOFILE and restore fails)
#   fs.pipe-max-size         raised to at least 64 MiB     (lazy dumps)
#   fs.pipe-user-pages-soft  0                             (lazy dumps)
#   vm.unprivileged_userfaultfd  1                         (lazy restores: a confined
#                            process is restored in its own user namespace, where
#                            CRIU's restorer opens userfaultfd without privilege;
#                            tenants cannot use it: their seccomp profile refuses
#                            userfaultfd(2))
#
# Prints only the wrapper's path on stdout; progress goes to stderr, each
# step's output to $CACHE/logs/install-criu-<step>.log. A warm run checks the
# version, the sysctls, the symlink and `criu --version`.
#
# Environment: SERVERLESSOS_CACHE, CRIU_DEBIAN_SUITE (default forky),
# CRIU_SKIP_SYSCTL=1 (leave the sysctls alone), plus the DEBIAN_PKG_* knobs of
# hack/lib/debian-pkg.sh.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
# shellcheck source=hack/lib/debian-pkg.sh
. "$here/lib/debian-pkg.sh"
# shellcheck source=hack/lib/install.sh
. "$here/lib/install.sh"

suite=${CRIU_DEBIAN_SUITE:-forky}

install_setup install-criu

# The multiarch directory and loader of this machine's architecture (the
# private apt configuration downloads packages for it).
arch=$(dpkg --print-architecture) || die "step setup: dpkg --print-architecture failed"
case $arch in
amd64) triplet=x86_64-linux-gnu ld_name=ld-linux-x86-64.so.2 ;;
arm64) triplet=aarch64-linux-gnu ld_name=ld-linux-aarch64.so.1 ;;
*) die "step setup: architecture $arch is not supported (only amd64 and arm64)" ;;
esac

# criu_closure: criu and every package it needs, recursively (Depends and
# Pre-Depends; virtual packages, printed as <name>, are left out: apt lists
# their providers too), one "name=version" per line, versions pinned to the
# candidates so a list refresh in between cannot mix them.
criu_closure() {
    local names
    names=$(debian_pkg_apt "$suite" apt-cache depends --recurse --no-recommends --no-suggests \
        --no-conflicts --no-breaks --no-replaces --no-enhances "criu=$version" |
        sed -n 's/^\([a-z0-9][a-z0-9.+-]*\)\(:[a-z0-9]*\)\{0,1\}$/\1/p' | sort -u) || return 1
    [[ -n $names ]] || return 1
    # shellcheck disable=SC2086 # word splitting of the names is intended
    debian_pkg_apt "$suite" apt-cache show --no-all-versions $names |
        awk '/^Package:/ { p = $2 } /^Version:/ { print p "=" $2 }' | sort -u
}

# check_libs PREFIX: every shared object criu needs resolves, inside PREFIX,
# through PREFIX's own loader (ld.so --list is ldd without the system's ldd).
check_libs() {
    local prefix=$1 libdir=$1/usr/lib/$triplet out bad
    out=$("$libdir/$ld_name" --library-path "$libdir:$prefix/lib/$triplet" \
        --list "$prefix/usr/sbin/criu") || {
        printf '%s\n' "$out"
        echo "the loader cannot list criu's libraries"
        return 1
    }
    printf '%s\n' "$out"
    # Lines: "name => path (addr)", "path (addr)" or "linux-vdso.so.1 (addr)".
    bad=$(printf '%s\n' "$out" | awk -v p="$prefix/" '
        /not found/ { print; next }
        / => / { if (index($3, p) != 1) print; next }
        $1 ~ /^\// { if (index($1, p) != 1) print }')
    if [[ -n $bad ]]; then
        printf 'not resolved inside %s:\n%s\n' "$prefix" "$bad"
        return 1
    fi
}

# write_wrapper FILE: a relocatable wrapper (it finds the prefix from its own
# real path, so $CACHE/bin/criu can be a symlink to it).
write_wrapper() {
    cat >"$1" <<EOF || return 1
#!/bin/sh
# Generated by hack/install-criu.sh: Debian $suite's criu $version, run through
# the glibc it was built for (its own loader and libraries, next to it), not
# the system's. --library-path applies to criu only, not to what it executes.
self=\$(readlink -f "\$0") || exit 127
prefix=\${self%/bin/criu}
exec "\$prefix/usr/lib/$triplet/$ld_name" \\
    --library-path "\$prefix/usr/lib/$triplet:\$prefix/lib/$triplet" \\
    "\$prefix/usr/sbin/criu" "\$@"
EOF
    chmod 755 "$1"
}

# version_of WRAPPER: "Version: X" from `criu --version`, or fail.
version_of() {
    local out
    out=$("$1" --version 2>&1) || {
        printf '%s\n' "$out" >&2
        return 1
    }
    printf '%s\n' "$out" | sed -n 's/^Version: *//p' | head -n 1
}

version=$(debian_pkg_version "$suite" criu) || die "step version: cannot determine the criu version in $suite (apt log: $cache/apt-$suite/update.log)"
# ':' (an epoch) would break PATH entries; '/' cannot appear in a version.
dest=$cache/criu-${version//:/_}
wrapper=$dest/bin/criu

if [[ ! -f $dest/.complete ]]; then
    log "installing criu $version from $suite into $dest"
    closure_log=$logs/install-criu-closure.log
    if ! pkgs=$(criu_closure 2>"$closure_log") || [[ -z $pkgs ]]; then
        die "step closure: cannot compute criu's dependency closure in $suite; log: $closure_log"
    fi
    printf '%s\n' "$pkgs" >>"$closure_log"
    log "packages: $(printf '%s\n' "$pkgs" | sed 's/=.*//' | paste -sd ' ')"

    tmp=$(mktemp -d "$cache/.criu-${version//:/_}.XXXXXX") || die "step setup: cannot create a temporary directory in $cache"
    # shellcheck disable=SC2064 # expand $tmp now
    trap "rm -rf '$tmp'" EXIT
    mapfile -t pkg_array <<<"$pkgs"
    step extract debian_pkg_extract "$suite" "$tmp" "${pkg_array[@]}"
    [[ -x $tmp/usr/sbin/criu && -x $tmp/usr/lib/$triplet/$ld_name ]] ||
        die "step extract: $tmp/usr/sbin/criu or $tmp/usr/lib/$triplet/$ld_name is missing; log: $logs/install-criu-extract.log"
    step libs check_libs "$tmp"

    mkdir -p "$tmp/bin" || die "step wrapper: cannot create $tmp/bin"
    write_wrapper "$tmp/bin/criu" || die "step wrapper: cannot write $tmp/bin/criu"
    run_log=$logs/install-criu-run.log
    if ! got=$(version_of "$tmp/bin/criu" 2>"$run_log") || [[ -z $got ]]; then
        die "step run: '$tmp/bin/criu --version' failed; log: $run_log"
    fi
    # Debian 4.1.1-1 (maybe with an epoch or a +ds suffix) is upstream 4.1.1.
    upstream=${version#*:}
    [[ ${upstream%-*} == "$got"* ]] ||
        die "step run: $tmp/bin/criu reports version '$got', expected $version"
    printf 'criu %s\nsuite %s\narch %s\n\n%s\n' "$version" "$suite" "$arch" "$pkgs" >"$tmp/VERSIONS"
    finish "$tmp" "$dest"
    trap - EXIT
    rm -rf "$tmp"
    installed=1
fi

link criu "$wrapper"
criu_link=$cache/bin/criu

# sysctl_set NAME VALUE: write /proc/sys/NAME (dots as slashes).
sysctl_set() {
    local name=$1 value=$2 old
    old=$(<"/proc/sys/${name//.//}")
    if printf '%s\n' "$value" 2>/dev/null >"/proc/sys/${name//.//}"; then
        log "sysctl: $name changed from $old to $value"
    else
        log "warning: sysctl: cannot set $name to $value (it stays $old)"
        return 1
    fi
}

# have_cap N: bit N is set in this process's effective capabilities.
have_cap() {
    local eff
    eff=$(awk '/^CapEff:/ { print $2 }' /proc/self/status)
    [[ -n $eff ]] && (((16#$eff >> $1) & 1))
}

sysctls_ok=1
if [[ ${CRIU_SKIP_SYSCTL:-} == 1 ]]; then
    log "sysctl: left alone (CRIU_SKIP_SYSCTL=1)"
elif [[ ! -w /proc/sys/fs/nr_open ]]; then
    log "warning: sysctl: /proc/sys/fs is not writable here (not root?); criu may need fs.nr_open, fs.pipe-max-size and fs.pipe-user-pages-soft set (see PLATFORM.md)"
    sysctls_ok=0
else
    # Without CAP_SYS_RESOURCE (24) criu cannot raise RLIMIT_NOFILE to
    # fs.nr_open; with it lowered to the hard limit it does not need to.
    hard=$(ulimit -Hn)
    nr_open=$(</proc/sys/fs/nr_open)
    if ! have_cap 24 && [[ $hard =~ ^[0-9]+$ ]] && ((nr_open > hard)); then
        sysctl_set fs.nr_open "$hard" || sysctls_ok=0
    fi
    min_pipe=$((64 * 1024 * 1024))
    if (($(</proc/sys/fs/pipe-max-size) < min_pipe)); then
        sysctl_set fs.pipe-max-size "$min_pipe" || sysctls_ok=0
    fi
    if (($(</proc/sys/fs/pipe-user-pages-soft) != 0)); then
        sysctl_set fs.pipe-user-pages-soft 0 || sysctls_ok=0
    fi
    if [[ -f /proc/sys/vm/unprivileged_userfaultfd ]] && (($(</proc/sys/vm/unprivileged_userfaultfd) != 1)); then
        sysctl_set vm.unprivileged_userfaultfd 1 || sysctls_ok=0
    fi
fi
((sysctls_ok)) || log "warning: some sysctls are not as criu needs them: restore or lazy dumps may fail"

got=$(version_of "$criu_link") || die "step run: '$criu_link --version' failed"
log "criu $got ($version from $suite) via $criu_link"
# Right after an install, say whether criu works on this kernel (not fatal: the
# node agent runs its own `criu check` and reports criu as unusable).
if [[ -n ${installed:-} ]]; then
    check_log=$logs/install-criu-check.log
    if [[ $(id -u) != 0 ]]; then
        log "criu check: skipped (needs root)"
    elif "$wrapper" check >"$check_log" 2>&1 </dev/null; then
        log "criu check: $(grep -m1 'Looks good' "$check_log" || echo passed)"
    else
        log "warning: 'criu check' failed on this kernel; log: $check_log"
    fi
fi
printf '%s\n' "$wrapper"
