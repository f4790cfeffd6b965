// A small Prometheus registry (text exposition format 0.0.4, no dependency): counters,
// gauges and histograms with labels. The driver and the sidecars both export through it, so
// names, escaping and the format are checked in one place.

export const CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

export type Labels = Record<string, string>;

/** Seconds-scale buckets for RPCs: 5 ms .. 5 min (a CreateVolume with mkfs, a copy). */
export const DEFAULT_BUCKETS: readonly number[] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];

/** A sample value as the exposition format writes it (+Inf, -Inf, NaN, else JS number text). */
export function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

/** Escapes a label value: backslash, double quote and line feed. */
export function escapeLabelValue(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

/** Escapes HELP text: backslash and line feed. */
export function escapeHelp(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

function renderLabels(pairs: Array<[string, string]>): string {
  if (pairs.length === 0) return '';
  return `{${pairs.map(([k, v]) => `${k}="${escapeLabelValue(v)}"`).join(',')}}`;
}

abstract class Metric {
  abstract readonly type: 'counter' | 'gauge' | 'histogram';

  constructor(
    readonly name: string,
    readonly help: string,
    readonly labelNames: readonly string[],
  ) {
    if (!METRIC_NAME.test(name)) throw new Error(`invalid metric name ${JSON.stringify(name)}`);
    const seen = new Set<string>();
    for (const l of labelNames) {
      if (!LABEL_NAME.test(l) || l.startsWith('__')) throw new Error(`${name}: invalid label name ${JSON.stringify(l)}`);
      if (seen.has(l)) throw new Error(`${name}: duplicate label ${l}`);
      seen.add(l);
    }
  }

  /** The label values in labelNames order; every label must be given, no other. */
  protected values(labels: Labels): string[] {
    const keys = Object.keys(labels);
    for (const k of keys) if (!this.labelNames.includes(k)) throw new Error(`${this.name}: unknown label ${k}`);
    return this.labelNames.map((l) => {
      const v = labels[l];
      if (v === undefined) throw new Error(`${this.name}: missing label ${l}`);
      return String(v);
    });
  }

  protected pairs(values: readonly string[]): Array<[string, string]> {
    return this.labelNames.map((l, i) => [l, values[i]!]);
  }

  protected header(): string[] {
    return [`# HELP ${this.name} ${escapeHelp(this.help)}`, `# TYPE ${this.name} ${this.type}`];
  }

  abstract render(): string[];
}

/** Series keyed by their label values, kept in a stable (sorted) order for rendering. */
class SeriesMap<V> {
  private readonly m = new Map<string, { values: string[]; v: V }>();
  get(values: string[], make: () => V): V {
    const key = JSON.stringify(values);
    let e = this.m.get(key);
    if (!e) {
      e = { values, v: make() };
      this.m.set(key, e);
    }
    return e.v;
  }
  peek(values: string[]): V | undefined {
    return this.m.get(JSON.stringify(values))?.v;
  }
  sorted(): Array<{ values: string[]; v: V }> {
    return [...this.m.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, e]) => e);
  }
  clear(): void {
    this.m.clear();
  }
  deleteWhere(pred: (values: string[]) => boolean): void {
    for (const [k, e] of this.m) if (pred(e.values)) this.m.delete(k);
  }
}

/** A metric of one number per series (counters and gauges). */
abstract class ScalarMetric extends Metric {
  protected readonly series = new SeriesMap<{ n: number }>();

  protected add(labels: Labels, by: number): void {
    this.series.get(this.values(labels), () => ({ n: 0 })).n += by;
  }

  get(labels: Labels = {}): number {
    return this.series.peek(this.values(labels))?.n ?? 0;
  }

  render(): string[] {
    const out = this.header();
    for (const { values, v } of this.series.sorted()) out.push(`${this.name}${renderLabels(this.pairs(values))} ${formatValue(v.n)}`);
    return out;
  }
}

export class Counter extends ScalarMetric {
  readonly type = 'counter' as const;

  inc(labels: Labels = {}, by = 1): void {
    if (!(by >= 0)) throw new Error(`${this.name}: a counter only goes up (inc by ${by})`);
    this.add(labels, by);
  }
}

/**
 * A value that goes up and down. Gauges filled at scrape time (pool sizes) drop a source's
 * series before setting them again, so a pool that went away stops being exported.
 */
export class Gauge extends ScalarMetric {
  readonly type = 'gauge' as const;

