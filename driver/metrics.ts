// The driver's own Prometheus metrics (--metrics-address): every RPC by method, backend and
// gRPC code, the child processes it runs, and at scrape time its pools, volumes and node
// attachments. Names follow the kubernetes-csi sidecars (csi_sidecar_operations_seconds:
// driver_name, method_name, grpc_status_code) and Prometheus' rules (base units in the name,
// _total on counters). The registry is lib/metrics.ts, shared with the sidecars: it already
// renders and checks the format, and prom-client would add a dependency for nothing more.
import * as grpc from '@grpc/grpc-js';
import { Registry, type Counter, type Gauge, type Histogram } from '../lib/metrics.js';
import { childProcessCounts, type ChildOutcome } from './host/exec.js';
import type { Backend } from './backends/backend.js';
import type { NodeStateStore } from './nodestate.js';
import type { Logger } from './log.js';
import type { RpcObserver } from './server.js';

/** Host tools finish in milliseconds (blkid) to minutes (a copy, mkfs of a big volume). */
const CHILD_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];

/** Scrape-time values are this fresh at most: a scrape storm runs the tools once per period. */
export const COLLECT_TTL_MS = 10_000;
/** A scrape waits this long for the tools; then it answers with what it had (and counts an error). */
export const COLLECT_TIMEOUT_MS = 5_000;

// Fields naming the object a call acts on; the backend is the middle part of the driver's IDs.
const ID_FIELDS = ['volume_id', 'source_volume_id', 'snapshot_id', 'group_snapshot_id', 'base_snapshot_id', 'target_snapshot_id'] as const;
const ID_BACKEND = /^(?:vol|snap|group)-([a-z][a-z0-9]{0,15})-/;
// Calls that pick a backend by StorageClass parameter (or the default) rather than by ID.
const BY_PARAMETER = new Set(['/csi.v1.Controller/CreateVolume', '/csi.v1.Controller/GetCapacity']);

export interface MetricsOptions {
  driverName: string;
  defaultBackend: string;
  backends: Map<string, Backend>;
  /**
   * Whether this driver reports shared backends' (RBD's) pools and counts too: they are the
   * same from every driver, so one driver reports them (--metrics-shared-backends, which the
   * controller Deployment sets), not every node plugin every scrape.
   */
  sharedBackends: boolean;
  /** The node service's records (node and all modes). */
  nodeState?: NodeStateStore;
  log: Logger;
  ttlMs?: number;
  timeoutMs?: number;
}

export class DriverMetrics implements RpcObserver {
  readonly registry = new Registry();
  private readonly operations: Histogram;
  private readonly inFlight: Gauge;
  private readonly aborted: Counter;
  private readonly children: Histogram;
  private readonly childSlots: Gauge;
  private readonly scrape: ScrapeGauges;

  constructor(private readonly opts: MetricsOptions) {
    const r = this.registry;
    this.operations = r.histogram('tscsi_operations_seconds', 'CSI calls served, by method, backend and gRPC status code, in seconds.', [
      'driver_name',
      'method_name',
      'backend',
      'grpc_status_code',
    ]);
    this.inFlight = r.gauge('tscsi_operations_in_flight', 'CSI calls being served now, by method.', ['driver_name', 'method_name']);
    this.aborted = r.counter(
      'tscsi_operations_aborted_total',
      'CSI calls answered ABORTED because another call held the same volume or snapshot (lock contention), by method.',
      ['driver_name', 'method_name'],
    );
    this.children = r.histogram('tscsi_child_processes_seconds', 'Host tools run (mkfs, cp, lvm, rbd, ...), by tool and outcome, in seconds.', ['tool', 'outcome'], CHILD_BUCKETS);
    this.childSlots = r.gauge('tscsi_child_processes', 'Host tools running now, and waiting for a slot (--max-child-processes).', ['state']);
    this.scrape = new ScrapeGauges(r, opts);
  }

  started(method: string): void {
    this.inFlight.inc({ driver_name: this.opts.driverName, method_name: method });
  }

  ended(method: string): void {
    this.inFlight.dec({ driver_name: this.opts.driverName, method_name: method });
  }

