// Leader election through a coordination.k8s.io/v1 Lease, the way client-go does it:
// leaseDuration 15 s, renewDeadline 10 s, retryPeriod 2 s. A candidate takes the lease
// only when it is free (empty holder, as a released lease is) or has expired; expiry is
// judged on this process's monotonic clock from the moment it last saw the lease change
// (client-go's "observed time"), so clock skew between nodes does not matter. Updates
// carry the resourceVersion, so two candidates never both win one round.
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
// Types only: this module never loads @kubernetes/client-node itself (the caller hands in
// the CoordinationV1Api, or anything with its three Lease methods, e.g. a fake in tests).
import type * as k8s from '@kubernetes/client-node';

/**
 * A metav1.MicroTime value: serialized with microseconds ("...T12:00:00.123000Z"), which the
 * apiserver requires for acquireTime/renewTime. Same as client-node's V1MicroTime (1.x and
 * 2.x: the serializer passes the object through and JSON.stringify calls toISOString).
 */
export class MicroTime extends Date {
  override toISOString(): string {
    return super.toISOString().slice(0, -1) + '000Z';
  }
}

/** The HTTP status of a failed client-node call (ApiException.code), or undefined. */
function httpStatus(err: unknown): number | undefined {
  const code = (err as { code?: unknown })?.code;
  return typeof code === 'number' ? code : undefined;
}

export interface LeaderElectionConfig {
  namespace: string;
  /** The Lease's name (one per component and driver, e.g. "tscsi-provisioner-csi-tscsi-dev"). */
  name: string;
  /** This candidate's identity in spec.holderIdentity; default `<hostname>_<pid>`. */
  identity?: string;
  leaseDurationMs?: number;
  renewDeadlineMs?: number;
  retryPeriodMs?: number;
  /** Called when this candidate becomes the leader. */
  onStartedLeading: () => void | Promise<void>;
  /** Called when it stops being the leader (lost the lease, or stop()); awaited before the lease is released. */
  onStoppedLeading: () => void | Promise<void>;
  /** Called whenever the holder this candidate sees changes (including to itself). */
  onNewLeader?: (identity: string) => void;
  /** Give the lease back on stop() so a successor need not wait for it to expire (default true). */
  releaseOnStop?: boolean;
  log?: Logger;
}

export const DEFAULT_LEASE_DURATION_MS = 15_000;
export const DEFAULT_RENEW_DEADLINE_MS = 10_000;
export const DEFAULT_RETRY_PERIOD_MS = 2_000;
/** client-go's JitterFactor for the acquire retries. */
export const JITTER_FACTOR = 1.2;

export function defaultIdentity(): string {
  return `${os.hostname()}_${process.pid}`;
}

/** What the lease said when last read. */
export interface ObservedLease {
  holder: string;
  leaseDurationSeconds: number;
  resourceVersion: string;
}

export type Decision = 'create' | 'renew' | 'acquire' | 'wait';

/**
 * The pure core of one election round. `observed` is the lease as just read (undefined:
 * there is none), `observedAtMs` when this candidate last saw it change, `nowMs` the same
 * clock now.
 */
export function decide(observed: ObservedLease | undefined, observedAtMs: number, nowMs: number, identity: string): Decision {
  if (!observed) return 'create';
  if (observed.holder === identity) return 'renew';
  if (observed.holder === '') return 'acquire';
  if (!leaseExpired(observed, observedAtMs, nowMs)) return 'wait';
  return 'acquire';
}

/** Whether a lease last seen changing at observedAtMs has run out by nowMs. */
export function leaseExpired(observed: Pick<ObservedLease, 'leaseDurationSeconds'>, observedAtMs: number, nowMs: number): boolean {
  return observedAtMs + observed.leaseDurationSeconds * 1000 <= nowMs;
}

/** Whether a leader whose last successful renewal was at lastRenewMs must give up by nowMs. */
export function renewDeadlinePassed(lastRenewMs: number, nowMs: number, renewDeadlineMs: number): boolean {
  return nowMs - lastRenewMs >= renewDeadlineMs;
}

/** client-go's wait.Jitter: d plus up to factor·d at random. */
export function jitter(d: number, factor = JITTER_FACTOR, rand: () => number = Math.random): number {
  return d + rand() * factor * d;
}

/** Checks client-go's rules: leaseDuration > renewDeadline > retryPeriod·JITTER_FACTOR, all positive. */
export function validateTimings(leaseDurationMs: number, renewDeadlineMs: number, retryPeriodMs: number): void {
  if (!(retryPeriodMs > 0)) throw new Error('retryPeriod must be greater than zero');
  if (!(leaseDurationMs > renewDeadlineMs)) throw new Error('leaseDuration must be greater than renewDeadline');
  if (!(renewDeadlineMs > JITTER_FACTOR * retryPeriodMs)) throw new Error(`renewDeadline must be greater than retryPeriod*${JITTER_FACTOR}`);
}

