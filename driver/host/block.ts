// Whole-device operations: wiping a new or freed volume and copying one into another.
import { run } from './exec.js';
import { deviceSize } from './loop.js';

const MiB = 1024 * 1024;

/**
 * Makes a device read as empty: discard (on loop-backed storage this punches holes, so the
 * old tenant's blocks are gone and the file stays sparse), then zero the first and last MiB
 * so no filesystem signature survives on devices whose discard does not zero.
 */
export async function wipe(device: string): Promise<void> {
  const discarded = await run('blkdiscard', ['-f', device], { okCodes: [1] });
  if (discarded.exitCode !== 0) {
    // No discard support: write zeroes over all of it (slow, but nothing may leak).
    await run('blkdiscard', ['-f', '-z', device], { timeoutMs: 30 * 60_000 });
    return;
  }
  const size = Number(await deviceSize(device));
  const edge = Math.min(MiB, size);
  await run('dd', ['if=/dev/zero', `of=${device}`, 'bs=64K', `count=${edge}`, 'iflag=count_bytes', 'oflag=direct', 'conv=fsync', 'status=none']);
  if (size > edge) {
    await run('dd', ['if=/dev/zero', `of=${device}`, 'bs=64K', `count=${edge}`, `seek=${size - edge}`, 'iflag=count_bytes', 'oflag=seek_bytes,direct', 'conv=fsync', 'status=none']);
  }
}

/** Copies the first `bytes` of src onto dst with direct I/O (no page cache pollution). */
export async function copy(src: string, dst: string, bytes: bigint): Promise<void> {
  await run('dd', [`if=${src}`, `of=${dst}`, 'bs=4M', `count=${bytes}`, 'iflag=count_bytes,direct', 'oflag=direct', 'conv=fsync', 'status=none'], {
    timeoutMs: 30 * 60_000,
  });
}
