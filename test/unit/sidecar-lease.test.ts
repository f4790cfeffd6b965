import { describe, it, expect } from 'vitest';
import { decide, leaseExpired, renewDeadlinePassed, jitter, validateTimings, type ObservedLease } from '../../sidecars/common/lease.js';

const held = (holder: string, leaseDurationSeconds = 15): ObservedLease => ({ holder, leaseDurationSeconds, resourceVersion: '1' });

describe('leader election decisions', () => {
  it('creates the lease when there is none', () => {
    expect(decide(undefined, 0, 0, 'me')).toBe('create');
  });

  it('renews a lease it holds, even one that looks expired', () => {
    expect(decide(held('me'), 0, 1_000, 'me')).toBe('renew');
    expect(decide(held('me'), 0, 60_000, 'me')).toBe('renew');
  });

  it('takes a released (empty holder) lease at once', () => {
    expect(decide(held('', 1), 10_000, 10_000, 'me')).toBe('acquire');
  });

  it("waits while another holder's lease runs, measured from when it was last seen changing", () => {
    expect(decide(held('other'), 5_000, 5_000, 'me')).toBe('wait');
    expect(decide(held('other'), 5_000, 19_999, 'me')).toBe('wait');
    expect(decide(held('other'), 5_000, 20_000, 'me')).toBe('acquire');
  });

  it("uses the lease's own duration", () => {
    expect(leaseExpired({ leaseDurationSeconds: 1 }, 0, 999)).toBe(false);
    expect(leaseExpired({ leaseDurationSeconds: 1 }, 0, 1_000)).toBe(true);
    expect(decide(held('other', 60), 0, 30_000, 'me')).toBe('wait');
  });

  it('gives up leadership once renewals failed for the renew deadline', () => {
    expect(renewDeadlinePassed(0, 9_999, 10_000)).toBe(false);
    expect(renewDeadlinePassed(0, 10_000, 10_000)).toBe(true);
  });

  it('jitters retries between d and d·(1+factor)', () => {
    expect(jitter(2_000, 1.2, () => 0)).toBe(2_000);
    expect(jitter(2_000, 1.2, () => 1)).toBe(4_400);
  });

  it("enforces client-go's ordering of the timings", () => {
    expect(() => validateTimings(15_000, 10_000, 2_000)).not.toThrow();
    expect(() => validateTimings(10_000, 10_000, 2_000)).toThrow(/leaseDuration/);
    expect(() => validateTimings(15_000, 2_000, 2_000)).toThrow(/renewDeadline/);
    expect(() => validateTimings(15_000, 10_000, 0)).toThrow(/retryPeriod/);
  });
});

// ---- the elector's loop against an in-memory Lease API with the apiserver's optimistic concurrency ----
import { LeaderElector, MicroTime } from '../../sidecars/common/lease.js';
import type { CoordinationV1Api, V1Lease } from '@kubernetes/client-node';
import { holdsFor, waitFor } from '../lib/wait.js';

class FakeLeaseApi {
  lease?: V1Lease;
  rv = 0;
  down = false;
  writes: string[] = [];
  private err(code: number) {
    return Object.assign(new Error(`HTTP ${code}`), { code });
  }
  private copy(l: V1Lease): V1Lease {
    return JSON.parse(JSON.stringify(l));
  }
  async readNamespacedLease(): Promise<V1Lease> {
    if (this.down) throw this.err(503);
    if (!this.lease) throw this.err(404);
    return this.copy(this.lease);
  }
  async createNamespacedLease({ body }: { body: V1Lease }): Promise<V1Lease> {
    if (this.down) throw this.err(503);
    if (this.lease) throw this.err(409);
    this.lease = this.copy({ ...body, metadata: { ...body.metadata, resourceVersion: String(++this.rv) } });
    this.writes.push(`create:${body.spec?.holderIdentity}`);
    return this.copy(this.lease);
  }
  async replaceNamespacedLease({ body }: { body: V1Lease }): Promise<V1Lease> {
    if (this.down) throw this.err(503);
    if (!this.lease) throw this.err(404);
    if (body.metadata?.resourceVersion !== this.lease.metadata?.resourceVersion) throw this.err(409);
    this.lease = this.copy({ ...body, metadata: { ...body.metadata, resourceVersion: String(++this.rv) } });
    this.writes.push(`replace:${body.spec?.holderIdentity}`);
    return this.copy(this.lease);
  }
  get holder(): string | undefined {
    return this.lease?.spec?.holderIdentity;
  }
}

