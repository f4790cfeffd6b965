// Changed-block tracking for the loop backend. A snapshot is a sparse file reflinked from
// its volume's file, so its allocated ranges are the file's extents, and between two
// snapshots of one volume a block still shared (the same physical block in both files)
// cannot have changed: the filesystem copies a shared block before writing it.
import fs from 'node:fs/promises';
import { BackendError, type BlockMap, type SnapshotBlocks, type SnapshotRecord } from '../backend.js';
import { allocatedRanges, changedRanges, type Extent } from '../../blockranges.js';
import { fileExtents, NOT_COMPARABLE } from '../../host/extents.js';

export interface LoopSnapshotFiles {
  dataDir: string;
  /** Whether snapshots are reflinks; without, they are copies sharing nothing. */
  reflink(): boolean;
  snapshotFile(id: string): string;
}

export class LoopSnapshotBlocks implements SnapshotBlocks {
  constructor(private readonly files: LoopSnapshotFiles) {}

  async allocated(snap: SnapshotRecord): Promise<BlockMap> {
    const { size, extents } = await this.mapOf(snap);
    return { capacityBytes: size, ranges: allocatedRanges(extents) };
  }

  async delta(base: SnapshotRecord, target: SnapshotRecord): Promise<BlockMap> {
    if (!this.files.reflink()) {
      throw new BackendError(
        'precondition',
        `the loop backend's data directory ${this.files.dataDir} cannot reflink, so its snapshots are full copies that share no blocks and ` +
          `there is no record of what changed between them: take a full backup (GetMetadataAllocated), or run the driver with --data-pool-size`,
      );
    }
    const [b, t] = [await this.mapOf(base), await this.mapOf(target)];
    for (const e of [...b.extents, ...t.extents]) {
      if (e.flags & NOT_COMPARABLE) {
        throw new BackendError(
          'precondition',
          `the filesystem under ${this.files.dataDir} reports an extent at byte ${e.logical} of a snapshot file ` +
            `without a plain physical place (FIEMAP flags 0x${e.flags.toString(16)}), so shared blocks cannot be told apart: take a full backup`,
        );
      }
    }
    return { capacityBytes: t.size, ranges: changedRanges(b.extents, t.extents) };
  }

  /** The snapshot file's size and extents; a file that is gone is a snapshot that is gone. */
  private async mapOf(snap: SnapshotRecord): Promise<{ size: bigint; extents: Extent[] }> {
    const file = this.files.snapshotFile(snap.id);
    const st = await fs.stat(file, { bigint: true }).catch(() => undefined);
    if (!st) throw new BackendError('not-found', `snapshot ${snap.id} has no image file any more (${file}); it is being deleted`);
    return { size: st.size, extents: await fileExtents(file) };
  }
}
