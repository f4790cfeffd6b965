// Turns a run's figures into the Markdown report (bench/RESULTS.md) and an SVG chart,
// both written by this file alone (no charting dependency).
import { summarize, ratio, fmtMs, fmtRatio, fmtMiB, type LatencySummary } from './stats.js';
import { WORKLOADS, type PhaseResult, type WorkloadKey } from './runner.js';
import type { SubjectKey } from './subjects.js';

export interface SubjectInfo {
  key: SubjectKey;
  label: string;
  available: boolean;
  reason?: string;
  idleRssStartBytes?: number;
  idleRssEndBytes?: number;
  /** RssAnon / RssFile of the idle figures. */
  idleSplitStart?: { anon: number; file: number };
  idleSplitEnd?: { anon: number; file: number };
  /** Extra node flags the driver ran with (experiments only). */
  nodeFlags?: string[];
}

export interface PhaseSummary {
  subject: SubjectKey;
  workload: WorkloadKey;
  concurrency: number;
  ops: number;
  okOps: number;
  errors: Record<string, number>;
  steps: Record<string, LatencySummary>;
  op: LatencySummary;
  opsPerSec: number;
  wallSeconds: number;
  peakRssBytes?: number;
  cpuSelfSeconds?: number;
  cpuChildrenSeconds?: number;
  samples: string[];
}

export interface RunReport {
  date: string;
  machine: { nproc: number; memGiB: number; kernel: string; cpu: string; os: string };
  versions: { node: string; ours: string; hostpath: string; tools: Record<string, string> };
  config: { ops: number; rounds: number; concurrencies: number[]; volumeBytes: number; fsType: string; workloads: WorkloadKey[]; command: string };
  subjects: SubjectInfo[];
  phases: PhaseSummary[];
  wallSeconds: number;
}

export function summarizePhase(r: PhaseResult): PhaseSummary {
  const steps: Record<string, LatencySummary> = {};
  for (const [k, v] of Object.entries(r.latencies)) steps[k] = summarize(v);
  const fin = (x: number | undefined) => (x !== undefined && Number.isFinite(x) ? x : undefined);
  return {
    subject: r.subject as SubjectKey,
    workload: r.workload,
    concurrency: r.concurrency,
    ops: r.ops,
    okOps: r.okOps,
    errors: r.errors,
    steps,
    op: summarize(r.opLatencies),
    opsPerSec: r.wallMs > 0 ? r.okOps / (r.wallMs / 1000) : NaN,
    wallSeconds: r.wallMs / 1000,
    peakRssBytes: fin(r.usage?.peakRssBytes),
    cpuSelfSeconds: fin(r.usage?.cpuSelfSeconds),
    cpuChildrenSeconds: fin(r.usage?.cpuChildrenSeconds),
    samples: r.samples,
  };
}

const SUBJECT_ORDER: SubjectKey[] = ['ours', 'hostpath', 'raw'];
const COLORS: Record<SubjectKey, string> = { ours: '#1f77b4', hostpath: '#ff7f0e', raw: '#2ca02c' };

function find(rep: RunReport, s: SubjectKey, w: WorkloadKey, c: number): PhaseSummary | undefined {
  return rep.phases.find((p) => p.subject === s && p.workload === w && p.concurrency === c);
}

function errorCount(p: PhaseSummary | undefined, pred: (code: string) => boolean = () => true): number | undefined {
  if (!p) return undefined;
  return Object.entries(p.errors)
    .filter(([k]) => pred(k))
    .reduce((a, [, v]) => a + v, 0);
}

const triple = (s: LatencySummary | undefined) => (s && s.count ? `${fmtMs(s.p50)} / ${fmtMs(s.p90)} / ${fmtMs(s.p99)}` : '—');
const ratios = (a: LatencySummary | undefined, b: LatencySummary | undefined) =>
  a && b && a.count && b.count ? `${fmtRatio(ratio(a.p50, b.p50))} / ${fmtRatio(ratio(a.p90, b.p90))} / ${fmtRatio(ratio(a.p99, b.p99))}` : '—';

