// What every process of the project (the driver, each sidecar, the CLI) does the same way
// at its edges: a structured logger on stderr, a stop on SIGTERM/SIGINT that runs once, and
// a last line plus exit code 1 when main() fails. One setup, so a log collector and an
// operator see every process behave alike.
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { pino, type Logger } from 'pino';

export type { Logger };

/**
 * pino JSON lines on stderr (stdout is the CLI's), tagged with the process's component.
 * Synchronous writes: a process that exits right after logging (a fatal error, the end of
 * a stop) must not lose its last lines, and one line per RPC is far from a bottleneck.
 */
export function createLogger(component: string, level = process.env.LOG_LEVEL ?? 'info'): Logger {
  return pino({ level, base: { component } }, pino.destination({ dest: 2, sync: true }));
}

/** The message of anything thrown: an Error's message, else its string form. */
export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export interface Stopper {
  /** Stops for another reason than a signal (e.g. kubelet refused the plugin), with this exit code. */
  stop(reason: string, exitCode?: number): void;
  /** Whether a stop has begun (long waits give up then). */
  readonly stopping: boolean;
}

/**
 * On SIGTERM or SIGINT (or stop()), runs `cleanup` once, then exits with the code asked
 * for (0 for a signal), or 1 when the cleanup fails. A second signal while it runs is
 * ignored: the first one's cleanup is already letting calls in flight finish.
 */
export function stopOnSignals(log: Logger, cleanup: () => Promise<void>): Stopper {
  let stopping = false;
  const stop = (reason: string, exitCode = 0) => {
    if (stopping) return;
    stopping = true;
    log.info({ reason }, 'stopping');
    cleanup().then(
      () => {
        log.info({ exitCode }, 'stopped');
        process.exit(exitCode);
      },
      (err: unknown) => {
        log.error({ err: messageOf(err) }, 'stop failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  return {
    stop,
    get stopping() {
      return stopping;
    },
  };
}

/**
 * Runs a process's main(); if it fails, one line "<component>: <why>" on stderr and exit 1.
 * Plain text, not JSON: the failure may come before any logger exists (a bad flag), and it
 * is what a person reads first in `kubectl logs --previous`.
 */
export function runMain(component: string, main: () => Promise<void>, describe: (err: unknown) => string = messageOf): void {
  main().catch((err: unknown) => {
    process.stderr.write(`${component}: ${describe(err)}\n`);
    process.exit(1);
  });
}

type FlagOptions = NonNullable<ParseArgsConfig['options']>;

/** The flags every program has: --log-level (default $LOG_LEVEL, else info) and --help. */
const COMMON_FLAGS = {
  'log-level': { type: 'string', default: process.env.LOG_LEVEL ?? 'info' },
  help: { type: 'boolean', default: false },
} as const;

/**
 * Parses a program's flags (unknown ones are refused) plus --log-level and --help; with
 * --help it prints the usage and resolves to undefined, so main() just returns.
 */
export function parseFlags<O extends FlagOptions>(usage: string, options: O, allowPositionals = false) {
  const parsed = parseArgs({ options: { ...options, ...COMMON_FLAGS }, strict: true, allowPositionals });
  if ((parsed.values as { help?: boolean }).help) {
    process.stdout.write(usage);
    return undefined;
  }
  return parsed;
}