  set(labels: Labels, value: number): void {
    this.series.get(this.values(labels), () => ({ n: 0 })).n = value;
  }

  inc(labels: Labels = {}, by = 1): void {
    this.add(labels, by);
  }

  dec(labels: Labels = {}, by = 1): void {
    this.add(labels, -by);
  }

  /** Drops every series whose labels include these (a source's old series before it is set again). */
  removeWhere(match: Labels): void {
    const idx = Object.entries(match).map(([k, v]) => {
      const i = this.labelNames.indexOf(k);
      if (i < 0) throw new Error(`${this.name}: unknown label ${k}`);
      return [i, v] as const;
    });
    this.series.deleteWhere((values) => idx.every(([i, v]) => values[i] === v));
  }
}

interface HistogramData {
  counts: number[]; // per bucket, not cumulative
  sum: number;
  count: number;
}

export class Histogram extends Metric {
  readonly type = 'histogram' as const;
  readonly buckets: readonly number[];
  private readonly series = new SeriesMap<HistogramData>();

  constructor(name: string, help: string, labelNames: readonly string[], buckets: readonly number[] = DEFAULT_BUCKETS) {
    super(name, help, labelNames);
    if (labelNames.includes('le')) throw new Error(`${name}: "le" is reserved in histograms`);
    const b = buckets.filter((x) => x !== Infinity);
    if (b.length === 0) throw new Error(`${name}: a histogram needs at least one bucket`);
    for (let i = 0; i < b.length; i++) {
      if (!Number.isFinite(b[i]!)) throw new Error(`${name}: bucket ${b[i]} is not a number`);
      if (i > 0 && !(b[i]! > b[i - 1]!)) throw new Error(`${name}: buckets must increase`);
    }
    this.buckets = b;
  }

  observe(labels: Labels, value: number): void {
    const d = this.series.get(this.values(labels), () => ({ counts: new Array<number>(this.buckets.length).fill(0), sum: 0, count: 0 }));
    const i = this.buckets.findIndex((le) => value <= le);
    if (i >= 0) d.counts[i]! += 1;
    d.sum += value;
    d.count += 1;
  }

  /** Count and sum of one series (for tests and callers that want them). */
  get(labels: Labels): { count: number; sum: number } {
    const d = this.series.peek(this.values(labels));
    return { count: d?.count ?? 0, sum: d?.sum ?? 0 };
  }

  render(): string[] {
    const out = this.header();
    for (const { values, v } of this.series.sorted()) {
      const pairs = this.pairs(values);
      let cumulative = 0;
      this.buckets.forEach((le, i) => {
        cumulative += v.counts[i]!;
        out.push(`${this.name}_bucket${renderLabels([...pairs, ['le', formatValue(le)]])} ${cumulative}`);
      });
      out.push(`${this.name}_bucket${renderLabels([...pairs, ['le', '+Inf']])} ${v.count}`);
      out.push(`${this.name}_sum${renderLabels(pairs)} ${formatValue(v.sum)}`);
      out.push(`${this.name}_count${renderLabels(pairs)} ${v.count}`);
    }
    return out;
  }
}

export class Registry {
  private readonly metrics = new Map<string, Metric>();

  private add<M extends Metric>(m: M): M {
    const existing = this.metrics.get(m.name);
    if (existing) {
      // the same definition twice (two sidecar parts asking for one metric) gets the one instance
      if (existing.type === m.type && existing.labelNames.join(',') === m.labelNames.join(',')) return existing as M;
      throw new Error(`metric ${m.name} is already registered with another type or labels`);
    }
    this.metrics.set(m.name, m);
    return m;
  }

  counter(name: string, help: string, labelNames: readonly string[] = []): Counter {
    return this.add(new Counter(name, help, labelNames));
  }

  gauge(name: string, help: string, labelNames: readonly string[] = []): Gauge {
    return this.add(new Gauge(name, help, labelNames));
  }

  histogram(name: string, help: string, labelNames: readonly string[] = [], buckets?: readonly number[]): Histogram {
    return this.add(new Histogram(name, help, labelNames, buckets));
  }

  /** The exposition text: every metric (sorted by name) with HELP and TYPE, ending in a newline. */
  render(): string {
    const lines: string[] = [];
    for (const name of [...this.metrics.keys()].sort()) lines.push(...this.metrics.get(name)!.render());
    return lines.length ? lines.join('\n') + '\n' : '';
  }
}
