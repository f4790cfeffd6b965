// Whole-device operations: wiping a new or freed volume and copying one into another.
import fs from 'node:fs/promises';
import path from 'node:path';
import { run } from './exec.js';

/** major:minor of a block device node, as /sys/dev/block names it. */
async function devNumber(device: string): Promise<string> {
  const rdev = (await fs.stat(device, { bigint: true })).rdev;
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn);
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & ~0xffn);
  return `${major}:${minor}`;
}

/**
 * Whether what a discard leaves is guaranteed to read back as zeros. A loop device turns a
 * discard into a hole punched in its backing file (or fails the discard when the file cannot
 * have holes); other devices promise it only through queue/discard_zeroes_data, which
 * kernels since 4.12 always report as 0: for them a discard says nothing about what the
 * next tenant reads.
 */
export async function discardZeroes(device: string, sysRoot = '/sys'): Promise<boolean> {
  const dir = path.join(sysRoot, 'dev', 'block', await devNumber(device));
  if (await fs.access(path.join(dir, 'loop', 'backing_file')).then(() => true, () => false)) return true;
  return (await fs.readFile(path.join(dir, 'queue', 'discard_zeroes_data'), 'utf8').catch(() => '0')).trim() === '1';
}

/**
 * Makes a device read as zeros from end to end, so no tenant reads another's data and no
 * old filesystem signature reappears. Discard first (frees the blocks of thin or
 * loop-backed storage); where that does not guarantee zeros, BLKZEROOUT over everything
 * (the device's write-zeroes offload where it has one, written zeros otherwise).
 */
/** Whole-device zeroing and copying take minutes on large volumes; beyond this the device is taken as hung. */
const WHOLE_DEVICE_TIMEOUT_MS = 30 * 60_000;

export async function wipe(device: string, sysRoot = '/sys'): Promise<void> {
  const trusted = await discardZeroes(device, sysRoot);
  const discarded = await run('blkdiscard', ['-f', device], { okCodes: [1], failpoint: 'host.wipe' });
  if (trusted && discarded.exitCode === 0) return;
  await run('blkdiscard', ['-f', '-z', device], { timeoutMs: WHOLE_DEVICE_TIMEOUT_MS, failpoint: 'host.wipe' });
}

/** Copies the first `bytes` of src onto dst with direct I/O (no page cache pollution). */
export async function copy(src: string, dst: string, bytes: bigint): Promise<void> {
  await run('dd', [`if=${src}`, `of=${dst}`, 'bs=4M', `count=${bytes}`, 'iflag=count_bytes,direct', 'oflag=direct', 'conv=fsync', 'status=none'], {
    timeoutMs: WHOLE_DEVICE_TIMEOUT_MS,
    failpoint: 'host.copy',
  });
}
