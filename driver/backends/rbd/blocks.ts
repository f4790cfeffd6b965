// Changed-block tracking for the RBD backend. A snapshot here is an image of its own (a
// clone of a cut of the volume, with one snapshot of itself), so its allocated ranges are
// `rbd diff --whole-object` of that snapshot, the parent's data included: whole RADOS
// objects, the finest RBD reports without reading data (measured: without --whole-object,
// pacific reports an object from its start to its end of data, not what was written).
//
// A delta has no correct answer from rbd: the two snapshots are different images, and
// the cuts they were cloned from were moved to the source's trash snapshot namespace,
// which `rbd diff --from-snap` cannot name (it finds user snapshots only: "No such file
// or directory", measured). Comparing two clones' allocations would miss every rewrite
// of a block both have, so it is refused rather than guessed.
import { BackendError, type BlockMap, type Secrets, type SnapshotBlocks, type SnapshotRecord } from '../backend.js';
import { coalesce } from '../../blockranges.js';
import { imageSpec, type CephCli, type Credentials } from './cli.js';
import type { ClusterConfig, PoolRef } from './config.js';

export interface RbdSnapshotImages {
  cli: CephCli;
  /** The snapshot's image: its name, where it lies and who may read it; undefined when it is gone. */
  locate(snapshotId: string, secrets?: Secrets): Promise<{ image: string; cluster: ClusterConfig; pool: PoolRef; creds: Credentials } | undefined>;
}

interface DiffEntry {
  offset: number;
  length: number;
  exists: string;
}

export class RbdSnapshotBlocks implements SnapshotBlocks {
  constructor(private readonly images: RbdSnapshotImages) {}

  async allocated(snap: SnapshotRecord, secrets?: Secrets): Promise<BlockMap> {
    const at = await this.images.locate(snap.id, secrets);
    if (!at) throw new BackendError('not-found', `snapshot ${snap.id} has no image any more; it is being deleted`);
    // The image's own snapshot, which nothing writes: the image head could be changed by hand.
    const diff = (await this.images.cli.rbdJson<DiffEntry[] | null>(at.cluster, at.creds, ['diff', '--whole-object', imageSpec(at.pool, at.image, at.image)])) ?? [];
    const capacityBytes = BigInt(snap.sizeBytes);
    const ranges = diff
      .filter((d) => d.exists === 'true' && d.length > 0)
      .map((d) => ({ offset: BigInt(d.offset), length: BigInt(d.length) }))
      .map((r) => (r.offset + r.length > capacityBytes ? { offset: r.offset, length: capacityBytes - r.offset } : r))
      .filter((r) => r.length > 0n);
    return { capacityBytes, ranges: coalesce(ranges) };
  }

  async delta(base: SnapshotRecord, target: SnapshotRecord): Promise<BlockMap> {
    throw new BackendError(
      'precondition',
      `the rbd backend cannot tell what changed between snapshots ${base.id} and ${target.id}: each is a separate clone, and the cuts they ` +
        `were cloned from live in the source image's trash namespace, which rbd diff cannot compare. Take a full backup of the target ` +
        `(GetMetadataAllocated) instead`,
    );
  }
}
