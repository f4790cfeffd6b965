// A CSI socket in front of the real driver's, for e2e tests that must prove when a call
// happened: every RPC is passed on byte for byte (the driver sees what the sidecar sent),
// recorded decoded, and a test can hold the answer of a chosen call while it changes the
// cluster (e.g. deletes the claim while CreateVolume is in flight).
import * as grpc from '@grpc/grpc-js';
import fs from 'node:fs';
import { loadCsi } from '../../proto/load.js';

export interface GateCall {
  method: string;
  at: number;
  request: any;
}

export interface Hold {
  /** The held call's request, once it arrived. */
  arrived: Promise<any>;
  /** Resolves once the driver has answered it (the answer is not passed on yet). */
  answered: Promise<void>;
  /** Resolves once the caller has given up on the held call: it cancelled it, or the deadline it sent passed. */
  callerGone: Promise<void>;
  /** Pass the answer on (to a caller that may have given up already). */
  release(): void;
}

type Def = grpc.MethodDefinition<any, any>;

export class CsiGate {
  readonly calls: GateCall[] = [];
  private readonly holds: Array<{
    method: string;
    match: (req: any) => boolean;
    arrived: (r: any) => void;
    answered: () => void;
    callerGone: () => void;
    released: Promise<void>;
  }> = [];
  private readonly server = new grpc.Server();
  private readonly upstream: grpc.Client;

  private constructor(upstreamSocket: string) {
    this.upstream = new grpc.Client(`unix://${upstreamSocket}`, grpc.credentials.createInsecure(), { 'grpc.default_authority': 'localhost' });
  }

  static async start(upstreamSocket: string, socketPath: string): Promise<CsiGate> {
    const gate = new CsiGate(upstreamSocket);
    const csi = loadCsi().csi.v1 as unknown as Record<string, grpc.ServiceClientConstructor>;
    for (const svc of ['Identity', 'Controller', 'Node', 'GroupController']) {
      const defs = csi[svc].service as unknown as Record<string, Def>;
      const passthrough: Record<string, Def> = {};
      const impl: grpc.UntypedServiceImplementation = {};
      for (const [method, def] of Object.entries(defs)) {
        passthrough[method] = { ...def, requestDeserialize: (b: Buffer) => b, responseSerialize: (b: Buffer) => b };
        impl[method] = (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => void gate.forward(method, def, call, cb);
      }
      gate.server.addService(passthrough as grpc.ServiceDefinition, impl);
    }
    fs.rmSync(socketPath, { force: true });
    await new Promise<void>((resolve, reject) => gate.server.bindAsync(`unix://${socketPath}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())));
    return gate;
  }

  /** Holds the answer of the next call of `method` whose decoded request matches. */
  hold(method: string, match: (req: any) => boolean = () => true): Hold {
    let arrived!: (r: any) => void;
    let answered!: () => void;
    let callerGone!: () => void;
    let release!: () => void;
    const h = {
      method,
      match,
      arrived: (r: any) => arrived(r),
      answered: () => answered(),
      callerGone: () => callerGone(),
      released: new Promise<void>((r) => (release = r)),
    };
    const out: Hold = {
      arrived: new Promise((r) => (arrived = r)),
      answered: new Promise((r) => (answered = r)),
      callerGone: new Promise((r) => (callerGone = r)),
      release: () => release(),
    };
    this.holds.push(h);
    return out;
  }

  /** Recorded calls of `method` (decoded requests) matching `match`. */
  seen(method: string, match: (req: any) => boolean = () => true): GateCall[] {
    return this.calls.filter((c) => c.method === method && match(c.request));
  }

  private async forward(method: string, def: Def, call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>): Promise<void> {
    const request = def.requestDeserialize(call.request);
    this.calls.push({ method, at: Date.now(), request });
    const i = this.holds.findIndex((h) => h.method === method && h.match(request));
    const hold = i >= 0 ? this.holds.splice(i, 1)[0] : undefined;
    hold?.arrived(request);
    const deadline = call.getDeadline();
    if (hold) {
      // The caller's own clock ends the call at its deadline whether or not a cancel reaches us.
      call.once('cancelled', () => hold.callerGone());
      if (deadline !== Infinity) setTimeout(() => hold.callerGone(), Math.max(0, +deadline - Date.now())).unref();
    }
    const result = await new Promise<{ err: grpc.ServiceError | null; res?: Buffer }>((resolve) =>
      this.upstream.makeUnaryRequest(
        def.path,
        (b: Buffer) => b,
        (b: Buffer) => b,
        call.request,
        call.metadata,
        { deadline: deadline === Infinity ? undefined : deadline },
        (err, res) => resolve({ err, res }),
      ),
    );
    if (hold) {
      hold.answered();
      await hold.released;
    }
    if (result.err) cb(result.err);
    else cb(null, result.res);
  }

  async close(): Promise<void> {
    this.holds.splice(0);
    this.server.forceShutdown();
    this.upstream.close();
  }
}
