// A promise-based CSI client over a Unix socket, for the sidecars, the CLI and the tests.
// It dials with :authority "localhost", as kubelet and the kubernetes-csi sidecars do.
import * as grpc from '@grpc/grpc-js';
import { loadCsi } from '../../proto/load.js';
import { unixSocketPath } from '../../lib/socket.js';
import { messageOf } from '../../lib/process.js';

type Unary = (req: object, cb: (err: grpc.ServiceError | null, res: unknown) => void) => void;

export type CsiService = 'Identity' | 'Controller' | 'Node' | 'GroupController';

/** Every RPC of a service as `await client.Controller.CreateVolume({...})`. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- responses are typed by the .proto at run time, not here
export type Rpcs = Record<string, (req?: object, deadlineMs?: number) => Promise<any>>;

/** Every server-streaming RPC as `await client.SnapshotMetadata.GetMetadataAllocated({...})`: all its messages, in order. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- as Rpcs
export type StreamRpcs = Record<string, (req?: object, deadlineMs?: number) => Promise<any[]>>;

/** The deadline of a call that names none: long enough for a full-copy CreateVolume to answer. */
export const DEFAULT_RPC_DEADLINE_MS = 120_000;

export class CsiClient {
  readonly Identity: Rpcs;
  readonly Controller: Rpcs;
  readonly Node: Rpcs;
  readonly GroupController: Rpcs;
  readonly SnapshotMetadata: StreamRpcs;
  private readonly clients: grpc.Client[] = [];

  constructor(endpoint: string, readonly defaultDeadlineMs = DEFAULT_RPC_DEADLINE_MS) {
    const target = `unix://${unixSocketPath(endpoint)}`;
    const csi = loadCsi().csi.v1;
    const opts: grpc.ChannelOptions = { 'grpc.default_authority': 'localhost' };
    const make = (Ctor: grpc.ServiceClientConstructor): Rpcs => {
      const c = new Ctor(target, grpc.credentials.createInsecure(), opts);
      this.clients.push(c);
      const out: Rpcs = {};
      for (const method of Object.keys(Ctor.service)) {
        out[method] = (req = {}, deadlineMs = this.defaultDeadlineMs) =>
          new Promise((resolve, reject) => {
            const fn = (c as unknown as Record<string, (r: object, m: grpc.Metadata, o: grpc.CallOptions, cb: Parameters<Unary>[1]) => void>)[method];
            fn.call(c, req, new grpc.Metadata(), { deadline: Date.now() + deadlineMs }, (err, res) => (err ? reject(err) : resolve(res)));
          });
      }
      return out;
    };
    this.Identity = make(csi.Identity as unknown as grpc.ServiceClientConstructor);
    this.Controller = make(csi.Controller as unknown as grpc.ServiceClientConstructor);
    this.Node = make(csi.Node as unknown as grpc.ServiceClientConstructor);
    this.GroupController = make(csi.GroupController as unknown as grpc.ServiceClientConstructor);
    this.SnapshotMetadata = this.streaming(target, opts, csi.SnapshotMetadata as unknown as grpc.ServiceClientConstructor);
  }

  /** A stream's messages gathered until its end; a failed stream rejects with its status, whatever came before. */
  private streaming(target: string, opts: grpc.ChannelOptions, Ctor: grpc.ServiceClientConstructor): StreamRpcs {
    const c = new Ctor(target, grpc.credentials.createInsecure(), opts);
    this.clients.push(c);
    const out: StreamRpcs = {};
    for (const method of Object.keys(Ctor.service)) {
      out[method] = (req = {}, deadlineMs = this.defaultDeadlineMs) =>
        new Promise((resolve, reject) => {
          const fn = (c as unknown as Record<string, (r: object, m: grpc.Metadata, o: grpc.CallOptions) => grpc.ClientReadableStream<unknown>>)[method];
          const s = fn.call(c, req, new grpc.Metadata(), { deadline: Date.now() + deadlineMs });
          const got: unknown[] = [];
          s.on('data', (m) => got.push(m));
          s.on('error', reject);
          s.on('end', () => resolve(got));
        });
    }
    return out;
  }

  close(): void {
    for (const c of this.clients) c.close();
  }
}

/** The gRPC status name of an error from a call ("NOT_FOUND"), or undefined. */
export function codeName(err: unknown): string | undefined {
  const code = (err as { code?: number })?.code;
  return typeof code === 'number' ? grpc.status[code] : undefined;
}

/** Codes after which the call may still be running in the driver (the kubernetes-csi sidecars' list). */
const NOT_FINAL = new Set(['CANCELLED', 'DEADLINE_EXCEEDED', 'UNAVAILABLE', 'RESOURCE_EXHAUSTED', 'ABORTED']);

/** Whether a failed call is a final answer: the driver has stopped working on it (a mark of work in flight may go). */
export function isFinalError(err: unknown): boolean {
  const code = codeName(err);
  return code !== undefined && !NOT_FINAL.has(code);
}

/**
 * A failed call as the kubernetes-csi sidecars write it into events and object status
 * ("rpc error: code = NOT_FOUND desc = ..."), so users and their tools read one format;
 * anything that is not a gRPC status is its message.
 */
export function rpcErrorText(err: unknown): string {
  const code = codeName(err);
  if (code) return `rpc error: code = ${code} desc = ${(err as { details?: string }).details ?? ''}`;
  return messageOf(err);
}
