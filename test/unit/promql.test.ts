// The monitoring test's reading of PromQL (test/lib/promql.ts): which names it takes for
// metrics, so a dashboard query naming a metric nobody exports cannot slip past it.
import { describe, it, expect } from 'vitest';
import { metricNames, asRuleFileExpr, dashboardQueries, ruleExprs } from '../lib/promql.js';

describe('metric names in PromQL', () => {
  it.each<[string, string[]]>([
    ['tscsi_volumes', ['tscsi_volumes']],
    ['1 - tscsi_pool_free_bytes{pool=~"vg/.*"} / tscsi_pool_capacity_bytes > 0.80', ['tscsi_pool_free_bytes', 'tscsi_pool_capacity_bytes']],
    ['histogram_quantile(0.99, sum by (le, method_name) (rate(a_seconds_bucket{x="by (y)"}[5m])))', ['a_seconds_bucket']],
    ['sum without (grpc_status_code) (rate(a_total[$__rate_interval])) / on (instance) group_left (node) b', ['a_total', 'b']],
    ['a unless b or c and bool d offset 5m', ['a', 'b', 'c', 'd']],
    ['max(x:recorded:rate5m) by (name) < 1', ['x:recorded:rate5m']],
  ])('%s', (expr, names) => {
    expect(metricNames(expr).sort()).toEqual([...names].sort());
  });

  it('replaces Grafana variables as Grafana would before Prometheus parses the query', () => {
    expect(asRuleFileExpr('rate(a{instance=~"$instance", b=~"${backend}"}[$__rate_interval])')).toBe('rate(a{instance=~".*", b=~".*"}[5m])');
  });

  it('finds the queries of panels, rows and query variables', () => {
    const q = dashboardQueries({
      panels: [{ title: 'p', targets: [{ refId: 'A', expr: 'a' }] }, { title: 'row', panels: [{ title: 'q', targets: [{ refId: 'B', expr: 'b' }] }] }],
      templating: { list: [{ name: 'v', type: 'query', query: { query: 'label_values(c, backend)' } }, { name: 'ds', type: 'datasource', query: 'prometheus' }] },
    });
    expect(q).toEqual([
      { where: 'p A', expr: 'a' },
      { where: 'q B', expr: 'b' },
      { where: 'variable v', expr: 'label_values(c, backend)', labelValuesOf: 'c' },
    ]);
  });
});

describe('rule expressions', () => {
  it('reads one-line and block exprs, and nothing past a block', () => {
    const file = ['groups:', '  - name: g', '    rules:', '      - alert: A', '        expr: a > 1', '        for: 5m', '      - alert: B', '        expr: |', '          sum(b)', '            / sum(c)', '        for: 1m', ''].join('\n');
    expect(ruleExprs(file)).toEqual(['a > 1', 'sum(b)\n            / sum(c)']);
  });
});
