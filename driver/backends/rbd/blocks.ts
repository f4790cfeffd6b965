// Changed-block tracking for the RBD backend. A snapshot here is an image of its own (a
// clone of a cut of the volume, with one snapshot of itself), so its allocated ranges are
// `rbd diff --whole-object` of that snapshot, the parent's data included: whole RADOS
// objects, the finest RBD reports without reading data (measured: without --whole-object,
// pacific reports an object from its start to its end of data, not what was written).
//
// A delta has no block map to come from: the two snapshots are different images, and the
// cuts they were cloned from were moved to the source's trash snapshot namespace, which
// `rbd diff --from-snap` cannot name (it finds user snapshots only: "No such file or
// directory", measured), and comparing two clones' allocations would miss every rewrite of
// a block both have. So the delta is computed: both snapshots are read (rbd export, which
// reads a clone's parent data too) and compared block by block, except where neither has
// an object, which reads as zeros in both.
import { BackendError, type BlockMap, type Secrets, type SnapshotBlocks, type SnapshotRecord } from '../backend.js';
import { coalesce, outsideBoth, type ByteRange } from '../../blockranges.js';
import { readOutput, type OutputReader } from '../../host/exec.js';
import { changedBlocks, compareBlockBytes } from '../../host/readcompare.js';
import { imageSpec, type CephCli, type Credentials } from './cli.js';
import type { ClusterConfig, PoolRef } from './config.js';

export interface RbdSnapshotImages {
  cli: CephCli;
  /** The snapshot's image: its name, where it lies and who may read it; undefined when it is gone. */
  locate(snapshotId: string, secrets?: Secrets): Promise<Located | undefined>;
}

type Located = { image: string; cluster: ClusterConfig; pool: PoolRef; creds: Credentials };

interface DiffEntry {
  offset: number;
  length: number;
  exists: string;
}

export class RbdSnapshotBlocks implements SnapshotBlocks {
  constructor(private readonly images: RbdSnapshotImages) {}

  async allocated(snap: SnapshotRecord, secrets?: Secrets): Promise<BlockMap> {
    return this.allocatedAt(snap, await this.mustLocate(snap, secrets));
  }

  async delta(base: SnapshotRecord, target: SnapshotRecord, secrets?: Secrets): Promise<BlockMap> {
    const [at, bt] = [await this.mustLocate(base, secrets), await this.mustLocate(target, secrets)];
    const [a, b] = [await this.allocatedAt(base, at), await this.allocatedAt(target, bt)];
    // A volume expanded between the two: its new tail, which the base lacks, counts as changed where the target has data.
    const common = a.capacityBytes < b.capacityBytes ? a.capacityBytes : b.capacityBytes;
    const blockBytes = Math.min(compareBlockBytes(common), compareBlockBytes(b.capacityBytes));
    const block = BigInt(blockBytes);
    const compared = await this.export(at, (x) =>
      this.export(bt, (y) => changedBlocks(x, y, { sizeBytes: common, blockBytes, same: outsideBoth(a.ranges, b.ranges, common) })),
    );
    const down = (n: bigint) => n - (n % block);
    const grown = b.ranges
      .filter((r) => r.offset + r.length > common)
      .map((r) => ({ from: down(r.offset > common ? r.offset : common), to: down(r.offset + r.length + block - 1n) }))
      .map(({ from, to }) => ({ offset: from, length: to - from }));
    return { capacityBytes: b.capacityBytes, ranges: coalesce([...compared, ...grown]), fixedBlockBytes: block };
  }

  private async mustLocate(snap: SnapshotRecord, secrets?: Secrets): Promise<Located> {
    const at = await this.images.locate(snap.id, secrets);
    if (!at) throw new BackendError('not-found', `snapshot ${snap.id} has no image any more; it is being deleted`);
    return at;
  }

  private async allocatedAt(snap: SnapshotRecord, at: Located): Promise<BlockMap & { ranges: ByteRange[] }> {
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

  /** Runs fn with the snapshot's bytes coming out of `rbd export` (its key file exists meanwhile). */
  private export<T>(at: Located, fn: (out: OutputReader) => Promise<T>): Promise<T> {
    const { cli } = this.images;
    return cli.withKeyFile(at.creds, async (kf) => {
      const args = [...cli.connArgs(at.cluster, at.creds.user, kf), 'export', '--no-progress', imageSpec(at.pool, at.image, at.image), '-'];
      const out = await readOutput('rbd', args, { env: { CEPH_ARGS: '' } });
      try {
        return await fn(out);
      } finally {
        await out.close();
      }
    });
  }
}
