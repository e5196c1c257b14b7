#!/usr/bin/env bash
# Regenerates the built-in plugins' reference in docs/configuration.md (between its BEGIN and END
# markers) from the plugins' own schemas; tests/config_check.rs checks that it is current.
#   cargo build --workspace && scripts/update-configuration-reference.sh [path/to/workbench]
set -euo pipefail
cd "$(dirname "$0")/.."
workbench="${1:-target/debug/workbench}"
reference="$("$workbench" -q plugins reference)"
REFERENCE="$reference" python3 - <<'PY'
import os, re
path = "docs/configuration.md"
text = open(path).read()
begin, end = "<!-- BEGIN plugins reference -->", "<!-- END plugins reference -->"
head, rest = text.split(begin, 1)
_, tail = rest.split(end, 1)
open(path, "w").write(f"{head}{begin}\n\n{os.environ['REFERENCE'].rstrip()}\n\n{end}{tail}")
PY
echo "docs/configuration.md: plugin reference regenerated with $workbench"
