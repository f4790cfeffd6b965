// The sidecars' checks of the driver (its name at start, its health on every /healthz),
// each over a fresh connection: a kept gRPC channel to a driver that went away sits in
// reconnect back-off, so it would report a restarted driver as dead for seconds after it
// is back, and could mask which driver answers the socket now.
import type { Logger } from 'pino';
import { CsiClient, rpcErrorText } from './csi-client.js';
import type { CsiCallMetrics } from './metrics.js';

/** How long one GetPluginInfo may take while waiting for the driver. */
const PLUGIN_INFO_TIMEOUT_MS = 5_000;
/** The wait after the n-th failed GetPluginInfo grows by this much each time... */
const PLUGIN_INFO_RETRY_STEP_MS = 1_000;
/** ...up to this. */
const PLUGIN_INFO_RETRY_MAX_MS = 5_000;
const waitAfterAttemptMs = (attempt: number) => Math.min(PLUGIN_INFO_RETRY_STEP_MS * attempt, PLUGIN_INFO_RETRY_MAX_MS);

/** Calls fn with a client of its own on the driver's socket, closed afterwards. */
export async function withFreshClient<T>(csiAddress: string, metrics: CsiCallMetrics | undefined, fn: (csi: CsiClient) => Promise<T>): Promise<T> {
  const csi = new CsiClient(csiAddress);
  metrics?.instrument(csi);
  try {
    return await fn(csi);
  } finally {
    csi.close();
  }
}

/** Calls Probe; resolves to undefined when the driver is ready, else to the reason it is not. */
export async function probeDriver(csiAddress: string, timeoutMs: number, metrics?: CsiCallMetrics): Promise<string | undefined> {
  try {
    const res = await withFreshClient(csiAddress, metrics, (csi) => csi.Identity.Probe({}, timeoutMs));
    // ready is a BoolValue; unset means ready (CSI spec)
    return res?.ready?.value === false ? 'driver reports not ready' : undefined;
  } catch (err) {
    return `Probe failed: ${rpcErrorText(err)}`;
  }
}

export interface WaitForDriverOptions {
  log: Logger;
  metrics?: CsiCallMetrics;
  /** Give up (throw the last error) after this long; default: never. */
  timeoutMs?: number;
  /** Give up at once when this says the process is stopping. */
  stopped?: () => boolean;
}

/** Calls GetPluginInfo until the driver answers with a name, and returns the name. */
export async function waitForDriverName(csiAddress: string, opts: WaitForDriverOptions): Promise<string> {
  const deadline = opts.timeoutMs === undefined ? Infinity : Date.now() + opts.timeoutMs;
  for (let attempt = 1; ; attempt++) {
    try {
      const info = await withFreshClient(csiAddress, opts.metrics, (csi) => csi.Identity.GetPluginInfo({}, PLUGIN_INFO_TIMEOUT_MS));
      const name = String(info?.name ?? '');
      if (!name) throw new Error('GetPluginInfo returned an empty name');
      opts.log.info({ driver: name, version: info.vendor_version, attempt }, 'driver answered GetPluginInfo');
      return name;
    } catch (err) {
      if (opts.stopped?.()) throw new Error('stopped while waiting for the driver', { cause: err });
      if (Date.now() > deadline) throw err;
      opts.log.info({ csiAddress, attempt, err: rpcErrorText(err) }, 'waiting for the driver to answer GetPluginInfo');
      await new Promise((r) => setTimeout(r, waitAfterAttemptMs(attempt)));
    }
  }
}
