// Long work (full copies, flattening, wiping) must not be bound to one caller's deadline:
// killed at every deadline and retried, a 10-minute copy would never finish. Such work runs
// here, detached from the call that started it. The caller waits for it until its own
// deadline; a retry while it still runs gets ABORTED ("in progress"), and once it is done
// the retry's normal idempotent path finds the finished volume or snapshot (the backend is
// the record of the result), or starts it again if it failed.
import { aborted } from './errors.js';
import { unlocated } from './ids.js';
import { currentCallSignal, withoutCallSignal } from './host/exec.js';
import type { Logger } from './log.js';

export class BackgroundWork {
  private readonly running = new Map<string, { what: string; done: Promise<unknown> }>();

  constructor(private readonly log: Logger) {}

  /** Runs fn (which takes its own locks) detached from the calling RPC, and waits for it as long as the caller does. */
  async run<T>(id: string, what: string, fn: () => Promise<T>): Promise<T> {
    const key = unlocated(id); // one object, whatever location its ID names (ids.ts)
    const cur = this.running.get(key);
    if (cur) throw aborted(`${cur.what} is still in progress for ${key} in the background; retry later`);
    const started = Date.now();
    const work = withoutCallSignal(() => Promise.resolve().then(fn));
    const entry = { what, done: work.catch(() => undefined) };
    this.running.set(key, entry);
    void entry.done.then(() => {
      if (this.running.get(key) === entry) this.running.delete(key);
    });
    const signal = currentCallSignal();
    if (!signal) return work;
    let onAbort: (() => void) | undefined;
    const gaveUp = new Promise<never>((_, reject) => {
      onAbort = () => reject(signal.reason instanceof Error ? signal.reason : aborted(`the caller gave up on ${what}`));
      if (signal.aborted) onAbort();
      else signal.addEventListener('abort', onAbort, { once: true });
    });
    gaveUp.catch(() => undefined);
    try {
      return await Promise.race([work, gaveUp]);
    } catch (err) {
      if (signal.aborted) {
        // The caller is gone; the work goes on and says how it ended.
        work.then(
          () => this.log.info({ key, what, ms: Date.now() - started }, 'background work finished after its caller gave up'),
          (e: unknown) => this.log.error({ key, what, err: e instanceof Error ? e.message : String(e) }, 'background work failed after its caller gave up'),
        );
      }
      throw err;
    } finally {
      if (onAbort) signal.removeEventListener('abort', onAbort);
    }
  }

  get size(): number {
    return this.running.size;
  }

  /** Waits until no background work runs, or graceMs passed; true when idle. */
  async idle(graceMs: number): Promise<boolean> {
    const until = Date.now() + graceMs;
    while (this.running.size > 0) {
      const left = until - Date.now();
      if (left <= 0) return false;
      await Promise.race([Promise.all([...this.running.values()].map((e) => e.done)), new Promise((r) => setTimeout(r, left))]);
    }
    return true;
  }
}
