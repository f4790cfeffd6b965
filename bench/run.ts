#!/usr/bin/env node
// npm run bench: tscsi, the kubernetes-csi hostpath driver and the raw tools, side by side,
// through the same three workloads at each concurrency, the subjects taking turns
// (a b c a b c ...) so machine noise hits them alike. Writes RESULTS.md, chart.svg and
// results.json. Measures and prints; asserts nothing about timings.
import { parseArgs } from 'node:util';
import fs from 'node:fs/promises';
import { existsSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { OursSubject, HostpathSubject, RawSubject, DRIVER_MAIN, type Subject, type SubjectKey } from './subjects.js';
import { runPhase, mergeResults, setupWorkers, teardownWorkers, WORKLOADS, type PhaseResult, type WorkloadKey } from './runner.js';
import { summarizePhase, renderMarkdown, renderSvg, evaluateGoals, type RunReport, type SubjectInfo } from './report.js';
import { ensureHostpath } from './hostpath.js';
import { readStatus } from './proc.js';
import { fmtMs, fmtRatio, ratio, fmtMiB } from './stats.js';

const USAGE = `npm run bench -- [options]
  --ops N               operations per subject, workload and concurrency (default 128)
  --rounds R            alternating rounds each phase is split into (default 2)
  --concurrency LIST    e.g. 1,8,32 (default)
  --workloads LIST      create-delete,lifecycle,snapshot (default: all)
  --subjects LIST       ours,hostpath,raw (default: all)
  --volume-size MiB     volume size (default 1024)
  --fs-type TYPE        filesystem for ours and the raw tools (default ext4)
  --out DIR             where RESULTS.md, chart.svg, results.json go (default: bench/ of the repo)
  --no-write            print only
  --render FILE         only re-render RESULTS.md and chart.svg next to FILE (a results.json)
  --cpu-prof            run our driver under node --cpu-prof (profiles go to OUT/profile/)
  --driver-node-flags F node flags for our driver, space-separated (experiments, e.g. --max-semi-space-size=2)
`;

const REPO = (() => {
  let d = path.resolve(import.meta.dirname);
  while (!existsSync(path.join(d, 'package.json')) && d !== '/') d = path.dirname(d);
  return d;
})();

async function toolVersion(file: string, args: string[], re: RegExp): Promise<string> {
  const r = await execa(file, args, { reject: false, all: true });
  const m = re.exec(String(r.all ?? ''));
  return m ? m[1] : '?';
}

async function machine(): Promise<RunReport['machine']> {
  const osr = await fs.readFile('/etc/os-release', 'utf8').catch(() => '');
  return {
    nproc: os.availableParallelism(),
    memGiB: os.totalmem() / 2 ** 30,
    kernel: os.release(),
    cpu: os.cpus()[0]?.model.trim() ?? '?',
    os: /^PRETTY_NAME="?([^"\n]+)/m.exec(osr)?.[1] ?? os.type(),
  };
}

