#!/usr/bin/env bash
# Export the deployable contracts' ABI and bytecode for the Rust side.
#
#   scripts/export-artifacts.sh          write adapters/ethereum/artifacts/<Name>.json
#   scripts/export-artifacts.sh --check  regenerate into a temp dir and fail if the
#                                        committed files differ (CI: `make forge-test`)
#
# Run after `forge build --offline` in contracts/ (`make artifacts` does both). Reads
# contracts/out/<Name>.sol/<Name>.json and writes, per contract, a pretty-printed
#   {"contractName", "sourceSha256", "abi", "bytecode": {"object"}, "deployedBytecode": {"object"}}
# where sourceSha256 is the sha256 of contracts/src/<Name>.sol. The output is deterministic
# (fixed key order, two-space indent, trailing newline); the bytecode is reproducible because
# contracts/foundry.toml turns off the metadata hash and CBOR trailer and pins the EVM version.
# Before exporting, the script checks that the compiled artifact was built from the current
# source (keccak256 recorded in the solc metadata), so a stale contracts/out is refused.
# Needs only bash and node.
set -euo pipefail

CONTRACTS=(PaymentEscrow TestToken)

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$repo/adapters/ethereum/artifacts"

mode=write
case "${1:-}" in
  "") ;;
  --check) mode=check ;;
  -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"; exit 0 ;;
  *) echo "export-artifacts: unknown argument: $1 (use --check or nothing)" >&2; exit 2 ;;
esac

if [[ $mode == check ]]; then
  outdir="$(mktemp -d)"
  trap 'rm -rf "$outdir"' EXIT
else
  outdir="$dest"
  mkdir -p "$outdir"
fi

node - "$repo" "$outdir" "${CONTRACTS[@]}" <<'JS'
'use strict';
const fs = require('fs');
const path = require('path');
const crypto = require('crypto');

const [repo, outdir, ...names] = process.argv.slice(2);

function die(msg) {
  process.stderr.write(`export-artifacts: ${msg}\n`);
  process.exit(1);
}

// Keccak-256 (the pre-standard SHA-3 padding that Ethereum and solc use). node's crypto has
// only the NIST sha3-256, whose padding differs, so this is a small straightforward
// implementation of Keccak-f[1600] on BigInt lanes; the inputs here are a few kB.
const MASK = (1n << 64n) - 1n;
const RC = [
  0x0000000000000001n, 0x0000000000008082n, 0x800000000000808an, 0x8000000080008000n,
  0x000000000000808bn, 0x0000000080000001n, 0x8000000080008081n, 0x8000000000008009n,
  0x000000000000008an, 0x0000000000000088n, 0x0000000080008009n, 0x000000008000000an,
  0x000000008000808bn, 0x800000000000008bn, 0x8000000000008089n, 0x8000000000008003n,
  0x8000000000008002n, 0x8000000000000080n, 0x000000000000800an, 0x800000008000000an,
  0x8000000080008081n, 0x8000000000008080n, 0x0000000080000001n, 0x8000000080008008n,
];
// Rotation offsets r[x + 5y].
const ROT = [0, 1, 62, 28, 27, 36, 44, 6, 55, 20, 3, 10, 43, 25, 39, 41, 45, 15, 21, 8, 18, 2, 61, 56, 14];
const rotl = (v, n) => (n === 0 ? v : ((v << BigInt(n)) | (v >> BigInt(64 - n))) & MASK);

function keccakF(s) {
  for (let round = 0; round < 24; round++) {
    const c = [];
    for (let x = 0; x < 5; x++) c[x] = s[x] ^ s[x + 5] ^ s[x + 10] ^ s[x + 15] ^ s[x + 20];
    for (let x = 0; x < 5; x++) {
      const d = c[(x + 4) % 5] ^ rotl(c[(x + 1) % 5], 1);
      for (let y = 0; y < 25; y += 5) s[x + y] ^= d;
    }
    const b = new Array(25);
    for (let x = 0; x < 5; x++) {
      for (let y = 0; y < 5; y++) b[y + 5 * ((2 * x + 3 * y) % 5)] = rotl(s[x + 5 * y], ROT[x + 5 * y]);
    }
    for (let x = 0; x < 5; x++) {
      for (let y = 0; y < 25; y += 5) s[x + y] = b[x + y] ^ (~b[((x + 1) % 5) + y] & MASK & b[((x + 2) % 5) + y]);
    }
    s[0] ^= RC[round];
  }
}

