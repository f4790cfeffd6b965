#!/usr/bin/env node
// Summarizes a V8 .cpuprofile (node --cpu-prof, e.g. from `npm run bench -- --cpu-prof`):
// self and inclusive time by function and self time by file, as shares of the busy time
// (everything but "(idle)").
//   node dist/bench/profile.js PROFILE.cpuprofile [top=25]
import fs from 'node:fs';

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: Node[];
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileSummary {
  totalMs: number;
  idleMs: number;
  busyMs: number;
  bySelf: Array<{ name: string; ms: number }>;
  byInclusive: Array<{ name: string; ms: number }>;
  byFile: Array<{ name: string; ms: number }>;
}

function shortUrl(url: string): string {
  if (!url) return '';
  const u = url.replace(/^file:\/\//, '');
  const i = u.indexOf('/node_modules/');
  if (i >= 0) return u.slice(i + 1);
  const d = u.indexOf('/dist/');
  return d >= 0 ? u.slice(d + 6) : u;
}

export function summarizeProfile(p: Profile): ProfileSummary {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const self = new Map<number, number>();
  for (let i = 0; i < p.samples.length; i++) {
    const dt = (p.timeDeltas[i] ?? 0) / 1000;
    self.set(p.samples[i], (self.get(p.samples[i]) ?? 0) + dt);
  }
  const name = (n: Node) => `${n.callFrame.functionName || '(anonymous)'} ${shortUrl(n.callFrame.url)}${n.callFrame.url ? ':' + (n.callFrame.lineNumber + 1) : ''}`.trim();
  const fSelf = new Map<string, number>();
  const fIncl = new Map<string, number>();
  const file = new Map<string, number>();
  let total = 0;
  let idle = 0;
  for (const [id, ms] of self) {
    const n = byId.get(id)!;
    total += ms;
    if (n.callFrame.functionName === '(idle)') {
      idle += ms;
      continue;
    }
    fSelf.set(name(n), (fSelf.get(name(n)) ?? 0) + ms);
    const f = shortUrl(n.callFrame.url) || n.callFrame.functionName;
    file.set(f, (file.get(f) ?? 0) + ms);
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const k = name(byId.get(cur)!);
      if (seen.has(k)) continue;
      seen.add(k);
      fIncl.set(k, (fIncl.get(k) ?? 0) + ms);
    }
  }
  const top = (m: Map<string, number>) => [...m.entries()].map(([k, v]) => ({ name: k, ms: v })).sort((a, b) => b.ms - a.ms);
  return { totalMs: total, idleMs: idle, busyMs: total - idle, bySelf: top(fSelf), byInclusive: top(fIncl), byFile: top(file) };
}

export function formatProfile(s: ProfileSummary, topN = 25): string {
  const pct = (ms: number) => `${((100 * ms) / (s.busyMs || 1)).toFixed(1).padStart(5)}%`;
  const L = [`profile: ${(s.totalMs / 1000).toFixed(2)} s sampled, ${(s.busyMs / 1000).toFixed(2)} s busy (not idle)`, '', 'self time by file (share of busy):'];
  for (const r of s.byFile.slice(0, topN)) L.push(`  ${pct(r.ms)} ${r.ms.toFixed(0).padStart(7)} ms  ${r.name}`);
  L.push('', 'self time by function:');
  for (const r of s.bySelf.slice(0, topN)) L.push(`  ${pct(r.ms)} ${r.ms.toFixed(0).padStart(7)} ms  ${r.name}`);
  L.push('', 'inclusive time by function:');
  for (const r of s.byInclusive.slice(0, topN)) L.push(`  ${pct(r.ms)} ${r.ms.toFixed(0).padStart(7)} ms  ${r.name}`);
  return L.join('\n') + '\n';
}

if (process.argv[1] && process.argv[1].endsWith('profile.js')) {
  const [file, n] = process.argv.slice(2);
  if (!file) {
    process.stderr.write('usage: node dist/bench/profile.js PROFILE.cpuprofile [top]\n');
    process.exit(2);
  }
  process.stdout.write(formatProfile(summarizeProfile(JSON.parse(fs.readFileSync(file, 'utf8')) as Profile), Number(n ?? 25)));
}
