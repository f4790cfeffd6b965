// An in-memory Backend for the unit tests of the CSI services: it keeps records in maps and
// can be told to throw from any one method, so a test can check what the CO sees when a
// backend refuses at each step of each RPC. Pure logic only: it attaches no real device
// (attachedDevice answers /dev/zero, a device that is never mounted).
import { BackendError, type Backend, type Capacity, type GroupSnapshotRecord, type GroupSnapshotStore, type SnapshotBlocks, type SnapshotRecord, type HealthProblem, type StorageProblem, type VolumeRecord } from '../../driver/backends/backend.js';

/** A 1 GiB ext4 mount volume record of the fake backend; tests override what they care about. */
export function fakeVolume(fields: Partial<VolumeRecord> & Pick<VolumeRecord, 'id' | 'name'>): VolumeRecord {
  return {
    backend: 'fake',
    capacityBytes: 1n << 30n,
    accessType: 'mount',
    fsType: 'ext4',
    parameters: {},
    mutableParameters: {},
    topology: {},
    published: {},
    createdAt: new Date(0).toISOString(),
    ...fields,
  };
}

export type BackendMethod = Exclude<keyof Backend, 'name' | 'nodeLocal' | 'mutableParameters' | 'groupSnapshots'> | keyof GroupSnapshotStore;

export class FakeBackend implements Backend {
  readonly groupSnapshots: GroupSnapshotStore = this;
  readonly nodeLocal = false;
  readonly mutableParameters = { speed: ['slow', 'fast'] as const };
  readonly vols = new Map<string, VolumeRecord>();
  readonly snaps = new Map<string, SnapshotRecord>();
  readonly groups = new Map<string, GroupSnapshotRecord>();
  attached = true;
  /** The method that throws, and what it throws. */
  fail?: { method: BackendMethod; error: Error };
  /** Called by every method before it answers: a test's hook to block or run a child process. */
  hook?: (method: BackendMethod, arg: unknown) => Promise<void>;
  /** What storageHealth answers. */
  storage: StorageProblem[] = [];
  /** Set by tests of what a driver advertises when a backend has changed-block tracking. */
  snapshotBlocks?: SnapshotBlocks;

  /** A second fake beside the first needs a name of its own (the backend map's key, the IDs' middle part). */
  constructor(readonly name = 'fake') {}

  private async enter(method: BackendMethod, arg?: unknown): Promise<void> {
    if (this.fail?.method === method) throw this.fail.error;
    if (this.hook) await this.hook(method, arg);
  }

  async knowsNode(): Promise<boolean> {
    await this.enter('knowsNode');
    return true;
  }

  validateParameters(): void {}

  async init(): Promise<void> {}

  async capacity(): Promise<Capacity> {
    await this.enter('capacity');
    return { availableBytes: 1n << 40n };
  }

  async granularity(): Promise<bigint> {
    await this.enter('granularity');
    return 1n << 20n;
  }

  async getVolume(id: string): Promise<VolumeRecord | undefined> {
    await this.enter('getVolume', id);
    const v = this.vols.get(id);
    return v && structuredClone(v);
  }

  async listVolumes(): Promise<VolumeRecord[]> {
    await this.enter('listVolumes');
    return [...this.vols.values()].map((v) => structuredClone(v));
  }

  async createVolume(rec: VolumeRecord): Promise<VolumeRecord> {
    await this.enter('createVolume', rec);
    this.vols.set(rec.id, structuredClone(rec));
    return rec;
  }

  async saveVolume(rec: VolumeRecord): Promise<void> {
    await this.enter('saveVolume', rec);
    this.vols.set(rec.id, structuredClone(rec));
  }

  async expandVolume(rec: VolumeRecord, newBytes: bigint): Promise<VolumeRecord> {
    await this.enter('expandVolume', rec);
    const next = { ...rec, capacityBytes: newBytes };
    this.vols.set(rec.id, structuredClone(next));
    return next;
  }

  async deleteVolume(id: string): Promise<void> {
    await this.enter('deleteVolume', id);
    this.vols.delete(id);
  }

  async volumeHealth(): Promise<HealthProblem[]> {
    await this.enter('volumeHealth');
    return [];
  }

  async getSnapshot(id: string): Promise<SnapshotRecord | undefined> {
    await this.enter('getSnapshot', id);
    const s = this.snaps.get(id);
    return s && structuredClone(s);
  }

  async listSnapshots(): Promise<SnapshotRecord[]> {
    await this.enter('listSnapshots');
    return [...this.snaps.values()].map((s) => structuredClone(s));
  }

  async createSnapshots(recs: SnapshotRecord[]): Promise<SnapshotRecord[]> {
    await this.enter('createSnapshots', recs);
    for (const r of recs) this.snaps.set(r.id, structuredClone(r));
    return recs;
  }

  async deleteSnapshot(id: string): Promise<void> {
    await this.enter('deleteSnapshot', id);
    this.snaps.delete(id);
  }

  async getGroupSnapshot(id: string): Promise<GroupSnapshotRecord | undefined> {
    await this.enter('getGroupSnapshot', id);
    const g = this.groups.get(id);
    return g && structuredClone(g);
  }

  async saveGroupSnapshot(rec: GroupSnapshotRecord): Promise<void> {
    await this.enter('saveGroupSnapshot', rec);
    this.groups.set(rec.id, structuredClone(rec));
  }

  async deleteGroupSnapshotRecord(id: string): Promise<void> {
    await this.enter('deleteGroupSnapshotRecord', id);
    this.groups.delete(id);
  }

  async attach(rec: VolumeRecord): Promise<string> {
    await this.enter('attach', rec);
    return '/dev/zero';
  }

  async attachedDevice(rec: VolumeRecord): Promise<string | undefined> {
    await this.enter('attachedDevice', rec);
    return this.attached ? '/dev/zero' : undefined;
  }

  async detach(rec: VolumeRecord): Promise<void> {
    await this.enter('detach', rec);
  }

  async refreshDevice(rec: VolumeRecord): Promise<void> {
    await this.enter('refreshDevice', rec);
  }

  async storageHealth(): Promise<StorageProblem[]> {
    await this.enter('storageHealth');
    return structuredClone(this.storage);
  }
}

export { BackendError };
