// The one loader of the project's .proto files at run time: csi.proto for the driver, the
// sidecars, the CLI and the tests, pluginregistration.proto for the registrar. One set of
// options for all: int64 fields arrive as decimal strings so no capacity ever loses
// precision; enums arrive as their names; unset fields arrive with proto3 defaults; field
// names keep the .proto's snake_case.
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

/** Finds proto/<file> both from the sources (proto/) and from the build (dist/proto/). */
export function protoPath(file: string): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  for (const candidate of [path.join(here, file), path.join(here, '..', '..', 'proto', file)]) {
    if (fs.existsSync(candidate)) return candidate;
  }
  throw new Error(`${file} not found next to ${here}`);
}

const loaded = new Map<string, grpc.GrpcObject>();

/** The gRPC package object of proto/<file>, loaded once. */
export function loadProto(file: string): grpc.GrpcObject {
  let pkg = loaded.get(file);
  if (!pkg) {
    pkg = grpc.loadPackageDefinition(protoLoader.loadSync(protoPath(file), LOADER_OPTIONS));
    loaded.set(file, pkg);
  }
  return pkg;
}

export function loadCsi(): ProtoGrpcType {
  return loadProto('csi.proto') as unknown as ProtoGrpcType;
}

/** kubelet's plugin registration service (pluginregistration.Registration). */
export function loadRegistration(): grpc.ServiceClientConstructor {
  return (loadProto('pluginregistration.proto') as unknown as { pluginregistration: { Registration: grpc.ServiceClientConstructor } }).pluginregistration.Registration;
}
