#!/usr/bin/env bash
# Regenerates the committed TypeScript types of csi.proto (proto/gen) and their index (proto/types.ts).
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf proto/gen
npx proto-loader-gen-types --keepCase --longs=String --enums=String --defaults --oneofs \
  --grpcLib=@grpc/grpc-js --includeComments -O proto/gen proto/csi.proto
# The generated files import without extensions: they are type-only, so mark them CommonJS.
echo '{"type":"commonjs"}' > proto/gen/package.json
{
  echo "// Generated message types (proto-loader-gen-types), re-exported under one name."
  for f in proto/gen/csi/v1/*.ts; do n=$(basename "$f" .ts); echo "export type * from './gen/csi/v1/$n.js';"; done
} > proto/types.ts
