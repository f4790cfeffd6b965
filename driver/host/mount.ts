// The mount table, read from /proc/self/mountinfo, and mount/umount with argument arrays.
import fs from 'node:fs/promises';
import path from 'node:path';
import { run, CommandError } from './exec.js';
import { MountFlagsRefusedError } from '../errors.js';

export interface MountEntry {
  target: string;
  source: string;
  fstype: string;
  options: string[];
  /** "major:minor" of the mounted filesystem's device (anonymous 0:N for btrfs, tmpfs, ...). */
  devno: string;
  /** The directory of that filesystem mounted here ("/" unless a bind of a part of it). */
  root: string;
  /**
   * The filesystem's own options, as the kernel has them now: where it says what it did on
   * its own ("ro" under a "rw" mount, ext4's "emergency_ro" and "shutdown").
   */
  superOptions: string[];
}

/** A mount table row with its device as mountinfo names it (no "[root]" suffix). */
export type MountTableEntry = MountEntry & { device: string };

const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));

/**
 * The mount table from /proc/self/mountinfo ("id parent maj:min root target options
 * [optional...] - fstype source super-options"), with sources shown as findmnt shows them:
 * "/dev/loop3" for a whole filesystem, "devtmpfs[/loop3]" for a bind of part of one.
 * Rows come in mount order: the first row of a filesystem is its original mount, later ones
 * are binds. Reading the file costs microseconds; running findmnt cost ~20 ms a call.
 */
export async function mountTable(): Promise<MountTableEntry[]> {
  const text = await fs.readFile('/proc/self/mountinfo', 'utf8');
  const out: MountTableEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    const f = line.split(' ');
    const sep = f.indexOf('-', 6);
    if (sep < 0) continue;
    const root = unescape(f[3]);
    const device = unescape(f[sep + 2]);
    const superOptions = (f[sep + 3] ?? '').split(',').filter((o) => o);
    out.push({
      devno: f[2],
      root,
      target: unescape(f[4]),
      source: root === '/' ? device : `${device}[${root}]`,
      device,
      fstype: f[sep + 1],
      options: [...f[5].split(','), ...superOptions.filter((o) => o !== 'rw' && o !== 'ro')],
      superOptions,
    });
  }
  return out;
}

async function canonical(p: string): Promise<string> {
  return fs.realpath(p).catch(() => p);
}

const strip = ({ target, source, fstype, options, devno, root, superOptions }: MountEntry): MountEntry => ({ target, source, fstype, options, devno, root, superOptions });

/** The mount whose mount point is exactly `target` (the top one when stacked), if any. */
export async function mountAt(target: string): Promise<MountEntry | undefined> {
  const all = await mountsAt(target);
  return all[all.length - 1];
}

/** Every mount stacked on `target`, bottom first. */
export async function mountsAt(target: string): Promise<MountEntry[]> {
  const t = await canonical(target);
  return (await mountTable()).filter((m) => m.target === t).map(strip);
}

/**
 * "major:minor" of a block device node, symlinks followed: the one name of a device that
 * mountinfo and every path to it (/dev/vg/lv, /dev/mapper/vg-lv, /dev/dm-3) agree on.
 */
export async function deviceNumber(device: string): Promise<string | undefined> {
  const st = await fs.stat(device, { bigint: true }).catch(() => undefined);
  if (!st?.isBlockDevice()) return undefined;
  const r = st.rdev;
  const major = ((r >> 8n) & 0xfffn) | ((r >> 32n) & ~0xfffn);
  const minor = (r & 0xffn) | ((r >> 12n) & ~0xffn);
  return `${major}:${minor}`;
}

/**
 * Whether a mount shows `devno`'s filesystem or its device node: a filesystem mounted from
 * it (mountinfo's maj:min; btrfs shows an anonymous one, so its source is looked up too) or
 * a bind mount of the device node itself (a published block volume).
 */
export async function isMountOf(entry: MountEntry, devno: string | undefined): Promise<boolean> {
  if (!devno) return false;
  if (entry.devno === devno) return true;
  const src = entry.source.replace(/\[.*\]$/, '');
  if (src.startsWith('/dev/') && (await deviceNumber(src)) === devno) return true;
  if (entry.fstype === 'devtmpfs' || entry.fstype === 'tmpfs') return (await deviceNumber(entry.target)) === devno;
  return false;
}

