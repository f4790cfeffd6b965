// The benchmark harness itself (bench/), on a tiny N: it counts operations and errors
// right, its percentiles are right, and it leaves no loop device, mount or process behind
// after a run against our driver. It measures; nothing here asserts a timing.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs/promises';
import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { percentile, summarize, ratio } from '../../bench/stats.js';
import { parseStat, readStatus } from '../../bench/proc.js';
import { newestV1 } from '../../bench/hostpath.js';
import { runPhase, mergeResults, setupWorkers, teardownWorkers, type PhaseResult } from '../../bench/runner.js';
import { OursSubject, RawSubject, DRIVER_MAIN, type Subject } from '../../bench/subjects.js';
import { cleanupDir, loopDevicesUnder, mountsUnder } from '../../bench/host.js';
import { renderMarkdown, renderSvg, summarizePhase, evaluateGoals, type RunReport } from '../../bench/report.js';
import { main } from '../../bench/run.js';
import { summarizeProfile } from '../../bench/profile.js';

describe('bench statistics (pure)', () => {
  it('percentile interpolates between closest ranks', () => {
    const v = [10, 1, 9, 2, 8, 3, 7, 4, 6, 5]; // 1..10 shuffled
    expect(percentile(v, 0)).toBe(1);
    expect(percentile(v, 100)).toBe(10);
    expect(percentile(v, 50)).toBeCloseTo(5.5, 12);
    expect(percentile(v, 90)).toBeCloseTo(9.1, 12);
    expect(percentile(v, 99)).toBeCloseTo(9.91, 12);
    expect(v[0]).toBe(10); // input untouched
    expect(percentile([42], 99)).toBe(42);
    expect(percentile([1, 2, 3], 50)).toBe(2);
    expect(percentile([0, 100], 25)).toBe(25);
    expect(Number.isNaN(percentile([], 50))).toBe(true);
    expect(() => percentile([1], 101)).toThrow(RangeError);
  });

  it('summarize and ratio', () => {
    const s = summarize([4, 1, 3, 2]);
    expect(s).toMatchObject({ count: 4, p50: 2.5, mean: 2.5, max: 4 });
    expect(s.p90).toBeCloseTo(3.7, 12);
    expect(summarize([]).count).toBe(0);
    expect(ratio(3, 2)).toBe(1.5);
    expect(ratio(3, 0)).toBeUndefined();
    expect(ratio(3, undefined)).toBeUndefined();
  });

  it('parses /proc/<pid>/stat with spaces and parentheses in the name', () => {
    const fields = ['S', ...Array.from({ length: 10 }, () => '0'), '250', '150', '30', '20', ...Array.from({ length: 30 }, () => '0')];
    const t = parseStat(`1234 (my (odd) name) ${fields.join(' ')}`);
    expect(t.self).toBeCloseTo(4.0, 12);
    expect(t.children).toBeCloseTo(0.5, 12);
    const me = readStatus(process.pid)!;
    expect(me.rssBytes).toBeGreaterThan(0);
    expect(me.hwmBytes).toBeGreaterThanOrEqual(me.rssBytes);
  });

  it('picks the newest v1 tag from go list -m -versions', () => {
    expect(newestV1('v1.2.0 v1.10.0 v1.9.3 v1.18.0-rc1 v1.17.1 v0.9.0 v2.0.0')).toBe('v1.17.1');
    expect(newestV1('')).toBeUndefined();
  });
});

describe('bench profile summary (pure)', () => {
  it('attributes sampled time to functions, their callers and files, idle apart', () => {
    const cf = (functionName: string, url = '') => ({ functionName, url, lineNumber: 0 });
    const s = summarizeProfile({
      nodes: [
        { id: 1, callFrame: cf('(root)'), children: [2, 4] },
        { id: 2, callFrame: cf('run', 'file:///x/dist/driver/host/exec.js'), children: [3] },
        { id: 3, callFrame: cf('spawn', 'node:internal/child_process') },
        { id: 4, callFrame: cf('(idle)') },
      ],
      samples: [3, 3, 2, 4, 3],
      timeDeltas: [1000, 1000, 2000, 5000, 1000],
    });
    expect(s.totalMs).toBe(10);
    expect(s.idleMs).toBe(5);
    expect(s.busyMs).toBe(5);
    expect(s.bySelf[0]).toEqual({ name: 'spawn node:internal/child_process:1', ms: 3 });
    expect(s.byInclusive.find((r) => r.name.startsWith('run '))!.ms).toBe(5);
    expect(s.byFile.find((r) => r.name === 'driver/host/exec.js')!.ms).toBe(2);
  });
});