class Timeout extends Error {}

/** The metadata a replace sends: identity, optimistic-concurrency version, labels, annotations. */
function writableMeta(lease: k8s.V1Lease): k8s.V1ObjectMeta {
  const m = lease.metadata ?? {};
  return { name: m.name, namespace: m.namespace, resourceVersion: m.resourceVersion, labels: m.labels, annotations: m.annotations };
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let t: NodeJS.Timeout;
  return Promise.race([
    p,
    new Promise<T>((_, reject) => {
      t = setTimeout(() => reject(new Timeout(`timed out after ${ms} ms`)), Math.max(1, ms));
    }),
  ]).finally(() => clearTimeout(t));
}

/**
 * One candidate. start() begins contending; while leading it renews every retryPeriod and
 * gives up (onStoppedLeading) when no renewal succeeded for renewDeadline, then contends
 * again. stop() ends it: onStoppedLeading if leading, then the lease is released.
 */
export class LeaderElector {
  readonly identity: string;
  private readonly leaseDurationMs: number;
  private readonly renewDeadlineMs: number;
  private readonly retryPeriodMs: number;
  private leading = false;
  private stopped = false;
  private loop?: Promise<void>;
  private wake?: () => void;
  private observed?: ObservedLease;
  private observedAt = 0;
  private lastHolder?: string;
  private releaseOnStop: boolean;

  constructor(
    private readonly api: k8s.CoordinationV1Api,
    private readonly cfg: LeaderElectionConfig,
  ) {
    this.identity = cfg.identity ?? defaultIdentity();
    if (!this.identity) throw new Error('leader election needs a non-empty identity');
    this.leaseDurationMs = cfg.leaseDurationMs ?? DEFAULT_LEASE_DURATION_MS;
    this.renewDeadlineMs = cfg.renewDeadlineMs ?? DEFAULT_RENEW_DEADLINE_MS;
    this.retryPeriodMs = cfg.retryPeriodMs ?? DEFAULT_RETRY_PERIOD_MS;
    validateTimings(this.leaseDurationMs, this.renewDeadlineMs, this.retryPeriodMs);
    this.releaseOnStop = cfg.releaseOnStop ?? true;
  }

  isLeader(): boolean {
    return this.leading;
  }

  /** The holder this candidate last saw ('' when free, undefined before the first read). */
  get leader(): string | undefined {
    return this.lastHolder;
  }

  start(): void {
    if (this.loop) return;
    this.loop = this.run().catch((err: unknown) => this.cfg.log?.error({ err: String(err) }, 'leader election loop failed'));
  }

  /**
   * Stops contending/leading; resolves after onStoppedLeading and the release. With
   * `release: false` the lease is left to expire (what a crashed leader leaves behind).
   */
  async stop(opts: { release?: boolean } = {}): Promise<void> {
    if (opts.release !== undefined) this.releaseOnStop = opts.release;
    this.stopped = true;
    this.wake?.();
    await this.loop;
  }

  private now(): number {
    return performance.now();
  }

  private sleep(ms: number): Promise<void> {
    if (this.stopped) return Promise.resolve();
    return new Promise((resolve) => {
      const t = setTimeout(done, ms);
      function done() {
        clearTimeout(t);
        resolve();
      }
      this.wake = done;
    });
  }

  private async run(): Promise<void> {
    const log = this.cfg.log;
    while (!this.stopped) {
      // candidate: try every retryPeriod (jittered) until the lease is ours
      log?.info({ lease: `${this.cfg.namespace}/${this.cfg.name}`, identity: this.identity }, 'attempting to acquire the leader lease');
      while (!this.stopped && !(await this.tryAcquireOrRenew(this.renewDeadlineMs))) await this.sleep(jitter(this.retryPeriodMs));
      if (this.stopped) break;
      this.leading = true;
      let lastRenew = this.now();
      log?.info({ lease: `${this.cfg.namespace}/${this.cfg.name}`, identity: this.identity }, 'became the leader');
      try {
        await this.cfg.onStartedLeading();
      } catch (err) {
        log?.error({ err: String(err) }, 'onStartedLeading failed');
      }
      // leader: renew every retryPeriod; give up when renewals failed for renewDeadline
      while (!this.stopped) {
        await this.sleep(this.retryPeriodMs);
        if (this.stopped) break;
        const left = lastRenew + this.renewDeadlineMs - this.now();
        const ok = left > 0 && (await this.tryAcquireOrRenew(left));
        if (ok) {
          lastRenew = this.now();
          continue;
        }
        if (this.observed && this.observed.holder !== this.identity) {
          log?.warn({ lease: `${this.cfg.namespace}/${this.cfg.name}`, identity: this.identity, holder: this.observed.holder }, 'the lease has another holder; leadership lost');
          break;
        }
        if (renewDeadlinePassed(lastRenew, this.now(), this.renewDeadlineMs)) {
          log?.warn({ lease: `${this.cfg.namespace}/${this.cfg.name}`, identity: this.identity }, 'failed to renew the lease in time; leadership lost');
          break;
        }
      }
      this.leading = false;
      try {
        await this.cfg.onStoppedLeading();
      } catch (err) {
        log?.error({ err: String(err) }, 'onStoppedLeading failed');
      }
      if (this.stopped && this.releaseOnStop) await this.release();
    }
  }

