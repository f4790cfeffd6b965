// The one way the driver runs a host tool: an argument array (never a shell string),
// a timeout, and an error that names the command and its stderr. The RPC a command runs
// for reaches it without any signature carrying it: the request wrapper runs each call
// inside withCallSignal, and when the caller's deadline passes or it cancels, the child
// processes running at that moment are killed.
import { AsyncLocalStorage } from 'node:async_hooks';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { internal, toCsiError, CsiError, CallAbortedError, ToolMissingError, ToolNotExecutableError } from '../errors.js';
import { status } from '@grpc/grpc-js';
import { failpoint, failpointDuring, type FailpointName } from '../failpoints.js';

export interface RunOptions {
  timeoutMs?: number;
  env?: Record<string, string>;
  /** Exit codes that are answers rather than failures (blkid's 2 = "nothing found"). */
  okCodes?: number[];
  input?: string;
  /** A host.* fail point: armed, it kills the driver before the tool starts, or (:during) while it runs. */
  failpoint?: FailpointName;
}

export interface RunResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

export const DEFAULT_TIMEOUT_MS = 120_000;
/**
 * A command started after its caller gave up still runs, because on the way out a failing
 * RPC undoes its steps (thaw a frozen filesystem, unmount, detach) and those must not be
 * refused; but it gets only this long, too little for another long copy.
 */
export const AFTER_ABORT_GRACE_MS = 10_000;
/** A killed child that ignores SIGTERM gets SIGKILL this much later. */
const FORCE_KILL_AFTER_MS = 2_000;

const callSignal = new AsyncLocalStorage<AbortSignal>();

/**
 * At most this many child processes at once; the rest wait their turn. A command is one
 * step of an RPC that already holds its locks and may have done half its work, so it
 * queues rather than fails; the queue is bounded by the cap on concurrent RPCs, and a
 * waiter whose caller gives up leaves it.
 */
export const DEFAULT_MAX_CHILD_PROCESSES = 16;
let maxChildren = DEFAULT_MAX_CHILD_PROCESSES;
let running = 0;
const waiting: Array<() => void> = [];

export function setMaxChildProcesses(n: number): void {
  if (!Number.isInteger(n) || n < 1) throw new Error('the child process cap must be a whole number of at least 1');
  maxChildren = n;
}

/** How a host tool ended, for the metrics: ok (an exit code it was allowed), failed, timeout, cancelled (its caller gave up). */
export type ChildOutcome = 'ok' | 'failed' | 'timeout' | 'cancelled';
type ChildObserver = (tool: string, outcome: ChildOutcome, seconds: number) => void;
let childObserver: ChildObserver | undefined;

/** Process-wide, like the cap: the metrics' hook, told of every tool that ended. */
export function observeChildProcesses(fn: ChildObserver | undefined): void {
  childObserver = fn;
}

function reportChild(file: string, started: bigint, outcome: ChildOutcome): void {
  childObserver?.(path.basename(file), outcome, Number(process.hrtime.bigint() - started) / 1e9);
}

export function childProcessCounts(): { running: number; waiting: number } {
  return { running, waiting: waiting.length };
}

async function childSlot(signal: AbortSignal | undefined, command: string): Promise<() => void> {
  if (running >= maxChildren) {
    await new Promise<void>((resolve, reject) => {
      const wake = () => {
        signal?.removeEventListener('abort', give);
        resolve();
      };
      const give = () => {
        const i = waiting.indexOf(wake);
        if (i >= 0) waiting.splice(i, 1);
        reject(abortError(signal!, command));
      };
      waiting.push(wake);
      if (signal && !signal.aborted) signal.addEventListener('abort', give, { once: true });
    });
  } else {
    running++;
  }
  let released = false;
  return () => {
    if (released) return;
    released = true;
    const next = waiting.shift();
    // The slot passes straight to the next waiter, so the count never dips below the cap in between.
    if (next) next();
    else running--;
  };
}

/** Runs fn so that every run() inside it (however deep) is stopped when signal aborts. */
export function withCallSignal<T>(signal: AbortSignal, fn: () => T): T {
  return callSignal.run(signal, fn);
}

/** The signal of the call being served here, if any. */
export function currentCallSignal(): AbortSignal | undefined {
  return callSignal.getStore();
}

/** Runs fn outside any call: its commands outlive the caller's deadline (background work). */
export function withoutCallSignal<T>(fn: () => T): T {
  return callSignal.exit(fn);
}

