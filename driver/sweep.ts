// Start-up removal of the temporary files a killed driver may have left. Every writer of a
// temporary file in the driver's own directories is listed here with its name pattern, so
// nothing else in those directories is ever touched. (The loop backend's volume and
// snapshot directories and the RBD key directory are swept by their owners' init.)
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from './log.js';

export interface TempLocation {
  dir: string;
  /** File names a crash can leave behind here. */
  pattern: RegExp;
  what: string;
}

/** writeJsonAtomic's temporary: `<record>.json.<pid>.<ms>.tmp`. */
export const ATOMIC_TEMP = /\.json\.\d+\.\d+\.tmp$/;

export function driverTempLocations(dirs: { nodeStateDir: string; dataDir?: string }): TempLocation[] {
  const out: TempLocation[] = [{ dir: dirs.nodeStateDir, pattern: ATOMIC_TEMP, what: 'node state record being written' }];
  if (dirs.dataDir) {
    out.push(
      { dir: dirs.dataDir, pattern: /^\.reflink-probe-\d+\.tmp(\.clone\.tmp)?$/, what: 'reflink probe file' },
      { dir: path.join(dirs.dataDir, 'groups'), pattern: ATOMIC_TEMP, what: 'group snapshot record being written' },
    );
  }
  return out;
}

/** Removes the matching files (not directories) and says which; a missing directory is fine. */
export async function sweepTemporaryFiles(locations: TempLocation[], log: Logger): Promise<string[]> {
  const removed: string[] = [];
  for (const loc of locations) {
    let names: string[];
    try {
      names = await fs.readdir(loc.dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw err;
    }
    for (const n of names) {
      if (!loc.pattern.test(n)) continue;
      const file = path.join(loc.dir, n);
      const st = await fs.lstat(file).catch(() => undefined);
      if (!st?.isFile()) continue;
      await fs.rm(file, { force: true });
      removed.push(file);
      log.warn({ file, what: loc.what }, 'removed a temporary file a previous run left');
    }
  }
  return removed;
}
