// What the kernel says went wrong with a mounted filesystem, read without writing to it:
// the mount table's superblock options, ext4's error records in sysfs, and whether the
// mount root can still be looked at. Measured on Linux 6.18:
// - ext4 remounted read-only after an error (errors=remount-ro) shows "emergency_ro" in the
//   superblock options while the mount and superblock still say "rw", and access(W_OK)
//   still succeeds: only mountinfo tells. Older kernels set the superblock "ro" instead.
// - ext4 shut down (FS_IOC_SHUTDOWN) shows "shutdown" there; stat still works.
// - A shut-down XFS changes nothing in mountinfo or /sys/fs/xfs/<dev> (error/, log/, stats/
//   only) and statfs still answers, but stat of any inode, the mount root too, is EIO.
// - /sys/fs/ext4/<dev>/errors_count and first_/last_error_* come from the superblock, so
//   they survive a remount and are cleared only by e2fsck.
import fs from 'node:fs/promises';
import path from 'node:path';
import type { MountEntry } from './mount.js';

export type FilesystemFault =
  /** Every access fails: the kernel shut the filesystem down (or its device answers EIO). */
  | { kind: 'shutdown'; detail: string }
  /** The kernel made a read-write filesystem read-only after an error. */
  | { kind: 'readOnly'; detail: string }
  /** ext4 recorded errors since its last fsck (the filesystem may still work). */
  | { kind: 'errors'; count: number; detail: string };

/** The faults of the filesystem mounted at `mountPath` (its mount table row is `m`); none when it is sound. */
export async function filesystemFaults(mountPath: string, m: MountEntry): Promise<FilesystemFault[]> {
  const out: FilesystemFault[] = [];
  const statErr = await fs.stat(mountPath).then(
    () => undefined,
    (err: NodeJS.ErrnoException) => err.code ?? String(err),
  );
  if (m.superOptions.includes('shutdown')) out.push({ kind: 'shutdown', detail: `the kernel shut ${m.fstype} on ${m.source} down` });
  else if (statErr === 'EIO') out.push({ kind: 'shutdown', detail: `${m.fstype} on ${m.source} answers every access with EIO (the kernel shut it down after I/O or metadata errors)` });
  if (m.superOptions.includes('emergency_ro') || (m.superOptions.includes('ro') && !m.options.includes('ro'))) {
    out.push({ kind: 'readOnly', detail: `the kernel made ${m.fstype} on ${m.source} read-only after an error` });
  }
  const errors = await ext4Errors(m.devno);
  if (errors) out.push({ kind: 'errors', count: errors.count, detail: `${m.fstype} on ${m.source} has recorded ${errors.count} error(s) since its last fsck (${errors.summary})` });
  return out;
}

const EXT4_SYSFS = '/sys/fs/ext4';

/** ext4's error records for the device `devno` ("major:minor"), or undefined when it has none (or is not ext4). */
async function ext4Errors(devno: string): Promise<{ count: number; summary: string } | undefined> {
  // sysfs names an ext4 filesystem by its block device's kernel name (loop3, dm-2).
  const name = await fs.readlink(`/sys/dev/block/${devno}`).then(path.basename, () => undefined);
  if (!name) return undefined;
  const dir = path.join(EXT4_SYSFS, name);
  const read = (f: string) => fs.readFile(path.join(dir, f), 'utf8').then((s) => s.trim(), () => '');
  const count = Number(await read('errors_count'));
  if (!(count > 0)) return undefined;
  const describe = async (which: 'first' | 'last') => {
    const [time, fn, line, errcode, ino, block] = await Promise.all(['time', 'func', 'line', 'errcode', 'ino', 'block'].map((f) => read(`${which}_error_${f}`)));
    const when = Number(time) > 0 ? new Date(Number(time) * 1000).toISOString() : 'an unknown time';
    return `${which} at ${when} in ${fn || '?'}:${line || '?'}, ${ext4ErrName(Number(errcode))}, inode ${ino || '?'}, block ${block || '?'}`;
  };
  return { count, summary: `${await describe('first')}; ${await describe('last')}` };
}

/**
 * The superblock keeps ext4's own architecture-independent codes (fs/ext4/ext4.h
 * EXT4_ERR_*, 1-based), not errno values: 5 is EFSCORRUPTED, not EIO.
 */
const EXT4_ERR_NAMES = ['UNKNOWN', 'EIO', 'ENOMEM', 'EFSBADCRC', 'EFSCORRUPTED', 'ENOSPC', 'ENOKEY', 'EROFS', 'EFBIG', 'EEXIST', 'ERANGE', 'EOVERFLOW', 'EBUSY', 'ENOTDIR', 'ENOTEMPTY', 'ESHUTDOWN', 'EFAULT'];

function ext4ErrName(code: number): string {
  return EXT4_ERR_NAMES[code - 1] ?? `error code ${code}`;
}