export interface Goal {
  goal: string;
  figure: string;
  met: 'met' | 'missed' | 'not measured';
}

export function evaluateGoals(rep: RunReport): Goal[] {
  const goals: Goal[] = [];
  const cs = rep.config.concurrencies;
  for (const c of [1, 32].filter((x) => cs.includes(x))) {
    const o = find(rep, 'ours', 'create-delete', c);
    const h = find(rep, 'hostpath', 'create-delete', c);
    const ro = ratio(o?.op.p50, h?.op.p50);
    goals.push({
      goal: `CreateVolume+DeleteVolume p50 at concurrency ${c} ≤ 1.0x hostpath`,
      figure: ro === undefined ? `ours ${fmtMs(o?.op.p50)} ms; hostpath not measured` : `ours ${fmtMs(o?.op.p50)} ms vs hostpath ${fmtMs(h?.op.p50)} ms = ${fmtRatio(ro)}`,
      met: ro === undefined ? 'not measured' : ro <= 1.0 ? 'met' : 'missed',
    });
  }
  for (const c of cs) {
    const o = find(rep, 'ours', 'lifecycle', c)?.steps.NodeStageVolume;
    const r = find(rep, 'raw', 'lifecycle', c)?.steps.NodeStageVolume;
    const rr = ratio(o?.p50, r?.p50);
    goals.push({
      goal: `NodeStage (blank volume: mkfs + mount) p50 ≤ 1.1x raw tools, concurrency ${c}`,
      figure: `ours ${fmtMs(o?.p50)} ms vs raw ${fmtMs(r?.p50)} ms = ${fmtRatio(rr)}`,
      met: rr === undefined ? 'not measured' : rr <= 1.1 ? 'met' : 'missed',
    });
  }
  if (cs.includes(32)) {
    const phases = rep.phases.filter((p) => p.subject === 'ours' && p.concurrency === 32);
    const errs = phases.reduce((a, p) => a + (errorCount(p) ?? 0), 0);
    const detail = phases.map((p) => `${p.workload}: ${Object.entries(p.errors).map(([k, v]) => `${k}=${v}`).join(', ') || '0'}`).join('; ');
    goals.push({ goal: 'Concurrency 32: zero errors (distinct names, so zero ABORTED too)', figure: `${errs} errors (${detail})`, met: phases.length ? (errs === 0 ? 'met' : 'missed') : 'not measured' });
  }
  const ours = rep.subjects.find((s) => s.key === 'ours');
  const idle = ours?.idleRssStartBytes;
  goals.push({ goal: 'Driver RSS idle < 80 MiB', figure: `${fmtMiB(idle)} MiB at start, ${fmtMiB(ours?.idleRssEndBytes)} MiB idle after the run`, met: idle === undefined ? 'not measured' : Math.max(idle, ours?.idleRssEndBytes ?? 0) < 80 * 2 ** 20 ? 'met' : 'missed' });
  const peak32 = Math.max(...rep.phases.filter((p) => p.subject === 'ours' && p.concurrency === 32).map((p) => p.peakRssBytes ?? 0));
  goals.push({ goal: 'Driver RSS at concurrency 32 < 150 MiB', figure: `peak ${fmtMiB(peak32)} MiB`, met: peak32 > 0 ? (peak32 < 150 * 2 ** 20 ? 'met' : 'missed') : 'not measured' });
  return goals;
}

