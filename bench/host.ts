// Host helpers for the benchmark: host tools run from argument arrays (execa), XFS pool
// images for the subjects' data, and the cleanup of everything under a work directory in
// the one safe order: volume mounts, volume loop devices, pool mounts, pool loop devices.
// Loop devices are only ever found by their backing file under our own directory.
import fs from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';

export const POOL_SUFFIX = '.xfs.img';

/** Runs a host tool; throws with its stderr on a non-zero exit or a timeout. */
export async function tool(file: string, args: string[], timeoutMs = 120_000): Promise<string> {
  const r = await execa(file, args, { reject: false, timeout: timeoutMs, env: { LC_ALL: 'C' }, stripFinalNewline: true });
  if (r.exitCode !== 0 || r.timedOut) {
    throw new Error(`${file} ${args.join(' ')} failed (exit ${r.exitCode ?? '?'}${r.timedOut ? ', timed out' : ''}): ${String(r.stderr ?? '').trim() || r.message}`);
  }
  return String(r.stdout);
}

/** Loop devices whose backing file lies under dir (by backing file, never by pattern). */
export async function loopDevicesUnder(dir: string): Promise<Array<{ name: string; backFile: string }>> {
  const r = await execa('losetup', ['-l', '-n', '-J', '-O', 'NAME,BACK-FILE'], { reject: false });
  if (!String(r.stdout).trim()) return [];
  const j = JSON.parse(String(r.stdout)) as { loopdevices: Array<{ name: string; 'back-file': string | null }> };
  const prefix = dir.replace(/\/+$/, '') + '/';
  return j.loopdevices
    .filter((d) => d['back-file']?.replace(/ \(deleted\)$/, '').startsWith(prefix))
    .map((d) => ({ name: d.name, backFile: d['back-file']!.replace(/ \(deleted\)$/, '') }));
}

export async function mountsUnder(dir: string): Promise<string[]> {
  const r = await execa('findmnt', ['-rn', '-o', 'TARGET'], { reject: false });
  const prefix = dir.replace(/\/+$/, '') + '/';
  return String(r.stdout)
    .split('\n')
    .filter((m) => m.startsWith(prefix));
}

/**
 * Makes (or reuses) an XFS filesystem in a sparse image `<mountpoint>.xfs.img` and mounts it
 * on `mountpoint`: the same arrangement as the driver's `--data-pool-size`, so the raw tools
 * and other subjects work on the same kind of filesystem as our driver's data directory.
 */
export async function makeXfsPool(mountpoint: string, sizeBytes: number): Promise<void> {
  await fs.mkdir(mountpoint, { recursive: true });
  const image = mountpoint.replace(/\/+$/, '') + POOL_SUFFIX;
  await tool('truncate', ['-s', String(sizeBytes), image]);
  const dev = (await tool('losetup', ['-f', '--show', '--sector-size', '4096', '--direct-io=on', image])).trim();
  try {
    await tool('mkfs.xfs', ['-q', '-f', '-m', 'reflink=1', dev]);
    await tool('mount', ['-t', 'xfs', dev, mountpoint]);
  } catch (err) {
    await execa('losetup', ['-d', dev], { reject: false });
    throw err;
  }
}

async function umountAll(targets: string[]): Promise<void> {
  for (const m of [...targets].sort().reverse()) {
    const r = await execa('umount', [m], { reject: false });
    if (r.exitCode !== 0) await execa('umount', ['-l', m], { reject: false });
  }
}

/**
 * Removes every mount and loop device under `dir`, then `dir` itself. Pools are the mounts
 * whose device is backed by a `*.xfs.img` under dir; everything else is a volume's.
 */
export async function cleanupDir(dir: string): Promise<{ mounts: number; loops: number }> {
  const loops0 = await loopDevicesUnder(dir);
  const poolDevs = new Set(loops0.filter((d) => d.backFile.endsWith(POOL_SUFFIX)).map((d) => d.name));
  const poolMounts = new Set<string>();
  for (const d of poolDevs) {
    const r = await execa('findmnt', ['-rn', '-o', 'TARGET', '-S', d], { reject: false });
    for (const t of String(r.stdout).split('\n').filter(Boolean)) poolMounts.add(t);
  }
  const all = await mountsUnder(dir);
  const volumeMounts = all.filter((m) => !poolMounts.has(m));
  await umountAll(volumeMounts);
  const volumeLoops = (await loopDevicesUnder(dir)).filter((d) => !d.backFile.endsWith(POOL_SUFFIX));
  for (const d of volumeLoops) await execa('losetup', ['-d', d.name], { reject: false });
  const rest = await mountsUnder(dir);
  await umountAll(rest);
  const poolLoops = await loopDevicesUnder(dir);
  for (const d of poolLoops) await execa('losetup', ['-d', d.name], { reject: false });
  await fs.rm(dir, { recursive: true, force: true });
  return { mounts: all.length, loops: volumeLoops.length + poolLoops.length };
}

export async function exists(p: string): Promise<boolean> {
  return fs.access(p).then(
    () => true,
    () => false,
  );
}

export function join(...p: string[]): string {
  return path.join(...p);
}