/**
 * Whether a mount is a bind of a block device node whose device is gone (removed, or a loop
 * device with nothing bound: size 0). Such a bind reaches nothing any more.
 */
export async function isBindOfVanishedDevice(entry: MountEntry): Promise<boolean> {
  if (entry.fstype !== 'devtmpfs' && entry.fstype !== 'tmpfs') return false;
  const devno = await deviceNumber(entry.target);
  if (!devno) return false;
  const size = await sectorsOf(devno);
  return size === undefined || size === '0';
}

const sectorsOf = (devno: string) => fs.readFile(`/sys/dev/block/${devno}/size`, 'utf8').then((s) => s.trim(), () => undefined);

/**
 * The block device a mount still reads (a filesystem on it, or a bind of its device node)
 * when that device exists with a size, as /dev/<name>; undefined for anything else.
 */
export async function liveDeviceOf(entry: MountEntry): Promise<string | undefined> {
  const devno = entry.fstype === 'devtmpfs' || entry.fstype === 'tmpfs' ? await deviceNumber(entry.target) : entry.devno;
  if (!devno) return undefined;
  const size = await sectorsOf(devno);
  if (size === undefined || size === '0') return undefined;
  return fs.realpath(`/sys/dev/block/${devno}`).then((p) => `/dev/${path.basename(p)}`, () => undefined);
}

/** Every mount of a block device (bind mounts of its filesystem included). */
export async function mountsOf(device: string): Promise<MountEntry[]> {
  const devno = await deviceNumber(device);
  const out: MountEntry[] = [];
  for (const m of await mountTable()) {
    if (m.device === device || (devno && (m.devno === devno || (m.device.startsWith('/dev/') && (await deviceNumber(m.device)) === devno)))) out.push(strip(m));
  }
  return out;
}

export async function mount(source: string, target: string, fstype: string, options: string[]): Promise<void> {
  const args = ['-t', fstype];
  if (options.length) args.push('-o', options.join(','));
  await run('mount', [...args, source, target]);
}

/**
 * Binds source onto target, then remounts the bind read-only and with the caller's per-mount
 * flags. The two remounts are separate so a refusal says whose it was: the caller's flags
 * (MountFlagsRefusedError) or the read-only remount itself (our failure, the command's
 * error). Either way the bind is taken back; if even that fails, the error says the bind
 * mount is still there.
 */
export async function bindMount(source: string, target: string, readOnly: boolean, callerFlags: string[] = []): Promise<void> {
  await run('mount', ['--bind', source, target]);
  try {
    if (readOnly) await run('mount', ['-o', 'remount,bind,ro', target]);
    if (callerFlags.length) {
      await run('mount', ['-o', ['remount', 'bind', ...(readOnly ? ['ro'] : []), ...callerFlags].join(','), target]).catch((err: unknown) => {
        if (!(err instanceof CommandError) || err.timedOut) throw err;
        throw new MountFlagsRefusedError(callerFlags, `the kernel refused mount flag(s) ${callerFlags.join(',')} on the bind mount at ${target} (${err.message}); this volume cannot be published with them here`);
      });
    }
  } catch (err) {
    await run('umount', [target]).catch((undoErr: unknown) => {
      throw new Error(`${err instanceof Error ? err.message : String(err)}; taking back the bind mount at ${target} failed too: ${undoErr instanceof Error ? undoErr.message : String(undoErr)}`, { cause: err });
    });
    throw err;
  }
}

export async function umount(target: string): Promise<void> {
  await run('umount', [target]);
}

/** umount's exit code when the target is busy (or, for `umount`, not mounted at all). */
const UMOUNT_BUSY_EXIT = 32;

/**
 * Unmounts target, and if the kernel refuses because something still uses it, detaches it
 * lazily instead: for teardown paths, where a mount left behind would keep the device (an
 * rbd-fuse image, a mapped device) from ever being released, while a lazy detach lets it go
 * once its last user does.
 */
export async function umountOrDetach(target: string): Promise<void> {
  const r = await run('umount', [target], { okCodes: [UMOUNT_BUSY_EXIT] });
  if (r.exitCode !== 0) await run('umount', ['-l', target]);
}
