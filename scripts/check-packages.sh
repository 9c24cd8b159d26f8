#!/usr/bin/env bash
# pnpm check:packages: every publishable package (packages/*) as npm would receive it.
#   build -> per package: pnpm pack (workspace:^ rewritten to versions), the tarball's contents
#   (LICENSE, README, dist, no tests, no workspace: ranges), publint --strict, and
#   @arethetypeswrong/cli with the ESM-only profile -> pnpm publish -r --dry-run.
# Exits non-zero on the first package with a problem; CI (.ci/run) runs it.
set -euo pipefail
cd "$(dirname "$0")/.."

TMP=$(mktemp -d "${TMPDIR:-/tmp}/substate-packages.XXXXXX")
trap 'rm -rf "$TMP" pnpm-publish-summary.json' EXIT

fail() { printf 'check:packages: %s\n' "$*" >&2; exit 1; }

echo '==> build'
pnpm exec tsc -b packages/*/

for dir in packages/*/; do
  dir=${dir%/}
  name=$(node -p "require('./$dir/package.json').name")
  echo "==> $name ($dir)"
  tarball=$(cd "$dir" && pnpm pack --pack-destination "$TMP" | tail -n 1)
  [[ -f $tarball ]] || fail "$name: pnpm pack made no tarball"
  files=$(tar -tzf "$tarball")
  for required in package/package.json package/LICENSE package/README.md package/dist/index.js package/dist/index.d.ts; do
    grep -qx "$required" <<<"$files" || fail "$name: $required is missing from the tarball"
  done
  if grep -E '(^package/test/|\.test(-d)?\.[cm]?[jt]s$|\.tsbuildinfo$)' <<<"$files"; then
    fail "$name: the tarball holds tests or build info (see above): fix \"files\" in $dir/package.json"
  fi
  if tar -xzOf "$tarball" package/package.json | grep -n '"workspace:'; then
    fail "$name: the packed package.json still has a workspace: range"
  fi
  (cd "$dir" && pnpm exec publint --pack pnpm --strict) || fail "$name: publint found problems"
  pnpm exec attw "$tarball" --profile esm-only --format table-flipped || fail "$name: attw found problems"
done

echo '==> pnpm publish -r --dry-run'
pnpm publish -r --dry-run --no-git-checks --report-summary >/dev/null 2>"$TMP/publish.log" ||
  { cat "$TMP/publish.log" >&2; fail 'pnpm publish -r --dry-run failed'; }
node -e '
  const { publishedPackages } = require(process.argv[1])
  const names = publishedPackages.map((p) => `${p.name}@${p.version}`)
  console.log(`would publish ${names.length}: ${names.join(", ")}`)
  if (names.length === 0) process.exit(1)
' "$PWD/pnpm-publish-summary.json" || fail 'pnpm publish -r --dry-run would publish nothing'
echo 'check:packages: every package is publishable'