/** Title, when, where, what ran, and which subjects were left out. */
function mdHeader(L: string[], rep: RunReport, notes: string): void {
  const mib = (rep.config.volumeBytes / 2 ** 20).toFixed(0);
  L.push('# Benchmark: tscsi vs the kubernetes-csi hostpath driver vs the raw tools', '');
  L.push(`- **Date:** ${rep.date}`);
  L.push(`- **Machine:** ${rep.machine.nproc} CPUs (${rep.machine.cpu}), ${rep.machine.memGiB.toFixed(1)} GiB memory, kernel ${rep.machine.kernel}, ${rep.machine.os}`);
  L.push(`- **Versions:** node ${rep.versions.node}, tscsi ${rep.versions.ours}, hostpath ${rep.versions.hostpath}; ${Object.entries(rep.versions.tools).map(([k, v]) => `${k} ${v}`).join(', ')}`);
  L.push(`- **Run:** \`${rep.config.command}\` — ${rep.config.ops} operations per subject × workload × concurrency (split into ${rep.config.rounds} alternating rounds), concurrency ${rep.config.concurrencies.join(', ')}, ${mib} MiB volumes, ${rep.config.fsType}; ${rep.wallSeconds.toFixed(0)} s in all`);
  L.push('');
  for (const s of rep.subjects) if (!s.available) L.push(`> **${s.label} was not measured:** ${s.reason}`, '');
  L.push('![latency by concurrency](chart.svg)', '');
  if (notes.trim()) L.push('What each subject does, where the comparison is apples to oranges, the profile and the suggested fixes: see [Notes](#notes) below.', '');
}

/** The goals table: each goal, its figure, met or missed. */
function mdGoals(L: string[], rep: RunReport): void {
  L.push('## Goals', '', '| goal | figure | result |', '|---|---|---|');
  for (const g of evaluateGoals(rep)) L.push(`| ${g.goal} | ${g.figure} | **${g.met}** |`);
  L.push('');
}

/** Operations per second, errors, peak RSS and CPU per workload, concurrency and subject. */
function mdThroughput(L: string[], rep: RunReport): void {
  L.push('## Throughput, errors, resources', '');
  L.push('Operations per second are whole operations (all steps) completed per second of the phase. Errors are failed steps by gRPC status. RSS is the peak of the subject\'s process during the phase (VmRSS sampled every 20 ms and VmHWM reset at the phase start); CPU is its utime+stime, and "tools CPU" its waited-for children (mkfs, losetup, mount…): for the raw tools, that is all there is.', '');
  L.push('| workload | conc. | subject | ops/s | ours ÷ hostpath | ours ÷ raw | ok / ops | errors (ABORTED) | peak RSS MiB | CPU s | tools CPU s |');
  L.push('|---|---|---|---|---|---|---|---|---|---|---|');
  for (const w of rep.config.workloads) {
    for (const c of rep.config.concurrencies) {
      for (const s of SUBJECT_ORDER) {
        const p = find(rep, s, w, c);
        if (!p) continue;
        const isOurs = s === 'ours';
        const hp = find(rep, 'hostpath', w, c);
        const raw = find(rep, 'raw', w, c);
        L.push(
          `| ${w} | ${c} | ${rep.subjects.find((x) => x.key === s)?.label ?? s} | ${p.opsPerSec.toFixed(1)} | ${isOurs ? fmtRatio(ratio(p.opsPerSec, hp?.opsPerSec)) : ''} | ${isOurs ? fmtRatio(ratio(p.opsPerSec, raw?.opsPerSec)) : ''} | ${p.okOps} / ${p.ops} | ${errorCount(p)} (${p.errors.ABORTED ?? 0}) | ${fmtMiB(p.peakRssBytes)} | ${p.cpuSelfSeconds?.toFixed(2) ?? '—'} | ${p.cpuChildrenSeconds?.toFixed(2) ?? '—'} |`,
        );
      }
    }
  }
  L.push('');
}

