// The mount table, read through findmnt's JSON, and mount/umount with argument arrays.
import fs from 'node:fs/promises';
import { run } from './exec.js';

export interface MountEntry {
  target: string;
  source: string;
  fstype: string;
  options: string[];
}

interface FindmntJson {
  filesystems?: Array<{ target: string; source: string; fstype: string; options: string; children?: unknown }>;
}

function parse(stdout: string): MountEntry[] {
  if (!stdout.trim()) return [];
  const j = JSON.parse(stdout) as FindmntJson;
  return (j.filesystems ?? []).map((f) => ({
    target: f.target,
    source: f.source,
    fstype: f.fstype,
    options: f.options.split(','),
  }));
}

async function canonical(p: string): Promise<string> {
  return fs.realpath(p).catch(() => p);
}

/** The mount whose mount point is exactly `target` (the top one when stacked), if any. */
export async function mountAt(target: string): Promise<MountEntry | undefined> {
  const t = await canonical(target);
  const r = await run('findmnt', ['-J', '-l', '-o', 'TARGET,SOURCE,FSTYPE,OPTIONS', '--mountpoint', t], { okCodes: [1] });
  const all = parse(r.stdout);
  return all[all.length - 1];
}

/** Every mount of a block device (bind mounts included). */
export async function mountsOf(device: string): Promise<MountEntry[]> {
  const r = await run('findmnt', ['-J', '-l', '-o', 'TARGET,SOURCE,FSTYPE,OPTIONS', '-S', device], { okCodes: [1] });
  return parse(r.stdout);
}

/** The device a bind mount of `/dev/loopN` shows as source: findmnt prints `devtmpfs[/loopN]` or `udev[/loopN]`. */
export function bindSourceDevice(entry: MountEntry): string | undefined {
  const m = /\[(\/[^\]]+)\]$/.exec(entry.source);
  if (m && (entry.fstype === 'devtmpfs' || entry.fstype === 'tmpfs')) return '/dev' + m[1];
  return entry.source.startsWith('/dev/') ? entry.source : undefined;
}

export async function mount(source: string, target: string, fstype: string, options: string[]): Promise<void> {
  const args = ['-t', fstype];
  if (options.length) args.push('-o', options.join(','));
  await run('mount', [...args, source, target]);
}

export async function bindMount(source: string, target: string, readOnly: boolean, extra: string[] = []): Promise<void> {
  await run('mount', ['--bind', source, target]);
  if (readOnly || extra.length) {
    try {
      await run('mount', ['-o', ['remount', 'bind', ...(readOnly ? ['ro'] : []), ...extra].join(','), target]);
    } catch (err) {
      await run('umount', [target]).catch(() => undefined);
      throw err;
    }
  }
}

export async function umount(target: string): Promise<void> {
  await run('umount', [target]);
}
