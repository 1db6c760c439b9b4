#!/usr/bin/env bash
# Build the serving image (container/Dockerfile) on a machine with a Docker engine but no registry to pull from.
#
#   scripts/make_image.sh [--variant cpu|gpu] [--base-image IMAGE] [--tag TAG] [--base-only]
#
# --variant V     cpu (default) or gpu: the TF_VARIANT build arg (tensorflow-cpu or tensorflow[and-cuda])
# --base-image I  build FROM this image (e.g. ubuntu:22.04, nvidia/cuda:12.5.1-base-ubuntu22.04) as pulled from
#                 a registry. Without it a Debian 12 base is made here from Debian's packages (debootstrap
#                 bookworm minbase, from the mirror this machine's apt uses) and `docker import`ed as
#                 car-damage-base:bookworm; it is made once and reused while that tag exists.
# --tag TAG       image tag; default car-damage:<variant>
# --base-only     make (or reuse) the Debian base and stop
#
# The made base trusts the CA certificates this machine trusts (/usr/local/share/ca-certificates/*.crt), so pip
# inside the build gets through a TLS-inspecting proxy as the host does. The build runs with --network host
# (dockerd may run without a bridge) and gets this machine's PIP_INDEX_URL, when set, as a build arg.
# Progress goes to stderr; the last line on stdout is the built tag.
set -euo pipefail

die() { echo "make_image: error: $*" >&2; exit 1; }
say() { echo "make_image: [$(date -u +%H:%M:%S)] $*" >&2; }

variant=cpu
base_image=""
tag=""
base_only=0
while [ $# -gt 0 ]; do
    case "$1" in
        --variant) [ $# -ge 2 ] || die "--variant needs a value"; variant="$2"; shift 2 ;;
        --base-image) [ $# -ge 2 ] || die "--base-image needs a value"; base_image="$2"; shift 2 ;;
        --tag) [ $# -ge 2 ] || die "--tag needs a value"; tag="$2"; shift 2 ;;
        --base-only) base_only=1; shift ;;
        -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
case "$variant" in cpu|gpu) ;; *) die "--variant must be cpu or gpu, not '$variant'" ;; esac
tag="${tag:-car-damage:${variant}}"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
command -v docker >/dev/null 2>&1 || die "docker is not installed (Debian: apt-get install docker.io)"
docker info >/dev/null 2>&1 || die "no Docker engine answers (start dockerd, or check DOCKER_HOST)"

LOCAL_BASE="car-damage-base:bookworm"
SUITE=bookworm
CA_DIR=/usr/local/share/ca-certificates

# The Debian mirror apt uses here (deb822 first, then the one-line format); Debian's own mirror otherwise.
debian_mirror() {
    local mirror=""
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        mirror="$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)"
    fi
    if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
        mirror="$(awk '$1 == "deb" && $3 == "'"$SUITE"'" {print $2; exit}' /etc/apt/sources.list)"
    fi
    echo "${mirror:-http://deb.debian.org/debian}"
}

make_local_base() {
    if docker image inspect "$LOCAL_BASE" >/dev/null 2>&1; then
        say "base ${LOCAL_BASE} exists; reusing it (docker rmi ${LOCAL_BASE} to remake it)"
        return
    fi
    command -v debootstrap >/dev/null 2>&1 || die "debootstrap is not installed (apt-get install debootstrap)"
    [ "$(id -u)" -eq 0 ] || die "debootstrap needs root to make the base image"
    local mirror root
    mirror="$(debian_mirror)"
    root="$(mktemp -d /tmp/car-damage-base.XXXXXX)"
    # shellcheck disable=SC2064 - expand now: the folder to remove is this one
    trap "rm -rf '$root'" EXIT
    say "debootstrap ${SUITE} (minbase) from ${mirror} into ${root} (about 2 minutes)"
    debootstrap --variant=minbase --include=ca-certificates "$SUITE" "$root" "$mirror" >"$root.log" 2>&1 \
        || { tail -20 "$root.log" >&2; die "debootstrap failed (log above)"; }
    rm -f "$root.log"
    local security="${mirror%/debian}/debian-security"
    cat >"$root/etc/apt/sources.list" <<EOF
deb ${mirror} ${SUITE} main
deb ${mirror} ${SUITE}-updates main
deb ${security} ${SUITE}-security main
EOF
    local count=0
    for crt in "$CA_DIR"/*.crt; do
        [ -e "$crt" ] || continue
        cp "$crt" "$root$CA_DIR/"
        count=$((count + 1))
    done
    chroot "$root" update-ca-certificates >/dev/null
    say "trusting ${count} extra CA certificate(s) from ${CA_DIR}"
    # Nothing of the bootstrap's download cache, package lists, translations or documentation ships in the base;
    # dpkg is told to leave the latter out of later installs too.
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/var/log/*.log \
        "$root"/usr/share/locale/* "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/*
    cat >"$root/etc/dpkg/dpkg.cfg.d/01-no-docs" <<'EOF'
path-exclude=/usr/share/doc/*
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
EOF
    say "importing the base as ${LOCAL_BASE}"
    tar -C "$root" --numeric-owner -c . \
        | docker import --change 'CMD ["/bin/bash"]' --message "debootstrap ${SUITE} minbase from ${mirror}" \
            - "$LOCAL_BASE" >/dev/null
    rm -rf "$root"
    trap - EXIT
    say "base ${LOCAL_BASE}: $(docker image inspect --format '{{.Size}}' "$LOCAL_BASE" | awk '{printf "%.0f MB", $1/1e6}')"
}

if [ -z "$base_image" ]; then
    make_local_base
    base_image="$LOCAL_BASE"
fi
if [ "$base_only" -eq 1 ]; then echo "$base_image"; exit 0; fi

build_args=(--build-arg "BASE_IMAGE=${base_image}" --build-arg "TF_VARIANT=${variant}")
if [ -n "${PIP_INDEX_URL:-}" ]; then build_args+=(--build-arg "PIP_INDEX_URL=${PIP_INDEX_URL}"); fi
say "docker build ${tag} (TF_VARIANT=${variant}, BASE_IMAGE=${base_image})"
started=$(date +%s)
# The classic builder (docker.io 20.10 has no buildx) prints each step as it runs: that is the progress.
DOCKER_BUILDKIT=0 docker build --network host -f container/Dockerfile "${build_args[@]}" -t "$tag" . >&2
say "built ${tag} in $(( $(date +%s) - started )) s: $(docker image inspect --format '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}')"
# The classic builder keeps a stage's layers only while an image refers to them: tag the build stage (all cached,
# seconds) so the next build reuses the 1 GB pip layer; then the images this build replaced, now dangling, go.
DOCKER_BUILDKIT=0 docker build --network host -f container/Dockerfile "${build_args[@]}" --target build \
    -t "${tag}-build-stage" . >/dev/null
docker image prune -f >/dev/null 2>&1 || true
echo "$tag"
