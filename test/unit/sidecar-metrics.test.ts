import { describe, it, expect } from 'vitest';
import {
  Registry,
  CsiCallMetrics,
  DEFAULT_BUCKETS,
  escapeLabelValue,
  formatValue,
  CONTENT_TYPE,
} from '../../sidecars/common/metrics.js';
import type { CsiClient } from '../../sidecars/common/csi-client.js';

/** Every line must be a comment or `name{labels} value` (the text format's grammar, simplified). */
const SAMPLE = /^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\["\\n])*")(,[a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\["\\n])*")*\})? (-?[0-9.e+-]+|\+Inf|-Inf|NaN)$/;

describe('Prometheus text exposition', () => {
  it('renders a counter with HELP, TYPE and one line per label set, sorted', () => {
    const r = new Registry();
    const c = r.counter('tscsi_things_total', 'Things done.', ['kind']);
    c.inc({ kind: 'b' });
    c.inc({ kind: 'a' }, 2);
    c.inc({ kind: 'b' });
    expect(r.render()).toBe(
      '# HELP tscsi_things_total Things done.\n' +
        '# TYPE tscsi_things_total counter\n' +
        'tscsi_things_total{kind="a"} 2\n' +
        'tscsi_things_total{kind="b"} 2\n',
    );
  });

  it('renders a counter without labels', () => {
    const r = new Registry();
    r.counter('a_total', 'A.').inc();
    expect(r.render()).toBe('# HELP a_total A.\n# TYPE a_total counter\na_total 1\n');
  });

  it('renders a histogram: cumulative buckets with le, +Inf, _sum and _count', () => {
    const r = new Registry();
    const h = r.histogram('rpc_seconds', 'RPC time.', ['method'], [0.1, 1, 10]);
    for (const v of [0.05, 0.1, 0.5, 2, 100]) h.observe({ method: 'Probe' }, v);
    expect(r.render()).toBe(
      [
        '# HELP rpc_seconds RPC time.',
        '# TYPE rpc_seconds histogram',
        'rpc_seconds_bucket{method="Probe",le="0.1"} 2', // le is inclusive
        'rpc_seconds_bucket{method="Probe",le="1"} 3',
        'rpc_seconds_bucket{method="Probe",le="10"} 4',
        'rpc_seconds_bucket{method="Probe",le="+Inf"} 5',
        'rpc_seconds_sum{method="Probe"} 102.65',
        'rpc_seconds_count{method="Probe"} 5',
      ].join('\n') + '\n',
    );
    expect(h.get({ method: 'Probe' })).toEqual({ count: 5, sum: 102.65 });
  });

  it('escapes label values and help text', () => {
    expect(escapeLabelValue('a"b\\c\nd')).toBe('a\\"b\\\\c\\nd');
    const r = new Registry();
    r.counter('x_total', 'line one\nback\\slash', ['v']).inc({ v: 'say "hi"\n' });
    const text = r.render();
    expect(text).toContain('# HELP x_total line one\\nback\\\\slash\n');
    expect(text).toContain('x_total{v="say \\"hi\\"\\n"} 1\n');
    for (const line of text.trimEnd().split('\n')) if (!line.startsWith('#')) expect(line).toMatch(SAMPLE);
  });

  it('formats special values', () => {
    expect(formatValue(Infinity)).toBe('+Inf');
    expect(formatValue(-Infinity)).toBe('-Inf');
    expect(formatValue(NaN)).toBe('NaN');
    expect(formatValue(1e-7)).toBe('1e-7');
    expect(formatValue(3)).toBe('3');
  });

  it('refuses bad names, wrong labels, negative increments and bad buckets', () => {
    const r = new Registry();
    expect(() => r.counter('bad-name', 'x')).toThrow(/invalid metric name/);
    expect(() => r.counter('ok_total', 'x', ['bad-label'])).toThrow(/invalid label/);
    expect(() => r.counter('ok2_total', 'x', ['__reserved'])).toThrow(/invalid label/);
    const c = r.counter('c_total', 'x', ['a']);
    expect(() => c.inc({})).toThrow(/missing label a/);
    expect(() => c.inc({ a: '1', b: '2' })).toThrow(/unknown label b/);
    expect(() => c.inc({ a: '1' }, -1)).toThrow(/only goes up/);
    expect(() => r.histogram('h', 'x', ['le'])).toThrow(/reserved/);
    expect(() => r.histogram('h2', 'x', [], [1, 1])).toThrow(/increase/);
    expect(() => r.histogram('c_total', 'x', ['a'])).toThrow(/already registered/);
    // the same definition twice is the same metric
    expect(r.counter('c_total', 'x', ['a'])).toBe(c);
  });

  it('renders nothing for an empty registry and uses the 0.0.4 content type', () => {
    expect(new Registry().render()).toBe('');
    expect(CONTENT_TYPE).toBe('text/plain; version=0.0.4; charset=utf-8');
  });

  it('has increasing default buckets from milliseconds to minutes', () => {
    expect(DEFAULT_BUCKETS[0]).toBeLessThanOrEqual(0.01);
    expect(DEFAULT_BUCKETS.at(-1)).toBeGreaterThanOrEqual(60);
    for (let i = 1; i < DEFAULT_BUCKETS.length; i++) expect(DEFAULT_BUCKETS[i]!).toBeGreaterThan(DEFAULT_BUCKETS[i - 1]!);
  });
});

