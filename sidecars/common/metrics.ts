// The sidecars' CSI call metrics: the wrapper that makes every CSI call of a CsiClient
// count into tscsi_csi_operations_total / tscsi_csi_operation_duration_seconds. The
// registry itself is lib/metrics.ts (the driver exports through it too).
import type { CsiClient, CsiService, Rpcs } from './csi-client.js';
import { codeName } from './csi-client.js';
import { Registry, DEFAULT_BUCKETS, type Counter, type Histogram } from '../../lib/metrics.js';

export * from '../../lib/metrics.js';

/** The registry the sidecar processes share (one per process). */
export const defaultRegistry = new Registry();

const CSI_SERVICES: readonly CsiService[] = ['Identity', 'Controller', 'Node', 'GroupController'];

/**
 * CSI call metrics of one sidecar: tscsi_csi_operations_total{driver,method,code} and
 * tscsi_csi_operation_duration_seconds{driver,method,code}. `method` is the full gRPC
 * path ("/csi.v1.Controller/CreateVolume"), `code` the gRPC status name ("OK",
 * "DEADLINE_EXCEEDED", ...; "UNKNOWN" for errors without a code). The driver name is
 * usually learnt from GetPluginInfo after the client exists, hence settable.
 */
export class CsiCallMetrics {
  driver: string;
  readonly operations: Counter;
  readonly duration: Histogram;

  constructor(registry: Registry = defaultRegistry, driver = 'unknown', buckets: readonly number[] = DEFAULT_BUCKETS) {
    this.driver = driver;
    this.operations = registry.counter('tscsi_csi_operations_total', 'CSI calls made by this sidecar, by driver, method and gRPC status code.', [
      'driver',
      'method',
      'code',
    ]);
    this.duration = registry.histogram(
      'tscsi_csi_operation_duration_seconds',
      'Duration of the CSI calls made by this sidecar, in seconds.',
      ['driver', 'method', 'code'],
      buckets,
    );
  }

  record(method: string, code: string, seconds: number): void {
    const labels = { driver: this.driver, method, code };
    this.operations.inc(labels);
    this.duration.observe(labels, seconds);
  }

  /** Wraps every RPC of the client in place (and returns it) so that each call is recorded. */
  instrument<C extends CsiClient>(client: C): C {
    for (const service of CSI_SERVICES) {
      const rpcs = client[service] as Rpcs | undefined;
      if (!rpcs) continue;
      for (const method of Object.keys(rpcs)) {
        const inner = rpcs[method]!;
        if ((inner as { __instrumented?: boolean }).__instrumented) continue;
        const full = `/csi.v1.${service}/${method}`;
        // eslint-disable-next-line @typescript-eslint/no-explicit-any -- the wrapped RPC's own result (Rpcs)
        const wrapped = async (req?: object, deadlineMs?: number): Promise<any> => {
          const t0 = process.hrtime.bigint();
          const seconds = () => Number(process.hrtime.bigint() - t0) / 1e9;
          try {
            const res = await inner(req, deadlineMs);
            // the first GetPluginInfo answer names the driver for this and every later call
            if (this.driver === 'unknown' && full === '/csi.v1.Identity/GetPluginInfo' && typeof res?.name === 'string' && res.name) this.driver = res.name;
            this.record(full, 'OK', seconds());
            return res;
          } catch (err) {
            this.record(full, codeName(err) ?? 'UNKNOWN', seconds());
            throw err;
          }
        };
        (wrapped as { __instrumented?: boolean }).__instrumented = true;
        rpcs[method] = wrapped;
      }
    }
    return client;
  }
}