/** Each subject's idle RSS before and after the run. */
function mdIdleRss(L: string[], rep: RunReport): void {
  const idle = rep.subjects
    .filter((s) => s.available && s.idleRssStartBytes !== undefined)
    .map((s) => {
      const split = (x?: { anon: number; file: number }) => (x ? ` (anon ${fmtMiB(x.anon)} + file-backed ${fmtMiB(x.file)})` : '');
      return `${s.label} ${fmtMiB(s.idleRssStartBytes)} MiB${split(s.idleSplitStart)} at start, ${fmtMiB(s.idleRssEndBytes)} MiB${split(s.idleSplitEnd)} after the run`;
    });
  if (idle.length) L.push(`Idle RSS: ${idle.join('; ')}.`, '');
}

/** Per-RPC p50 / p90 / p99 of every subject and ours ÷ theirs. */
function mdLatency(L: string[], rep: RunReport): void {
  const avail = (k: SubjectKey) => rep.subjects.find((s) => s.key === k)?.available ?? false;
  L.push('## Latency per RPC (ms: p50 / p90 / p99)', '');
  L.push('Raw-tools rows are the tool sequence that stands for the RPC (see "Subjects"). Ratios are ours ÷ theirs for p50 / p90 / p99 (below 1.00x: ours is faster).', '');
  for (const w of rep.config.workloads) {
    L.push(`### ${WORKLOADS[w].title}`, '');
    L.push(`| RPC | conc. | tscsi | hostpath | raw tools | ours ÷ hostpath | ours ÷ raw |`);
    L.push('|---|---|---|---|---|---|---|');
    for (const step of [...WORKLOADS[w].steps, 'whole operation']) {
      for (const c of rep.config.concurrencies) {
        const get = (s: SubjectKey) => {
          const p = find(rep, s, w, c);
          return step === 'whole operation' ? p?.op : p?.steps[step];
        };
        const [o, h, r] = [get('ours'), get('hostpath'), get('raw')];
        L.push(`| ${step === 'whole operation' ? '**whole operation**' : step} | ${c} | ${triple(o)} | ${avail('hostpath') ? triple(h) : 'n/m'} | ${triple(r)} | ${ratios(o, h)} | ${ratios(o, r)} |`);
      }
    }
    L.push('');
  }
}

/** A few error messages of each phase that had errors. */
function mdErrorSamples(L: string[], rep: RunReport): void {
  const errs = rep.phases.filter((p) => p.samples.length);
  if (errs.length) {
    L.push('## Error samples', '');
    for (const p of errs) L.push(`- ${p.subject} ${p.workload} c=${p.concurrency}: ${p.samples.slice(0, 2).join(' | ').replace(/\|/g, '\\|')}`);
    L.push('');
  }
}