describe('gauges', () => {
  it('go up and down, and drop the series of one source before it is set again', () => {
    const r = new Registry();
    const g = r.gauge('pool_free_bytes', 'Free.', ['backend', 'pool']);
    g.set({ backend: 'lvm', pool: 'vg1' }, 10);
    g.set({ backend: 'lvm', pool: 'vg2' }, 20);
    g.set({ backend: 'loop', pool: '/d' }, 5);
    g.inc({ backend: 'loop', pool: '/d' }, 2);
    g.dec({ backend: 'loop', pool: '/d' });
    g.removeWhere({ backend: 'lvm' });
    g.set({ backend: 'lvm', pool: 'vg2' }, 15);
    expect(r.render()).toBe(
      '# HELP pool_free_bytes Free.\n# TYPE pool_free_bytes gauge\n' + 'pool_free_bytes{backend="loop",pool="/d"} 6\n' + 'pool_free_bytes{backend="lvm",pool="vg2"} 15\n',
    );
    expect(() => g.removeWhere({ node: 'x' })).toThrow('unknown label node');
  });
});

describe('CSI call metrics', () => {
  function fakeClient(): CsiClient {
    const err = Object.assign(new Error('5 NOT_FOUND: no such volume'), { code: 5 });
    const rpc = (fn: () => Promise<unknown>) => () => fn();
    return {
      Identity: { Probe: rpc(async () => ({ ready: { value: true } })) },
      Controller: {
        DeleteVolume: rpc(async () => {
          throw err;
        }),
      },
      Node: {},
      GroupController: {},
    } as unknown as CsiClient;
  }

  it('counts every call by driver, full method and status code, and times it', async () => {
    const r = new Registry();
    const m = new CsiCallMetrics(r, 'csi.tscsi.dev');
    const c = m.instrument(fakeClient());
    await c.Identity.Probe!({});
    await c.Identity.Probe!({});
    await expect(c.Controller.DeleteVolume!({ volume_id: 'x' })).rejects.toThrow(/NOT_FOUND/);
    m.instrument(c); // instrumenting twice does not double count
    await c.Identity.Probe!({});
    expect(m.operations.get({ driver: 'csi.tscsi.dev', method: '/csi.v1.Identity/Probe', code: 'OK' })).toBe(3);
    expect(m.operations.get({ driver: 'csi.tscsi.dev', method: '/csi.v1.Controller/DeleteVolume', code: 'NOT_FOUND' })).toBe(1);
    const text = r.render();
    expect(text).toContain('# TYPE tscsi_csi_operations_total counter\n');
    expect(text).toContain('tscsi_csi_operations_total{driver="csi.tscsi.dev",method="/csi.v1.Identity/Probe",code="OK"} 3\n');
    expect(text).toContain('# TYPE tscsi_csi_operation_duration_seconds histogram\n');
    expect(text).toContain('tscsi_csi_operation_duration_seconds_count{driver="csi.tscsi.dev",method="/csi.v1.Controller/DeleteVolume",code="NOT_FOUND"} 1\n');
    expect(text).toMatch(/tscsi_csi_operation_duration_seconds_bucket\{driver="csi.tscsi.dev",method="\/csi.v1.Identity\/Probe",code="OK",le="\+Inf"\} 3\n/);
    for (const line of text.trimEnd().split('\n')) if (!line.startsWith('#')) expect(line).toMatch(SAMPLE);
  });

  it('labels later calls with the driver name once it is known', async () => {
    const r = new Registry();
    const m = new CsiCallMetrics(r);
    const c = m.instrument(fakeClient());
    await c.Identity.Probe!({});
    m.driver = 'csi.tscsi.dev';
    await c.Identity.Probe!({});
    expect(m.operations.get({ driver: 'unknown', method: '/csi.v1.Identity/Probe', code: 'OK' })).toBe(1);
    expect(m.operations.get({ driver: 'csi.tscsi.dev', method: '/csi.v1.Identity/Probe', code: 'OK' })).toBe(1);
  });
});
