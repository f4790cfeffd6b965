// Loads csi.proto at run time (the driver and the sidecars share this loader).
// int64 fields arrive as decimal strings so no capacity ever loses precision;
// enums arrive as their names; unset fields arrive with proto3 defaults.
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import fs from 'node:fs';
import type { ProtoGrpcType } from './gen/csi.js';

export type { ProtoGrpcType };

export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
};

/** Finds proto/csi.proto both from the sources (proto/) and from the build (dist/proto/). */
export function csiProtoPath(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  for (const candidate of [path.join(here, 'csi.proto'), path.join(here, '..', '..', 'proto', 'csi.proto')]) {
    if (fs.existsSync(candidate)) return candidate;
  }
  throw new Error(`csi.proto not found next to ${here}`);
}

let cached: ProtoGrpcType | undefined;

export function loadCsi(): ProtoGrpcType {
  if (!cached) {
    const def = protoLoader.loadSync(csiProtoPath(), LOADER_OPTIONS);
    cached = grpc.loadPackageDefinition(def) as unknown as ProtoGrpcType;
  }
  return cached;
}