  answered(method: string, req: Record<string, unknown>, code: grpc.status, seconds: number): void {
    const d = this.opts.driverName;
    this.operations.observe({ driver_name: d, method_name: method, backend: this.backendOf(method, req), grpc_status_code: grpc.status[code] ?? String(code) }, seconds);
    if (code === grpc.status.ABORTED) this.aborted.inc({ driver_name: d, method_name: method });
  }

  /** For host/exec.ts's observer. */
  readonly childExited = (tool: string, outcome: ChildOutcome, seconds: number): void => {
    this.children.observe({ tool, outcome }, seconds);
  };

  /**
   * The backend a call acts on, or '' when none (Probe, listings) or the request names one
   * this driver does not have: a hostile ID must not mint a new series.
   */
  backendOf(method: string, req: Record<string, unknown>): string {
    const known = (b: unknown) => (typeof b === 'string' && this.opts.backends.has(b) ? b : '');
    if (BY_PARAMETER.has(method)) {
      const b = (req.parameters as Record<string, unknown> | undefined)?.backend;
      return b === undefined || b === '' ? this.opts.defaultBackend : known(b);
    }
    for (const f of ID_FIELDS) {
      const v = req[f];
      if (typeof v === 'string' && v) return known(ID_BACKEND.exec(v)?.[1]);
    }
    const group = req.source_volume_ids;
    if (Array.isArray(group) && typeof group[0] === 'string') return known(ID_BACKEND.exec(group[0])?.[1]);
    return '';
  }

  /** Fills the scrape-time gauges (cached, bounded); the registry renders them next. */
  async refresh(): Promise<void> {
    await this.scrape.refresh();
    // After the scrape-time reads: a read still running (a hung tool) shows here.
    const { running, waiting } = childProcessCounts();
    this.childSlots.set({ state: 'running' }, running);
    this.childSlots.set({ state: 'waiting' }, waiting);
  }
}

/**
 * What is read at scrape time: pool capacity and free bytes, volume and snapshot counts,
 * the node's staged and published volumes. Each source (a backend, the node records) stands
 * alone: it is read at most once per TTL and never twice at once, on its own clock, so a
 * source that hangs (an lvm behind a held VG lock, a Ceph that does not answer) holds back
 * only its own values, not the others' next reads. A scrape that outwaits the timeout gets
 * the last values and the slow reads go on. One that fails loses its series (old values must
 * not pass for current ones) and the others keep theirs; each source's last good read is a
 * timestamp, so a slow or failing source shows as stale.
 */
class ScrapeGauges {
  private readonly capacity: Gauge;
  private readonly free: Gauge;
  private readonly volumes: Gauge;
  private readonly snapshots: Gauge;
  private readonly staged: Gauge;
  private readonly published: Gauge;
  private readonly errors: Counter;
  private readonly lastSuccess: Gauge;
  private readonly sources: Source[];

  constructor(
    r: Registry,
    private readonly opts: MetricsOptions,
  ) {
    const pool = ['backend', 'pool', 'part'];
    this.capacity = r.gauge('tscsi_pool_capacity_bytes', 'Size of a backend pool (loop data pool, volume group, thin pool data or metadata, Ceph pool), in bytes.', pool);
    this.free = r.gauge('tscsi_pool_free_bytes', 'Free bytes of a backend pool, as the driver sees it (a Ceph pool: as its configured user sees it).', pool);
    this.volumes = r.gauge('tscsi_volumes', 'Volumes the driver holds, by backend.', ['backend']);
    this.snapshots = r.gauge('tscsi_snapshots', 'Snapshots the driver holds, by backend.', ['backend']);
    this.staged = r.gauge('tscsi_node_staged_volumes', 'Volumes staged on this node.');
    this.published = r.gauge('tscsi_node_published_volumes', 'Volume publications (targets) on this node.');
    this.errors = r.counter('tscsi_metrics_collect_errors_total', 'Scrape-time reads that failed or outlasted their time, by source (a backend, or node).', ['source']);
    this.lastSuccess = r.gauge(
      'tscsi_metrics_last_success_timestamp_seconds',
      'When each scrape-time source (a backend, or node) was last read in full, in seconds since the epoch; 0 before its first good read.',
      ['source'],
    );
    const backends = [...opts.backends.values()].filter((b) => b.nodeLocal || opts.sharedBackends);
    this.sources = backends.map((b) => ({ name: b.name, read: () => this.collectBackend(b), drop: () => this.dropBackend(b.name), freshUntil: 0 }));
    const nodeState = opts.nodeState;
    if (nodeState) this.sources.push({ name: 'node', read: () => this.collectNode(nodeState), drop: () => this.dropNode(), freshUntil: 0 });
    // Every source from the start: one that never succeeds shows as 0 (stale), not as absent.
    for (const { name } of this.sources) this.lastSuccess.set({ source: name }, 0);
  }