describe('bench load generator (fake subject)', () => {
  it('counts operations, ok operations and errors by status code', async () => {
    let calls = 0;
    const fake: Subject = {
      key: 'raw',
      label: 'fake',
      pid: undefined,
      workDir: os.tmpdir(),
      start: async () => undefined,
      cleanup: async () => undefined,
      // every third CreateVolume is ABORTED, every fifth DeleteVolume is INTERNAL
      createVolume: async (name) => {
        if (++calls % 3 === 0) throw Object.assign(new Error('busy'), { code: 10 });
        return name;
      },
      deleteVolume: (() => {
        let d = 0;
        return async () => {
          if (++d % 5 === 0) throw Object.assign(new Error('boom'), { code: 13 });
        };
      })(),
      stage: async () => undefined,
      publish: async () => undefined,
      unpublish: async () => undefined,
      unstage: async () => undefined,
      createSnapshot: async (n) => n,
      deleteSnapshot: async () => undefined,
    };
    const r = await runPhase(fake, 'create-delete', { concurrency: 4, ops: 30, prefix: 't' });
    expect(r.ops).toBe(30);
    expect(r.errors.ABORTED).toBe(10);
    expect(r.latencies.CreateVolume).toHaveLength(20);
    // 20 deletes timed, each 5th failed (its undo is an extra, untimed delete call).
    const failedDeletes = r.errors.INTERNAL ?? 0;
    expect(r.latencies.DeleteVolume.length + failedDeletes).toBe(20);
    expect(r.okOps).toBe(20 - failedDeletes);
    expect(r.opLatencies).toHaveLength(r.okOps);
    const m = mergeResults(r, r);
    expect(m.ops).toBe(60);
    expect(m.errors.ABORTED).toBe(20);
    expect(m.latencies.CreateVolume).toHaveLength(40);
  });
});

