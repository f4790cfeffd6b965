// Changed-block tracking for the LVM backend, as far as LVM can honestly tell. A linear
// snapshot is a full copy in an LV of its own and lvm2 keeps no map of which of its
// extents were ever written, so every byte counts as allocated (a backup reads it all).
// Thin snapshots do have block maps, but only inside the pool's metadata (thin_dump of a
// metadata snapshot), which this backend does not read; so thin answers the same.
//
// A delta has no record to come from either, so it is computed: both snapshot LVs are read
// (as the block devices copies read them: the loop window over the PV without
// device-mapper, the activated LV with it) with O_DIRECT, so no page cached from what
// those extents held before can stand in for their bytes, and compared block by block.
import type { BlockMap, SnapshotBlocks, SnapshotRecord } from '../backend.js';
import { readOutput, type OutputReader } from '../../host/exec.js';
import { changedBlocks, compareBlockBytes } from '../../host/readcompare.js';

export interface LvmSnapshotDevices {
  /** Runs fn with the snapshot's LV as a block device, attached for fn if it was not (BackendError not-found when gone). */
  withSnapshotDevice<T>(snapshotId: string, fn: (device: string) => Promise<T>): Promise<T>;
}

/** The granularity of dd's reads: sector-aligned as O_DIRECT wants, large enough to keep dd cheap. */
const DD_BLOCK = '1M';

export class LvmSnapshotBlocks implements SnapshotBlocks {
  constructor(private readonly devices: LvmSnapshotDevices) {}

  async allocated(snap: SnapshotRecord): Promise<BlockMap> {
    const capacityBytes = BigInt(snap.sizeBytes);
    return { capacityBytes, ranges: capacityBytes > 0n ? [{ offset: 0n, length: capacityBytes }] : [] };
  }

  async delta(base: SnapshotRecord, target: SnapshotRecord): Promise<BlockMap> {
    const [a, b] = [BigInt(base.sizeBytes), BigInt(target.sizeBytes)];
    // A volume expanded between the two: its new tail, which the base lacks, counts as changed whole.
    const common = a < b ? a : b;
    const blockBytes = Math.min(compareBlockBytes(common), compareBlockBytes(b));
    const compared = await this.read(base, common, (x) => this.read(target, common, (y) => changedBlocks(x, y, { sizeBytes: common, blockBytes })));
    const ranges = b > common ? [...compared, { offset: common, length: b - common }] : compared;
    return { capacityBytes: b, ranges, fixedBlockBytes: BigInt(blockBytes) };
  }

  private read<T>(snap: SnapshotRecord, bytes: bigint, fn: (out: OutputReader) => Promise<T>): Promise<T> {
    return this.devices.withSnapshotDevice(snap.id, async (device) => {
      const out = await readOutput('dd', [`if=${device}`, `bs=${DD_BLOCK}`, `count=${bytes}`, 'iflag=direct,fullblock,count_bytes', 'status=none']);
      try {
        return await fn(out);
      } finally {
        await out.close();
      }
    });
  }
}
