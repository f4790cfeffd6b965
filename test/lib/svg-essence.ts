// What a Graphviz SVG says, without how this Graphviz version laid it out: for every graph,
// cluster, node and edge its title, its texts and its colours and line styles. Coordinates,
// sizes, element ids, the generator comment and entity spellings (2.43 writes `&#45;` for
// `-`, later versions do not) are left out, so docs/architecture.svg made by one Graphviz
// compares equal to the same .dot run through another, while a changed label, a node or edge
// added or removed, or a changed colour still shows.

/** Graphviz's output entities and numeric references as plain text. */
function decode(s: string): string {
  const named: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", nbsp: '\u00a0' };
  return s.replace(/&(#x[0-9a-f]+|#[0-9]+|[a-z]+);/gi, (m, e: string) => {
    if (e[0] === '#') return String.fromCodePoint(e[1] === 'x' || e[1] === 'X' ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10));
    return named[e.toLowerCase()] ?? m;
  });
}

// Paint attributes that come from the .dot source; `transparent` and `none` are the same
// invisible stroke, spelled differently across versions.
const PAINT = /\b(fill|stroke|stroke-dasharray)="([^"]*)"/g;
const paint = (attr: string, v: string) => `${attr}=${v === 'transparent' ? 'none' : v.toLowerCase()}`;

interface Part {
  kind: string;
  title: string;
  texts: string[];
  paints: Set<string>;
}

/** One line per graph, cluster, node and edge, sorted: equal lists mean the same picture. */
export function svgEssence(svg: string): string[] {
  const parts: Part[] = [];
  let current: Part | undefined;
  // Graphviz writes one element per line-ish; its groups do not nest except inside the graph's.
  const token = /<g\b[^>]*\bclass="(graph|cluster|node|edge)"[^>]*>|<title>([\s\S]*?)<\/title>|<text\b([^>]*)>([\s\S]*?)<\/text>|<(?:polygon|path|ellipse|polyline|rect)\b([^>]*)\/?>/g;
  for (const m of svg.matchAll(token)) {
    if (m[1]) {
      current = { kind: m[1], title: '', texts: [], paints: new Set() };
      parts.push(current);
    } else if (!current) {
      continue;
    } else if (m[2] !== undefined) {
      current.title = decode(m[2]);
    } else if (m[4] !== undefined) {
      current.texts.push(decode(m[4]));
      for (const [, a, v] of (m[3] ?? '').matchAll(PAINT)) current.paints.add(`text:${paint(a, v)}`);
    } else {
      for (const [, a, v] of (m[5] ?? '').matchAll(PAINT)) current.paints.add(paint(a, v));
    }
  }
  return parts.map((p) => `${p.kind} ${JSON.stringify(p.title)}: ${JSON.stringify(p.texts)} ${[...p.paints].sort().join(' ')}`).sort();
}
