// A file's extent map (FIEMAP), through xfs_io: Node has no FIEMAP ioctl and no lseek with
// SEEK_DATA, and xfs_io's `fiemap -v` works on any filesystem with FIEMAP (XFS, ext4,
// btrfs), asks the kernel to flush first (FIEMAP_FLAG_SYNC, so no delayed allocation is
// left without a place), and prints holes and each extent's flags.
import { run } from './exec.js';
import type { Extent } from '../blockranges.js';

/** xfs_io prints offsets and lengths in 512-byte units, whatever the filesystem's block. */
const FIEMAP_UNIT = 512n;

export const FIEMAP_EXTENT = {
  UNKNOWN: 0x2,
  DELALLOC: 0x4,
  ENCODED: 0x8,
  DATA_INLINE: 0x200,
  DATA_TAIL: 0x400,
  UNWRITTEN: 0x800,
  SHARED: 0x2000,
} as const;

/**
 * Flags under which `physical` does not name where the extent's bytes lie, one byte per
 * byte: not yet placed, compressed or packed with other data. Such an extent can say the
 * file has data there, but not whether it is the same block as another file's.
 */
export const NOT_COMPARABLE = FIEMAP_EXTENT.UNKNOWN | FIEMAP_EXTENT.DELALLOC | FIEMAP_EXTENT.ENCODED | FIEMAP_EXTENT.DATA_INLINE | FIEMAP_EXTENT.DATA_TAIL;

// "   3: [2048..2079]:    2120..2151          32 0x2000" (an extent) or
// "   0: [0..7]:          hole                 8" (a hole).
const EXTENT_LINE = /^\s*\d+:\s+\[(\d+)\.\.(\d+)\]:\s+(?:hole\s+\d+|(\d+)\.\.(\d+)\s+\d+\s+0x([0-9a-fA-F]+))\s*$/;

/** The extents (holes left out) of `xfs_io -r -c "fiemap -v" FILE`'s output. */
export function parseFiemap(out: string): Extent[] {
  const extents: Extent[] = [];
  for (const line of out.split('\n')) {
    const m = EXTENT_LINE.exec(line);
    if (!m || m[3] === undefined) continue;
    const first = BigInt(m[1]);
    const last = BigInt(m[2]);
    extents.push({ logical: first * FIEMAP_UNIT, physical: BigInt(m[3]) * FIEMAP_UNIT, length: (last - first + 1n) * FIEMAP_UNIT, flags: parseInt(m[5], 16) });
  }
  return extents;
}

/** The file's extents, read-only (the file is not opened for writing). */
export async function fileExtents(file: string): Promise<Extent[]> {
  const r = await run('xfs_io', ['-r', '-c', 'fiemap -v', file]);
  return parseFiemap(r.stdout);
}