/** Why the current call was given up, as the error its killed commands throw. */
function abortError(signal: AbortSignal, command: string): CallAbortedError {
  const r: unknown = signal.reason;
  const reason = r instanceof CallAbortedError ? r.reason : 'cancelled';
  return new CallAbortedError(reason, `${command} was stopped: ${r instanceof Error ? r.message : 'the caller cancelled the call'}`);
}

export class CommandError extends Error {
  constructor(
    readonly command: string,
    readonly exitCode: number | undefined,
    readonly stderr: string,
    readonly timedOut: boolean,
  ) {
    super(
      timedOut
        ? `${command} timed out`
        : `${command} failed (exit ${exitCode ?? '?'}): ${stderr.trim().split('\n').slice(-3).join(' / ') || 'no output'}`,
    );
    this.name = 'CommandError';
  }
}

export async function run(file: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const signal = callSignal.getStore();
  const afterAbort = signal?.aborted === true;
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const command = [file, ...args].join(' ');
  if (opts.failpoint) failpoint(opts.failpoint);
  const release = await childSlot(afterAbort ? undefined : signal, command);
  const started = process.hrtime.bigint();
  let r: Finished;
  try {
    r = await spawnTool(file, args, {
      timeoutMs: afterAbort ? Math.min(timeoutMs, AFTER_ABORT_GRACE_MS) : timeoutMs,
      signal: afterAbort ? undefined : signal,
      env: opts.env,
      input: opts.input,
      failpoint: opts.failpoint,
      command,
    });
  } finally {
    release();
  }
  const exitCode = r.exitCode ?? -1;
  const failed = exitCode !== 0 && !(opts.okCodes ?? []).includes(exitCode);
  reportChild(file, started, r.canceled ? 'cancelled' : r.timedOut ? 'timeout' : failed ? 'failed' : 'ok');
  if (signal && (r.canceled || (afterAbort && r.timedOut))) throw abortError(signal, command);
  const unspawnable = notSpawned(file, r.spawnErrorCode, opts.env);
  if (unspawnable) throw unspawnable;
  if (r.timedOut || failed) {
    throw new CommandError(command, r.exitCode, r.stderr || r.spawnError || '', r.timedOut);
  }
  return { stdout: r.stdout, stderr: r.stderr, exitCode };
}

/**
 * The tool could not be spawned at all: not there (ENOENT) or not runnable (EACCES), which
 * are the node's or image's to fix, not exit codes to report as INTERNAL.
 */
function notSpawned(file: string, code: string | undefined, env: Record<string, string> | undefined): Error | undefined {
  if (code === 'ENOENT') return new ToolMissingError(file, env?.PATH ?? process.env.PATH ?? '');
  if (code === 'EACCES') return new ToolNotExecutableError(file);
  return undefined;
}

interface Finished {
  stdout: string;
  stderr: string;
  /** undefined when the tool did not start or was killed by a signal. */
  exitCode: number | undefined;
  timedOut: boolean;
  canceled: boolean;
  spawnError?: string;
  spawnErrorCode?: string;
}

/**
 * One tool run on node:child_process directly (execa's per-call stream plumbing cost more
 * CPU than the short tools it ran): output collected, killed with SIGTERM and then SIGKILL
 * on its timeout or when signal aborts. Never rejects: the caller judges the result.
 */
