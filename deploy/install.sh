#!/bin/sh
# The one install step. The Docker image runs it, and so does CI (.ci/run), so the image's install is
# tested on every run even though images can't be built on the CI machines (docs/deploy.md).
#
#   deploy/install.sh VENV [EXTRAS] [--editable]
#
# creates the virtual environment VENV (python3 -m venv, if it isn't one yet) and installs Switchboard
# from this checkout into it, with EXTRAS (e.g. "test") if given. Everything comes from pyproject.toml.
# SWITCHBOARD_INSTALL_DRY_RUN=1 prints the commands instead of running them.
set -eu

usage() { echo "usage: deploy/install.sh VENV [EXTRAS] [--editable]" >&2; exit 2; }
[ $# -ge 1 ] || usage
venv=$1
shift
extras=""
editable=""
for arg in "$@"; do
    case $arg in
        --editable) editable="-e" ;;
        -*) usage ;;
        *) extras="[$arg]" ;;
    esac
done
source_dir=$(cd "$(dirname "$0")/.." && pwd)

run() {
    if [ "${SWITCHBOARD_INSTALL_DRY_RUN:-}" = 1 ]; then echo "$*"; else "$@"; fi
}

[ -x "$venv/bin/python" ] || run python3 -m venv "$venv"
run "$venv/bin/pip" install --quiet --upgrade pip
run "$venv/bin/pip" install --quiet $editable "$source_dir$extras"
# the Smart Turn v3 end-of-turn model (turn.audio_model) ships in this wheel; only its ONNX file is used,
# so none of its dependencies (numba, pinned audio libraries...) are installed; pinned like the other models
run "$venv/bin/pip" install --quiet --no-deps pipecat-ai==1.14.0
run "$venv/bin/switchboard" check "$source_dir/switchboard/pipeline.yaml"
