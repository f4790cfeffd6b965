// Loop devices, tracked by backing file: the driver only ever detaches a device whose
// backing file is one of its own volumes (never `losetup -D`, never by pattern).
import fs from 'node:fs/promises';
import path from 'node:path';
import { run } from './exec.js';
import { deviceNumber } from './mount.js';

export const LOOP_SECTOR_SIZE = 4096;

export interface LoopDevice {
  name: string;
  backFile: string;
  sizeLimit: number;
  offset: number;
  readOnly: boolean;
  directIO: boolean;
}

const SYS_BLOCK = '/sys/block';

async function sysRead(dev: string, file: string): Promise<string | undefined> {
  return fs.readFile(`${SYS_BLOCK}/${dev}/${file}`, 'utf8').then(
    (s) => s.trim(),
    () => undefined,
  );
}

function majMin(dev: number): string {
  // Linux dev_t as glibc's major()/minor() split it.
  const d = BigInt(dev);
  const major = ((d >> 8n) & 0xfffn) | ((d >> 32n) & ~0xfffn);
  const minor = (d & 0xffn) | ((d >> 12n) & ~0xffn);
  return `${major}:${minor}`;
}

/**
 * Devices currently backed by `file`, read from /sys/block/loopN/loop/* (no process is
 * started: spawning losetup dominated the driver's CPU under load).
 *
 * sysfs shows a backing file by the path it had in the mount namespace of whoever
 * attached it. A device attached by a node plugin container that has since restarted shows
 * a path that means nothing here (its hostPath mount is gone), so such devices are matched
 * by the file's inode and device instead (one losetup call, only when there are any).
 */
export async function devicesFor(file: string): Promise<LoopDevice[]> {
  // A deleted file has no real path; the kernel shows it under its directory's.
  const real = await fs.realpath(file).catch(() => fs.realpath(path.dirname(file)).then((d) => path.join(d, path.basename(file)), () => file));
  const mine: string[] = [];
  const strangers: Array<{ dev: string; back: string }> = [];
  for (const { dev, back } of await boundDevices()) {
    if (back === real) mine.push(dev);
    // A path relative to a mount that is gone is a tail of the real path ("/loop/volumes/x.img"
    // of "/var/lib/tscsi/loop/volumes/x.img"); only those are checked, and by inode. Other
    // devices' paths are never touched (stat on a dead FUSE file can hang or mislead).
    else if (back.startsWith('/') && real.endsWith(back)) strangers.push({ dev, back });
  }
  const out = await Promise.all(mine.map((dev) => describeSys(dev, real)));
  if (strangers.length > 0) {
    const st = await fs.stat(real).catch(() => undefined);
    if (st) {
      const want = majMin(st.dev);
      for (const x of strangers) {
        const r = await run('losetup', ['-l', '-J', '-O', 'NAME,BACK-INO,BACK-MAJ:MIN', `/dev/${x.dev}`], { okCodes: [1] });
        const d = r.stdout.trim() ? (JSON.parse(r.stdout) as { loopdevices?: Array<{ 'back-ino'?: number | string; 'back-maj:min'?: string } | null> }).loopdevices?.[0] : undefined;
        if (d && Number(d['back-ino']) === st.ino && String(d['back-maj:min'] ?? '').trim() === want) out.push(await describeSys(x.dev, real));
      }
    }
  }
  return out;
}

/** Every bound loop device (its name under /sys/block) and the backing path sysfs shows for it, read all at once. */
async function boundDevices(): Promise<Array<{ dev: string; back: string }>> {
  const names = (await fs.readdir(SYS_BLOCK)).filter((d) => d.startsWith('loop'));
  const backs = await Promise.all(names.map((dev) => backingFile(`/dev/${dev}`)));
  // Unbound devices have no loop/backing_file.
  return names.flatMap((dev, i) => (backs[i] === undefined ? [] : [{ dev, back: backs[i]!.path }]));
}

