// Changed-block tracking for the LVM backend, as far as LVM can honestly tell. A linear
// snapshot is a full copy in an LV of its own and lvm2 keeps no map of which of its
// extents were ever written, so every byte counts as allocated (a backup reads it all).
// Thin snapshots do have block maps, but only inside the pool's metadata (thin_dump of a
// metadata snapshot), which this backend does not read; so thin answers the same. A delta
// has no record to come from and is refused with the spec's "no changed block tracking".
import { BackendError, type BlockMap, type SnapshotBlocks, type SnapshotRecord } from '../backend.js';

export class LvmSnapshotBlocks implements SnapshotBlocks {
  async allocated(snap: SnapshotRecord): Promise<BlockMap> {
    const capacityBytes = BigInt(snap.sizeBytes);
    return { capacityBytes, ranges: capacityBytes > 0n ? [{ offset: 0n, length: capacityBytes }] : [] };
  }

  async delta(base: SnapshotRecord, target: SnapshotRecord): Promise<BlockMap> {
    throw new BackendError(
      'precondition',
      `the lvm backend keeps no record of which blocks changed between snapshots ${base.id} and ${target.id} (a linear snapshot is a copy with ` +
        `no block map; a thin one's map lies in the pool metadata, which this backend does not read): take a full backup of the target (GetMetadataAllocated) instead`,
    );
  }
}
