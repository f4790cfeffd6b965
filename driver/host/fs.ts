// Filesystems on block devices: probe, make, grow, freeze, and statfs figures.
import fsp from 'node:fs/promises';
import { run, CommandError } from './exec.js';
import { failedPrecondition } from '../errors.js';
import { readSuperblock } from './superblock.js';
import { backingFile, loopOffset } from './loop.js';

export const SUPPORTED_FS = ['ext4', 'ext3', 'xfs', 'btrfs'] as const;
export type FsType = (typeof SUPPORTED_FS)[number];

/** The smallest volume mkfs accepts for each filesystem (measured on xfsprogs 6.1 / btrfs-progs 6.2). */
export const MIN_FS_BYTES: Record<FsType, bigint> = {
  ext4: 16n << 20n,
  ext3: 16n << 20n,
  xfs: 300n << 20n,
  btrfs: 114294784n,
};

export function isSupportedFs(t: string): t is FsType {
  return (SUPPORTED_FS as readonly string[]).includes(t);
}

export interface Probe {
  type?: string;
  uuid?: string;
  /** Its size and unit of growth from the superblock, when that was read here. */
  fsBytes?: bigint;
  blockBytes?: number;
}

/**
 * What is on the device; undefined when blkid finds nothing (a blank device). blkid always
 * names it: a superblock of ours at the start says nothing of signatures elsewhere (an md
 * RAID member keeps its own at the device's end, and mounting the member directly would
 * corrupt its array). The superblock read only adds the size, so growth needs no dumpe2fs.
 */
export async function probe(device: string): Promise<Probe | undefined> {
  // A whole sparse file that was never written reads as zeros: nothing for blkid to find.
  // Not a window at an offset (a block count says nothing of one part), nor an unlinked file
  // (the path may name another file now).
  const [back, offset] = await Promise.all([backingFile(device), loopOffset(device)]);
  if (back && !back.deleted && offset === 0) {
    const st = await fsp.stat(back.path).catch(() => undefined);
    if (st && st.blocks === 0) return undefined;
  }
  const [r, sb] = await Promise.all([run('blkid', ['-p', '-o', 'export', device], { okCodes: [2] }), readSuperblock(device).catch(() => undefined)]);
  if (r.exitCode === 2 || !r.stdout.trim()) return undefined;
  const kv: Record<string, string> = {};
  for (const line of r.stdout.split('\n')) {
    const i = line.indexOf('=');
    if (i > 0) kv[line.slice(0, i)] = line.slice(i + 1);
  }
  const found: Probe = { type: kv.TYPE, uuid: kv.UUID };
  return sb && sb.type === found.type ? { ...found, fsBytes: sb.fsBytes, blockBytes: sb.blockBytes } : found;
}

export async function mkfs(device: string, fsType: FsType, extraArgs: string[] = []): Promise<void> {
  switch (fsType) {
    case 'ext4':
    case 'ext3':
      // lazy init: the loop file stays sparse, the kernel zeroes in the background
      await run(`mkfs.${fsType}`, ['-q', '-F', '-E', 'lazy_itable_init=1,lazy_journal_init=1', ...extraArgs, device], { failpoint: 'host.mkfs' });
      return;
    case 'xfs':
      await run('mkfs.xfs', ['-q', '-f', ...extraArgs, device], { failpoint: 'host.mkfs' });
      return;
    case 'btrfs':
      await run('mkfs.btrfs', ['-q', '-f', ...extraArgs, device], { failpoint: 'host.mkfs' });
      return;
  }
}

/** Options this driver always adds: xfs clones share their source's UUID, which xfs refuses twice. */
export function implicitMountOptions(fsType: string): string[] {
  return fsType === 'xfs' ? ['nouuid'] : [];
}

/** ext* grows offline before mounting; the others grow online after. */
export async function growOffline(device: string, fsType: string): Promise<void> {
  if (fsType === 'ext4' || fsType === 'ext3') {
    await run('e2fsck', ['-f', '-p', device], { okCodes: [1] });
    await run('resize2fs', [device], { failpoint: 'host.growfs' });
  }
}

export async function growOnline(device: string, fsType: string, mountpoint: string): Promise<void> {
  switch (fsType) {
    case 'xfs':
      await run('xfs_growfs', [mountpoint], { failpoint: 'host.growfs' });
      return;
    case 'btrfs':
      await run('btrfs', ['filesystem', 'resize', 'max', mountpoint], { failpoint: 'host.growfs' });
      return;
    case 'ext4':
    case 'ext3':
      try {
        await run('resize2fs', [device], { failpoint: 'host.growfs' });
      } catch (err) {
        if (err instanceof CommandError && /Permission denied|Operation not permitted/.test(err.stderr)) {
          throw failedPrecondition(
            `online ${fsType} growth was refused by the kernel (EPERM): resizing a mounted ext filesystem needs CAP_SYS_RESOURCE, ` +
              `which this node plugin does not have. Give the node plugin CAP_SYS_RESOURCE, or unpublish and unstage the volume: ` +
              `the next NodeStageVolume grows it offline.`,
          );
        }
        throw err;
      }
      return;
    default:
      throw failedPrecondition(`cannot grow filesystem type ${fsType}`);
  }
}

export interface FsStats {
  totalBytes: bigint;
  availableBytes: bigint;
  usedBytes: bigint;
  totalInodes: bigint;
  freeInodes: bigint;
  usedInodes: bigint;
}

export async function stats(mountpoint: string): Promise<FsStats> {
  const s = await fsp.statfs(mountpoint, { bigint: true });
  return {
    totalBytes: s.blocks * s.bsize,
    availableBytes: s.bavail * s.bsize,
    usedBytes: (s.blocks - s.bfree) * s.bsize,
    totalInodes: s.files,
    freeInodes: s.ffree,
    usedInodes: s.files - s.ffree,
  };
}
