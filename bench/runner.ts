// The load generator: N operations of one workload against one subject at a fixed
// concurrency, every step timed, every failure counted by its status code, and the
// subject's process watched for RSS and CPU while it runs.
import fs from 'node:fs/promises';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { errorCode, type Subject } from './subjects.js';
import { PhaseMonitor, type PhaseUsage } from './proc.js';

export type WorkloadKey = 'create-delete' | 'lifecycle' | 'snapshot';

export const WORKLOADS: Record<WorkloadKey, { title: string; steps: string[] }> = {
  'create-delete': { title: 'CreateVolume + DeleteVolume', steps: ['CreateVolume', 'DeleteVolume'] },
  lifecycle: {
    title: 'CreateVolume + NodeStage + NodePublish + NodeUnpublish + NodeUnstage + DeleteVolume',
    steps: ['CreateVolume', 'NodeStageVolume', 'NodePublishVolume', 'NodeUnpublishVolume', 'NodeUnstageVolume', 'DeleteVolume'],
  },
  snapshot: { title: 'CreateSnapshot + DeleteSnapshot', steps: ['CreateSnapshot', 'DeleteSnapshot'] },
};

export interface PhaseResult {
  subject: string;
  workload: WorkloadKey;
  concurrency: number;
  /** Operations started (each is one pass through the workload's steps). */
  ops: number;
  /** Operations whose every step succeeded. */
  okOps: number;
  /** Failed steps by status code (ABORTED counted here too). */
  errors: Record<string, number>;
  /** Latency of each successful step, ms. */
  latencies: Record<string, number[]>;
  /** Latency of each successful whole operation, ms. */
  opLatencies: number[];
  wallMs: number;
  usage?: PhaseUsage;
  /** First few error messages, for the log. */
  samples: string[];
}

export interface PhaseOptions {
  concurrency: number;
  ops: number;
  /** Distinct prefix for every name this phase makes. */
  prefix: string;
}

function emptyResult(subject: Subject, workload: WorkloadKey, concurrency: number): PhaseResult {
  const latencies: Record<string, number[]> = {};
  for (const s of WORKLOADS[workload].steps) latencies[s] = [];
  return { subject: subject.key, workload, concurrency, ops: 0, okOps: 0, errors: {}, latencies, opLatencies: [], wallMs: 0, samples: [] };
}

/** Merges b into a (same subject, workload and concurrency): rounds of one phase. */
export function mergeResults(a: PhaseResult, b: PhaseResult): PhaseResult {
  const latencies: Record<string, number[]> = {};
  for (const k of new Set([...Object.keys(a.latencies), ...Object.keys(b.latencies)])) latencies[k] = [...(a.latencies[k] ?? []), ...(b.latencies[k] ?? [])];
  const errors: Record<string, number> = { ...a.errors };
  for (const [k, v] of Object.entries(b.errors)) errors[k] = (errors[k] ?? 0) + v;
  const usage =
    a.usage && b.usage
      ? {
          peakRssBytes: Math.max(a.usage.peakRssBytes, b.usage.peakRssBytes),
          cpuSelfSeconds: a.usage.cpuSelfSeconds + b.usage.cpuSelfSeconds,
          cpuChildrenSeconds: a.usage.cpuChildrenSeconds + b.usage.cpuChildrenSeconds,
        }
      : (a.usage ?? b.usage);
  return {
    ...a,
    ops: a.ops + b.ops,
    okOps: a.okOps + b.okOps,
    errors,
    latencies,
    opLatencies: [...a.opLatencies, ...b.opLatencies],
    wallMs: a.wallMs + b.wallMs,
    usage,
    samples: [...a.samples, ...b.samples].slice(0, 5),
  };
}

/** Per-worker set-up: the snapshot workload needs one source volume per worker. */
export async function setupWorkers(subject: Subject, workload: WorkloadKey, concurrency: number, prefix: string): Promise<string[]> {
  if (workload !== 'snapshot') return [];
  const out: string[] = [];
  for (let w = 0; w < concurrency; w++) out.push(await subject.createVolume(`${prefix}-src-${w}`));
  return out;
}

export async function teardownWorkers(subject: Subject, sources: string[]): Promise<void> {
  for (const id of sources) await subject.deleteVolume(id).catch(() => undefined);
}

/** Runs one step, timing it when it succeeds and counting its status code when it fails. */
type TimedStep = <T>(step: string, fn: () => Promise<T>) => Promise<T>;

