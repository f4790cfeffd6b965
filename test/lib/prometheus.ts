// Reading a real /metrics endpoint in tests: the exposition text as samples and the metric
// families it declares (# TYPE lines), so tests assert on what Prometheus would store.

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface Scrape {
  samples: Sample[];
  /** Family name -> type, from the # TYPE lines. */
  types: Map<string, string>;
}

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

export function parseExposition(text: string): Scrape {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  for (const line of text.split('\n')) {
    if (!line) continue;
    const t = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (t) types.set(t[1], t[2]);
    if (line.startsWith('#')) continue;
    const m = SAMPLE.exec(line);
    if (!m) throw new Error(`not an exposition line: ${JSON.stringify(line)}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(LABEL)) labels[l[1]] = l[2].replace(/\\n/g, '\n').replace(/\\"/g, '"').replace(/\\\\/g, '\\');
    samples.push({ name: m[1], labels, value: m[3] === '+Inf' ? Infinity : m[3] === '-Inf' ? -Infinity : Number(m[3]) });
  }
  return { samples, types };
}

export async function scrape(url: string): Promise<Scrape> {
  const res = await fetch(url);
  if (res.status !== 200) throw new Error(`GET ${url}: ${res.status} ${await res.text()}`);
  return parseExposition(await res.text());
}

/** The one sample of `name` whose labels include `match`; undefined when there is none, an error when several. */
export function sampleOf(s: Scrape, name: string, match: Record<string, string> = {}): number | undefined {
  const hits = s.samples.filter((x) => x.name === name && Object.entries(match).every(([k, v]) => x.labels[k] === v));
  if (hits.length > 1) throw new Error(`${name} ${JSON.stringify(match)} matches ${hits.length} series: ${JSON.stringify(hits.map((h) => h.labels))}`);
  return hits[0]?.value;
}

/** How many times the driver ran one host tool (its child-process histogram's count, all outcomes). */
export function toolRunCount(s: Scrape, tool: string): number {
  return s.samples.filter((x) => x.name === 'tscsi_child_processes_seconds_count' && x.labels.tool === tool).reduce((a, x) => a + x.value, 0);
}
