import { describe, it, expect } from 'vitest';
import { leaderElectionTimings } from '../../sidecars/common/run.js';

describe('leader election flags', () => {
  it("take kubernetes-csi's duration flags", () => {
    const t = leaderElectionTimings(
      { 'leader-election-lease-duration': '8s', 'leader-election-renew-deadline': '6s', 'leader-election-retry-period': '1s' },
      { POD_NAME: 'tscsi-controller-abc' },
    );
    expect(t).toEqual({ identity: 'tscsi-controller-abc', leaseDurationMs: 8_000, renewDeadlineMs: 6_000, retryPeriodMs: 1_000 });
  });

  it('default to client-go timings and a <hostname>_<pid> identity without POD_NAME', () => {
    const t = leaderElectionTimings({}, {});
    expect([t.leaseDurationMs, t.renewDeadlineMs, t.retryPeriodMs]).toEqual([15_000, 10_000, 2_000]);
    expect(t.identity).toMatch(new RegExp(`_${process.pid}$`));
  });

  it('refuse timings a candidate could lose the lease with unnoticed, naming the flags', () => {
    expect(() => leaderElectionTimings({ 'leader-election-lease-duration': '10s', 'leader-election-renew-deadline': '10s' }, {})).toThrow(
      /leaseDuration must be greater than renewDeadline.*--leader-election-lease-duration/,
    );
    expect(() => leaderElectionTimings({ 'leader-election-retry-period': '9s' }, {})).toThrow(/renewDeadline must be greater than retryPeriod/);
  });

  it('refuse a value that is not a duration', () => {
    expect(() => leaderElectionTimings({ 'leader-election-retry-period': 'soon' }, {})).toThrow('--leader-election-retry-period must be a duration such as 15s or 1m; got "soon"');
  });
});