export function renderMarkdown(rep: RunReport, notes: string): string {
  const L: string[] = [];
  mdHeader(L, rep, notes);
  mdGoals(L, rep);
  mdThroughput(L, rep);
  mdIdleRss(L, rep);
  mdLatency(L, rep);
  mdErrorSamples(L, rep);
  if (notes.trim()) L.push('## Notes', '', notes.trim().replace(/^## /gm, '### '), '');
  return L.join('\n') + '\n';
}

const SVG_PANEL_W = 320;
const SVG_PANEL_H = 300;
const SVG_PAD = { l: 58, r: 14, t: 40, b: 44 };
const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');

/** One workload's panel at x0: log-scale grid, concurrency axis, a p50 and a p99 line per subject. */
function svgPanel(out: string[], rep: RunReport, w: WorkloadKey, x0: number): void {
  const [W, H, pad] = [SVG_PANEL_W, SVG_PANEL_H, SVG_PAD];
  const cs = rep.config.concurrencies;
  const vals = SUBJECT_ORDER.flatMap((s) => cs.flatMap((c) => [find(rep, s, w, c)?.op.p50, find(rep, s, w, c)?.op.p99])).filter((v): v is number => v !== undefined && Number.isFinite(v) && v > 0);
  if (!vals.length) return;
  const lo = Math.pow(10, Math.floor(Math.log10(Math.min(...vals))));
  const hi = Math.pow(10, Math.ceil(Math.log10(Math.max(...vals))));
  const px = (k: number) => x0 + pad.l + (cs.length === 1 ? 0.5 : k / (cs.length - 1)) * (W - pad.l - pad.r);
  const py = (v: number) => pad.t + (1 - (Math.log10(v) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo))) * (H - pad.t - pad.b);
  out.push(`<text x="${x0 + W / 2}" y="16" text-anchor="middle" font-size="12" font-weight="bold">${esc(w)}</text>`);
  out.push(`<text x="${x0 + W / 2}" y="30" text-anchor="middle" fill="#555">whole-operation latency, ms (log)</text>`);
  for (let d = lo; d <= hi * 1.0001; d *= 10) {
    for (const m of [1, 2, 5]) {
      const v = d * m;
      if (v > hi * 1.0001) continue;
      const y = py(v);
      out.push(`<line x1="${x0 + pad.l}" x2="${x0 + W - pad.r}" y1="${y}" y2="${y}" stroke="${m === 1 ? '#ccc' : '#eee'}"/>`);
      out.push(`<text x="${x0 + pad.l - 4}" y="${y + 4}" text-anchor="end" fill="#555">${v >= 1 ? v : v.toPrecision(1)}</text>`);
    }
  }
  cs.forEach((c, k) => {
    out.push(`<text x="${px(k)}" y="${H - pad.b + 16}" text-anchor="middle">${c}</text>`);
  });
  out.push(`<text x="${x0 + (pad.l + W - pad.r) / 2}" y="${H - pad.b + 32}" text-anchor="middle" fill="#555">concurrency</text>`);
  for (const s of SUBJECT_ORDER) {
    for (const [q, dash] of [['p50', ''], ['p99', ' stroke-dasharray="4 3"']] as const) {
      const pts = cs
        .map((c, k) => {
          const v = find(rep, s, w, c)?.op[q];
          return v !== undefined && Number.isFinite(v) && v > 0 ? `${px(k).toFixed(1)},${py(v).toFixed(1)}` : undefined;
        })
        .filter(Boolean);
      if (!pts.length) continue;
      out.push(`<polyline points="${pts.join(' ')}" fill="none" stroke="${COLORS[s]}" stroke-width="2"${dash}/>`);
      if (q === 'p50') for (const p of pts) out.push(`<circle cx="${p!.split(',')[0]}" cy="${p!.split(',')[1]}" r="3" fill="${COLORS[s]}"/>`);
    }
  }
}

/** The subjects' colours and names along the bottom. */
function svgLegend(out: string[], rep: RunReport): void {
  const H = SVG_PANEL_H;
  let lx = 10;
  for (const s of SUBJECT_ORDER) {
    const info = rep.subjects.find((x) => x.key === s);
    const label = `${info?.label ?? s}${info && !info.available ? ' (not measured)' : ''}`;
    out.push(`<line x1="${lx}" x2="${lx + 24}" y1="${H + 20}" y2="${H + 20}" stroke="${COLORS[s]}" stroke-width="2"/>`);
    out.push(`<text x="${lx + 30}" y="${H + 24}">${esc(label)}</text>`);
    lx += 60 + label.length * 6.2;
  }
  out.push(`<text x="${lx}" y="${H + 24}" fill="#555">solid: p50, dashed: p99</text>`);
}

/** Whole-operation p50 (solid) and p99 (dashed) by concurrency, one panel per workload, log scale. */
export function renderSvg(rep: RunReport): string {
  const width = SVG_PANEL_W * rep.config.workloads.length;
  const height = SVG_PANEL_H + 40;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`);
  out.push(`<rect width="${width}" height="${height}" fill="white"/>`);
  rep.config.workloads.forEach((w, i) => svgPanel(out, rep, w, i * SVG_PANEL_W));
  svgLegend(out, rep);
  out.push('</svg>');
  return out.join('\n') + '\n';
}
