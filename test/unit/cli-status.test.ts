// The pool part of `tscsi-cli status` from the driver's exposition text (the whole command runs
// against a real driver in test/integration/cli-status.test.ts).
import { describe, it, expect } from 'vitest';
import { poolsFromMetrics, poolLine, human } from '../../cli/status.js';

const TEXT = `# HELP tscsi_pool_capacity_bytes Size of a backend pool
# TYPE tscsi_pool_capacity_bytes gauge
tscsi_pool_capacity_bytes{backend="lvm",pool="vg0",part="data"} 10737418240
tscsi_pool_capacity_bytes{backend="lvm",pool="vg0/idle",part="data"} 21474836480
tscsi_pool_capacity_bytes{backend="lvm",pool="vg0/idle",part="metadata"} 134217728
tscsi_pool_free_bytes{backend="lvm",pool="vg0",part="data"} 2684354560
tscsi_volumes{backend="lvm"} 3
`;

describe('tscsi-cli status: pools', () => {
  it('reads each pool and part; an inactive thin pool (no free bytes exported) shows as unknown, not empty', () => {
    const pools = poolsFromMetrics(TEXT);
    expect(pools.map((p) => [p.pool, p.part, p.capacity, p.free])).toEqual([
      ['vg0', 'data', 10737418240, 2684354560],
      ['vg0/idle', 'data', 21474836480, undefined],
      ['vg0/idle', 'metadata', 134217728, undefined],
    ]);
    expect(poolLine(pools[0], 20)).toBe('  lvm vg0\n    [###############.....]  75%  7.5Gi of 10.0Gi used');
    expect(poolLine(pools[1], 20)).toBe('  lvm vg0/idle\n    [????????????????????]   ?%  usage unknown, 20.0Gi in all');
    expect(poolLine(pools[2], 4)).toBe('  lvm vg0/idle (metadata)\n    [????]   ?%  usage unknown, 128.0Mi in all');
  });

  it('sizes read as a person reads them', () => {
    expect([human(512), human(1536), human(256 * 1024 ** 2), human(19.9 * 1024 ** 3)]).toEqual(['512', '1.5Ki', '256.0Mi', '19.9Gi']);
  });
});
