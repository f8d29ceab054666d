#!/bin/sh
# onnxmoe eval against tools/lmeval_ref.py (an independent lm-eval 0.4.9.1 scorer) on generated tasks that are not
# in this repository; see tools/lmeval_check.py. Needs the Release build of the CLI.
#   tools/lmeval-check.sh models/tiny-mixtral models/tiny-deepseek [--limit 40] [--keep DIR]
set -e
cd "$(dirname "$0")/.."
exec nice -n 10 /usr/bin/python3 tools/lmeval_check.py "$@"
