// The loop backend's storage as the node sees it (NodeGetStorageHealth): the data directory
// every volume's backing file lives in, and, with --data-pool-size, the XFS pool mounted on it.
import fs from 'node:fs/promises';
import type { StorageProblem } from '../backend.js';
import { mountAt } from '../../host/mount.js';
import { filesystemFaults } from '../../host/fshealth.js';
import { poolImagePath } from '../../host/pool.js';
import { MiB } from '../../../lib/size.js';

/**
 * Used share of the data directory's filesystem (in percent) from which the node reports it
 * degraded: sparse volumes take space as pods write, and a full pool fails their writes
 * (the pods see I/O errors), so there must be time to act before that.
 */
export const DATA_POOL_FULL_PERCENT = 90;

const unreachable = (reason: string, message: string): StorageProblem[] => [{ status: 'STORAGE_UNREACHABLE', reason, message }];

/** What is wrong with the data directory (and its pool, when `pool`); empty when nothing is. Never throws. */
export async function dataDirProblems(dataDir: string, volDir: string, pool: boolean): Promise<StorageProblem[]> {
  const mounted = pool ? await mountAt(dataDir).catch(() => undefined) : undefined;
  if (pool && !mounted) {
    return unreachable('DataPoolNotMounted', `the data pool ${poolImagePath(dataDir)} is not mounted on ${dataDir}: no volume can be created or staged; restart the node plugin, which mounts it`);
  }
  const lookErr = await fs.access(volDir, fs.constants.W_OK).then(
    () => undefined,
    (err: NodeJS.ErrnoException) => err.code ?? String(err),
  );
  if (lookErr === 'ENOENT') return unreachable('DataDirMissing', `the data directory ${volDir} is missing: no volume can be created or staged; restore it (or restart the node plugin to start an empty one)`);
  if (lookErr === 'EROFS') return unreachable('DataDirReadOnly', `the data directory ${dataDir} is on a read-only filesystem: volumes cannot be created, and staged ones fail their writes; remount it read-write`);
  if (lookErr) return unreachable('DataDirUnusable', `the data directory ${volDir} cannot be used (${lookErr}): check its filesystem and the kernel log`);
  const out: StorageProblem[] = [];
  for (const f of mounted ? await filesystemFaults(dataDir, mounted) : []) {
    if (f.kind === 'errors') out.push({ status: 'STORAGE_DEGRADED', reason: 'DataPoolErrors', message: `the data pool on ${dataDir}: ${f.detail}: stop the volumes in it and run xfs_repair / e2fsck on ${poolImagePath(dataDir)}` });
    else return unreachable(f.kind === 'shutdown' ? 'DataPoolShutDown' : 'DataPoolReadOnly', `the data pool on ${dataDir}: ${f.detail}; volumes in it fail: unstage them and restart the node plugin to mount it again`);
  }
  const full = await fullness(dataDir);
  if (full) out.push(full);
  return out;
}

async function fullness(dataDir: string): Promise<StorageProblem | undefined> {
  const s = await fs.statfs(dataDir, { bigint: true }).catch(() => undefined);
  if (!s || s.blocks === 0n) return undefined;
  const used = (s.blocks - s.bfree) * s.bsize;
  const total = s.blocks * s.bsize;
  const percent = Number((used * 100n) / total);
  if (percent < DATA_POOL_FULL_PERCENT) return undefined;
  return {
    status: 'STORAGE_DEGRADED',
    reason: 'DataPoolAlmostFull',
    message:
      `the data directory ${dataDir} is ${percent}% full (${used / MiB} MiB of ${total / MiB} MiB used, ${(s.bavail * s.bsize) / MiB} MiB free; ` +
      `the limit is ${DATA_POOL_FULL_PERCENT}%): pods writing into their volumes get I/O errors once it is full; delete volumes and snapshots no longer needed, ` +
      `run fstrim in volumes whose files were deleted, or grow --data-pool-size`,
  };
}
