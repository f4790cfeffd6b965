// What the monitoring tests need of PromQL and of a Grafana dashboard: the metric names an
// expression selects, and every query a dashboard runs. Syntax is promtool's to judge (the
// test hands it the queries); this only finds names in what promtool accepted.

/** Words of PromQL that are not metric names (binary operators, modifiers). */
const KEYWORDS = new Set(['and', 'or', 'unless', 'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'bool', 'offset', 'atmodifier', 'inf', 'nan']);

/**
 * The metric names an expression selects: identifiers outside strings, label matchers
 * ({...}), ranges ([...]) and grouping lists (by (...), on (...)), and not called as a
 * function or aggregation (followed by "(").
 */
export function metricNames(expr: string): string[] {
  let s = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, ' ')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ');
  s = s.replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ');
  const out = new Set<string>();
  for (const m of s.matchAll(/(?<![\w:.$])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?/g)) {
    if (m[2] || KEYWORDS.has(m[1].toLowerCase())) continue;
    out.add(m[1]);
  }
  return [...out];
}

export interface DashboardQuery {
  /** Where it is: a panel's title and refId, or a template variable. */
  where: string;
  expr: string;
  /** A variable's label_values(metric, label): the metric it reads. */
  labelValuesOf?: string;
}

/** Every query of a dashboard: each panel's targets (rows' nested panels too) and each query variable. */
export function dashboardQueries(dashboard: { panels?: unknown[]; templating?: { list?: unknown[] } }): DashboardQuery[] {
  const out: DashboardQuery[] = [];
  const walk = (panels: unknown[] | undefined) => {
    for (const p of (panels ?? []) as Array<{ title?: string; targets?: Array<{ expr?: string; refId?: string }>; panels?: unknown[] }>) {
      for (const t of p.targets ?? []) if (t.expr) out.push({ where: `${p.title} ${t.refId}`, expr: t.expr });
      walk(p.panels);
    }
  };
  walk(dashboard.panels);
  for (const v of (dashboard.templating?.list ?? []) as Array<{ name: string; type: string; query?: string | { query?: string } }>) {
    if (v.type !== 'query') continue;
    const q = typeof v.query === 'string' ? v.query : (v.query?.query ?? '');
    const lv = /^label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,\s*[a-zA-Z_][a-zA-Z0-9_]*\s*\)$/.exec(q);
    out.push(lv ? { where: `variable ${v.name}`, expr: q, labelValuesOf: lv[1] } : { where: `variable ${v.name}`, expr: q });
  }
  return out;
}

/**
 * A dashboard query as Prometheus itself would receive it: Grafana's variables replaced the
 * way Grafana does ($__rate_interval by a duration, a multi-value variable by a regex).
 */
export function asRuleFileExpr(expr: string): string {
  return expr.replace(/\$__rate_interval|\$__interval|\$__range/g, '5m').replace(/\$\{?[a-zA-Z_]\w*\}?/g, '.*');
}

/** The expr of every rule in a Prometheus rule file as this repository writes them (one line, or a "|" block). */
export function ruleExprs(ruleFile: string): string[] {
  return [...ruleFile.matchAll(/^( +)expr: (?:\|\n((?:\1 +.*\n)+)|(.*)$)/gm)].map((m) => (m[2] ?? m[3]).trim());
}