const FAST = { leaseDurationMs: 1_500, renewDeadlineMs: 1_000, retryPeriodMs: 200 };
// The short timings above: ask often.
const until = (fn: () => boolean, ms = 5_000) => waitFor('the condition', async () => fn(), { timeoutMs: ms, everyMs: 10 });

describe('LeaderElector loop (fake API, short timings)', () => {
  function elector(api: FakeLeaseApi, identity: string, events: string[]) {
    return new LeaderElector(api as unknown as CoordinationV1Api, {
      namespace: 'ns',
      name: 'l',
      identity,
      ...FAST,
      onStartedLeading: () => void events.push(`${identity}+`),
      onStoppedLeading: () => void events.push(`${identity}-`),
    });
  }

  it('one of two leads; a released lease passes at once; a vanished leader only after expiry', async () => {
    const api = new FakeLeaseApi();
    const events: string[] = [];
    const a = elector(api, 'a', events);
    a.start();
    await until(() => a.isLeader());
    const b = elector(api, 'b', events);
    b.start();
    await holdsFor('a leads, b waits', () => a.isLeader() && !b.isLeader(), 700, 20);
    expect(api.holder).toBe('a');
    expect(api.lease?.spec?.leaseDurationSeconds).toBe(2); // whole seconds, rounded up
    expect(api.writes.filter((w) => w === 'replace:a').length).toBeGreaterThanOrEqual(2); // renewing

    let t = Date.now();
    await a.stop();
    expect(api.holder).toBe('');
    await until(() => b.isLeader(), 2_000);
    expect(Date.now() - t).toBeLessThan(1_000);
    expect(api.lease?.spec?.leaseTransitions).toBe(1); // a -> b (the release itself is no transition), as client-go counts

    const c = elector(api, 'c', events);
    c.start();
    await holdsFor('c waits while b renews', () => !c.isLeader(), 300, 20);
    t = Date.now();
    await b.stop({ release: false });
    expect(api.holder).toBe('b');
    await until(() => c.isLeader(), 5_000);
    expect(Date.now() - t).toBeGreaterThanOrEqual(2_000 - 200 - 440 - 50); // lease 2 s, seen changing at most a renew + retry earlier
    await c.stop();
    expect(events).toEqual(['a+', 'a-', 'b+', 'b-', 'c+', 'c-']);
  });

  it('a leader that cannot renew steps down after the renew deadline', async () => {
    const api = new FakeLeaseApi();
    const events: string[] = [];
    const a = elector(api, 'a', events);
    a.start();
    await until(() => a.isLeader());
    api.down = true;
    const t = Date.now();
    await until(() => !a.isLeader(), 3_000);
    expect(Date.now() - t).toBeGreaterThanOrEqual(FAST.renewDeadlineMs - FAST.retryPeriodMs - 50);
    expect(events).toEqual(['a+', 'a-']);
    api.down = false;
    await until(() => a.isLeader(), 3_000); // contends again, and the lease is still its own
    await a.stop();
  });

  it('a leader that sees another holder steps down at once', async () => {
    const api = new FakeLeaseApi();
    const events: string[] = [];
    const a = elector(api, 'a', events);
    a.start();
    await until(() => a.isLeader());
    api.lease!.spec!.holderIdentity = 'intruder';
    api.lease!.spec!.renewTime = new MicroTime();
    api.lease!.metadata!.resourceVersion = String(++api.rv);
    await until(() => !a.isLeader(), 1_000);
    await a.stop();
    expect(api.holder).toBe('intruder'); // not released: it is not a's
  });

  it('writes renewTime and acquireTime with microseconds', () => {
    expect(JSON.stringify({ t: new MicroTime(Date.UTC(2026, 0, 2, 3, 4, 5, 678)) })).toBe('{"t":"2026-01-02T03:04:05.678000Z"}');
  });
});
