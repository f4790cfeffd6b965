// A keyed work queue: a key is queued once however often it changes, at most `workers`
// keys are worked on at a time, a key is never worked on twice at once, and a failed key
// comes back after an exponential back-off (1 s doubling to 5 min by default).
import type { Logger } from 'pino';
import { httpStatus } from './kube.js';

/** A failed key's first retry waits this long (the default of kubernetes-csi sidecars' --retry-interval-start)... */
const RETRY_BASE_DELAY_MS = 1_000;
/** ...doubling up to this (their --retry-interval-max). */
const RETRY_MAX_DELAY_MS = 300_000;

export interface QueueOptions {
  workers: number;
  baseDelayMs?: number;
  maxDelayMs?: number;
}

export class WorkQueue {
  private readonly queued = new Set<string>();
  private readonly order: string[] = [];
  private readonly active = new Set<string>();
  private readonly dirty = new Set<string>();
  private readonly failures = new Map<string, number>();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private stopped = false;

  constructor(
    private readonly handle: (key: string) => Promise<void>,
    private readonly opts: QueueOptions,
    private readonly log: Logger,
  ) {}

  add(key: string): void {
    if (this.stopped || !key) return;
    if (this.active.has(key)) {
      this.dirty.add(key); // run again once the current run ends
      return;
    }
    if (this.queued.has(key)) return;
    this.queued.add(key);
    this.order.push(key);
    this.pump();
  }

  /** Re-adds the key after its back-off; the delay doubles with each consecutive failure. */
  private retry(key: string): void {
    const n = (this.failures.get(key) ?? 0) + 1;
    this.failures.set(key, n);
    const delay = Math.min((this.opts.baseDelayMs ?? RETRY_BASE_DELAY_MS) * 2 ** (n - 1), this.opts.maxDelayMs ?? RETRY_MAX_DELAY_MS);
    clearTimeout(this.timers.get(key));
    this.timers.set(
      key,
      setTimeout(() => {
        this.timers.delete(key);
        this.add(key);
      }, delay),
    );
  }

  private pump(): void {
    while (this.active.size < this.opts.workers && this.order.length > 0) {
      const key = this.order.shift()!;
      this.queued.delete(key);
      this.active.add(key);
      this.handle(key).then(
        () => this.failures.delete(key),
        (err: unknown) => {
          const fields = { key, err: err instanceof Error ? err.message : String(err), attempt: (this.failures.get(key) ?? 0) + 1 };
          // A 409 is an object that changed since it was read (a write with its resourceVersion):
          // the retry reads the new one; nothing failed that a person must look at.
          if (httpStatus(err) === 409) this.log.info(fields, 'object changed meanwhile (409 conflict); retrying with the current one');
          else this.log.warn(fields, 'work failed; will retry');
          this.retry(key);
        },
      ).finally(() => {
        this.active.delete(key);
        if (this.dirty.delete(key)) this.add(key);
        this.pump();
      });
    }
  }

  get depth(): number {
    return this.order.length + this.active.size;
  }

  stop(): void {
    this.stopped = true;
    for (const t of this.timers.values()) clearTimeout(t);
  }
}
