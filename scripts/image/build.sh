#!/usr/bin/env bash
# Build keyward's container image with podman, without a registry:
#
#   scripts/image/build.sh base TARBALL         Debian bookworm (minbase, slimmed like debian:*-slim) as a
#                                               tarball, made with mmdebstrap from this machine's mirror
#   scripts/image/build.sh image TARBALL IMAGE  import TARBALL as $BASE_IMAGE (when missing or older than
#                                               TARBALL), then build Containerfile on it as IMAGE
#
#   scripts/image/build.sh fips IMAGE SOURCE SHA256 FIPS_IMAGE
#                                               Containerfile.fips on IMAGE: the FIPS provider built from
#                                               the OpenSSL SOURCE tarball (checked against SHA256)
#
# `make image` runs the first two; the tarball stays in build/, so a second build skips mmdebstrap.
# Environment: BASE_IMAGE (default localhost/debian:bookworm-slim), DEBIAN_MIRROR and DEBIAN_SECURITY
# (default: the mirror of /etc/apt/sources.list*, else deb.debian.org), CONTAINERS_CONF (set by make).
set -euo pipefail

SUITE=bookworm
BASE_IMAGE=${BASE_IMAGE:-localhost/debian:bookworm-slim}
HOST_CA=/etc/ssl/certs/ca-certificates.crt

say() { printf 'image: %s\n' "$*" >&2; }

# The Debian mirror this machine's apt uses (deb822 "URIs:" or one-line "deb" entries).
host_mirror() {
    local suffix=$1
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | sed -nE 's/^(URIs:|deb)[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]+).*/\3/p' \
        | grep -E "/${suffix}/?\$" | head -n 1 | sed 's:/*$::' || true
}

make_base() {
    local tarball=$1
    local mirror=${DEBIAN_MIRROR:-$(host_mirror debian)}
    local security=${DEBIAN_SECURITY:-$(host_mirror debian-security)}
    mirror=${mirror:-http://deb.debian.org/debian}
    security=${security:-http://deb.debian.org/debian-security}
    mkdir -p "$(dirname "$tarball")"
    say "making the Debian $SUITE base with mmdebstrap from $mirror"
    # The dpkg path filters are those of the official debian:*-slim images: no manuals, docs (but
    # copyright files) or translations; they stay in the image, so later installs are slim too.
    mmdebstrap --variant=minbase --format=tar \
        --aptopt='APT::Install-Recommends "false"' \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/info/*' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-include=/usr/share/locale/locale.alias' \
        --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
        "$SUITE" "$tarball.partial" \
        "deb $mirror $SUITE main" \
        "deb $mirror $SUITE-updates main" \
        "deb $security $SUITE-security main"
    mv "$tarball.partial" "$tarball"
}

build_image() {
    local tarball=$1 image=$2
    local stamp="$tarball.imported"
    if ! podman image exists "$BASE_IMAGE" || [ ! -e "$stamp" ] || [ "$tarball" -nt "$stamp" ]; then
        say "importing $tarball as $BASE_IMAGE"
        podman import --change 'CMD ["/bin/bash"]' "$tarball" "$BASE_IMAGE" >/dev/null
        touch "$stamp"
    fi
    local ca_options=()
    if [ -r "$HOST_CA" ]; then
        # pip inside the build trusts what this host trusts; the bundle is mounted, never copied.
        ca_options=(--volume "$HOST_CA:/run/host-ca.crt:ro" --build-arg PIP_CERT=/run/host-ca.crt)
    fi
    say "building $image on $BASE_IMAGE"
    podman build --network host --layers \
        --build-arg "BASE=$BASE_IMAGE" "${ca_options[@]}" \
        --tag "$image" --file Containerfile .
}

build_fips_image() {
    local image=$1 source=$2 sha256=$3 fips_image=$4
    mkdir -p build/fips-image
    cp "$source" build/fips-image/openssl.tar.gz
    say "building $fips_image on $image with the FIPS provider of $(basename "$source")"
    podman build --network host --layers \
        --build-arg "BASE=$BASE_IMAGE" --build-arg "IMAGE=$image" --build-arg "FIPS_SHA256=$sha256" \
        --tag "$fips_image" --file Containerfile.fips .
}

case "${1:-}" in
    base) make_base "$2" ;;
    image) build_image "$2" "$3" ;;
    fips) build_fips_image "$2" "$3" "$4" "$5" ;;
    *) echo "usage: $0 base TARBALL | image TARBALL IMAGE | fips IMAGE SOURCE SHA256 FIPS_IMAGE" >&2; exit 2 ;;
esac
