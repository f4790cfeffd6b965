// Metadata files are replaced atomically (temp file + fsync + rename + directory fsync),
// so a crash at any line leaves either the old or the new record, never half of one.
import fs from 'node:fs/promises';
import path from 'node:path';
import { failpoint } from '../failpoints.js';

const BIGINT_KEYS = new Set(['capacityBytes', 'sizeBytes', 'createdAtSeconds']);

function replacer(_k: string, v: unknown): unknown {
  return typeof v === 'bigint' ? v.toString() : v;
}

function reviver(k: string, v: unknown): unknown {
  return BIGINT_KEYS.has(k) && typeof v === 'string' ? BigInt(v) : v;
}

/** JSON for records: bigint sizes and times as decimal strings, read back as bigint. */
export function recordToJson(value: unknown): string {
  return JSON.stringify(value, replacer);
}

export function recordFromJson<T>(text: string): T {
  return JSON.parse(text, reviver) as T;
}

interface Waiter {
  resolve: () => void;
  reject: (err: unknown) => void;
}

/** Per directory: whether a sync of it is running, and who waits for the next one. */
const dirSyncs = new Map<string, { waiting: Waiter[] }>();

async function syncDirOnce(dir: string): Promise<void> {
  const h = await fs.open(dir, 'r');
  try {
    await h.sync();
  } finally {
    await h.close();
  }
}

/**
 * Makes every change to dir's entries made before the call durable. Group commit: callers
 * that arrive while a sync of dir runs share the next one, which starts after it (the
 * running one may have started before their change, so it cannot answer for them). Under
 * concurrency, N record writes cost about two directory syncs, not N, each waiter still
 * returning only once a sync that began after its rename has finished.
 */
export function fsyncDir(dir: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const running = dirSyncs.get(dir);
    if (running) {
      running.waiting.push({ resolve, reject });
      return;
    }
    const state = { waiting: [{ resolve, reject }] };
    dirSyncs.set(dir, state);
    void drainDirSyncs(dir, state);
  });
}

async function drainDirSyncs(dir: string, state: { waiting: Waiter[] }): Promise<void> {
  while (state.waiting.length > 0) {
    const batch = state.waiting.splice(0);
    try {
      await syncDirOnce(dir);
      for (const w of batch) w.resolve();
    } catch (err) {
      for (const w of batch) w.reject(err);
    }
  }
  dirSyncs.delete(dir);
}

export async function writeJsonAtomic(file: string, value: unknown): Promise<void> {
  const tmp = `${file}.${process.pid}.${Date.now()}.tmp`;
  const h = await fs.open(tmp, 'wx', 0o600);
  try {
    await h.writeFile(JSON.stringify(value, replacer, 2) + '\n');
    await h.sync();
  } finally {
    await h.close();
  }
  failpoint('atomic.beforeRename');
  try {
    await fs.rename(tmp, file);
  } catch (err) {
    await fs.rm(tmp, { force: true });
    throw err;
  }
  await fsyncDir(path.dirname(file));
}

/** The parsed file, or undefined when it does not exist. */
export async function readJson<T>(file: string): Promise<T | undefined> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  return JSON.parse(text, reviver) as T;
}

export async function removeFile(file: string): Promise<void> {
  await fs.rm(file, { force: true });
}
