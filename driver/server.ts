// The gRPC server on a Unix socket, and the one request wrapper every RPC goes through:
// a log line per call (method, IDs, duration, code; secrets redacted) and every thrown
// error turned into a status with the code the spec prescribes.
import * as grpc from '@grpc/grpc-js';
import { loadCsi } from '../proto/load.js';
import { CallAbortedError, toCsiError } from './errors.js';
import { messageOf } from '../lib/process.js';
import { withCallSignal } from './host/exec.js';
import { redactSecrets, type Logger } from './log.js';
import { failpoint, MUTATING_RPCS } from './failpoints.js';
import { unixSocketPath, listenUnix, closeUnix } from '../lib/socket.js';

type Impl = object;

const ID_FIELDS = ['volume_id', 'snapshot_id', 'source_volume_id', 'group_snapshot_id', 'node_id', 'name'] as const;
/** Longer than any ID or name this driver accepts (128): a hostile value is logged cut, not whole. */
const LOGGED_ID_MAX_CHARS = 160;

function idsOf(req: Record<string, unknown>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const f of ID_FIELDS) {
    const v = req[f];
    if (typeof v === 'string' && v) out[f] = v.length > LOGGED_ID_MAX_CHARS ? `${v.slice(0, LOGGED_ID_MAX_CHARS)}…` : v;
  }
  return out;
}

/**
 * An AbortSignal that fires when the caller's deadline passes or it cancels the call, so
 * the child processes the call is waiting for are killed (host/exec.ts) and its locks freed.
 */
function callerGaveUp(call: Pick<Call, 'getDeadline' | 'once' | 'removeListener'>): { signal: AbortSignal; release: () => void } {
  const ac = new AbortController();
  const d = call.getDeadline();
  const deadline = d instanceof Date ? d.getTime() : d;
  const started = Date.now();
  let timer: NodeJS.Timeout | undefined;
  const onDeadline = () => ac.abort(new CallAbortedError('deadline', `the caller's deadline passed (${Date.now() - started} ms after the call began)`));
  if (Number.isFinite(deadline)) timer = setTimeout(onDeadline, Math.max(0, deadline - Date.now()));
  // grpc-js ends a call whose deadline passed itself and may report it as a cancellation.
  const onCancel = () => (Date.now() >= deadline - 5 ? onDeadline() : ac.abort(new CallAbortedError('cancelled', 'the caller cancelled the call')));
  call.once('cancelled', onCancel);
  return {
    signal: ac.signal,
    release: () => {
      clearTimeout(timer);
      call.removeListener('cancelled', onCancel);
    },
  };
}

export interface ServerLimits {
  /**
   * Controller, Node and GroupController calls in progress at once; one more is refused
   * with UNAVAILABLE at once (0 = no cap): not RESOURCE_EXHAUSTED, which CSI gives a meaning
   * of its own (CreateVolume: no room in the topology, so external-provisioner and ours send
   * the claim back to the scheduler; ControllerPublish: the node's volume limit). Identity calls (Probe) are never refused,
   * so a busy driver is not restarted by its liveness probe.
   */
  maxConcurrentRpcs: number;
  /** The largest response (grpc.max_send_message_length); list pages are kept well below it. */
  maxSendBytes: number;
}

/** gRPC's own default message limit: far above any CSI request, and list pages stay below it. */
const GRPC_MESSAGE_MAX_BYTES = 4 * 1024 * 1024;
export const DEFAULT_MAX_CONCURRENT_RPCS = 64;
export const DEFAULT_LIMITS: ServerLimits = { maxConcurrentRpcs: DEFAULT_MAX_CONCURRENT_RPCS, maxSendBytes: GRPC_MESSAGE_MAX_BYTES };

/**
 * Told of every call (the metrics, driver/metrics.ts): `method` is the gRPC path
 * ("/csi.v1.Node/NodeStageVolume"). started/ended bracket the work of a call that was let
 * in; answered comes once per call, refusals included.
 */