  async refresh(): Promise<void> {
    const reads = this.sources.map((s) => this.start(s)).filter((p) => p !== undefined);
    if (reads.length === 0) return;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), this.opts.timeoutMs ?? COLLECT_TIMEOUT_MS)));
    const r = await Promise.race([Promise.all(reads), late]).finally(() => clearTimeout(timer));
    if (r === 'late') this.errors.inc({ source: 'timeout' });
  }

  /** The source's read in progress (started now when its values are older than the TTL), or undefined when they are fresh. */
  private start(s: Source): Promise<void> | undefined {
    if (s.running || Date.now() < s.freshUntil) return s.running;
    s.running = this.guard(s.name, s.read, s.drop).finally(() => {
      s.running = undefined;
      s.freshUntil = Date.now() + (this.opts.ttlMs ?? COLLECT_TTL_MS);
    });
    return s.running;
  }

  private async guard(source: string, fn: () => Promise<void>, drop: () => void): Promise<void> {
    try {
      await fn();
      this.lastSuccess.set({ source }, Date.now() / 1000);
    } catch (err) {
      drop();
      this.errors.inc({ source });
      this.opts.log.warn({ source, err: err instanceof Error ? err.message : String(err) }, 'metrics: a scrape-time read failed');
    }
  }

  private dropBackend(name: string): void {
    for (const g of [this.capacity, this.free, this.volumes, this.snapshots]) g.removeWhere({ backend: name });
  }

  private dropNode(): void {
    this.staged.removeWhere({});
    this.published.removeWhere({});
  }

  private async collectBackend(b: Backend): Promise<void> {
    const [pools, counts] = await Promise.all([b.poolUsage ? b.poolUsage() : [], countsOf(b)]);
    // Set only once every read worked, and without the backend's old pools: one that went away stops being exported.
    this.capacity.removeWhere({ backend: b.name });
    this.free.removeWhere({ backend: b.name });
    for (const p of pools) {
      const labels = { backend: b.name, pool: p.pool, part: p.part };
      this.capacity.set(labels, Number(p.capacityBytes));
      if (p.freeBytes !== undefined) this.free.set(labels, Number(p.freeBytes));
    }
    this.volumes.set({ backend: b.name }, counts.volumes);
    this.snapshots.set({ backend: b.name }, counts.snapshots);
  }

  private async collectNode(store: NodeStateStore): Promise<void> {
    const all = await store.all();
    this.staged.set({}, all.filter((s) => s.stagingPath).length);
    this.published.set({}, all.reduce((n, s) => n + Object.keys(s.publications ?? {}).length, 0));
  }
}

/** One scrape-time source: its read, what a failed read removes, and its own refresh state. */
interface Source {
  name: string;
  read: () => Promise<void>;
  drop: () => void;
  running?: Promise<void>;
  freshUntil: number;
}

/** How many volumes and snapshots a backend holds: its cheap count where it has one, else its listings' lengths. */
async function countsOf(b: Backend): Promise<{ volumes: number; snapshots: number }> {
  if (b.countObjects) return b.countObjects();
  const [vols, snaps] = await Promise.all([b.listVolumes(), b.listSnapshots()]);
  return { volumes: vols.length, snapshots: snaps.length };
}
