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