/**
 * Devices whose backing file shows as exactly one of `paths`, compared as strings only. For
 * files no one may stat: a file on a dead FUSE mount, or on one detached since, which the
 * kernel then shows as "/<name>" (a path relative to the mount that is gone).
 */
export async function devicesShowing(paths: string[]): Promise<string[]> {
  return (await boundDevices()).filter((d) => paths.includes(d.back)).map((d) => `/dev/${d.dev}`);
}

async function describeSys(dev: string, backFile: string): Promise<LoopDevice> {
  const [sizeLimit, offset, ro, dio] = await Promise.all(['loop/sizelimit', 'loop/offset', 'ro', 'loop/dio'].map((f) => sysRead(dev, f)));
  return { name: `/dev/${dev}`, backFile, sizeLimit: Number(sizeLimit ?? 0), offset: Number(offset ?? 0), readOnly: ro === '1', directIO: dio === '1' };
}

/**
 * The file a bound loop device reads, as the kernel names it now, and whether that file has
 * been unlinked since (the kernel appends " (deleted)"; the device keeps the old inode).
 */
export async function backingFile(device: string): Promise<{ path: string; deleted: boolean } | undefined> {
  const dev = /^\/dev\/(loop\d+)$/.exec(device)?.[1];
  const back = dev ? await sysRead(dev, 'loop/backing_file') : undefined;
  if (!back) return undefined;
  const deleted = back.endsWith(' (deleted)');
  return { path: deleted ? back.slice(0, -' (deleted)'.length) : back, deleted };
}

/** Where a bound loop device's window starts in its backing file (bytes), or undefined when it is not one. */
export async function loopOffset(device: string): Promise<number | undefined> {
  const dev = /^\/dev\/(loop\d+)$/.exec(device)?.[1];
  const v = dev ? await sysRead(dev, 'loop/offset') : undefined;
  return v !== undefined && /^\d+$/.test(v) ? Number(v) : undefined;
}

export interface AttachOptions {
  directIO?: boolean;
  readOnly?: boolean;
}

/** Attaches `file`, or returns the device that already has it (attaching twice corrupts filesystems). */
export async function attach(file: string, opts: AttachOptions = {}): Promise<string> {
  const existing = await devicesFor(file);
  if (existing.length > 0) return existing[0].name;
  const args = ['-f', '--show', '--sector-size', String(LOOP_SECTOR_SIZE), `--direct-io=${opts.directIO === false ? 'off' : 'on'}`];
  if (opts.readOnly) args.push('-r');
  args.push(await fs.realpath(file));
  const r = await run('losetup', args);
  return r.stdout.trim();
}

/** Detaches every device backed by `file`; a no-op when there is none. */
export async function detachAll(file: string): Promise<void> {
  for (const d of await devicesFor(file)) {
    const back = await binding(d.name);
    await run('losetup', ['-d', d.name]).catch(async (err) => {
      // Already gone between the lookup and the detach: fine. Anything else is real.
      if ((await devicesFor(file)).some((x) => x.name === d.name)) throw err;
    });
    await settleDetach(d.name, back);
  }
}

/** What a device is bound to (file and window offset), or undefined when unbound. */
async function binding(dev: string): Promise<string | undefined> {
  const name = path.basename(dev);
  const back = await sysRead(name, 'loop/backing_file');
  return back === undefined ? undefined : `${back}@${(await sysRead(name, 'loop/offset')) ?? ''}`;
}

/** How long a detach waits for whoever holds the device open to let go. */
const DETACH_SETTLE_MS = 5_000;

/**
 * `losetup -d` of a device some process holds open (an `lvm` or `blkid` scanning every block
 * device, our own LVM backend's included) only marks it autoclear and answers 0: the kernel
 * unbinds it at the last close. Waiting here for that moment keeps "unstaged" meaning
 * "detached", so a DeleteVolume right after an answered NodeUnstage does not find the device
 * still bound. A holder that stays longer is left to the kernel (the device goes when it closes).
 * `back`: the binding before the detach (a device unbound and bound again to another file or
 * window, as LVM without device-mapper binds windows of one PV file, is done).
 */
