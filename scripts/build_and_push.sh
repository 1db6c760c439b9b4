#!/usr/bin/env bash
# Build the SageMaker container (container/Dockerfile) and push it to Amazon ECR.
#
#   scripts/build_and_push.sh [--region R] [--cpu] [--base-image B] [--registry HOST] [--latest] [--allow-dirty]
#                             IMAGE [TAG]
#
# IMAGE  ECR repository name (created when missing), e.g. car-damage
# TAG    default: the git commit (12 hex digits), plus "-cpu" for --cpu. Tags are treated as immutable:
#        a clean commit whose tag is already in ECR is not rebuilt (the URI is printed); an explicit TAG that
#        already exists is refused. A working tree with uncommitted changes is refused (the image would not
#        be the commit its tag names) unless --allow-dirty, which tags <commit>-dirty-<UTC timestamp>.
# --region R     AWS region; else $AWS_REGION, $AWS_DEFAULT_REGION, `aws configure get region`; else an error
# --cpu          CPU image (build args TF_VARIANT=cpu, BASE_IMAGE=ubuntu:22.04); default is the GPU image
# --base-image B build FROM B (e.g. car-damage-base:bookworm from `make image`) instead of the variant's default
# --registry H   tag and push to H (host[:port]) instead of <account>.dkr.ecr.<region>.amazonaws.com; the ECR
#                calls (repository, tag check, login password) are still made: for a registry standing in for ECR
# --latest       also tag and push IMAGE:latest (the repository is MUTABLE for that one moving tag)
#
# Only the image URI goes to stdout, so `IMAGE_URI=$(scripts/build_and_push.sh car-damage)` works;
# progress and errors go to stderr. Needs the aws CLI v2, docker (with buildx for --platform) and git.
set -euo pipefail

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2; }
die() { echo "build_and_push: error: $*" >&2; exit 1; }
say() { echo "build_and_push: $*" >&2; }

region=""
cpu=0
latest=0
allow_dirty=0
base_image=""
registry=""
positional=()
while [ $# -gt 0 ]; do
    case "$1" in
        --region) [ $# -ge 2 ] || die "--region needs a value"; region="$2"; shift 2 ;;
        --region=*) region="${1#*=}"; shift ;;
        --cpu) cpu=1; shift ;;
        --base-image) [ $# -ge 2 ] || die "--base-image needs a value"; base_image="$2"; shift 2 ;;
        --registry) [ $# -ge 2 ] || die "--registry needs a value"; registry="$2"; shift 2 ;;
        --latest) latest=1; shift ;;
        --allow-dirty) allow_dirty=1; shift ;;
        -h|--help) usage; exit 0 ;;
        -*) usage; die "unknown option $1" ;;
        *) positional+=("$1"); shift ;;
    esac
