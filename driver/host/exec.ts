// The one way the driver runs a host tool: an argument array (never a shell string),
// a timeout, and an error that names the command and its stderr.
import { execa } from 'execa';
import { internal, toCsiError, CsiError } from '../errors.js';
import { status } from '@grpc/grpc-js';

export interface RunOptions {
  timeoutMs?: number;
  env?: Record<string, string>;
  /** Exit codes that are answers rather than failures (blkid's 2 = "nothing found"). */
  okCodes?: number[];
  input?: string;
}

export interface RunResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

export const DEFAULT_TIMEOUT_MS = 120_000;

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
  const r = await execa(file, args, {
    reject: false,
    timeout: opts.timeoutMs ?? DEFAULT_TIMEOUT_MS,
    env: { LC_ALL: 'C', ...opts.env },
    input: opts.input,
    stripFinalNewline: true,
  });
  const exitCode = r.exitCode ?? -1;
  if (r.timedOut || (exitCode !== 0 && !(opts.okCodes ?? []).includes(exitCode))) {
    throw new CommandError([file, ...args].join(' '), r.exitCode, String(r.stderr ?? '') || String(r.message ?? ''), !!r.timedOut);
  }
  return { stdout: String(r.stdout), stderr: String(r.stderr), exitCode };
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
