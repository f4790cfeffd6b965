// fsfreeze with a journal. Writers to a frozen filesystem hang (D state) until someone
// thaws it, and a `finally` never runs when the driver is SIGKILLed, OOM-killed or
// restarted by a liveness probe. So every freeze is written down (atomically, synced)
// before fsfreeze runs and crossed out only once everything is thawed; the driver thaws
// whatever the journal still names when it starts.
import fs from 'node:fs/promises';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { run } from './exec.js';
import { mountsOf } from './mount.js';
import { readJson, writeJsonAtomic, removeFile, fsyncDir } from './atomic.js';
import type { Logger } from '../log.js';

const FREEZE_TIMEOUT_MS = 60_000;
const THAW_TIMEOUT_MS = 30_000;

interface FreezeEntry {
  mountpoints: Array<{ target: string; dev: string }>;
  pid: number;
  at: string;
}

let journalDir: string | undefined;

/** The device number a path lives on, as a string (stat works on a frozen filesystem). */
async function devOf(target: string): Promise<string | undefined> {
  return fs.stat(target, { bigint: true }).then((s) => s.dev.toString(), () => undefined);
}

/** "unfreeze failed: Invalid argument" means it was not frozen: already thawed. Any other failure is one. */
async function thaw(target: string): Promise<void> {
  const r = await run('fsfreeze', ['-u', target], { timeoutMs: THAW_TIMEOUT_MS, okCodes: [1] });
  if (r.exitCode !== 0 && !/Invalid argument/.test(r.stderr)) throw new Error(`fsfreeze -u ${target} failed: ${r.stderr.trim() || `exit ${r.exitCode}`}`);
}

/**
 * Sets where freezes are recorded and thaws every filesystem a previous run left frozen.
 * Runs first at start-up, before anything else can wait on those filesystems. An entry
 * whose thaw fails stays in the journal (the next start tries again) and the failure is
 * logged; it does not stop the driver, which would only leave the filesystem frozen longer.
 */
export async function initFreezeJournal(dir: string, log: Logger): Promise<void> {
  await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  journalDir = dir;
  for (const n of (await fs.readdir(dir)).sort()) {
    const file = path.join(dir, n);
    if (!n.endsWith('.json')) {
      await removeFile(file); // a temporary file of an entry that was never in place
      continue;
    }
    const entry = await readJson<FreezeEntry>(file).catch(() => undefined);
    let failed = false;
    for (const m of entry?.mountpoints ?? []) {
      // Only the filesystem that was frozen: a path now on another device was unmounted since.
      if ((await devOf(m.target)) !== m.dev) continue;
      try {
        await thaw(m.target);
        log.warn({ mountpoint: m.target, frozenAt: entry!.at, frozenBy: entry!.pid }, 'thawed a filesystem a previous run left frozen');
      } catch (err) {
        failed = true;
        log.error({ mountpoint: m.target, err: err instanceof Error ? err.message : String(err) }, 'could not thaw a filesystem a previous run left frozen');
      }
    }
    if (!failed) await removeFile(file);
  }
  await fsyncDir(dir);
}

/**
 * Runs fn with every given mounted filesystem frozen, then thaws every one of them, even
 * when a thaw fails (the first failure is thrown after all were tried). fn must be short:
 * an instant point-in-time cut (reflink, snapshot), never a copy of a whole volume.
 */
export async function withFrozen<T>(mountpoints: string[], fn: () => Promise<T>): Promise<T> {
  if (mountpoints.length === 0) return fn();
  if (!journalDir) throw new Error('fsfreeze refused: the freeze journal is not set up (initFreezeJournal), so a crash could leave the filesystem frozen');
  // Real paths: what is thawed (now or at the next start) is what was frozen, whatever symlinks do meanwhile.
  const targets = await Promise.all(mountpoints.map((m) => fs.realpath(m)));
  const entry: FreezeEntry = {
    mountpoints: await Promise.all(targets.map(async (target) => ({ target, dev: (await devOf(target)) ?? '' }))),
    pid: process.pid,
    at: new Date().toISOString(),
  };
  const file = path.join(journalDir, `freeze-${process.pid}-${randomBytes(6).toString('hex')}.json`);
  await writeJsonAtomic(file, entry);
  const frozen: string[] = [];
  let result: { value: T } | undefined;
  let failure: { err: unknown } | undefined;
  try {
    for (const m of targets) {
      // Recorded before this line: from here on a crash leaves a journal entry to thaw.
      frozen.push(m);
      await run('fsfreeze', ['-f', m], { timeoutMs: FREEZE_TIMEOUT_MS });
    }
    result = { value: await fn() };
  } catch (err) {
    failure = { err };
  }
  let thawFailure: unknown;
  for (const m of frozen.reverse()) {
    try {
      await thaw(m);
    } catch (err) {
      thawFailure ??= err;
    }
  }
  if (thawFailure === undefined) await removeFile(file);
  if (failure) throw failure.err;
  if (thawFailure !== undefined) {
    const why = thawFailure instanceof Error ? thawFailure.message : String(thawFailure);
    throw new Error(`the filesystems were frozen and the cut made, but thawing failed (the journal keeps the freeze; the next start of the driver thaws again): ${why}`);
  }
  return result!.value;
}

/** The mounted filesystems of these block devices (what withQuiescedDevices would freeze). */
export async function mountedFilesystems(devices: string[]): Promise<string[]> {
  const out: string[] = [];
  for (const d of devices) {
    const fsMount = (await mountsOf(d)).find((m) => m.root === '/');
    if (fsMount && !out.includes(fsMount.target)) out.push(fsMount.target);
  }
  return out;
}

/**
 * Runs fn while these block devices hold still: the filesystems mounted from them are
 * frozen (so a cut includes what is still in their caches), unmounted ones are flushed.
 */
export async function withQuiescedDevices<T>(devices: string[], fn: () => Promise<T>): Promise<T> {
  const freeze: string[] = [];
  for (const d of devices) {
    // By root, not by source: mountinfo names /dev/<vg>/<lv> as /dev/mapper/<vg>-<lv>.
    const fsMount = (await mountsOf(d)).find((m) => m.root === '/');
    if (fsMount) {
      if (!freeze.includes(fsMount.target)) freeze.push(fsMount.target);
    } else {
      await run('blockdev', ['--flushbufs', d]);
    }
  }
  return withFrozen(freeze, fn);
}
