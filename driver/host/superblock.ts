// How big a filesystem of this driver's kinds (ext*, xfs, btrfs) is, and which kind, read
// from their superblocks in the device's first 68 KiB: what dumpe2fs would say, and whether
// growfs has anything to do, without a process per NodeStage. Which signature a device holds
// is blkid's to say (fs.ts probe): it also looks beyond these 68 KiB. Anything this cannot
// read for certain (no superblock of ours, two of them) answers undefined.
import fs from 'node:fs/promises';

/** Up to the end of btrfs's superblock at 64 KiB; ext's is at 1 KiB, xfs's at 0. */
const HEAD_BYTES = 0x10000 + 0x1000;

const EXT_SB = 1024;
const EXT_MAGIC = 0xef53;
// libblkid's feature sets (superblocks/ext.c): what ext2 and ext3 understand; any other
// feature makes an ext4 (or ext4dev with the test flag); a journal device is jbd.
const COMPAT_HAS_JOURNAL = 0x4;
const INCOMPAT_JOURNAL_DEV = 0x8;
const INCOMPAT_64BIT = 0x80;
const RO_COMPAT_EXT2_3 = 0x1 | 0x2 | 0x4; // sparse_super, large_file, btree_dir
const INCOMPAT_EXT2 = 0x2 | 0x10; // filetype, meta_bg
const INCOMPAT_EXT3 = INCOMPAT_EXT2 | 0x4; // + needs_recovery
const FLAGS_TEST_FILESYS = 0x4;

export interface Superblock {
  type: 'ext2' | 'ext3' | 'ext4' | 'ext4dev' | 'jbd' | 'xfs' | 'btrfs';
  /** The filesystem's size as its superblock has it (ext*: block count x block size, as dumpe2fs computes it). */
  fsBytes: bigint;
  /** Its unit of growth: a device larger by less than this has nothing to grow into. */
  blockBytes: number;
}

/** The ext type libblkid would name for these feature words. */
function extType(compat: number, incompat: number, roCompat: number, flags: number): Superblock['type'] {
  if (incompat & INCOMPAT_JOURNAL_DEV) return 'jbd';
  const journal = (compat & COMPAT_HAS_JOURNAL) !== 0;
  const beyond = (supportedIncompat: number) => (roCompat & ~RO_COMPAT_EXT2_3) !== 0 || (incompat & ~supportedIncompat) !== 0;
  if (!journal && !beyond(INCOMPAT_EXT2)) return 'ext2';
  if (journal && !beyond(INCOMPAT_EXT3)) return 'ext3';
  return flags & FLAGS_TEST_FILESYS ? 'ext4dev' : 'ext4';
}

function ext(b: Buffer): Superblock | undefined {
  if (b.length < EXT_SB + 0x170 || b.readUInt16LE(EXT_SB + 0x38) !== EXT_MAGIC) return undefined;
  const logBlock = b.readUInt32LE(EXT_SB + 0x18);
  if (logBlock > 6) return undefined; // blocks of 1 KiB to 64 KiB only: not an ext superblock
  const incompat = b.readUInt32LE(EXT_SB + 0x60);
  const hi = incompat & INCOMPAT_64BIT ? BigInt(b.readUInt32LE(EXT_SB + 0x150)) : 0n;
  const blocks = (hi << 32n) | BigInt(b.readUInt32LE(EXT_SB + 0x4));
  return {
    type: extType(b.readUInt32LE(EXT_SB + 0x5c), incompat, b.readUInt32LE(EXT_SB + 0x64), b.readUInt32LE(EXT_SB + 0x160)),
    fsBytes: blocks * (1024n << BigInt(logBlock)),
    blockBytes: 1024 << logBlock,
  };
}

// xfs: big-endian sb_blocksize at 4, sb_dblocks (data blocks) at 8.
function xfs(b: Buffer): Superblock | undefined {
  if (b.length < 16 || b.toString('latin1', 0, 4) !== 'XFSB') return undefined;
  const bs = b.readUInt32BE(4);
  return bs >= 512 && bs <= 65536 && (bs & (bs - 1)) === 0 ? { type: 'xfs', fsBytes: b.readBigUInt64BE(8) * BigInt(bs), blockBytes: bs } : undefined;
}

// btrfs: the superblock at 64 KiB, its magic at +0x40, total_bytes at +0x70, sectorsize at +0x90.
const BTRFS_SB = 0x10000;
function btrfs(b: Buffer): Superblock | undefined {
  if (b.length < BTRFS_SB + 0x94 || b.toString('latin1', BTRFS_SB + 0x40, BTRFS_SB + 0x48) !== '_BHRfS_M') return undefined;
  return { type: 'btrfs', fsBytes: b.readBigUInt64LE(BTRFS_SB + 0x70), blockBytes: b.readUInt32LE(BTRFS_SB + 0x90) };
}

/** A LUKS header (either version) at the start: whatever else shows through is not to be named here. */
const isLuks = (b: Buffer) => b.length >= 6 && ['LUKS\xba\xbe', 'SKUL\xba\xbe'].includes(b.toString('latin1', 0, 6));

/**
 * The one filesystem of ours on the device, or undefined when there is none or more than one
 * signature (blkid then decides: it knows every other kind, and calls two "ambivalent").
 */
export async function readSuperblock(device: string): Promise<Superblock | undefined> {
  const h = await fs.open(device, 'r');
  let head: Buffer;
  try {
    const buf = Buffer.alloc(HEAD_BYTES);
    const { bytesRead } = await h.read(buf, 0, HEAD_BYTES, 0);
    head = buf.subarray(0, bytesRead);
  } finally {
    await h.close();
  }
  if (isLuks(head)) return undefined;
  const found = [ext(head), xfs(head), btrfs(head)].filter((s): s is Superblock => s !== undefined);
  return found.length === 1 ? found[0] : undefined;
}