  private setObserved(lease: k8s.V1Lease): void {
    const o: ObservedLease = {
      holder: lease.spec?.holderIdentity ?? '',
      leaseDurationSeconds: lease.spec?.leaseDurationSeconds ?? Math.ceil(this.leaseDurationMs / 1000),
      resourceVersion: lease.metadata?.resourceVersion ?? '',
    };
    if (!this.observed || this.observed.resourceVersion !== o.resourceVersion) {
      this.observed = o;
      this.observedAt = this.now();
    }
    if (o.holder !== this.lastHolder) {
      this.lastHolder = o.holder;
      if (o.holder) {
        this.cfg.log?.info({ lease: `${this.cfg.namespace}/${this.cfg.name}`, holder: o.holder }, 'new leader observed');
        this.cfg.onNewLeader?.(o.holder);
      }
    }
  }

  private spec(prev: k8s.V1LeaseSpec | undefined, now: Date): k8s.V1LeaseSpec {
    const holderChanged = prev?.holderIdentity !== this.identity;
    return {
      holderIdentity: this.identity,
      leaseDurationSeconds: Math.ceil(this.leaseDurationMs / 1000),
      acquireTime: new MicroTime(holderChanged || !prev?.acquireTime ? now : new Date(prev.acquireTime as unknown as string)),
      renewTime: new MicroTime(now),
      leaseTransitions: (prev?.leaseTransitions ?? 0) + (prev && holderChanged ? 1 : 0), // as client-go: every change of holder
    };
  }

  /** One round: read, decide, write. True when this candidate holds the lease afterwards. */
  private async tryAcquireOrRenew(timeoutMs: number): Promise<boolean> {
    const { namespace, name } = this.cfg;
    const deadline = this.now() + Math.min(timeoutMs, this.renewDeadlineMs);
    const left = () => deadline - this.now();
    let lease: k8s.V1Lease | undefined;
    try {
      lease = await withTimeout(this.api.readNamespacedLease({ name, namespace }), left());
    } catch (err) {
      if (httpStatus(err) !== 404) {
        this.cfg.log?.warn({ lease: `${namespace}/${name}`, err: String((err as Error)?.message ?? err) }, 'reading the lease failed');
        return false;
      }
    }
    if (lease) this.setObserved(lease);
    const decision = decide(lease ? this.observed : undefined, this.observedAt, this.now(), this.identity);
    if (decision === 'wait') return false;
    const now = new Date();
    try {
      if (decision === 'create') {
        const created = await withTimeout(
          this.api.createNamespacedLease({ namespace, body: { metadata: { name, namespace }, spec: this.spec(undefined, now) } }),
          left(),
        );
        this.setObserved(created);
      } else {
        const body: k8s.V1Lease = { metadata: writableMeta(lease!), spec: { ...lease!.spec, ...this.spec(lease!.spec, now) } };
        const updated = await withTimeout(this.api.replaceNamespacedLease({ name, namespace, body }), left());
        this.setObserved(updated);
      }
      return true;
    } catch (err) {
      const code = httpStatus(err);
      // 409: another candidate wrote first (create race or stale resourceVersion): not ours this round
      if (code !== 409) this.cfg.log?.warn({ lease: `${namespace}/${name}`, decision, err: String((err as Error)?.message ?? err) }, 'writing the lease failed');
      return false;
    }
  }

  /** Gives the lease back (empty holder, 1 s duration) if this candidate still holds it. */
  private async release(): Promise<void> {
    const { namespace, name } = this.cfg;
    try {
      const lease = await withTimeout(this.api.readNamespacedLease({ name, namespace }), this.renewDeadlineMs);
      if (lease.spec?.holderIdentity !== this.identity) return;
      const now = new Date();
      const body: k8s.V1Lease = {
        metadata: writableMeta(lease),
        spec: {
          ...lease.spec,
          holderIdentity: '',
          leaseDurationSeconds: 1,
          acquireTime: new MicroTime(now),
          renewTime: new MicroTime(now),
        },
      };
      await withTimeout(this.api.replaceNamespacedLease({ name, namespace, body }), this.renewDeadlineMs);
      this.cfg.log?.info({ lease: `${namespace}/${name}`, identity: this.identity }, 'released the leader lease');
    } catch (err) {
      this.cfg.log?.warn({ lease: `${namespace}/${name}`, err: String((err as Error)?.message ?? err) }, 'releasing the lease failed');
    }
  }
}