function timedSteps(res: PhaseResult): TimedStep {
  return async (step, fn) => {
    const t0 = performance.now();
    try {
      const v = await fn();
      res.latencies[step].push(performance.now() - t0);
      return v;
    } catch (err) {
      const code = errorCode(err);
      res.errors[code] = (res.errors[code] ?? 0) + 1;
      if (res.samples.length < 5) res.samples.push(`${step}: ${code}: ${err instanceof Error ? err.message : String(err)}`);
      throw err;
    }
  };
}

/** One operation's means: its name, the timer, and the undo list a failed step unwinds. */
interface Operation {
  subject: Subject;
  name: string;
  timed: TimedStep;
  undo: Array<() => Promise<unknown>>;
  /** The snapshot workload's source volume for this worker. */
  source: string;
}

async function createDelete({ subject, name, timed, undo }: Operation): Promise<void> {
  const id = await timed('CreateVolume', () => subject.createVolume(name));
  undo.push(() => subject.deleteVolume(id));
  await timed('DeleteVolume', () => subject.deleteVolume(id));
  undo.pop();
}

async function lifecycle({ subject, name, timed, undo }: Operation): Promise<void> {
  const staging = path.join(subject.workDir, 'staging', name);
  const target = path.join(subject.workDir, 'pods', name, 'mount');
  // What a CO prepares before NodeStage/NodePublish (kubelet makes both parents): untimed.
  await fs.mkdir(staging, { recursive: true });
  await fs.mkdir(path.dirname(target), { recursive: true });
  const id = await timed('CreateVolume', () => subject.createVolume(name));
  undo.push(() => subject.deleteVolume(id));
  await timed('NodeStageVolume', () => subject.stage(id, staging));
  undo.push(() => subject.unstage(id, staging));
  await timed('NodePublishVolume', () => subject.publish(id, staging, target));
  undo.push(() => subject.unpublish(id, target));
  await timed('NodeUnpublishVolume', () => subject.unpublish(id, target));
  undo.pop();
  await timed('NodeUnstageVolume', () => subject.unstage(id, staging));
  undo.pop();
  await timed('DeleteVolume', () => subject.deleteVolume(id));
  undo.pop();
  await fs.rm(path.dirname(target), { recursive: true, force: true });
  await fs.rm(staging, { recursive: true, force: true });
}

async function snapshot({ subject, name, timed, undo, source }: Operation): Promise<void> {
  const id = await timed('CreateSnapshot', () => subject.createSnapshot(name, source));
  undo.push(() => subject.deleteSnapshot(id));
  await timed('DeleteSnapshot', () => subject.deleteSnapshot(id));
  undo.pop();
}

const OPERATIONS: Record<WorkloadKey, (op: Operation) => Promise<void>> = { 'create-delete': createDelete, lifecycle, snapshot };

/**
 * Runs `ops` operations with `concurrency` workers pulling from one counter. A failed step
 * ends its operation: what it had made is undone (untimed, best effort) and the error is
 * counted under its status code.
 */
export async function runPhase(subject: Subject, workload: WorkloadKey, opts: PhaseOptions, sources: string[] = []): Promise<PhaseResult> {
  const res = emptyResult(subject, workload, opts.concurrency);
  const timed = timedSteps(res);
  const one = async (worker: number, i: number): Promise<void> => {
    const op: Operation = { subject, name: `${opts.prefix}-${i}`, timed, undo: [], source: sources[worker] };
    const t0 = performance.now();
    try {
      await OPERATIONS[workload](op);
      res.opLatencies.push(performance.now() - t0);
      res.okOps++;
    } catch {
      for (const u of op.undo.reverse()) await u().catch(() => undefined);
    }
  };

  let next = 0;
  const mon = new PhaseMonitor(subject.pid ?? process.pid);
  mon.start();
  const t0 = performance.now();
  const workers = Array.from({ length: opts.concurrency }, async (_, w) => {
    for (;;) {
      const i = next++;
      if (i >= opts.ops) return;
      res.ops++;
      await one(w, i);
    }
  });
  await Promise.all(workers);
  res.wallMs = performance.now() - t0;
  const usage = mon.stop();
  // Without a process of its own (raw tools), only the tools' CPU (our children) is its.
  res.usage = subject.pid !== undefined ? usage : { peakRssBytes: NaN, cpuSelfSeconds: NaN, cpuChildrenSeconds: usage.cpuChildrenSeconds };
  return res;
}
