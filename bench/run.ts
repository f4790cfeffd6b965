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

export async function main(argv = process.argv.slice(2)): Promise<number> {
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
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (values.render) {
    // Re-render RESULTS.md and chart.svg from a results.json (e.g. after editing bench/notes.md).
    const rep = JSON.parse(await fs.readFile(values.render, 'utf8')) as RunReport;
    const dir = path.dirname(path.resolve(values.render));
    const notes = await fs.readFile(path.join(REPO, 'bench', 'notes.md'), 'utf8').catch(() => '');
    await fs.writeFile(path.join(dir, 'RESULTS.md'), renderMarkdown(rep, notes));
    await fs.writeFile(path.join(dir, 'chart.svg'), renderSvg(rep));
    printSummary(rep);
    return 0;
  }
  if (process.getuid?.() !== 0) {
    process.stderr.write('bench: needs root (loop devices, mkfs, mount)\n');
    return 2;
  }
  if (!existsSync(DRIVER_MAIN)) throw new Error(`${DRIVER_MAIN} missing: npm run build`);
  const ops = Number(values.ops);
  const rounds = Math.max(1, Number(values.rounds));
  const concurrencies = values.concurrency!.split(',').map(Number);
  const workloads = values.workloads!.split(',') as WorkloadKey[];
  for (const w of workloads) if (!WORKLOADS[w]) throw new Error(`unknown workload ${w}`);
  const wanted = values.subjects!.split(',') as SubjectKey[];
  const volumeBytes = Number(values['volume-size']) * 2 ** 20;
  const fsType = values['fs-type']!;
  const out = path.resolve(values.out!);
  // Room for 32 concurrent volumes, 32 snapshot sources and their snapshots, sparse.
  const poolBytes = Math.max(20 * 2 ** 30, volumeBytes * (Math.max(...concurrencies) * 3 + 8));

  const t0 = Date.now();
  const work = await fs.mkdtemp(path.join(os.tmpdir(), 'tscsi-bench-'));
  const common = (key: string) => ({ dir: path.join(work, key), volumeBytes, fsType, poolBytes });
  const subjects: Subject[] = [];
  const infos: SubjectInfo[] = [];
  let hostpathTag = 'not measured';

  const cleanupAll = async () => {
    for (const s of subjects) await s.cleanup().catch((e) => process.stderr.write(`bench: cleanup of ${s.label}: ${e}\n`));
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
    if (wanted.includes('ours')) {
      const nodeFlags = [
        ...(values['cpu-prof'] ? ['--cpu-prof', `--cpu-prof-dir=${path.join(out, 'profile')}`] : []),
        ...values['driver-node-flags']!.split(/\s+/).filter(Boolean),
      ];
      subjects.push(new OursSubject({ ...common('ours'), nodeFlags }));
      infos.push({ key: 'ours', label: `tscsi (loop)${nodeFlags.length ? ' ' + nodeFlags.filter((f) => !f.startsWith('--cpu-prof-dir')).join(' ') : ''}`, available: true, nodeFlags });
    }
    if (wanted.includes('hostpath')) {
      const hp = await ensureHostpath();
      if (hp.ok) {
        subjects.push(new HostpathSubject(common('hostpath'), hp.binary, hp.tag));
        infos.push({ key: 'hostpath', label: `hostpath ${hp.tag}`, available: true });
        hostpathTag = hp.tag;
      } else {
        process.stderr.write(`bench: hostpath not measured: ${hp.reason}\n`);
        infos.push({ key: 'hostpath', label: 'hostpath', available: false, reason: hp.reason });
        hostpathTag = 'not measured (not installable here)';
      }
    }
    if (wanted.includes('raw')) {
      subjects.push(new RawSubject(common('raw')));
      infos.push({ key: 'raw', label: 'raw tools', available: true });
    }

    for (const s of subjects) {
      process.stderr.write(`bench: starting ${s.label}\n`);
      await s.start();
    }
    // Warm-up (untimed): JIT, page cache, first loop devices; then idle RSS after a pause.
    for (const s of subjects) {
      for (const w of workloads) {
        const src = await setupWorkers(s, w, 1, `warm-${w}`);
        const r = await runPhase(s, w, { concurrency: 1, ops: 3, prefix: `warm-${w}` }, src);
        await teardownWorkers(s, src);
        if (r.okOps !== r.ops) throw new Error(`${s.label} failed its warm-up (${w}): ${r.samples.join(' | ')}`);
      }
    }
    await sleep(2000);
    for (const s of subjects) {
      const info = infos.find((i) => i.key === s.key)!;
      const m = idle(s.pid);
      info.idleRssStartBytes = m.rss;
      info.idleSplitStart = m.split;
    }

    const merged = new Map<string, PhaseResult>();
    for (const w of workloads) {
      for (const c of concurrencies) {
        for (let r = 0; r < rounds; r++) {
          const n = Math.floor(ops / rounds) + (r < ops % rounds ? 1 : 0);
          for (const s of subjects) {
            const prefix = `b-${w}-c${c}-r${r}`;
            const src = await setupWorkers(s, w, c, prefix);
            const res = await runPhase(s, w, { concurrency: c, ops: n, prefix }, src);
            await teardownWorkers(s, src);
            const key = `${s.key}|${w}|${c}`;
            merged.set(key, merged.has(key) ? mergeResults(merged.get(key)!, res) : res);
            const errs = Object.entries(res.errors).map(([k, v]) => `${k}=${v}`).join(',') || 'no errors';
            process.stderr.write(
              `bench: ${w} c=${c} round ${r + 1}/${rounds} ${s.label}: ${res.okOps}/${res.ops} ok, ${(res.okOps / (res.wallMs / 1000)).toFixed(1)} ops/s, ${errs}\n`,
            );
          }
        }
      }
    }
    await sleep(2000);
    for (const s of subjects) {
      const info = infos.find((i) => i.key === s.key)!;
      const m = idle(s.pid);
      info.idleRssEndBytes = m.rss;
      info.idleSplitEnd = m.split;
    }

    const pkg = JSON.parse(readFileSync(path.join(REPO, 'package.json'), 'utf8')) as { version: string };
    const rep: RunReport = {
      date: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
      machine: await machine(),
      versions: {
        node: process.version,
        ours: await ourVersion(pkg.version),
        hostpath: hostpathTag,
        tools: {
          'util-linux': await toolVersion('losetup', ['--version'], /util-linux ([\d.]+)/),
          e2fsprogs: await toolVersion('mke2fs', ['-V'], /mke2fs ([\d.]+)/),
          xfsprogs: await toolVersion('mkfs.xfs', ['-V'], /version ([\d.]+)/),
        },
      },
      config: { ops, rounds, concurrencies, volumeBytes, fsType, workloads, command: `npm run bench${argv.length ? ' -- ' + argv.join(' ') : ''}` },
      subjects: infos,
      phases: [...merged.values()].map(summarizePhase),
      wallSeconds: (Date.now() - t0) / 1000,
    };
    printSummary(rep);
    if (!values['no-write']) {
      await fs.mkdir(out, { recursive: true });
      const notes = await fs.readFile(path.join(REPO, 'bench', 'notes.md'), 'utf8').catch(() => '');
      await fs.writeFile(path.join(out, 'RESULTS.md'), renderMarkdown(rep, notes));
      await fs.writeFile(path.join(out, 'chart.svg'), renderSvg(rep));
      await fs.writeFile(path.join(out, 'results.json'), JSON.stringify(rep, null, 1) + '\n');
      process.stderr.write(`bench: wrote ${out}/RESULTS.md, chart.svg, results.json\n`);
    }
    return 0;
  } finally {
    if (!interrupted) await cleanupAll();
    process.off('SIGINT', onInt);
    process.off('SIGTERM', onTerm);
  }
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
