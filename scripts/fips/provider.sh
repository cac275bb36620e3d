#!/usr/bin/env bash
# OpenSSL's FIPS provider, built from an OpenSSL 3 source tarball:
#
#   scripts/fips/provider.sh fetch DIR
#       Debian's OpenSSL source tarball (the `openssl` source package's .orig.tar.gz: the upstream release
#       tarball, its checksum verified by apt against the signed Sources index) into DIR, with apt lists of
#       its own under DIR/apt (the machine's apt configuration is left alone). Prints the tarball's path.
#   scripts/fips/provider.sh build TARBALL SHA256 OUTDIR
#       Check TARBALL against SHA256 (empty: any, the sha256 is printed), build providers/fips.so of the
#       tree configured with `enable-fips` and put it in OUTDIR; OUTDIR/VERSION names the source.
#   scripts/fips/provider.sh install MODULE CONFDIR
#       Run `openssl fipsinstall` on MODULE (its self-tests; the module's MAC into CONFDIR/fipsmodule.cnf)
#       and write CONFDIR/openssl.cnf: the FIPS and base providers active, default properties fips=yes.
#
# `make fips` runs all three into build/fips; `make image-fips` runs `build` and `install` in the image.
set -euo pipefail

say() { printf 'fips: %s\n' "$*" >&2; }

fetch() {
    local dir
    dir=$(mkdir -p "$1" && cd "$1" && pwd)
    local apt=$dir/apt
    mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$dir/source"
    local keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    local mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
    local security=${DEBIAN_SECURITY:-http://deb.debian.org/debian-security}
    printf '%s\n' \
        "deb-src [signed-by=$keyring] $mirror bookworm main" \
        "deb-src [signed-by=$keyring] $mirror bookworm-updates main" \
        "deb-src [signed-by=$keyring] $security bookworm-security main" > "$apt/sources.list"
    local options=(
        -o "Dir::Etc::SourceList=$apt/sources.list" -o "Dir::Etc::SourceParts=/nonexistent"
        -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o "Debug::NoLocking=1"
        -o "APT::Sandbox::User=root" -qq
    )
    say "fetching Debian's OpenSSL source tarball"
    apt-get "${options[@]}" update >&2
    (cd "$dir/source" && apt-get "${options[@]}" source --tar-only --download-only openssl >&2)
    ls -t "$dir"/source/openssl_*.orig.tar.gz | head -n 1
}

build() {
    local tarball=$1 sha256=$2 out=$3
    local actual
    actual=$(sha256sum "$tarball" | cut -d' ' -f1)
    if [ -n "$sha256" ] && [ "$actual" != "$sha256" ]; then
        say "$tarball has sha256 $actual, not the $sha256 given: refusing to build it"
        exit 1
    fi
    mkdir -p "$out"
    out=$(cd "$out" && pwd)
    WORK=$(mktemp -d)
    trap 'rm -rf "$WORK"' EXIT
    local work=$WORK
    tar -xzf "$tarball" -C "$work"
    local tree
    tree=$(echo "$work"/openssl-*)
    say "building the FIPS provider of $(basename "$tree") (sha256 $actual)"
    (
        cd "$tree"
        ./Configure enable-fips no-tests >/dev/null
        make -j "$(nproc)" build_generated >/dev/null
        make -j "$(nproc)" providers/fips.so >/dev/null
    )
    install -m 0755 "$tree/providers/fips.so" "$out/fips.so"
    printf '%s sha256:%s\n' "$(basename "$tree")" "$actual" > "$out/VERSION"
    say "built $out/fips.so ($(cat "$out/VERSION"))"
}

install_module() {
    local module=$1 conf=$2
    mkdir -p "$conf"
    conf=$(cd "$conf" && pwd)
    openssl fipsinstall -module "$module" -out "$conf/fipsmodule.cnf" >/dev/null 2>&1 \
        || { say "openssl fipsinstall failed: the module's self-tests did not pass"; exit 1; }
    cat > "$conf/openssl.cnf" <<CNF
# OpenSSL configuration for FIPS mode: the FIPS provider and the base provider (encoders and decoders)
# active, only approved implementations chosen (default properties fips=yes), and TLS (every client and
# server of the libssl reading this file) at 1.2 or later with the approved key exchange groups only
# (the FIPS provider of OpenSSL 3.0 also offers X25519 and X448, which NIST SP 800-56A does not approve).
config_diagnostics = 1
openssl_conf = openssl_init

.include $conf/fipsmodule.cnf

[openssl_init]
providers = provider_sect
alg_section = algorithm_sect
ssl_conf = ssl_sect

[provider_sect]
fips = fips_sect
base = base_sect

[base_sect]
activate = 1

[algorithm_sect]
default_properties = fips=yes

[ssl_sect]
system_default = tls_sect

[tls_sect]
MinProtocol = TLSv1.2
Groups = P-256:P-384:P-521:ffdhe2048:ffdhe3072:ffdhe4096:ffdhe6144:ffdhe8192
CNF
    say "installed $module: $conf/openssl.cnf"
}

case "${1:-}" in
    fetch) fetch "$2" ;;
    build) build "$2" "$3" "$4" ;;
    install) install_module "$2" "$3" ;;
    *) echo "usage: $0 fetch DIR | build TARBALL SHA256 OUTDIR | install MODULE CONFDIR" >&2; exit 2 ;;
esac