/** package version, commit, and whether the driver's sources differ from that commit. */
async function ourVersion(version: string): Promise<string> {
  const head = (await execa('git', ['-C', REPO, 'rev-parse', '--short', 'HEAD'], { reject: false })).stdout || '?';
  const dirty = (await execa('git', ['-C', REPO, 'status', '--porcelain', '--', 'driver', 'proto', 'sidecars'], { reject: false })).stdout.trim();
  return `${version} (commit ${head}${dirty ? ', with uncommitted changes in driver/ from work in progress' : ''})`;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function idle(pid: number | undefined): { rss?: number; split?: { anon: number; file: number } } {
  const s = pid === undefined ? undefined : readStatus(pid);
  return s ? { rss: s.rssBytes, split: { anon: s.rssAnonBytes, file: s.rssFileBytes } } : {};
}

interface BenchConfig {
  ops: number;
  rounds: number;
  concurrencies: number[];
  workloads: WorkloadKey[];
  wanted: SubjectKey[];
  volumeBytes: number;
  fsType: string;
  out: string;
  poolBytes: number;
  write: boolean;
  /** Node flags for our driver's process (profiling, experiments). */
  nodeFlags: string[];
}

type BenchArgs = { help: true } | { render: string } | { config: BenchConfig };

function parseBenchArgs(argv: string[]): BenchArgs {
  const { values } = parseArgs({
    args: argv,
    options: {
      ops: { type: 'string', default: '128' },
      rounds: { type: 'string', default: '2' },
      concurrency: { type: 'string', default: '1,8,32' },
      workloads: { type: 'string', default: 'create-delete,lifecycle,snapshot' },
      subjects: { type: 'string', default: 'ours,hostpath,raw' },
      'volume-size': { type: 'string', default: '1024' },
      'fs-type': { type: 'string', default: 'ext4' },
      out: { type: 'string', default: path.join(REPO, 'bench') },
      'no-write': { type: 'boolean', default: false },
      'cpu-prof': { type: 'boolean', default: false },
      'driver-node-flags': { type: 'string', default: '' },
      render: { type: 'string' },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) return { help: true };
  if (values.render) return { render: values.render };
  const concurrencies = values.concurrency!.split(',').map(Number);
  const workloads = values.workloads!.split(',') as WorkloadKey[];
  for (const w of workloads) if (!WORKLOADS[w]) throw new Error(`unknown workload ${w}`);
  const volumeBytes = Number(values['volume-size']) * 2 ** 20;
  const out = path.resolve(values.out!);
  return {
    config: {
      ops: Number(values.ops),
      rounds: Math.max(1, Number(values.rounds)),
      concurrencies,
      workloads,
      wanted: values.subjects!.split(',') as SubjectKey[],
      volumeBytes,
      fsType: values['fs-type']!,
      out,
      // Room for 32 concurrent volumes, 32 snapshot sources and their snapshots, sparse.
      poolBytes: Math.max(20 * 2 ** 30, volumeBytes * (Math.max(...concurrencies) * 3 + 8)),
      write: !values['no-write'],
      nodeFlags: [
        ...(values['cpu-prof'] ? ['--cpu-prof', `--cpu-prof-dir=${path.join(out, 'profile')}`] : []),
        ...values['driver-node-flags']!.split(/\s+/).filter(Boolean),
      ],
    },
  };
}

/** Re-renders RESULTS.md and chart.svg from a results.json (e.g. after editing bench/notes.md). */
async function renderOnly(file: string): Promise<void> {
  const rep = JSON.parse(await fs.readFile(file, 'utf8')) as RunReport;
  await writeRendered(rep, path.dirname(path.resolve(file)));
  printSummary(rep);
}

async function writeRendered(rep: RunReport, dir: string): Promise<void> {
  const notes = await fs.readFile(path.join(REPO, 'bench', 'notes.md'), 'utf8').catch(() => '');
  await fs.writeFile(path.join(dir, 'RESULTS.md'), renderMarkdown(rep, notes));
  await fs.writeFile(path.join(dir, 'chart.svg'), renderSvg(rep));
}

interface Lineup {
  subjects: Subject[];
  infos: SubjectInfo[];
  hostpathTag: string;
}

/** The subjects asked for, each in its own directory below work; hostpath only where it installs. */
async function lineUp(cfg: BenchConfig, work: string, lineup: Lineup): Promise<void> {
  const common = (key: string) => ({ dir: path.join(work, key), volumeBytes: cfg.volumeBytes, fsType: cfg.fsType, poolBytes: cfg.poolBytes });
  const { subjects, infos } = lineup;
  if (cfg.wanted.includes('ours')) {
    const nodeFlags = cfg.nodeFlags;
    subjects.push(new OursSubject({ ...common('ours'), nodeFlags }));
    infos.push({ key: 'ours', label: `tscsi (loop)${nodeFlags.length ? ' ' + nodeFlags.filter((f) => !f.startsWith('--cpu-prof-dir')).join(' ') : ''}`, available: true, nodeFlags });
  }
  if (cfg.wanted.includes('hostpath')) {
    const hp = await ensureHostpath();
    if (hp.ok) {
      subjects.push(new HostpathSubject(common('hostpath'), hp.binary, hp.tag));
      infos.push({ key: 'hostpath', label: `hostpath ${hp.tag}`, available: true });
      lineup.hostpathTag = hp.tag;
    } else {
      process.stderr.write(`bench: hostpath not measured: ${hp.reason}\n`);
      infos.push({ key: 'hostpath', label: 'hostpath', available: false, reason: hp.reason });
      lineup.hostpathTag = 'not measured (not installable here)';
    }
  }
  if (cfg.wanted.includes('raw')) {
    subjects.push(new RawSubject(common('raw')));
    infos.push({ key: 'raw', label: 'raw tools', available: true });
  }
}

/** Untimed: JIT, page cache, first loop devices; a subject that fails here stops the run. */
async function warmUp(subjects: Subject[], workloads: WorkloadKey[]): Promise<void> {
  for (const s of subjects) {
    for (const w of workloads) {
      const src = await setupWorkers(s, w, 1, `warm-${w}`);
      const r = await runPhase(s, w, { concurrency: 1, ops: 3, prefix: `warm-${w}` }, src);
      await teardownWorkers(s, src);
      if (r.okOps !== r.ops) throw new Error(`${s.label} failed its warm-up (${w}): ${r.samples.join(' | ')}`);
    }
  }
}

/** Each subject's resident memory after a pause with nothing to do. */
async function recordIdle({ subjects, infos }: Lineup, when: 'Start' | 'End'): Promise<void> {
  await sleep(2000);
  for (const s of subjects) {
    const info = infos.find((i) => i.key === s.key)!;
    const m = idle(s.pid);
    info[`idleRss${when}Bytes`] = m.rss;
    info[`idleSplit${when}`] = m.split;
  }
}

/** Every workload at every concurrency, split into rounds in which the subjects take turns. */
async function measure(cfg: BenchConfig, subjects: Subject[]): Promise<PhaseResult[]> {
  const merged = new Map<string, PhaseResult>();
  for (const w of cfg.workloads) {
    for (const c of cfg.concurrencies) {
      for (let r = 0; r < cfg.rounds; r++) {
        const n = Math.floor(cfg.ops / cfg.rounds) + (r < cfg.ops % cfg.rounds ? 1 : 0);
        for (const s of subjects) {
          const prefix = `b-${w}-c${c}-r${r}`;
          const src = await setupWorkers(s, w, c, prefix);
          const res = await runPhase(s, w, { concurrency: c, ops: n, prefix }, src);
          await teardownWorkers(s, src);
          const key = `${s.key}|${w}|${c}`;
          merged.set(key, merged.has(key) ? mergeResults(merged.get(key)!, res) : res);
          const errs = Object.entries(res.errors).map(([k, v]) => `${k}=${v}`).join(',') || 'no errors';
          process.stderr.write(`bench: ${w} c=${c} round ${r + 1}/${cfg.rounds} ${s.label}: ${res.okOps}/${res.ops} ok, ${(res.okOps / (res.wallMs / 1000)).toFixed(1)} ops/s, ${errs}\n`);
        }
      }
    }
  }
  return [...merged.values()];
}

async function buildReport(cfg: BenchConfig, argv: string[], lineup: Lineup, phases: PhaseResult[], t0: number): Promise<RunReport> {
  const pkg = JSON.parse(readFileSync(path.join(REPO, 'package.json'), 'utf8')) as { version: string };
  const { ops, rounds, concurrencies, volumeBytes, fsType, workloads } = cfg;
  return {
    date: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
    machine: await machine(),
    versions: {
      node: process.version,
      ours: await ourVersion(pkg.version),
      hostpath: lineup.hostpathTag,
      tools: {
        'util-linux': await toolVersion('losetup', ['--version'], /util-linux ([\d.]+)/),
        e2fsprogs: await toolVersion('mke2fs', ['-V'], /mke2fs ([\d.]+)/),
        xfsprogs: await toolVersion('mkfs.xfs', ['-V'], /version ([\d.]+)/),
      },
    },
    config: { ops, rounds, concurrencies, volumeBytes, fsType, workloads, command: `npm run bench${argv.length ? ' -- ' + argv.join(' ') : ''}` },
    subjects: lineup.infos,
    phases: phases.map(summarizePhase),
    wallSeconds: (Date.now() - t0) / 1000,
  };
}

/**
 * Runs fn with the lineup, then stops every subject and removes work, also on SIGINT and
 * SIGTERM (then exiting 130), so an interrupted run leaves no mount, loop device or process.
 */
async function withLineup<T>(work: string, fn: (lineup: Lineup) => Promise<T>): Promise<T> {
  const lineup: Lineup = { subjects: [], infos: [], hostpathTag: 'not measured' };
  const cleanupAll = async () => {
    for (const s of lineup.subjects) await s.cleanup().catch((e) => process.stderr.write(`bench: cleanup of ${s.label}: ${e}\n`));
    await fs.rm(work, { recursive: true, force: true });
  };
  let interrupted = false;
  const onSignal = (sig: string) => {
    if (interrupted) return;
    interrupted = true;
    process.stderr.write(`bench: ${sig}: cleaning up\n`);
    cleanupAll().finally(() => process.exit(130));
  };
  const onInt = () => onSignal('SIGINT');
  const onTerm = () => onSignal('SIGTERM');
  process.on('SIGINT', onInt);
  process.on('SIGTERM', onTerm);
  try {
    return await fn(lineup);
  } finally {
    if (!interrupted) await cleanupAll();
    process.off('SIGINT', onInt);
    process.off('SIGTERM', onTerm);
  }
}

/** The whole run: subjects up, warm-up, idle memory, the measured phases, idle memory again. */
async function run(cfg: BenchConfig, argv: string[]): Promise<RunReport> {
  const t0 = Date.now();
  const work = await fs.mkdtemp(path.join(os.tmpdir(), 'tscsi-bench-'));
  return withLineup(work, async (lineup) => {
    await lineUp(cfg, work, lineup);
    for (const s of lineup.subjects) {
      process.stderr.write(`bench: starting ${s.label}\n`);
      await s.start();
    }
    await warmUp(lineup.subjects, cfg.workloads);
    await recordIdle(lineup, 'Start');
    const phases = await measure(cfg, lineup.subjects);
    await recordIdle(lineup, 'End');
    return buildReport(cfg, argv, lineup, phases, t0);
  });
}

export async function main(argv = process.argv.slice(2)): Promise<number> {
  const args = parseBenchArgs(argv);
  if ('help' in args) {
    process.stdout.write(USAGE);
    return 0;
  }
  if ('render' in args) {
    await renderOnly(args.render);
    return 0;
  }
  if (process.getuid?.() !== 0) {
    process.stderr.write('bench: needs root (loop devices, mkfs, mount)\n');
    return 2;
  }
  if (!existsSync(DRIVER_MAIN)) throw new Error(`${DRIVER_MAIN} missing: npm run build`);
  const cfg = args.config;
  const rep = await run(cfg, argv);
  printSummary(rep);
  if (cfg.write) {
    await fs.mkdir(cfg.out, { recursive: true });
    await writeRendered(rep, cfg.out);
    await fs.writeFile(path.join(cfg.out, 'results.json'), JSON.stringify(rep, null, 1) + '\n');
    process.stderr.write(`bench: wrote ${cfg.out}/RESULTS.md, chart.svg, results.json\n`);
  }
  return 0;
}

function printSummary(rep: RunReport): void {
  const lines: string[] = [];
  for (const p of rep.phases.filter((x) => x.subject === 'ours')) {
    const hp = rep.phases.find((x) => x.subject === 'hostpath' && x.workload === p.workload && x.concurrency === p.concurrency);
    const raw = rep.phases.find((x) => x.subject === 'raw' && x.workload === p.workload && x.concurrency === p.concurrency);
    lines.push(
      `${p.workload.padEnd(13)} c=${String(p.concurrency).padEnd(2)} ours p50 ${fmtMs(p.op.p50).padStart(6)} ms p99 ${fmtMs(p.op.p99).padStart(6)} ms ${p.opsPerSec.toFixed(1).padStart(6)} ops/s` +
        ` | x hostpath ${fmtRatio(ratio(p.op.p50, hp?.op.p50))} | x raw ${fmtRatio(ratio(p.op.p50, raw?.op.p50))}` +
        ` | errors ${Object.values(p.errors).reduce((a, b) => a + b, 0)} | peak RSS ${fmtMiB(p.peakRssBytes)} MiB`,
    );
  }
  lines.push('', 'goals:');
  for (const g of evaluateGoals(rep)) lines.push(`  [${g.met}] ${g.goal}: ${g.figure}`);
  process.stdout.write(lines.join('\n') + '\n');
}

if (process.argv[1] && path.resolve(process.argv[1]) === path.resolve(import.meta.filename)) {
  main().then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exit(1);
    },
  );
}
