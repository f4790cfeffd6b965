// Loop devices, tracked by backing file: the driver only ever detaches a device whose
// backing file is one of its own volumes (never `losetup -D`, never by pattern).
import fs from 'node:fs/promises';
import { run } from './exec.js';

export const LOOP_SECTOR_SIZE = 4096;

export interface LoopDevice {
  name: string;
  backFile: string;
  sizeLimit: number;
  offset: number;
  readOnly: boolean;
  directIO: boolean;
}

interface LosetupJson {
  loopdevices?: Array<{
    name: string;
    'back-file': string | null;
    sizelimit: number | null;
    offset: number | null;
    ro: boolean;
    dio: boolean;
  } | null>;
}

function parse(stdout: string): LoopDevice[] {
  if (!stdout.trim()) return [];
  const j = JSON.parse(stdout) as LosetupJson;
  const out: LoopDevice[] = [];
  for (const d of j.loopdevices ?? []) {
    if (!d || !d['back-file']) continue; // unbound device
    out.push({
      name: d.name,
      backFile: d['back-file'].replace(/ \(deleted\)$/, ''),
      sizeLimit: d.sizelimit ?? 0,
      offset: d.offset ?? 0,
      readOnly: !!d.ro,
      directIO: !!d.dio,
    });
  }
  return out;
}

/** Devices currently backed by `file` (`-J -j` alone ignores -J, hence `-l`). */
export async function devicesFor(file: string): Promise<LoopDevice[]> {
  const real = await fs.realpath(file).catch(() => file);
  const r = await run('losetup', ['-l', '-J', '-O', 'NAME,BACK-FILE,SIZELIMIT,OFFSET,RO,DIO', '-j', real]);
  return parse(r.stdout).filter((d) => d.backFile === real);
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
    await run('losetup', ['-d', d.name]).catch(async (err) => {
      // Already gone between the lookup and the detach: fine. Anything else is real.
      if ((await devicesFor(file)).some((x) => x.name === d.name)) throw err;
    });
  }
}

/** Makes the device see a grown backing file. */
export async function refreshCapacity(device: string): Promise<void> {
  await run('losetup', ['-c', device]);
}

export async function setDirectIO(device: string, on: boolean): Promise<void> {
  await run('losetup', [`--direct-io=${on ? 'on' : 'off'}`, device]);
}

export async function deviceSize(device: string): Promise<bigint> {
  const r = await run('blockdev', ['--getsize64', device]);
  return BigInt(r.stdout.trim());
}
