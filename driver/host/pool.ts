// An XFS filesystem inside a sparse image, loop-mounted on the data directory. On nodes
// whose root filesystem cannot reflink (ext4), this is what gives the loop backend
// instant, space-sharing snapshots and clones.
import fs from 'node:fs/promises';
import { run } from './exec.js';
import * as loop from './loop.js';
import { mountAt, mount } from './mount.js';

export function poolImagePath(dataDir: string): string {
  return `${dataDir.replace(/\/+$/, '')}.xfs.img`;
}

/** Mounts (creating on first use) the pool image on dataDir; a no-op when dataDir is already a mount point. */
export async function ensureXfsPool(dataDir: string, sizeBytes: bigint): Promise<{ created: boolean; mounted: boolean }> {
  await fs.mkdir(dataDir, { recursive: true });
  if (await mountAt(dataDir)) return { created: false, mounted: false };
  const image = poolImagePath(dataDir);
  let created = false;
  const h = await fs.open(image, 'a', 0o600);
  try {
    const st = await h.stat();
    if (BigInt(st.size) < sizeBytes) await h.truncate(Number(sizeBytes));
  } finally {
    await h.close();
  }
  const dev = await loop.attach(image);
  try {
    const { probe } = await import('./fs.js');
    const found = await probe(dev);
    if (!found) {
      await run('mkfs.xfs', ['-q', '-f', '-m', 'reflink=1', dev]);
      created = true;
    } else if (found.type !== 'xfs') {
      throw new Error(`${image} holds ${found.type ?? 'an unknown filesystem'}, not xfs`);
    }
    await mount(dev, dataDir, 'xfs', []);
    // A grown image (bigger --data-pool-size) is taken up online.
    await run('xfs_growfs', [dataDir]);
  } catch (err) {
    await loop.detachAll(image).catch(() => undefined);
    throw err;
  }
  return { created, mounted: true };
}

/** Unmounts the pool and detaches its loop device (tests and uninstall only). */
export async function releaseXfsPool(dataDir: string): Promise<void> {
  if (await mountAt(dataDir)) await run('umount', [dataDir]);
  await loop.detachAll(poolImagePath(dataDir));
}
