// The mount table, read from /proc/self/mountinfo, and mount/umount with argument arrays.
import fs from 'node:fs/promises';
import { run } from './exec.js';

export interface MountEntry {
  target: string;
  source: string;
  fstype: string;
  options: string[];
}

const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));

/**
 * The mount table from /proc/self/mountinfo ("id parent maj:min root target options
 * [optional...] - fstype source super-options"), with sources shown as findmnt shows them:
 * "/dev/loop3" for a whole filesystem, "devtmpfs[/loop3]" for a bind of part of one.
 * Reading the file costs microseconds; running findmnt cost ~20 ms a call.
 */
async function mountTable(): Promise<Array<MountEntry & { device: string }>> {
  const text = await fs.readFile('/proc/self/mountinfo', 'utf8');
  const out: Array<MountEntry & { device: string }> = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    const f = line.split(' ');
    const sep = f.indexOf('-', 6);
    if (sep < 0) continue;
    const root = unescape(f[3]);
    const device = unescape(f[sep + 2]);
    out.push({
      target: unescape(f[4]),
      source: root === '/' ? device : `${device}[${root}]`,
      device,
      fstype: f[sep + 1],
      options: [...f[5].split(','), ...(f[sep + 3] ?? '').split(',').filter((o) => o && o !== 'rw' && o !== 'ro')],
    });
  }
  return out;
}

async function canonical(p: string): Promise<string> {
  return fs.realpath(p).catch(() => p);
}

/** The mount whose mount point is exactly `target` (the top one when stacked), if any. */
export async function mountAt(target: string): Promise<MountEntry | undefined> {
  const t = await canonical(target);
  const all = (await mountTable()).filter((m) => m.target === t);
  const top = all[all.length - 1];
  return top && { target: top.target, source: top.source, fstype: top.fstype, options: top.options };
}

/** Every mount of a block device (bind mounts of its filesystem included). */
export async function mountsOf(device: string): Promise<MountEntry[]> {
  return (await mountTable()).filter((m) => m.device === device).map(({ target, source, fstype, options }) => ({ target, source, fstype, options }));
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
