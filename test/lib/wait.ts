// Waiting in tests, in one place: for a condition (never a fixed time where something can
// be observed instead), for a condition to keep holding, and for a port nobody uses.
import net from 'node:net';

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export interface WaitOptions {
  timeoutMs?: number;
  /** How often fn is asked; short where a test measures how soon something happens. */
  everyMs?: number;
  /** What to add to the timeout's message (a describe, the logs). */
  describe?: () => Promise<string>;
}

/** Asks fn until it returns a truthy value and returns that; fails with the last error and `describe`. */
export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false>, opts: WaitOptions = {}): Promise<T> {
  const { timeoutMs = 120_000, everyMs = 500, describe } = opts;
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      const extra = describe ? `\n${await describe().catch((e: unknown) => String(e))}` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${String(last)})` : ''}${extra}`);
    }
    await sleep(everyMs);
  }
}

/**
 * Requires that fn stays truthy for `ms`, asked every `everyMs`: for what must NOT happen
 * (a volume kept, a leader not taken over), where there is no event to wait for.
 */
export async function holdsFor(what: string, fn: () => Promise<unknown> | unknown, ms: number, everyMs = 250): Promise<void> {
  const until = Date.now() + ms;
  for (;;) {
    if (!(await fn())) throw new Error(`${what} stopped holding after ${ms - (until - Date.now())} ms`);
    if (Date.now() >= until) return;
    await sleep(everyMs);
  }
}

/** The first of `p` or `fallback` once `ms` have passed (a bounded wait for an event). */
export function within<T, F>(p: Promise<T>, ms: number, fallback: F): Promise<T | F> {
  let t: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<F>((r) => (t = setTimeout(() => r(fallback), ms)))]).finally(() => clearTimeout(t));
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}
