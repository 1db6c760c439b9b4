#!/usr/bin/env bash
# Regenerate the image's pip constraints (container/constraints-cpu.txt and container/constraints-gpu.txt).
#
#   scripts/lock_constraints.sh [cpu|gpu ...]      (default: both; `make constraints` runs this)
#
# Each file pins every package `pip install ".[serve,eval,<variant>]"` resolves to, plus pip, setuptools and wheel,
# so two image builds a month apart install the same versions. The resolution is done for the oldest Python the
# image bases carry (3.10, Ubuntu 22.04), binary wheels only, for linux x86_64; then it is repeated for 3.11
# (Debian 12) and 3.12 (Ubuntu 24.04) under the constraints already found, and a package only those need is
# added. pip's dry run resolves without installing anything. Only the index (PIP_INDEX_URL, default PyPI) is
# asked: this machine's pip config (local wheel folders, extra indexes, caps) is ignored, as in the image build.
set -euo pipefail

die() { echo "lock_constraints: error: $*" >&2; exit 1; }
say() { echo "lock_constraints: $*" >&2; }

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
python="${PYTHON:-$repo_root/.venv/bin/python}"
[ -x "$python" ] || python="$(command -v python3)" || die "no python3"
variants=("$@")
[ ${#variants[@]} -gt 0 ] || variants=(cpu gpu)
TOOLS="pip setuptools wheel"
PYTHONS="3.10 3.11 3.12"
index="${PIP_INDEX_URL:-https://pypi.org/simple}"
# pip does not widen --platform to older manylinux tags: name each glibc up to Ubuntu 22.04's 2.35 (the oldest base).
platforms=()
for minor in $(seq 17 35); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done
platforms+=(--platform manylinux2014_x86_64 --platform linux_x86_64)

# The dry-run report (JSON) -> "name==version" lines.
pins_of() {
    "$python" -c 'import json, sys
report = json.load(sys.stdin)
for item in report["install"]:
    meta = item["metadata"]
    if item.get("download_info", {}).get("dir_info") is None:  # skip the project itself (a local folder)
        print(meta["name"].lower() + "==" + meta["version"])'
}

resolve() {  # $1 python version, $2 constraints file (may be empty), $3.. requirements
    local pyver="$1" constraints="$2"
    shift 2
    local extra=()
    if [ -s "$constraints" ]; then extra=(-c "$constraints"); fi
    env -u PIP_FIND_LINKS -u PIP_EXTRA_INDEX_URL -u PIP_CONSTRAINT PIP_CONFIG_FILE=/dev/null \
        "$python" -m pip install --quiet --quiet --dry-run --ignore-installed --report - \
        --index-url "$index" --only-binary=:all: --python-version "$pyver" "${platforms[@]}" \
        ${extra[@]+"${extra[@]}"} "$@" | pins_of
}

for variant in "${variants[@]}"; do
    case "$variant" in cpu|gpu) ;; *) die "variant must be cpu or gpu, not '$variant'" ;; esac
    out="container/constraints-${variant}.txt"
    work="$(mktemp)"
    requirements=(".[serve,eval,${variant}]" $TOOLS)
    for pyver in $PYTHONS; do
        say "${variant}: resolving for Python ${pyver} against ${index}"
        resolve "$pyver" "$work" "${requirements[@]}" >"$work.new"
        sort -u "$work" "$work.new" -o "$work"
    done
    if [ "$variant" = cpu ]; then
        # tf-keras requires "tensorflow"; on the CPU image tensorflow-cpu is that package (Dockerfile: --no-deps).
        grep -v -E '^tensorflow==' "$work" >"$work.new"
        mv "$work.new" "$work"
    fi
    {
        echo "# pip constraints for the ${variant} image: made by scripts/lock_constraints.sh ${variant} (make constraints)"
        echo "# on $(date -u +%Y-%m-%d) against ${index}; Pythons ${PYTHONS}. Do not edit by hand."
        cat "$work"
    } >"$out"
    rm -f "$work" "$work.new"
    say "wrote ${out} ($(grep -vc '^#' "$out") packages)"
done