async function settleDetach(dev: string, back: string | undefined): Promise<void> {
  const deadline = Date.now() + DETACH_SETTLE_MS;
  for (let wait = 5; back !== undefined && (await binding(dev)) === back && Date.now() < deadline; wait = Math.min(2 * wait, 100)) {
    await new Promise((r) => setTimeout(r, wait));
  }
}

/** Makes the device see a grown backing file. */
export async function refreshCapacity(device: string): Promise<void> {
  await run('losetup', ['-c', device]);
}

export async function setDirectIO(device: string, on: boolean): Promise<void> {
  await run('losetup', [`--direct-io=${on ? 'on' : 'off'}`, device]);
}

/**
 * The block device's size in bytes, from /sys/dev/block/MAJ:MIN/size (512-byte units whatever
 * the sector size; the figure BLKGETSIZE64 answers from); blockdev where sysfs has none.
 */
export async function deviceSize(device: string): Promise<bigint> {
  const devno = await deviceNumber(device);
  const sectors = devno && (await fs.readFile(`/sys/dev/block/${devno}/size`, 'utf8').then((s) => s.trim(), () => undefined));
  if (sectors && /^\d+$/.test(sectors)) return BigInt(sectors) * 512n;
  const r = await run('blockdev', ['--getsize64', device]);
  return BigInt(r.stdout.trim());
}

/** Devices that are windows onto `file` at exactly this offset (LVM without device-mapper). */
export async function windowsAt(file: string, offset: number): Promise<LoopDevice[]> {
  return (await devicesFor(file)).filter((d) => d.offset === offset);
}

/** A window of `size` bytes at `offset` into `file`, or the one already there. */
export async function attachWindow(file: string, offset: number, size: number, opts: AttachOptions = {}): Promise<string> {
  const existing = await windowsAt(file, offset);
  if (existing.length > 0) return existing[0].name;
  const args = ['-f', '--show', '--offset', String(offset), '--sizelimit', String(size), '--sector-size', String(LOOP_SECTOR_SIZE), `--direct-io=${opts.directIO === false ? 'off' : 'on'}`];
  if (opts.readOnly) args.push('-r');
  const r = await run('losetup', [...args, await fs.realpath(file)]);
  return r.stdout.trim();
}

export async function detach(device: string): Promise<void> {
  const back = await binding(device);
  await run('losetup', ['-d', device]);
  await settleDetach(device, back);
}

/**
 * Changes an attached device's size limit in place (LOOP_SET_STATUS64), so a mounted
 * filesystem can grow into it; util-linux has no command for this. perl-base is on every
 * Debian system, which spares the driver a native module.
 */
export async function setSizeLimit(device: string, bytes: bigint): Promise<void> {
  if (!/^\/dev\/loop\d+$/.test(device)) throw new Error(`not a loop device: ${device}`);
  const script =
    'my ($d,$n)=@ARGV; open(my $f,"<",$d) or die "open $d: $!\\n"; my $b="\\0" x 232;' +
    ' ioctl($f,0x4C05,$b) or die "LOOP_GET_STATUS64: $!\\n"; substr($b,32,8)=pack("Q<",$n);' +
    ' ioctl($f,0x4C04,$b) or die "LOOP_SET_STATUS64: $!\\n";';
  await run('perl', ['-e', script, device, bytes.toString()]);
}

/**
 * The binding of one loop device, or undefined when it is not bound (or not a loop device),
 * from /sys/block/loopN: what `losetup -l` itself reads, without a process.
 */
export async function describe(device: string): Promise<LoopDevice | undefined> {
  const dev = /^\/dev\/(loop\d+)$/.exec(await fs.realpath(device).catch(() => device))?.[1];
  const back = dev ? await backingFile(`/dev/${dev}`) : undefined;
  return back ? describeSys(dev!, back.path) : undefined;
}