describe('bench harness against our driver', () => {
  let dir: string;
  const made: Subject[] = [];

  beforeAll(async () => {
    if (!existsSync(DRIVER_MAIN)) throw new Error(`${DRIVER_MAIN} missing: npm run build first`);
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tscsi-bench-it-'));
  });

  afterAll(async () => {
    for (const s of made) await s.cleanup().catch(() => undefined);
    if (dir) await cleanupDir(dir);
  });

  const opts = (key: string) => ({ dir: path.join(dir, key), volumeBytes: 64 * 2 ** 20, fsType: 'ext4', poolBytes: 4 * 2 ** 30 });

  it('runs every workload with the right counts, and cleanup leaves nothing behind', async () => {
    const ours = new OursSubject(opts('ours'));
    made.push(ours);
    await ours.start();
    const pid = ours.pid!;
    expect(readStatus(pid)?.rssBytes).toBeGreaterThan(0);

    const cd = await runPhase(ours, 'create-delete', { concurrency: 2, ops: 5, prefix: 'cd' });
    expect(cd).toMatchObject({ ops: 5, okOps: 5, errors: {} });
    expect(cd.latencies.CreateVolume).toHaveLength(5);
    expect(cd.latencies.DeleteVolume).toHaveLength(5);
    expect(cd.usage!.peakRssBytes).toBeGreaterThan(0);
    expect(cd.usage!.cpuSelfSeconds).toBeGreaterThanOrEqual(0);

    const lc = await runPhase(ours, 'lifecycle', { concurrency: 2, ops: 3, prefix: 'lc' });
    expect(lc).toMatchObject({ ops: 3, okOps: 3, errors: {} });
    for (const step of ['CreateVolume', 'NodeStageVolume', 'NodePublishVolume', 'NodeUnpublishVolume', 'NodeUnstageVolume', 'DeleteVolume']) {
      expect(lc.latencies[step], step).toHaveLength(3);
    }
    expect(lc.opLatencies).toHaveLength(3);

    const src = await setupWorkers(ours, 'snapshot', 2, 'sn');
    expect(src).toHaveLength(2);
    const sn = await runPhase(ours, 'snapshot', { concurrency: 2, ops: 4, prefix: 'sn' }, src);
    expect(sn).toMatchObject({ ops: 4, okOps: 4, errors: {} });
    await teardownWorkers(ours, src);

    // Errors are counted by status: snapshots of a volume that does not exist.
    const bad = await runPhase(ours, 'snapshot', { concurrency: 2, ops: 4, prefix: 'bad' }, ['vol-loop-nope', 'vol-loop-nope2']);
    expect(bad.ops).toBe(4);
    expect(bad.okOps).toBe(0);
    expect(Object.values(bad.errors).reduce((a, b) => a + b, 0)).toBe(4);
    expect(bad.errors.ABORTED ?? 0).toBe(0);

    // A run that stops half-way (as after a failure) leaves a volume staged and published:
    // cleanup must still remove its mounts and loop devices, then the pool, then the process.
    const id = await ours.createVolume('left-behind');
    const staging = path.join(ours.workDir, 'staging', 'x');
    const target = path.join(ours.workDir, 'pods', 'x', 'mount');
    await fs.mkdir(staging, { recursive: true });
    await ours.stage(id, staging);
    await ours.publish(id, staging, target);
    expect((await mountsUnder(opts('ours').dir)).length).toBeGreaterThanOrEqual(3); // pool, staging, target
    expect((await loopDevicesUnder(opts('ours').dir)).length).toBeGreaterThanOrEqual(2);

    await ours.cleanup();
    expect(await mountsUnder(dir)).toEqual([]);
    expect(await loopDevicesUnder(dir)).toEqual([]);
    expect(existsSync(`/proc/${pid}`)).toBe(false);
    expect(existsSync(opts('ours').dir)).toBe(false);
  });

  it('the raw-tools subject runs the same workloads and cleans up', async () => {
    const raw = new RawSubject(opts('raw'));
    made.push(raw);
    await raw.start();
    const lc = await runPhase(raw, 'lifecycle', { concurrency: 2, ops: 2, prefix: 'lc' });
    expect(lc).toMatchObject({ ops: 2, okOps: 2, errors: {} });
    expect(lc.usage!.cpuChildrenSeconds).toBeGreaterThanOrEqual(0);
    const src = await setupWorkers(raw, 'snapshot', 1, 'sn');
    const sn = await runPhase(raw, 'snapshot', { concurrency: 1, ops: 2, prefix: 'sn' }, src);
    expect(sn).toMatchObject({ ops: 2, okOps: 2, errors: {} });
    // a failing tool is counted as HOST_TOOL
    const bad = await runPhase(raw, 'snapshot', { concurrency: 1, ops: 2, prefix: 'bad' }, ['missing']);
    expect(bad.errors).toEqual({ HOST_TOOL: 2 });
    await teardownWorkers(raw, src);
    await raw.stage(await raw.createVolume('left'), path.join(raw.workDir, 'st'));
    await raw.cleanup();
    expect(await mountsUnder(dir)).toEqual([]);
    expect(await loopDevicesUnder(dir)).toEqual([]);
  });

  it('npm run bench end to end on a tiny N writes the report and leaves nothing behind', async () => {
    const out = path.join(dir, 'out');
    const before = (await fs.readdir(os.tmpdir())).filter((d) => d.startsWith('tscsi-bench-') && !d.startsWith('tscsi-bench-it-'));
    const code = await main(['--ops', '2', '--rounds', '2', '--concurrency', '1,2', '--subjects', 'ours,raw', '--volume-size', '64', '--out', out]);
    expect(code).toBe(0);
    const md = await fs.readFile(path.join(out, 'RESULTS.md'), 'utf8');
    expect(md).toContain('| create-delete | 2 | tscsi (loop) |');
    expect(md).toContain('NodeStageVolume');
    const svg = await fs.readFile(path.join(out, 'chart.svg'), 'utf8');
    expect(svg.startsWith('<svg')).toBe(true);
    expect(svg).toContain('<polyline');
    const rep = JSON.parse(await fs.readFile(path.join(out, 'results.json'), 'utf8')) as RunReport;
    const lc = rep.phases.find((p) => p.subject === 'ours' && p.workload === 'lifecycle' && p.concurrency === 2)!;
    expect(lc.ops).toBe(2); // 1 + 1 over two rounds
    expect(lc.steps.NodeStageVolume.count).toBe(2);
    const after = (await fs.readdir(os.tmpdir())).filter((d) => d.startsWith('tscsi-bench-') && !d.startsWith('tscsi-bench-it-'));
    expect(after.sort()).toEqual(before.sort());
    const drivers = (await fs.readdir('/proc')).filter((p) => /^\d+$/.test(p));
    for (const p of drivers) {
      const cmd = await fs.readFile(`/proc/${p}/cmdline`, 'utf8').catch(() => '');
      expect(cmd.includes('tscsi-bench-') && cmd.includes('main.js')).toBe(false);
    }
  });

  it('renders goals, Markdown and SVG from summaries', () => {
    const mk = (subject: string, workload: 'create-delete' | 'lifecycle', c: number, ms: number): PhaseResult => ({
      subject,
      workload,
      concurrency: c,
      ops: 3,
      okOps: 3,
      errors: {},
      latencies: workload === 'create-delete' ? { CreateVolume: [ms, ms, ms], DeleteVolume: [1, 1, 1] } : { NodeStageVolume: [ms, ms, ms] },
      opLatencies: [ms, ms, ms],
      wallMs: 3 * ms,
      usage: { peakRssBytes: 100 * 2 ** 20, cpuSelfSeconds: 0.1, cpuChildrenSeconds: 0.2 },
      samples: [],
    });
    const rep: RunReport = {
      date: 'd',
      machine: { nproc: 2, memGiB: 24, kernel: 'k', cpu: 'c', os: 'o' },
      versions: { node: 'v20', ours: '0.1.0', hostpath: 'v1.x', tools: {} },
      config: { ops: 3, rounds: 1, concurrencies: [1, 32], volumeBytes: 2 ** 30, fsType: 'ext4', workloads: ['create-delete', 'lifecycle'], command: 'x' },
      subjects: [
        { key: 'ours', label: 'tscsi', available: true, idleRssStartBytes: 60 * 2 ** 20, idleRssEndBytes: 70 * 2 ** 20 },
        { key: 'hostpath', label: 'hostpath', available: true },
        { key: 'raw', label: 'raw', available: true },
      ],
      phases: [
        mk('ours', 'create-delete', 1, 10),
        mk('hostpath', 'create-delete', 1, 20),
        mk('ours', 'create-delete', 32, 30),
        mk('hostpath', 'create-delete', 32, 20),
        mk('ours', 'lifecycle', 1, 105),
        mk('raw', 'lifecycle', 1, 100),
        mk('ours', 'lifecycle', 32, 300),
        mk('raw', 'lifecycle', 32, 100),
      ].map(summarizePhase),
      wallSeconds: 1,
    };
    const g = evaluateGoals(rep);
    expect(g.find((x) => x.goal.includes('concurrency 1 ≤ 1.0x'))!.met).toBe('met');
    expect(g.find((x) => x.goal.includes('concurrency 32 ≤ 1.0x'))!.met).toBe('missed');
    expect(g.find((x) => x.goal.includes('raw tools, concurrency 1'))!.met).toBe('met');
    expect(g.find((x) => x.goal.includes('raw tools, concurrency 32'))!.met).toBe('missed');
    expect(g.find((x) => x.goal.includes('idle'))!.met).toBe('met');
    expect(renderMarkdown(rep, 'notes')).toContain('| CreateVolume | 1 | 10.0 / 10.0 / 10.0 | 20.0 / 20.0 / 20.0 | — | 0.50x / 0.50x / 0.50x | — |');
    expect(renderSvg(rep)).toContain('</svg>');
  });
});
