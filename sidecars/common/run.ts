// What every sidecar's main does: flags, logger, the driver's name from the socket, and a
// clean stop on SIGTERM/SIGINT.
import { pino, type Logger } from 'pino';
import { CsiClient } from './csi-client.js';

export function sidecarLogger(component: string): Logger {
  return pino({ level: process.env.LOG_LEVEL ?? 'info', base: { component } }, pino.destination(2));
}

/** Waits for the driver to answer GetPluginInfo and returns its name. */
export async function driverName(csi: CsiClient, log: Logger, timeoutMs = 120_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const info = await csi.Identity.GetPluginInfo({}, 5_000);
      return info.name as string;
    } catch (err) {
      if (Date.now() > deadline) throw err;
      log.info({ err: String((err as Error).message ?? err) }, 'waiting for the driver');
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
}

export function onStop(log: Logger, stop: () => Promise<void>): void {
  let stopping = false;
  const handler = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'stopping');
    stop().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ err: String(err) }, 'stop failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => handler('SIGTERM'));
  process.on('SIGINT', () => handler('SIGINT'));
}

export function fatal(component: string) {
  return (err: unknown) => {
    process.stderr.write(`${component}: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  };
}