export interface RpcObserver {
  started(method: string): void;
  ended(method: string): void;
  answered(method: string, req: Record<string, unknown>, code: grpc.status, seconds: number): void;
}

/** Calls in progress, shared by every capped service of one server. */
class InFlight {
  count = 0;
  constructor(readonly max: number) {}
}

type Call = grpc.ServerUnaryCall<Record<string, unknown>, unknown> | grpc.ServerWritableStream<Record<string, unknown>, unknown>;
/** How a call's outcome leaves: a unary reply, or a stream's messages and its end status. */
interface Reply {
  /** Runs inside the call (its signal, its slot under the cap): a stream sends its messages here. */
  deliver(res: unknown, signal: AbortSignal): Promise<unknown>;
  ok(res: unknown): void;
  fail(code: grpc.status, details: string): void;
}

function unaryReply(callback: grpc.sendUnaryData<unknown>): Reply {
  return {
    deliver: async (res) => res,
    ok: (res) => callback(null, res),
    fail: (code, details) => callback({ code, details }),
  };
}

/**
 * A server-streaming call: the implementation returns an (async) iterable, each item one
 * message. Writing waits while the client does not read (gRPC flow control), so a slow
 * reader holds the work back rather than the driver's memory; a caller that went away
 * stops it (the abort signal fires and no further message is made).
 */
function streamReply(call: grpc.ServerWritableStream<Record<string, unknown>, unknown>): Reply {
  const drained = (signal: AbortSignal) =>
    new Promise<void>((resolve) => {
      const go = () => {
        call.removeListener('drain', go);
        signal.removeEventListener('abort', go);
        resolve();
      };
      call.once('drain', go);
      signal.addEventListener('abort', go, { once: true });
    });
  return {
    deliver: async (res, signal) => {
      for await (const msg of res as AsyncIterable<unknown>) {
        if (signal.aborted) throw signal.reason;
        if (!call.write(msg)) await drained(signal);
      }
      if (signal.aborted) throw signal.reason;
    },
    ok: () => call.end(),
    fail: (code, details) => call.emit('error', { code, details }),
  };
}

/** Wraps every method of a service implementation for grpc-js: unary and server-streaming alike. */
export function wrapService(service: grpc.ServiceDefinition, impl: Impl, log: Logger, inFlight?: InFlight, observer?: RpcObserver): grpc.UntypedServiceImplementation {
  const out: grpc.UntypedServiceImplementation = {};
  for (const [method, def] of Object.entries(service)) {
    const fn = (impl as Record<string, unknown>)[method];
    const rpcPath = def.path;
    const serve = (call: Call, r: Reply) => {
      const started = process.hrtime.bigint();
      const req = call.request ?? {};
      const ids = idsOf(req);
      const done = (code: grpc.status, err?: unknown) => {
        const ms = Number(process.hrtime.bigint() - started) / 1e6;
        observer?.answered(rpcPath, req, code, ms / 1000);
        const fields = { rpc: method, ...ids, ms: Math.round(ms * 10) / 10, code: grpc.status[code] };
        if (code === grpc.status.OK) log.info(fields, 'rpc');
        else if (code === grpc.status.INTERNAL || code === grpc.status.DEADLINE_EXCEEDED) log.error({ ...fields, err: messageOf(err), req: redactSecrets(req) }, 'rpc failed');
        else log.warn({ ...fields, err: messageOf(err) }, 'rpc refused');
      };
      if (typeof fn !== 'function') {
        done(grpc.status.UNIMPLEMENTED);
        r.fail(grpc.status.UNIMPLEMENTED, `${method} is not implemented by this plugin`);
        return;
      }
      // Refused, not queued: a queue would hold calls past their deadlines and grow without
      // bound behind a stalled backend, while the CO already retries with back-off.
      if (inFlight && inFlight.max > 0 && inFlight.count >= inFlight.max) {
        const details = `the driver is already serving ${inFlight.count} calls (--max-concurrent-rpcs ${inFlight.max}); retry later`;
        done(grpc.status.UNAVAILABLE, new Error(details));
        r.fail(grpc.status.UNAVAILABLE, details);
        return;
      }
      if (inFlight) inFlight.count++;
      observer?.started(rpcPath);
      const abort = callerGaveUp(call);
      // A stream's messages are made while they are written, so all of it runs under the
      // call's signal and counts against the cap until its last message.
      Promise.resolve()
        .then(() => withCallSignal(abort.signal, async () => r.deliver(await (fn as (r: unknown) => unknown).call(impl, req), abort.signal)))
        .finally(() => {
          abort.release();
          if (inFlight) inFlight.count--;
          observer?.ended(rpcPath);
        })
        .then(
          (res) => {
            if (MUTATING_RPCS.has(method)) failpoint('rpc.beforeReply');
            done(grpc.status.OK);
            r.ok(res);
          },
          (err: unknown) => {
            // The one place a thrown value becomes a status: CsiErrors, backend refusals and
            // aborted work keep their meaning; anything else is a bug or an unexpected failure.
            const known = toCsiError(err);
            const code = known?.code ?? grpc.status.INTERNAL;
            done(code, err);
            r.fail(code, known ? known.message : `internal error: ${messageOf(err)}`);
          },
        );
    };
    out[method] = def.responseStream
      ? (call: grpc.ServerWritableStream<Record<string, unknown>, unknown>) => serve(call, streamReply(call))
      : (call: grpc.ServerUnaryCall<Record<string, unknown>, unknown>, callback: grpc.sendUnaryData<unknown>) => serve(call, unaryReply(callback));
  }
  return out;
}

