// What every CSI service shares: the backends, this node's identity, the locks, the log.
import type { Backend, VolumeRecord, SnapshotRecord } from './backends/backend.js';
import { KeyedLocks } from './locks.js';
import { BackgroundWork } from './background.js';
import type { Logger } from './log.js';
import { invalidArgument, notFound } from './errors.js';
import { parseId, type IdPrefix } from './ids.js';
import type { FsType } from './host/fs.js';

export interface DriverConfig {
  driverName: string;
  version: string;
  nodeId: string;
  topologyKey: string;
  maxVolumesPerNode: number;
  defaultFsType: FsType;
  defaultBackend: string;
  /** Where NodeStage keeps what it needs to find a staged volume again. */
  nodeStateDir: string;
  defaultVolumeBytes: bigint;
}

export class DriverContext {
  readonly locks = new KeyedLocks();
  /** Long work that outlives one caller's deadline (copies, wipes); retries see it finish. */
  readonly background: BackgroundWork;

  constructor(
    readonly config: DriverConfig,
    readonly backends: Map<string, Backend>,
    readonly log: Logger,
  ) {
    this.background = new BackgroundWork(log);
  }

  get topology(): Record<string, string> {
    return { [this.config.topologyKey]: this.config.nodeId };
  }

  backendFor(name: string): Backend {
    const b = this.backends.get(name);
    if (!b) throw invalidArgument(`backend ${JSON.stringify(name)} is not enabled on this driver; enabled: ${[...this.backends.keys()].join(', ')}`);
    return b;
  }

  /** The backend that owns an ID, or undefined when the ID is not one of ours. */
  ownerOf(id: string, field: string, prefix: IdPrefix): Backend | undefined {
    const p = parseId(id, field, prefix);
    return p ? this.backends.get(p.backend) : undefined;
  }

  async findVolume(id: string, field = 'volume_id'): Promise<{ backend: Backend; vol: VolumeRecord } | undefined> {
    const backend = this.ownerOf(id, field, 'vol');
    const vol = backend ? await backend.getVolume(id) : undefined;
    return backend && vol ? { backend, vol } : undefined;
  }

  async mustFindVolume(id: string, field = 'volume_id'): Promise<{ backend: Backend; vol: VolumeRecord }> {
    const found = await this.findVolume(id, field);
    if (!found) throw notFound(`volume ${id} does not exist`);
    return found;
  }

  async findSnapshot(id: string, field = 'snapshot_id'): Promise<{ backend: Backend; snap: SnapshotRecord } | undefined> {
    const backend = this.ownerOf(id, field, 'snap');
    const snap = backend ? await backend.getSnapshot(id) : undefined;
    return backend && snap ? { backend, snap } : undefined;
  }

  async allVolumes(): Promise<VolumeRecord[]> {
    const out: VolumeRecord[] = [];
    for (const b of this.backends.values()) out.push(...(await b.listVolumes()));
    return out;
  }
}

/** Creation time as a protobuf Timestamp from the record's fields. */
export function timestamp(seconds: bigint, nanos: number) {
  return { seconds: seconds.toString(), nanos };
}

export function nowTimestamp(): { seconds: bigint; nanos: number } {
  const ns = process.hrtime.bigint(); // monotonic; only used for sub-ms ordering below
  const ms = BigInt(Date.now());
  return { seconds: ms / 1000n, nanos: Number((ms % 1000n) * 1_000_000n + (ns % 1_000_000n)) };
}
