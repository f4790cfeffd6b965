// The node plugin registrar: serves kubelet's plugin Registration API
// (proto/pluginregistration.proto) on <plugins_registry>/<driver>-reg.sock so that kubelet
// finds the CSI driver's socket, calls NodeGetInfo on it and fills in CSINode, the node
// ID annotation and the topology labels.
import * as grpc from '@grpc/grpc-js';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import { loadRegistration } from '../../proto/load.js';
import { listenUnix, closeUnix } from '../../lib/socket.js';

/** How long kubelet's calls in flight may take to finish when the registrar stops. */
const STOP_GRACE_MS = 5_000;

export interface PluginInfo {
  type: string;
  name: string;
  endpoint: string;
  supported_versions: string[];
}

export interface RegistrationStatus {
  plugin_registered: boolean;
  error: string;
}

export interface RegistrarOptions {
  driverName: string;
  /** The CSI socket path as kubelet sees it. */
  kubeletRegistrationPath: string;
  /** kubelet's plugin registry directory. */
  pluginRegistrationDir: string;
  supportedVersions?: string[];
  log: Logger;
  /** Called when kubelet reports that the registration failed (main exits non-zero). */
  onRegistrationFailed?: (error: string) => void;
}

export class Registrar {
  readonly socketPath: string;
  private server?: grpc.Server;
  /** The last status kubelet sent (undefined until it has called NotifyRegistrationStatus). */
  status?: RegistrationStatus;
  getInfoCalls = 0;

  constructor(private readonly opts: RegistrarOptions) {
    if (!path.isAbsolute(opts.kubeletRegistrationPath)) throw new Error(`--kubelet-registration-path must be absolute: ${opts.kubeletRegistrationPath}`);
    if (!/^[A-Za-z0-9.\-_]+$/.test(opts.driverName)) throw new Error(`driver name ${JSON.stringify(opts.driverName)} cannot name a socket file`);
    this.socketPath = path.join(opts.pluginRegistrationDir, `${opts.driverName}-reg.sock`);
  }

  info(): PluginInfo {
    return {
      type: 'CSIPlugin',
      name: this.opts.driverName,
      endpoint: this.opts.kubeletRegistrationPath,
      supported_versions: this.opts.supportedVersions ?? ['1.0.0'],
    };
  }

  async start(): Promise<void> {
    const log = this.opts.log;
    await fs.mkdir(this.opts.pluginRegistrationDir, { recursive: true });
    const server = new grpc.Server();
    server.addService(loadRegistration().service, {
      GetInfo: (_call: grpc.ServerUnaryCall<object, PluginInfo>, cb: grpc.sendUnaryData<PluginInfo>) => {
        this.getInfoCalls++;
        const info = this.info();
        log.info({ rpc: 'GetInfo', ...info }, 'kubelet asked for the plugin info');
        cb(null, info);
      },
      NotifyRegistrationStatus: (call: grpc.ServerUnaryCall<RegistrationStatus, object>, cb: grpc.sendUnaryData<object>) => {
        const st = { plugin_registered: Boolean(call.request.plugin_registered), error: call.request.error ?? '' };
        this.status = st;
        cb(null, {});
        if (st.plugin_registered) {
          log.info({ rpc: 'NotifyRegistrationStatus', driver: this.opts.driverName, registered: true }, 'kubelet registered the plugin');
        } else {
          log.error({ rpc: 'NotifyRegistrationStatus', driver: this.opts.driverName, registered: false, error: st.error }, 'kubelet failed to register the plugin');
          // answer kubelet first, then let main decide (it exits non-zero)
          setImmediate(() => this.opts.onRegistrationFailed?.(st.error));
        }
      },
    });
    await listenUnix(server, this.socketPath, log);
    this.server = server;
    log.info({ socket: this.socketPath, driver: this.opts.driverName, endpoint: this.opts.kubeletRegistrationPath }, 'registration socket listening');
  }

  /** Why the registrar is unhealthy, or undefined when it is fine (for /healthz). */
  async problem(): Promise<string | undefined> {
    const st = await fs.lstat(this.socketPath).catch(() => undefined);
    if (!st) return `registration socket ${this.socketPath} is missing`;
    if (!st.isSocket()) return `${this.socketPath} is not a socket`;
    if (this.status && !this.status.plugin_registered) return `kubelet failed to register the plugin: ${this.status.error}`;
    return undefined;
  }

  /** Stops serving and removes the socket (only if it is still a socket). */
  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    await closeUnix(server, this.socketPath, STOP_GRACE_MS, this.opts.log).catch((err: unknown) =>
      this.opts.log.warn({ err: String(err) }, 'could not remove the registration socket'),
    );
    this.opts.log.info({ socket: this.socketPath }, 'registration socket removed');
  }
}