export interface Services {
  identity: Impl;
  controller?: Impl;
  node?: Impl;
  groupController?: Impl;
  snapshotMetadata?: Impl;
}

export class CsiServer {
  private readonly server: grpc.Server;
  private socketPath = '';

  constructor(
    services: Services,
    private readonly log: Logger,
    limits: Partial<ServerLimits> = {},
    observer?: RpcObserver,
  ) {
    const l = { ...DEFAULT_LIMITS, ...limits };
    this.server = new grpc.Server({
      'grpc.max_receive_message_length': GRPC_MESSAGE_MAX_BYTES,
      'grpc.max_send_message_length': l.maxSendBytes,
    });
    const inFlight = new InFlight(l.maxConcurrentRpcs);
    const csi = loadCsi().csi.v1;
    this.server.addService(csi.Identity.service, wrapService(csi.Identity.service, services.identity, log, undefined, observer));
    if (services.controller) this.server.addService(csi.Controller.service, wrapService(csi.Controller.service, services.controller, log, inFlight, observer));
    if (services.groupController) {
      this.server.addService(csi.GroupController.service, wrapService(csi.GroupController.service, services.groupController, log, inFlight, observer));
    }
    if (services.snapshotMetadata) {
      this.server.addService(csi.SnapshotMetadata.service, wrapService(csi.SnapshotMetadata.service, services.snapshotMetadata, log, inFlight, observer));
    }
    if (services.node) this.server.addService(csi.Node.service, wrapService(csi.Node.service, services.node, log, inFlight, observer));
  }

  /** Listens on unix:///path (or a bare path), replacing a stale socket; the socket is mode 0600. */
  async listen(endpoint: string): Promise<void> {
    const p = unixSocketPath(endpoint);
    await listenUnix(this.server, p, this.log);
    this.socketPath = p;
    this.log.info({ socket: p }, 'listening');
  }

  /**
   * Stops taking calls, lets the ones in flight finish (up to graceMs), removes the socket.
   * Resolves true when every call finished, false when they were cut off.
   */
  async shutdown(graceMs: number): Promise<boolean> {
    if (!this.socketPath) return new Promise<boolean>((resolve) => this.server.tryShutdown(() => resolve(true)));
    return closeUnix(this.server, this.socketPath, graceMs, this.log);
  }
}
