#!/usr/bin/env bash
# Fetch, verify and unpack the real data sets the notebooks use, into <root>/<name>.
#
#   ./data_download.sh [--root DIR] [--list] [--dry-run] [--keep-archives] NAME... | all
#
# A thin wrapper: the work is done by `wsslib download` (wsslib/data/download.py: checksums,
# resumed downloads, atomic unpacking, trust on first use, the manual sets, WSSLIB_MIRROR), which
# reads the one source table wsslib/data/sources.tsv. This script runs the repository's own
# wsslib (PYTHONPATH) with the first Python that has its dependencies: $PYTHON, else the
# repository's .venv (make setup), else python3. The default data folder is ./data beside this
# script (or $WSSLIB_DATA), where the loaders of a clone look.
#
# Exit status: 0 done (or nothing to do), 1 a download/check/unpack failed, 2 usage error,
# 3 some set needs the manual steps printed.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x "$HERE/.venv/bin/python" ]; then PY="$HERE/.venv/bin/python"
else PY=python3
fi
export PYTHONPATH="$HERE${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" -m wsslib download --prog ./data_download.sh "$@"