done
[ ${#positional[@]} -ge 1 ] && [ ${#positional[@]} -le 2 ] || { usage; die "expected IMAGE [TAG]"; }
image="${positional[0]}"
explicit_tag="${positional[1]:-}"
[[ "$image" =~ ^[a-z0-9]+([._/-][a-z0-9]+)*$ ]] || die "IMAGE '$image' is not a valid ECR repository name"
if [ -n "$explicit_tag" ]; then
    [[ "$explicit_tag" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "TAG '$explicit_tag' is not a valid tag"
    [ "$explicit_tag" != "latest" ] || die "TAG 'latest' is not immutable; use --latest alongside a real tag"
fi

command -v aws >/dev/null 2>&1 || die "the aws CLI is not installed or not on PATH (https://aws.amazon.com/cli/)"
command -v docker >/dev/null 2>&1 || die "docker is not installed or not on PATH (https://docs.docker.com/get-docker/)"
command -v git >/dev/null 2>&1 || die "git is not installed or not on PATH"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
[ -f container/Dockerfile ] || die "container/Dockerfile not found under $repo_root"

# Region: never a silent default (an image pushed to the wrong region is invisible to the endpoint).
if [ -z "$region" ]; then region="${AWS_REGION:-${AWS_DEFAULT_REGION:-}}"; fi
if [ -z "$region" ]; then region="$(aws configure get region 2>/dev/null || true)"; fi
[ -n "$region" ] || die "no AWS region: pass --region, set AWS_REGION, or run 'aws configure set region <region>'"

account="$(aws sts get-caller-identity --query Account --output text)" \
    || die "cannot read the AWS account (aws sts get-caller-identity failed): are credentials configured?"
[[ "$account" =~ ^[0-9]{12}$ ]] || die "unexpected account id from STS: '$account'"

# Tag: the commit, so a deployed image names the exact code in it.
commit="$(git rev-parse --short=12 HEAD 2>/dev/null)" || die "$repo_root is not a git checkout with a commit"
dirty=""
if [ -n "$(git status --porcelain)" ]; then
    [ "$allow_dirty" -eq 1 ] || die "uncommitted changes in $repo_root: commit them (the tag must name the code) or pass --allow-dirty"
    dirty="-dirty-$(date -u +%Y%m%dT%H%M%SZ)"
fi
suffix=""
build_args=()
if [ "$cpu" -eq 1 ]; then
    suffix="-cpu"
    build_args=(--build-arg TF_VARIANT=cpu --build-arg "BASE_IMAGE=${base_image:-ubuntu:22.04}")
elif [ -n "$base_image" ]; then
    build_args=(--build-arg "BASE_IMAGE=${base_image}")
fi
tag="${explicit_tag:-${commit}${dirty}${suffix}}"

registry="${registry:-${account}.dkr.ecr.${region}.amazonaws.com}"
uri="${registry}/${image}:${tag}"
say "image ${uri}"

# Repository: create it when missing; any other error (credentials, permissions) stops here.
if ! describe_err="$(aws ecr describe-repositories --region "$region" --repository-names "$image" 2>&1 >/dev/null)"; then
    case "$describe_err" in
        *RepositoryNotFoundException*)
            say "creating ECR repository ${image} in ${region}"
            aws ecr create-repository --region "$region" --repository-name "$image" \
                --image-scanning-configuration scanOnPush=true >/dev/null ;;
        *) die "aws ecr describe-repositories failed: ${describe_err}" ;;
    esac
fi

# Immutable tags: never overwrite one that is already in the repository.
if images_err="$(aws ecr describe-images --region "$region" --repository-name "$image" \
        --image-ids imageTag="$tag" 2>&1 >/dev/null)"; then
    if [ -z "$explicit_tag" ] && [ -z "$dirty" ]; then
        say "tag ${tag} is already in ECR (this commit was pushed before); nothing to build"
        echo "$uri"
        exit 0
    fi
    die "tag ${tag} already exists in ${image}; tags are immutable, choose another"
else
    case "$images_err" in
        *ImageNotFoundException*) ;;
        *) die "aws ecr describe-images failed: ${images_err}" ;;
    esac
fi

aws ecr get-login-password --region "$region" \
    | docker login --username AWS --password-stdin "$registry" >/dev/null \
    || die "docker login to ${registry} failed"

tags=(-t "$uri")
if [ "$latest" -eq 1 ]; then tags+=(-t "${registry}/${image}:latest"); fi
say "building (${tag}) for linux/amd64"
# ${a[@]+"${a[@]}"}: an empty array under `set -u` in macOS's bash 3.2. --network host: the build's pip reaches
# the index where dockerd runs without a bridge network (and changes nothing where it has one).
docker build --network host --platform linux/amd64 -f container/Dockerfile ${build_args[@]+"${build_args[@]}"} "${tags[@]}" . >&2

docker push "$uri" >&2
if [ "$latest" -eq 1 ]; then docker push "${registry}/${image}:latest" >&2; fi
say "pushed"
echo "$uri"