function keccak256(bytes) {
  const rate = 136;
  const padded = Buffer.alloc((Math.floor(bytes.length / rate) + 1) * rate);
  bytes.copy(padded);
  padded[bytes.length] ^= 0x01;
  padded[padded.length - 1] ^= 0x80;
  const s = new Array(25).fill(0n);
  for (let off = 0; off < padded.length; off += rate) {
    for (let i = 0; i < rate / 8; i++) s[i] ^= padded.readBigUInt64LE(off + 8 * i);
    keccakF(s);
  }
  const out = Buffer.alloc(32);
  for (let i = 0; i < 4; i++) out.writeBigUInt64LE(s[i], 8 * i);
  return '0x' + out.toString('hex');
}

if (keccak256(Buffer.alloc(0)) !== '0xc5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470') {
  die('internal error: keccak256 self-test failed');
}

for (const name of names) {
  const srcRel = `src/${name}.sol`;
  const srcPath = path.join(repo, 'contracts', srcRel);
  const outPath = path.join(repo, 'contracts', 'out', `${name}.sol`, `${name}.json`);
  let source;
  try {
    source = fs.readFileSync(srcPath);
  } catch (e) {
    die(`cannot read contracts/${srcRel}: ${e.message}`);
  }
  let built;
  try {
    built = JSON.parse(fs.readFileSync(outPath, 'utf8'));
  } catch (e) {
    die(`cannot read contracts/out/${name}.sol/${name}.json (${e.code || e.message}); ` +
        'run `make artifacts` (forge build, then this script)');
  }

  // The artifact must come from the source as it is now.
  let meta = built.rawMetadata ? JSON.parse(built.rawMetadata) : built.metadata;
  const recorded = meta && meta.sources && meta.sources[srcRel] && meta.sources[srcRel].keccak256;
  if (!recorded) die(`contracts/out/${name}.sol/${name}.json has no metadata for ${srcRel}; run \`make artifacts\``);
  if (recorded !== keccak256(source)) {
    die(`contracts/out/${name}.sol/${name}.json was built from another version of contracts/${srcRel} ` +
        '(stale build); run `make artifacts`');
  }

  const code = built.bytecode && built.bytecode.object;
  const runtime = built.deployedBytecode && built.deployedBytecode.object;
  for (const [what, hex] of [['bytecode', code], ['deployedBytecode', runtime]]) {
    if (typeof hex !== 'string' || !/^0x([0-9a-f]{2})+$/.test(hex)) {
      die(`${name}: ${what}.object is missing, empty or unlinked`);
    }
  }
  if (!Array.isArray(built.abi)) die(`${name}: no abi`);

  const artifact = {
    contractName: name,
    sourceSha256: crypto.createHash('sha256').update(source).digest('hex'),
    abi: built.abi,
    bytecode: { object: code },
    deployedBytecode: { object: runtime },
  };
  fs.writeFileSync(path.join(outdir, `${name}.json`), JSON.stringify(artifact, null, 2) + '\n');
}
JS

if [[ $mode == write ]]; then
  for name in "${CONTRACTS[@]}"; do echo "wrote adapters/ethereum/artifacts/$name.json"; done
  exit 0
fi

stale=()
for name in "${CONTRACTS[@]}"; do
  committed="$dest/$name.json"
  if [[ ! -f $committed ]]; then
    echo "export-artifacts: adapters/ethereum/artifacts/$name.json is missing" >&2
    stale+=("$name")
  elif ! cmp -s "$outdir/$name.json" "$committed"; then
    echo "export-artifacts: adapters/ethereum/artifacts/$name.json differs from what contracts/ builds:" >&2
    diff -u --label "committed/$name.json" --label "built/$name.json" "$committed" "$outdir/$name.json" \
      | head -n 40 | cut -c1-200 >&2 || true
    stale+=("$name")
  fi
done
if (( ${#stale[@]} )); then
  echo "error: contract artifacts are out of date (${stale[*]}): run \`make artifacts\` and commit adapters/ethereum/artifacts/" >&2
  exit 1
fi
echo "artifacts up to date: ${CONTRACTS[*]}"
