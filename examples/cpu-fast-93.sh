#!/usr/bin/env bash
# airbench94's network with the fast protocol (airbench94's recipe, 10 epochs) on the whole CIFAR-10
# training split, scored once on the 10,000 test images: >= 93% in under 30 minutes on a 2-core CPU with
# native bf16 (AMD EPYC, avx512_bf16; see README "Training protocols" for the measured run).
#
#   examples/cpu-fast-93.sh DATA [--json] [more nas train flags, e.g. --set seed=1]
#
# DATA: ../shared/data/cifar10-png.tar.gz here; `cifar10` downloads the official copy. With --json the last
# line is one JSON object: test_acc, seconds, epochs, params, precision (and the recipe and arch ids).
set -euo pipefail
data=${1:?usage: examples/cpu-fast-93.sh DATA [--json] [nas train flags]}
shift
json=0
if [ "${1:-}" = "--json" ]; then json=1; shift; fi
here=$(cd "$(dirname "$0")" && pwd)
nas=${NAS:-nas}
if [ "$json" = 1 ]; then
  "$nas" train "$here/airbench94.json" --data "$data" --protocol fast --val-size 0 --eval test --json "$@" |
    python3 -c 'import json, sys; s = json.load(sys.stdin); print(json.dumps({k: s[k] for k in ("test_acc", "seconds", "epochs", "params", "precision", "images_per_s", "device")}))'
else
  "$nas" train "$here/airbench94.json" --data "$data" --protocol fast --val-size 0 --eval test "$@"
fi