function spawnTool(
  file: string,
  args: string[],
  o: { timeoutMs: number; signal?: AbortSignal; env?: Record<string, string>; input?: string; failpoint?: FailpointName; command: string },
): Promise<Finished> {
  return new Promise((resolve) => {
    const child = spawn(file, args, { env: { ...process.env, LC_ALL: 'C', ...o.env }, stdio: [o.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    let canceled = false;
    let forceKill: NodeJS.Timeout | undefined;
    const stop = () => {
      child.kill('SIGTERM');
      forceKill ??= setTimeout(() => child.kill('SIGKILL'), FORCE_KILL_AFTER_MS);
    };
    const timer = setTimeout(() => ((timedOut = true), stop()), o.timeoutMs);
    const onAbort = () => ((canceled = true), stop());
    if (o.signal?.aborted) onAbort();
    else o.signal?.addEventListener('abort', onAbort, { once: true });
    child.stdout!.on('data', (b: Buffer) => out.push(b));
    child.stderr!.on('data', (b: Buffer) => err.push(b));
    if (child.stdin) {
      child.stdin.on('error', () => undefined); // a tool that does not read its input
      child.stdin.end(o.input);
    }
    let spawnError: NodeJS.ErrnoException | undefined;
    child.once('error', (e) => (spawnError = e));
    if (o.failpoint) failpointDuring(o.failpoint, child, o.command);
    // 'close', not 'exit': the output pipes are drained by then (also after a failed spawn).
    child.once('close', (code) => {
      clearTimeout(timer);
      clearTimeout(forceKill);
      o.signal?.removeEventListener('abort', onAbort);
      const text = (b: Buffer[]) => Buffer.concat(b).toString('utf8').replace(/\r?\n$/, '');
      resolve({ stdout: text(out), stderr: text(err), exitCode: code ?? undefined, timedOut, canceled, spawnError: spawnError?.message, spawnErrorCode: spawnError?.code });
    });
  });
}

/** Wraps a host-tool failure into a gRPC status a person can act on. */
export function hostFailure(what: string, err: unknown): CsiError {
  const known = toCsiError(err);
  if (known) return known;
  if (err instanceof CommandError && err.timedOut) {
    return new CsiError(status.DEADLINE_EXCEEDED, `${what}: ${err.message}`);
  }
  return internal(`${what}: ${err instanceof Error ? err.message : String(err)}`);
}

/** A tool's output, read as it comes: see readOutput. */
export interface OutputReader {
  readonly command: string;
  /** The next piece of output; undefined at its end, once the tool exited 0 (a failure throws). */
  next(): Promise<Buffer | undefined>;
  /** Stops the tool if it still runs and frees its slot. Safe to call more than once. */
  close(): Promise<void>;
}

/**
 * Runs a tool whose output is too big to hold (a whole image written to stdout) and hands
 * it out piece by piece, with run()'s rules: an argument array, a child slot, killed when
 * the call is given up. The output is pulled, so a reader that waits makes the tool wait
 * (the pipe fills) and memory stays bounded. An image has no fixed duration, so instead of
 * a timeout a tool silent for idleTimeoutMs while being read is taken as hung.
 */
export async function readOutput(file: string, args: string[], opts: { env?: Record<string, string>; idleTimeoutMs?: number } = {}): Promise<OutputReader> {
  const signal = callSignal.getStore();
  const command = [file, ...args].join(' ');
  if (signal?.aborted) throw abortError(signal, command);
  const release = await childSlot(signal, command);
  const started = process.hrtime.bigint();
  const child = spawn(file, args, { env: { ...process.env, LC_ALL: 'C', ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const stderr: Buffer[] = [];
  child.stderr!.on('data', (b: Buffer) => stderr.push(b));
  let spawnError: NodeJS.ErrnoException | undefined;
  child.once('error', (e) => (spawnError = e));
  const closed = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  let canceled = false;
  let forceKill: NodeJS.Timeout | undefined;
  const kill = (sig: NodeJS.Signals) => {
    child.kill(sig);
    if (sig === 'SIGTERM') forceKill ??= setTimeout(() => child.kill('SIGKILL'), FORCE_KILL_AFTER_MS);
  };
  const onAbort = () => ((canceled = true), kill('SIGTERM'));
  signal?.addEventListener('abort', onAbort, { once: true });
  // Pulled one piece at a time: a reader that waits leaves the pipe full, and the tool waits.
  const pieces = child.stdout![Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  const idleMs = opts.idleTimeoutMs ?? DEFAULT_TIMEOUT_MS;
  let ended = false;
  let hung = false;
  let closedEarly = false;
  const finish = async () => {
    ended = true;
    const code = await closed;
    reportChild(file, started, canceled || closedEarly ? 'cancelled' : hung ? 'timeout' : code !== 0 ? 'failed' : 'ok');
    clearTimeout(forceKill);
    signal?.removeEventListener('abort', onAbort);
    release();
    return code;
  };
  return {
    command,
    async next() {
      if (ended) return undefined;
      let timer: NodeJS.Timeout | undefined;
      const idle = new Promise<'idle'>((resolve) => {
        timer = setTimeout(() => resolve('idle'), idleMs);
      });
      const got = await Promise.race([pieces.next().catch(() => ({ done: true as const, value: undefined })), idle]).finally(() => clearTimeout(timer));
      if (got === 'idle') {
        hung = true;
        kill('SIGKILL');
      } else if (!got.done) {
        return got.value;
      }
      const code = await finish();
      if (signal && canceled) throw abortError(signal, command);
      const unspawnable = notSpawned(file, spawnError?.code, opts.env);
      if (unspawnable) throw unspawnable;
      if (hung) throw new CommandError(command, undefined, `no output for ${idleMs / 1000} s`, true);
      if (code !== 0) throw new CommandError(command, code ?? undefined, Buffer.concat(stderr).toString('utf8') || spawnError?.message || '', false);
      return undefined;
    },
    async close() {
      if (ended) return;
      closedEarly = true;
      kill('SIGTERM');
      await pieces.return?.().catch(() => undefined);
      await finish();
    },
  };
}
