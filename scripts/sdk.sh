#!/usr/bin/env bash
# Client SDKs generated from proto/ (`make sdk`; the tools come from `make tools`):
#
#   sdk/ts      TypeScript package `@blaze/sdk`: protobuf-es v2 messages and
#               service descriptors for Connect clients (src/gen), compiled to
#               dist/ with tsc. Import e.g. `@blaze/sdk/gen/blaze/controlplane/v1/apps_pb.js`.
#   sdk/python  Python modules: messages (`*_pb2.py`), type stubs (`*_pb2.pyi`)
#               and gRPC stubs (`*_pb2_grpc.py`). Put the directory on
#               PYTHONPATH; needs `protobuf` and `grpcio`.
#
# Everything but the Python gRPC stubs comes from `buf generate` (buf.gen.yaml,
# local plugins only). grpc_tools' gRPC generator is compiled into its protoc
# and has no plugin executable buf could run, so those stubs come from one
# `grpc_tools.protoc` run over the image buf builds from the same module.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS="$PWD/.tools"
BUF="$TOOLS/node_modules/.bin/buf"
PY="$TOOLS/venv/bin/python"
for tool in "$BUF" "$TOOLS/node_modules/.bin/protoc-gen-es" "$TOOLS/node_modules/.bin/tsc" "$PY"; do
  [ -x "$tool" ] || { echo "sdk: $tool is missing: run \`make tools\`" >&2; exit 1; }
done

# buf.gen.yaml cleans its output directories first, so removed protos do not
# leave stale modules behind.
"$BUF" generate

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$BUF" build -o "$work/image.binpb"
mapfile -t services < <(cd proto && grep -rl --include='*.proto' '^service ' . | sed 's|^\./||' | sort)
"$PY" -m grpc_tools.protoc --descriptor_set_in="$work/image.binpb" --grpc_python_out=sdk/python "${services[@]}"

# The TypeScript package around the generated code. Its dependencies resolve
# through a link to .tools/node_modules (the versions pinned by `make tools`);
# a consumer outside this repository installs the same versions from npm.
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)"
dep() { node -p "require('$TOOLS/node_modules/$1/package.json').version"; }
cat > sdk/ts/package.json <<EOF
{
  "name": "@blaze/sdk",
  "version": "$version",
  "description": "Blaze Service API: protobuf-es messages and service descriptors (generated from proto/, do not edit)",
  "type": "module",
  "exports": {
    "./*": "./dist/*"
  },
  "dependencies": {
    "@bufbuild/protobuf": "$(dep @bufbuild/protobuf)"
  },
  "peerDependencies": {
    "@connectrpc/connect": "$(dep @connectrpc/connect)"
  }
}
EOF
cat > sdk/ts/tsconfig.json <<'EOF'
{
  "compilerOptions": {
    "target": "ES2022",
    "module": "NodeNext",
    "moduleResolution": "NodeNext",
    "strict": true,
    "declaration": true,
    "rootDir": "src",
    "outDir": "dist",
    "types": []
  },
  "include": ["src"]
}
EOF
ln -sfn ../../.tools/node_modules sdk/ts/node_modules
rm -rf sdk/ts/dist
"$TOOLS/node_modules/.bin/tsc" -p sdk/ts

# `make sdk` is up to date while this is newer than its inputs.
touch sdk/.generated
echo "sdk: sdk/ts ($(find sdk/ts/src/gen -name '*.ts' | wc -l) modules), sdk/python ($(find sdk/python -name '*.py' | wc -l) modules)"
