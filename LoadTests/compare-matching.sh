#!/usr/bin/env bash
# Side-by-side figures of Hailstorm's matching engine and the SciPy reference, on the same instance files,
# in the same run. Installs python3-numpy/python3-scipy when missing, builds matching-bench (release),
# then prints a Markdown table (and writes it to .hailstorm/matching/compare.md).
#
#   LoadTests/compare-matching.sh [--seed S] [--repeat R] [--quick]
#
# The reference is ../shared/reference/matching_reference.py next to the checkout, or the file named by
# HAILSTORM_MATCHING_REFERENCE.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

reference="${HAILSTORM_MATCHING_REFERENCE:-../shared/reference/matching_reference.py}"
if [ ! -f "$reference" ]; then
    echo "compare-matching: reference solver not found at $reference (set HAILSTORM_MATCHING_REFERENCE)" >&2
    exit 2
fi
if ! python3 -c 'import numpy, scipy' 2>/dev/null; then
    install_packages python3-numpy python3-scipy
fi
echo "compare-matching: building matching-bench (release)"
swift build -c release --product matching-bench >/dev/null
exec python3 LoadTests/compare_matching.py --bench "$(swift build -c release --show-bin-path)/matching-bench" \
    --reference "$reference" --work .hailstorm/matching "$@"
